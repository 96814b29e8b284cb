import type { FileHandle } from 'node:fs/promises';

/**
 * A stored recording open for reading, in plaintext whatever is on the disk:
 * the file itself, or (with `cache.encryption`) the file decrypted chunk by
 * chunk as it is read (see encryption/encrypted-file.ts).
 */
export interface StoredFile {
  /** The recording's size in bytes (of the plaintext). */
  readonly size: number;
  /** When the file last changed (its ctime, ms), as it was opened: a write in place changes it. */
  readonly changedAtMs: number;
  /** Reads into `buffer` from `position`; resolves with the bytes read, 0 at the end. */
  read(buffer: Uint8Array, position: number): Promise<number>;
  /** The whole recording. */
  readAll(): Promise<Buffer>;
  /** Closes the file; idempotent. */
  close(): Promise<void>;
}

/** Why a stored file cannot be read as it was written. */
export type DamageReason =
  /** No encryption header (a file stored in the clear), or a header this version cannot read. */
  | 'format'
  /** Written under a key that is not configured (any more). */
  | 'unknown-key'
  /** Shorter than its chunks say: cut off. */
  | 'truncated'
  /** A chunk failed authentication: an edited byte, chunks swapped or reordered, the wrong key. */
  | 'authentication'
  /** Read through from first byte to last, its bytes do not have the recording's sha256. */
  | 'digest';

/**
 * A stored file that fails its checks: it must never be served, only removed
 * and fetched again. The message names the problem, never a key.
 */
export class DamagedFileError extends Error {
  override readonly name = 'DamagedFileError';

  constructor(
    readonly reason: DamageReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

class PlainStoredFile implements StoredFile {
  #closing: Promise<void> | undefined;

  constructor(
    private readonly handle: FileHandle,
    readonly size: number,
    readonly changedAtMs: number,
  ) {}

  async read(buffer: Uint8Array, position: number): Promise<number> {
    const { bytesRead } = await this.handle.read(buffer, 0, buffer.length, position);
    return bytesRead;
  }

  async readAll(): Promise<Buffer> {
    const body = Buffer.allocUnsafe(this.size);
    let filled = 0;
    while (filled < body.length) {
      const { bytesRead } = await this.handle.read(body, filled, body.length - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return body.subarray(0, filled);
  }

  close(): Promise<void> {
    this.#closing ??= this.handle.close().catch(() => {});
    return this.#closing;
  }
}

/** A file stored in the clear (no `cache.encryption`): read as it is. */
export async function openPlainFile(handle: FileHandle): Promise<StoredFile> {
  const { size, ctimeMs } = await handle.stat();
  return new PlainStoredFile(handle, size, ctimeMs);
}

/**
 * `file`, calling `onDamage` (once) when a read finds it damaged; the read
 * still rejects, once `onDamage` is done, so whoever fetches the recording
 * again on that error finds the damaged copy gone, and a stream already
 * under way is cut short.
 */
export function reportingDamage(file: StoredFile, onDamage: (error: DamagedFileError) => Promise<void>): StoredFile {
  let reported = false;
  const check = async (error: unknown): Promise<never> => {
    if (error instanceof DamagedFileError && !reported) {
      reported = true;
      await onDamage(error);
    }
    throw error;
  };
  return {
    size: file.size,
    changedAtMs: file.changedAtMs,
    read: (buffer, position) => file.read(buffer, position).catch(check),
    readAll: () => file.readAll().catch(check),
    close: () => file.close(),
  };
}
