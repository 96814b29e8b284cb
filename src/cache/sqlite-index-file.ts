import { closeSync, openSync, statSync } from 'node:fs';
import { open, rm, stat } from 'node:fs/promises';
import { endianness } from 'node:os';
import path from 'node:path';
import { makePrivateDir, PRIVATE_FILE_MODE } from '../private-files.js';
import { INDEX_SIDE_FILES } from './damaged-index.js';

/*
 * sqlite keeps writing into an index file deleted under it (an operator's
 * `rm`, the whole cache directory removed), and the next start, finding no
 * index, would remove every recording as unindexed. The open connection
 * still holds every entry and purge count, so the file can be put back.
 */

/** Which file a path names: its device and inode. */
export interface FileIdentity {
  dev: number;
  ino: number;
}

/** The identity of the file at `file`, or undefined when there is none. */
export function identityOf(file: string): FileIdentity | undefined {
  try {
    const { dev, ino } = statSync(file);
    return { dev, ino };
  } catch {
    return undefined;
  }
}

/** Whether `file` still names the file opened as `opened`, names nothing, or names another file. */
export async function indexFileState(file: string, opened: FileIdentity | undefined): Promise<'same' | 'deleted' | 'replaced'> {
  let now: { dev: number; ino: number };
  try {
    now = await stat(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'deleted';
    throw error;
  }
  return opened !== undefined && now.dev === opened.dev && now.ino === opened.ino ? 'same' : 'replaced';
}

/** The -wal and -shm files an open index uses, by suffix; one sqlite has not made yet is left out. */
export function sideFileIdentities(file: string): Map<string, FileIdentity> {
  const identities = new Map<string, FileIdentity>();
  for (const suffix of INDEX_SIDE_FILES) {
    const identity = identityOf(file + suffix);
    if (identity) identities.set(suffix, identity);
  }
  return identities;
}

/**
 * The first side file (-wal, -shm) of `file` no longer the one opened, with
 * what became of it; one not made when `opened` was taken is added to it.
 * sqlite goes on using a deleted write-ahead log, so whatever it holds since
 * the last checkpoint would be gone after a crash; with the -shm deleted,
 * another process opening the index locks another file than this one does.
 */
export async function changedSideFile(
  file: string,
  opened: Map<string, FileIdentity>,
): Promise<{ suffix: string; state: 'deleted' | 'replaced' } | undefined> {
  for (const suffix of INDEX_SIDE_FILES) {
    const identity = opened.get(suffix);
    if (!identity) {
      const made = identityOf(file + suffix);
      if (made) opened.set(suffix, made);
      continue;
    }
    const state = await indexFileState(file + suffix, identity);
    if (state !== 'same') return { suffix, state };
  }
  return undefined;
}

// sqlite's WAL-index header at the start of the -shm (https://sqlite.org/walformat.html), in the machine's byte order.
const SHM_PAGE_SIZE_OFFSET = 14;
const SHM_LAST_FRAME_OFFSET = 16;
const SHM_HEADER_BYTES = 24;
const WAL_HEADER_BYTES = 32;
const WAL_FRAME_HEADER_BYTES = 24;

/**
 * Whether the -shm of `file` says its -wal holds more frames than the -wal
 * at its place has: the log a running gateway writes into was deleted (and
 * maybe made anew, empty, by another process opening the index). sqlite
 * then answers every other process a bare SQLITE_IOERR.
 */
async function logDeletedUnderShm(file: string): Promise<boolean> {
  const header = Buffer.alloc(SHM_HEADER_BYTES);
  try {
    const shm = await open(`${file}-shm`, 'r');
    try {
      if ((await shm.read(header, 0, SHM_HEADER_BYTES, 0)).bytesRead < SHM_HEADER_BYTES) return false;
    } finally {
      await shm.close();
    }
  } catch {
    return false;
  }
  const little = endianness() === 'LE';
  const lastFrame = little ? header.readUInt32LE(SHM_LAST_FRAME_OFFSET) : header.readUInt32BE(SHM_LAST_FRAME_OFFSET);
  const storedPageSize = little ? header.readUInt16LE(SHM_PAGE_SIZE_OFFSET) : header.readUInt16BE(SHM_PAGE_SIZE_OFFSET);
  // 65536 does not fit in 16 bits: sqlite writes it as 1.
  const pageSize = storedPageSize === 1 ? 65536 : storedPageSize;
  if (lastFrame === 0 || pageSize < 512) return false;
  const logBytes = await stat(`${file}-wal`).then(
    (info) => info.size,
    () => 0,
  );
  return logBytes < WAL_HEADER_BYTES + lastFrame * (pageSize + WAL_FRAME_HEADER_BYTES);
}

/**
 * A process beside the gateway (the CLI) met the index's -wal deleted under
 * the gateway that writes into it: only that gateway can repair it.
 */
export class DeletedLogError extends Error {
  /** `SQLITE_IOERR`, sqlite's: the logger treats a coded error as expected (one line, no stack). */
  readonly code = 'SQLITE_IOERR';

  constructor(file: string, cause: unknown) {
    super(
      `the cache index's log ${file}-wal was deleted while a gateway had it open, so the index cannot be read here: the running gateway writes what the log held into the index at its next /readyz (probe it, then run this again)`,
      { cause },
    );
    this.name = 'DeletedLogError';
  }
}

/** The error as a {@link DeletedLogError} when sqlite's SQLITE_IOERR comes of a -wal deleted under a running gateway; else as it was. */
export async function asDeletedLog(file: string, error: unknown): Promise<unknown> {
  if ((error as NodeJS.ErrnoException | undefined)?.code !== 'SQLITE_IOERR' || !(await logDeletedUnderShm(file))) return error;
  return new DeletedLogError(file, error);
}

/**
 * Copies every page of the write-ahead log into the index file and empties
 * the log (`wal_checkpoint(TRUNCATE)`); rejects when a reader kept it from
 * finishing, so that nothing is closed before its content is safe.
 */
export async function checkpointLog(query: (sql: string) => Promise<unknown>): Promise<void> {
  const [result] = (await query('PRAGMA wal_checkpoint(TRUNCATE)')) as Array<{ busy: number }>;
  if (result?.busy !== 0)
    throw new Error('sqlite index: the write-ahead log could not be checkpointed (a reader holds it); trying again at the next /readyz');
}

/**
 * Writes a consistent copy of the open database to `file` (which must not
 * exist), closed to other users, its folder created if it went too: sqlite's
 * `VACUUM INTO`, which reads the database as one transaction.
 */
export async function copyDatabaseTo(query: (sql: string, ...parameters: unknown[]) => Promise<unknown>, file: string): Promise<void> {
  await makePrivateDir(path.dirname(file));
  // VACUUM INTO takes an empty file; one made here first has the index's private mode.
  closeSync(openSync(file, 'wx', PRIVATE_FILE_MODE));
  try {
    await query('VACUUM INTO ?', file);
  } catch (error) {
    await rm(file, { force: true });
    throw error;
  }
}

/**
 * What /readyz says of an index file deleted or replaced under the gateway:
 * its message names no path, so anyone may read it.
 */
export class IndexFileError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IndexFileError';
  }
}
