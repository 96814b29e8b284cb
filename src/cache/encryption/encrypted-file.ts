import type { FileHandle } from 'node:fs/promises';
import { DamagedFileError, type StoredFile } from '../stored-file.js';
import {
  HEADER_BYTES,
  TAG_BYTES,
  chunkOffset,
  fileKey,
  lastChunkIndex,
  newHeader,
  openChunk,
  parseHeader,
  plaintextSize,
  sealChunk,
  sealedSize,
  type FileHeader,
} from './chunk-format.js';
import type { CacheKey, Keyring } from './keyring.js';

/** The file key of a header, from the keyring; a key id it does not know makes the file damaged. */
function keyFor(header: FileHeader, keyring: Keyring): Buffer {
  const key = keyring.find(header.keyId);
  if (!key) {
    throw new DamagedFileError('unknown-key', `encrypted under a key that is not configured (key id ${header.keyId.toString('hex')})`);
  }
  return fileKey(key.secret, header);
}

/**
 * A stored encrypted file, decrypted as it is read: a read fetches the
 * ciphertext of the chunks it touches in one go and authenticates each. The
 * last chunk decrypted is kept, as a stream reads on from where it stopped.
 */
class EncryptedStoredFile implements StoredFile {
  readonly #lastIndex: number;
  #recent: { index: number; plaintext: Buffer } | undefined;
  #closing: Promise<void> | undefined;

  constructor(
    private readonly handle: FileHandle,
    private readonly key: Buffer,
    private readonly chunkBytes: number,
    readonly size: number,
    readonly changedAtMs: number,
  ) {
    this.#lastIndex = lastChunkIndex(size, chunkBytes);
  }

  async read(buffer: Uint8Array, position: number): Promise<number> {
    const end = Math.min(this.size, position + buffer.length);
    if (position >= end) return 0;
    let first = Math.floor(position / this.chunkBytes);
    const last = Math.floor((end - 1) / this.chunkBytes);
    let copied = 0;
    if (this.#recent?.index === first) {
      copied = this.#copy(this.#recent.plaintext, first, position, end, buffer, 0);
      first++;
    }
    if (first > last) return copied;
    const chunks = await this.#decrypt(first, last);
    for (const [i, plaintext] of chunks.entries()) copied += this.#copy(plaintext, first + i, position, end, buffer, copied);
    this.#recent = { index: last, plaintext: chunks[chunks.length - 1]! };
    return copied;
  }

  async readAll(): Promise<Buffer> {
    const body = Buffer.allocUnsafe(this.size);
    let filled = 0;
    for (const plaintext of await this.#decrypt(0, this.#lastIndex)) filled += plaintext.copy(body, filled);
    return body;
  }

  close(): Promise<void> {
    this.#closing ??= this.handle.close().catch(() => {});
    return this.#closing;
  }

  /** Copies what chunk `index` holds of [position, end) to `target` at `at`; returns the bytes copied. */
  #copy(plaintext: Buffer, index: number, position: number, end: number, target: Uint8Array, at: number): number {
    const chunkStart = index * this.chunkBytes;
    const from = Math.max(position, chunkStart) - chunkStart;
    const to = Math.min(end, chunkStart + plaintext.length) - chunkStart;
    target.set(plaintext.subarray(from, to), at);
    return to - from;
  }

  /** Chunks `first`..`last`, read in one go and each authenticated. */
  async #decrypt(first: number, last: number): Promise<Buffer[]> {
    const start = chunkOffset(first, this.chunkBytes);
    const length = Math.min(chunkOffset(last + 1, this.chunkBytes), sealedSize(this.size, this.chunkBytes)) - start;
    const sealed = Buffer.allocUnsafe(length);
    let filled = 0;
    while (filled < length) {
      const { bytesRead } = await this.handle.read(sealed, filled, length - filled, start + filled);
      if (bytesRead === 0) throw new DamagedFileError('truncated', 'encrypted cache file was cut short while it was read');
      filled += bytesRead;
    }
    const chunks: Buffer[] = [];
    const stride = this.chunkBytes + TAG_BYTES;
    for (let index = first; index <= last; index++) {
      const at = (index - first) * stride;
      chunks.push(openChunk(this.key, index, index === this.#lastIndex, sealed.subarray(at, Math.min(at + stride, length))));
    }
    return chunks;
  }
}

/**
 * Opens an encrypted stored file: its header names the key (the current one
 * or a previous one) and the chunk size; the file size gives the plaintext size.
 * @throws DamagedFileError when it has no header, names an unknown key, or has an impossible size.
 */
export async function openEncryptedFile(handle: FileHandle, keyring: Keyring): Promise<StoredFile> {
  const headerBytes = Buffer.alloc(HEADER_BYTES);
  const { bytesRead } = await handle.read(headerBytes, 0, HEADER_BYTES, 0);
  const header = parseHeader(headerBytes.subarray(0, bytesRead));
  const key = keyFor(header, keyring);
  const { size: fileSize, ctimeMs } = await handle.stat();
  return new EncryptedStoredFile(handle, key, header.chunkBytes, plaintextSize(fileSize, header.chunkBytes), ctimeMs);
}

/** `plaintext` whole in the encrypted file format (for small files written at once, such as sidecars). */
export function encryptBuffer(plaintext: Uint8Array, key: CacheKey): Buffer {
  const { bytes, header } = newHeader(key.id);
  const secret = fileKey(key.secret, header);
  const last = lastChunkIndex(plaintext.length, header.chunkBytes);
  const parts = [bytes];
  for (let index = 0; index <= last; index++) {
    const chunk = plaintext.subarray(index * header.chunkBytes, (index + 1) * header.chunkBytes);
    parts.push(sealChunk(secret, index, index === last, chunk));
  }
  return Buffer.concat(parts);
}

/**
 * The plaintext of a whole file in the encrypted file format.
 * @throws DamagedFileError when it fails any check (see `openEncryptedFile`, and authentication of every chunk).
 */
export function decryptBuffer(sealed: Buffer, keyring: Keyring): Buffer {
  const header = parseHeader(sealed);
  const key = keyFor(header, keyring);
  const size = plaintextSize(sealed.length, header.chunkBytes);
  const last = lastChunkIndex(size, header.chunkBytes);
  const parts: Buffer[] = [];
  for (let index = 0; index <= last; index++) {
    const start = chunkOffset(index, header.chunkBytes);
    const end = index === last ? sealed.length : chunkOffset(index + 1, header.chunkBytes);
    parts.push(openChunk(key, index, index === last, sealed.subarray(start, end)));
  }
  return Buffer.concat(parts, size);
}
