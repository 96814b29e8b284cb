import { readdir, truncate } from 'node:fs/promises';
import path from 'node:path';
import { writeFileDurably } from '../cache/temp-file.js';
import { sha256Hex } from '../sha256.js';
import { NotRegularFileError, openRegularFile } from './regular-file.js';

/*
 * The audit directory's layout: one JSON Lines file per UTC day and chain,
 * `audit-YYYY-MM-DD.jsonl`, or `audit-<node id>-YYYY-MM-DD.jsonl` in cluster
 * mode, where each replica keeps a chain of its own (two writers on one chain
 * would break it). Each line's `prev` is the sha256 of the line before it in
 * its chain, across files. A chain whose files retention removed keeps its
 * tip, the hash of its last line, in `audit-tip.json` (`audit-<node
 * id>-tip.json`), so that its next line, after a restart too, still links
 * to the line before it.
 */

/** `prev` of the first line of a chain. */
export const ZERO_HASH = '0'.repeat(64);

const FILE_NAME = /^audit-(?:([A-Za-z0-9._-]+)-)?([0-9]{4}-[0-9]{2}-[0-9]{2})\.jsonl$/;
// Lines are a few hundred bytes (headers are cut short before they reach one): a tail this long holds several.
const TAIL_BYTES = 64 * 1024;
const READ_CHUNK_BYTES = 256 * 1024;
const NEWLINE = 0x0a;
const HASH = /^[0-9a-f]{64}$/;

/** One daily file of one chain. */
export interface AuditFile {
  name: string;
  /** '' outside cluster mode; else the replica's node id. */
  chain: string;
  /** UTC day, `YYYY-MM-DD`. */
  day: string;
}

export function auditFileName(day: string, chain: string): string {
  return chain === '' ? `audit-${day}.jsonl` : `audit-${chain}-${day}.jsonl`;
}

export function parseAuditFileName(name: string): AuditFile | undefined {
  const match = FILE_NAME.exec(name);
  if (!match) return undefined;
  return { name, chain: match[1] ?? '', day: match[2]! };
}

/** The UTC day of a moment, `YYYY-MM-DD`. */
export function utcDay(time: number): string {
  return new Date(time).toISOString().slice(0, 10);
}

/** Midnight UTC at the start of a `YYYY-MM-DD` day. */
export function dayStart(day: string): number {
  return Date.parse(`${day}T00:00:00.000Z`);
}

/** The sha256 hex of a line's exact bytes, without its newline: the next line's `prev`. */
export function lineHash(line: string | Buffer): string {
  return sha256Hex(line);
}

/** Every audit file in `dir`, oldest day first, chains in name order within a day; [] when `dir` does not exist. */
export async function listAuditFiles(dir: string): Promise<AuditFile[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return names
    .map(parseAuditFileName)
    .filter((file): file is AuditFile => file !== undefined)
    .sort((a, b) => (a.day === b.day ? a.chain.localeCompare(b.chain) : a.day < b.day ? -1 : 1));
}

/** One line of a file: its exact bytes, without the newline. */
interface FileLine {
  /** 1-based. */
  number: number;
  bytes: Buffer;
  /** False for a last line without its newline: one being written, or cut short by a crash. */
  terminated: boolean;
}

/**
 * The lines of a file, read in chunks. Split on newlines only, byte for byte:
 * a line edited to end in `\r` is a different line, as it should be.
 */
export async function* readFileLines(file: string): AsyncGenerator<FileLine> {
  const handle = await openRegularFile(file, 'read').catch((error: unknown) => Promise.reject(unreadableFile(file, error)));
  try {
    let carry: Buffer = Buffer.alloc(0);
    let number = 0;
    const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
    for (;;) {
      const { bytesRead } = await handle
        .read(buffer, 0, READ_CHUNK_BYTES, null)
        .catch((error: unknown) => Promise.reject(unreadableFile(file, error)));
      if (bytesRead === 0) break;
      const chunk = carry.length > 0 ? Buffer.concat([carry, buffer.subarray(0, bytesRead)]) : buffer.subarray(0, bytesRead);
      let start = 0;
      for (let end = chunk.indexOf(NEWLINE, start); end !== -1; end = chunk.indexOf(NEWLINE, start)) {
        yield { number: ++number, bytes: Buffer.from(chunk.subarray(start, end)), terminated: true };
        start = end + 1;
      }
      carry = Buffer.from(chunk.subarray(start));
    }
    if (carry.length > 0) yield { number: ++number, bytes: carry, terminated: false };
  } finally {
    await handle.close();
  }
}

/**
 * Rejects, naming the file, when `file` cannot be read as a day file (a
 * FIFO, a socket, a device, no permission), as {@link readFileLines} would:
 * for a reader that checks every file before it prints anything.
 */
export async function checkReadableFile(file: string): Promise<void> {
  const handle = await openRegularFile(file, 'read').catch((error: unknown) => Promise.reject(unreadableFile(file, error)));
  await handle.close();
}

/**
 * A day's file that cannot be read, named: Node's own message names only
 * the path for a link to nothing (ENOENT).
 */
function unreadableFile(file: string, error: unknown): Error {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const why =
    error instanceof NotRegularFileError
      ? `it is ${error.kind}, not a regular file`
      : code === 'ENOENT'
        ? 'it is not there (removed meanwhile, or a symbolic link to nothing)'
        : error instanceof Error
          ? error.message
          : String(error);
  return new Error(`cannot read the audit file ${file}: ${why}`, { cause: error });
}

/** The end of a chain on disk: the hash the next line's `prev` takes. */
export interface ChainTail {
  hash: string;
  /** The file the last line is in; undefined for a chain with no line on disk (none yet, or every file removed past retention). */
  file: string | undefined;
  /** The day of that file, also when retention removed it (the chain's saved tip names it). */
  day: string | undefined;
  /** Bytes of a torn last line (a crash mid-write) removed from that file. */
  tornBytesRemoved: number;
}

/** The file keeping a chain's tip once retention removed the file holding its last line. */
export function chainTipFileName(chain: string): string {
  return chain === '' ? 'audit-tip.json' : `audit-${chain}-tip.json`;
}

/**
 * Finds where a chain ends on disk, for a writer that continues it: the sha256
 * of the last whole line of its newest non-empty file. A last line without
 * its newline was torn by a crash mid-write and is cut off, so the file
 * stays verifiable. A chain with no line left in its files continues from
 * the tip saved when retention removed them, if any.
 */
export async function readChainTail(dir: string, chain: string): Promise<ChainTail> {
  const files = (await listAuditFiles(dir)).filter((file) => file.chain === chain).reverse();
  for (const { name, day } of files) {
    const tail = await lastLine(path.join(dir, name), true);
    if (tail) return { hash: lineHash(tail.line), file: name, day, tornBytesRemoved: tail.tornBytesRemoved };
  }
  const saved = await readSavedTip(dir, chain);
  if (saved) return { hash: saved.hash, file: undefined, day: saved.day, tornBytesRemoved: 0 };
  return { hash: ZERO_HASH, file: undefined, day: undefined, tornBytesRemoved: 0 };
}

/** The tip saved for `chain`, or undefined when there is none. */
async function readSavedTip(dir: string, chain: string): Promise<{ hash: string; day: string | undefined } | undefined> {
  const file = path.join(dir, chainTipFileName(chain));
  let text: string;
  try {
    const handle = await openRegularFile(file, 'read');
    try {
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const saved = parseAuditRecord(text);
  if (typeof saved?.hash !== 'string' || !HASH.test(saved.hash)) {
    throw new Error(`${file} does not hold a chain's tip ({"hash": "<sha256 hex>", …}): move it out of the audit directory`);
  }
  const day = typeof saved.file === 'string' ? parseAuditFileName(saved.file)?.day : undefined;
  return { hash: saved.hash, day };
}

/**
 * Before retention removes `expiring` (files of `chain`, each past
 * retention): when the chain's last line is in one of them, saves its hash
 * in the chain's tip file (written whole, then renamed into place), so that
 * the chain goes on from it once they are gone, after a restart too. Reads
 * only: a torn last line (a writer that crashed) is passed over, not cut.
 */
export async function saveChainTipBeforeRemoving(dir: string, chain: string, expiring: AuditFile[]): Promise<void> {
  const files = (await listAuditFiles(dir)).filter((file) => file.chain === chain).reverse();
  for (const { name } of files) {
    const tail = await lastLine(path.join(dir, name), false);
    if (!tail) continue;
    if (!expiring.some((file) => file.name === name)) return;
    const tip = { chain: chain === '' ? null : chain, file: name, hash: lineHash(tail.line) };
    // Durable before the files it stands in for are removed.
    await writeFileDurably(path.join(dir, chainTipFileName(chain)), Buffer.from(`${JSON.stringify(tip)}\n`));
    return;
  }
}

/** The last whole line of `file`; a torn one after it is cut off with `cutTorn`, else only passed over. */
async function lastLine(file: string, cutTorn: boolean): Promise<{ line: Buffer; tornBytesRemoved: number } | undefined> {
  // Read-only unless a torn line must go: files kept read-only (or on write-once storage) stay readable.
  const handle = await openRegularFile(file, 'read');
  try {
    const { size } = await handle.stat();
    if (size === 0) return undefined;
    const length = Math.min(size, TAIL_BYTES);
    const tail = Buffer.alloc(length);
    await handle.read(tail, 0, length, size - length);
    let end = tail.length;
    let tornBytesRemoved = 0;
    if (tail[end - 1] !== NEWLINE) {
      const lastNewline = tail.lastIndexOf(NEWLINE);
      if (lastNewline === -1 && length < size) throw new Error(`${file} does not end in a JSON line: move it out of the audit directory`);
      end = lastNewline + 1;
      if (cutTorn) {
        tornBytesRemoved = tail.length - end;
        await truncate(file, size - tornBytesRemoved);
      }
      if (end === 0) return undefined;
    }
    const start = tail.lastIndexOf(NEWLINE, end - 2) + 1;
    if (start === 0 && length < size)
      throw new Error(`${file} ends in a line too long for an audit line: move it out of the audit directory`);
    return { line: tail.subarray(start, end - 1), tornBytesRemoved };
  } finally {
    await handle.close();
  }
}

/** One line of the trail as a JSON object, or undefined when it is not one (torn, edited into something else). */
export function parseAuditRecord(text: string): Record<string, unknown> | undefined {
  let record: unknown;
  try {
    record = JSON.parse(text);
  } catch {
    return undefined;
  }
  return typeof record === 'object' && record !== null && !Array.isArray(record) ? (record as Record<string, unknown>) : undefined;
}
