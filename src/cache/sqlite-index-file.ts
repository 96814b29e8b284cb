import { closeSync, openSync, statSync } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { makePrivateDir, PRIVATE_FILE_MODE } from '../private-files.js';

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
