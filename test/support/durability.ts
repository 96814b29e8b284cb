/**
 * Helpers for the durability tests: where a recording lives on disk, a log
 * collector, a real tmpfs mount for ENOSPC, and bodies read at the client's pace.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { createLogger, type Logger } from '../../src/logger.js';
import { namespaceFor } from '../../dev/gateway-harness.js';

const run = promisify(execFile);

export { namespaceFor };

/** `<dir>/recordings/<namespace>/<id>.mp3` */
export function recordingPath(dir: string, upstreamBaseUrl: string, id: number | string): string {
  return path.join(dir, 'recordings', namespaceFor(upstreamBaseUrl), `${id}.mp3`);
}

/** The cache key of a recording of the test tenant. */
export function keyFor(upstreamBaseUrl: string, id: number | string): string {
  return `${namespaceFor(upstreamBaseUrl)}/${id}`;
}

/** Every file under `recordings/`, relative to it. */
export async function storedFiles(dir: string): Promise<string[]> {
  const root = path.join(dir, 'recordings');
  const namespaces = await readdir(root).catch(() => [] as string[]);
  const files: string[] = [];
  for (const namespace of namespaces) {
    for (const name of await readdir(path.join(root, namespace)).catch(() => [] as string[])) {
      files.push(path.join(namespace, name));
    }
  }
  return files.sort();
}

/**
 * True while this process (the gateway runs in it) holds `file` open: how a
 * test knows the gateway is still streaming it rather than done with it.
 * Linux only, like the tmpfs mount below.
 */
export async function isOpenHere(file: string): Promise<boolean> {
  return (await openFiles()).includes(file);
}

/**
 * This process's open descriptors on files under any of `roots` (Linux /proc;
 * a removed file still open reads "<path> (deleted)").
 */
export async function openFilesUnder(...roots: string[]): Promise<string[]> {
  const prefixes = roots.map((root) => root + path.sep);
  return (await openFiles()).filter((target) => prefixes.some((prefix) => target.startsWith(prefix)));
}

/** What each of this process's descriptors points at. */
async function openFiles(): Promise<string[]> {
  const fds = await readdir('/proc/self/fd');
  return Promise.all(fds.map((fd) => readlink(path.join('/proc/self/fd', fd)).catch(() => '')));
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A recording of at least `minBytes`: copies of a real MP3 back to back (the upstream check reads the first frame only). */
export function bigRecording(seed: Buffer, minBytes: number): Buffer {
  return Buffer.concat(Array.from({ length: Math.ceil(minBytes / seed.length) }, () => seed));
}

export interface LogLine {
  level: number;
  msg?: string;
  [field: string]: unknown;
}

/** A real pino logger whose lines are collected, parsed, for counting. */
export function collectingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = createLogger({
    level: 'debug',
    destination: {
      write(text: string) {
        for (const line of text.split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line) as LogLine);
      },
    },
  });
  return { logger, lines };
}

/** pino's numeric level for warn. */
export const WARN = 40;

/**
 * Mounts a tmpfs of `size` (e.g. "200k") on `dir`. Fails loudly: these tests
 * need root (they run as root here and in CI), and a skipped ENOSPC test
 * would hide exactly the failure it exists for.
 */
export async function mountTmpfs(dir: string, size: string): Promise<void> {
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new Error(`cannot mount a ${size} tmpfs on ${dir} for the ENOSPC test (it needs root, uid is ${process.getuid?.()}): ${detail}`);
  }
}

/** Unmounts `dir`; lazily if something still holds it open. */
export async function unmount(dir: string): Promise<void> {
  try {
    await run('umount', [dir]);
  } catch {
    await run('umount', ['-l', dir]);
  }
}

/** Reads what is left of a body, after `prefix` chunks were already taken by the caller. */
export async function readRest(reader: ReadableStreamDefaultReader<Uint8Array>, prefix: Uint8Array[] = []): Promise<Buffer> {
  const chunks: Uint8Array[] = [...prefix];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}
