import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { PRIVATE_FILE_MODE, makePrivateDir } from '../private-files.js';

/**
 * A recording file while it is written: the one owner of its path and its
 * descriptor, from creation until it is committed into place or discarded,
 * and closed. Readers may go on reading through it after either (POSIX keeps
 * an unlinked or renamed file readable through an open descriptor), so
 * closing is a step of its own, taken once nobody reads.
 */
export interface TempFile {
  readonly path: string;
  /** Writes `chunk` at `position`; resolves with how many bytes the disk took, which may be fewer. */
  write(chunk: Uint8Array, position: number): Promise<number>;
  /** Reads into `buffer` from `position`; resolves with the bytes read. */
  read(buffer: Uint8Array, position: number): Promise<number>;
  /** Makes the bytes written so far durable. */
  sync(): Promise<void>;
  /**
   * Renames it to `finalPath` and makes the rename durable. Once it was
   * renamed, `discard` leaves it alone, whatever failed after.
   */
  commit(finalPath: string): Promise<void>;
  /** Removes it unless it was committed; idempotent. */
  discard(): Promise<void>;
  /** Closes the descriptor, removing the file first unless it was committed; idempotent. */
  close(): Promise<void>;
}

class OpenTempFile implements TempFile {
  #state: 'writing' | 'committed' | 'discarded' = 'writing';
  #discarding: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
  ) {}

  async write(chunk: Uint8Array, position: number): Promise<number> {
    const { bytesWritten } = await this.handle.write(chunk, 0, chunk.length, position);
    return bytesWritten;
  }

  async read(buffer: Uint8Array, position: number): Promise<number> {
    const { bytesRead } = await this.handle.read(buffer, 0, buffer.length, position);
    return bytesRead;
  }

  sync(): Promise<void> {
    return this.handle.sync();
  }

  async commit(finalPath: string): Promise<void> {
    if (this.#state !== 'writing') throw new Error(`temp file: cannot commit a file already ${this.#state}`);
    await makePrivateDir(path.dirname(finalPath));
    await rename(this.path, finalPath);
    this.#state = 'committed';
    await fsyncDir(path.dirname(finalPath));
  }

  discard(): Promise<void> {
    if (this.#state === 'committed') return Promise.resolve();
    this.#state = 'discarded';
    this.#discarding ??= unlink(this.path).catch(() => {});
    return this.#discarding;
  }

  close(): Promise<void> {
    this.#closing ??= this.discard().then(() => this.handle.close().catch(() => {}));
    return this.#closing;
  }
}

/** Makes a rename in `dir` durable: the directory entry itself is fsynced. */
async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Creates a new, empty temporary file in `dir`, open for writing and reading,
 * closed to other users (the rename that commits it keeps its mode).
 */
export async function createTempFile(dir: string): Promise<TempFile> {
  const tempPath = path.join(dir, `${randomBytes(12).toString('hex')}.part`);
  return new OpenTempFile(tempPath, await open(tempPath, 'wx+', PRIVATE_FILE_MODE));
}

/**
 * Puts `bytes` at `finalPath` whole or not at all, durably: written to a
 * temporary file beside it, fsynced, renamed into place, the rename fsynced.
 */
export async function writeFileDurably(finalPath: string, bytes: Uint8Array): Promise<void> {
  const file = await createTempFile(path.dirname(finalPath));
  try {
    await writeFully(file, bytes, 0);
    await file.sync();
    await file.commit(finalPath);
  } finally {
    await file.close();
  }
}

/** Writes all of `bytes` at `position`, as a file may take fewer bytes a call. */
export async function writeFully(file: TempFile, bytes: Uint8Array, position: number): Promise<void> {
  let written = 0;
  while (written < bytes.length) {
    const taken = await file.write(bytes.subarray(written), position + written);
    if (taken === 0) throw Object.assign(new Error('the disk took no bytes'), { code: 'ENOSPC' });
    written += taken;
  }
}
