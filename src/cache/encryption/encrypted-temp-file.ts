import { writeFully, type TempFile } from '../temp-file.js';
import { DEFAULT_CHUNK_BYTES, TAG_BYTES, chunkOffset, fileKey, newHeader, openChunk, sealChunk } from './chunk-format.js';
import type { CacheKey } from './keyring.js';

/**
 * A {@link TempFile} that keeps plaintext off the disk: bytes written are
 * gathered into a chunk in memory, and each full chunk is encrypted and
 * written to the file underneath; `sync` writes the last (shorter, flagged)
 * chunk. Reads, which may come while writes go on (joiners of a live
 * download), are served from the chunks on disk (decrypted), from chunks
 * still being written, or from the chunk in memory. Positions must arrive in
 * order, as a download writes them.
 */
class EncryptedTempFile implements TempFile {
  #received = 0;
  /** The chunk being gathered: the first `#gathered` bytes of it. */
  #chunk: Buffer;
  #gathered = 0;
  /** Full chunks encrypted so far; the chunk being gathered has this index. */
  #sealed = 0;
  /** Chunks whose write has not finished (or failed): read from here, not from the file. */
  readonly #unwritten = new Map<number, Buffer>();
  readonly #writes = new Set<Promise<void>>();
  #recent: { index: number; plaintext: Buffer } | undefined;
  #failure: unknown;
  #finishing: Promise<void> | undefined;

  constructor(
    private readonly file: TempFile,
    private readonly key: Buffer,
    private readonly chunkBytes: number,
  ) {
    this.#chunk = Buffer.allocUnsafe(chunkBytes);
  }

  get path(): string {
    return this.file.path;
  }

  /** Takes every byte (the disk sees them chunk by chunk); rejects when a chunk could not be written. */
  async write(chunk: Uint8Array, position: number): Promise<number> {
    if (this.#finishing) throw new Error('encrypted temp file: written after sync');
    if (position !== this.#received) {
      throw new Error(`encrypted temp file: writes must come in order (expected position ${this.#received}, got ${position})`);
    }
    if (this.#failure !== undefined) throw this.#failure;
    const writes: Promise<void>[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      const taken = Math.min(this.chunkBytes - this.#gathered, chunk.length - offset);
      this.#chunk.set(chunk.subarray(offset, offset + taken), this.#gathered);
      this.#gathered += taken;
      this.#received += taken;
      offset += taken;
      if (this.#gathered === this.chunkBytes) writes.push(this.#sealFullChunk());
    }
    await Promise.all(writes);
    return chunk.length;
  }

  async read(buffer: Uint8Array, position: number): Promise<number> {
    const end = Math.min(this.#received, position + buffer.length);
    let at = position;
    while (at < end) {
      const index = Math.floor(at / this.chunkBytes);
      const plaintext = index === this.#sealed ? this.#chunk.subarray(0, this.#gathered) : await this.#plaintextOf(index);
      const from = at - index * this.chunkBytes;
      const to = Math.min(plaintext.length, end - index * this.chunkBytes);
      if (to <= from) break;
      buffer.set(plaintext.subarray(from, to), at - position);
      at += to - from;
    }
    return at - position;
  }

  async sync(): Promise<void> {
    this.#finishing ??= this.#sealLastChunk();
    await this.#finishing;
    await this.file.sync();
  }

  commit(finalPath: string): Promise<void> {
    return this.file.commit(finalPath);
  }

  discard(): Promise<void> {
    return this.file.discard();
  }

  close(): Promise<void> {
    return this.file.close();
  }

  #sealFullChunk(): Promise<void> {
    const index = this.#sealed++;
    const plaintext = this.#chunk;
    this.#chunk = Buffer.allocUnsafe(this.chunkBytes);
    this.#gathered = 0;
    this.#unwritten.set(index, plaintext);
    const writing = writeFully(this.file, sealChunk(this.key, index, false, plaintext), chunkOffset(index, this.chunkBytes)).then(
      () => {
        this.#unwritten.delete(index);
      },
      (error: unknown) => {
        // The plaintext stays in #unwritten: what was taken before the failure remains readable.
        this.#failure ??= error;
        throw error;
      },
    );
    this.#writes.add(writing);
    void writing.finally(() => this.#writes.delete(writing)).catch(() => {});
    return writing;
  }

  async #sealLastChunk(): Promise<void> {
    await Promise.all(this.#writes);
    if (this.#failure !== undefined) throw this.#failure;
    const last = sealChunk(this.key, this.#sealed, true, this.#chunk.subarray(0, this.#gathered));
    await writeFully(this.file, last, chunkOffset(this.#sealed, this.chunkBytes));
  }

  /** A full chunk: from memory while its write is under way, else read back and decrypted. */
  async #plaintextOf(index: number): Promise<Buffer> {
    const pending = this.#unwritten.get(index);
    if (pending) return pending;
    if (this.#recent?.index === index) return this.#recent.plaintext;
    const sealed = Buffer.allocUnsafe(this.chunkBytes + TAG_BYTES);
    let filled = 0;
    while (filled < sealed.length) {
      const bytesRead = await this.file.read(sealed.subarray(filled), chunkOffset(index, this.chunkBytes) + filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    const plaintext = openChunk(this.key, index, false, sealed.subarray(0, filled));
    this.#recent = { index, plaintext };
    return plaintext;
  }
}

/**
 * Wraps a new, empty temporary file so everything written through it lands
 * encrypted under `key` (see chunk-format.ts); writes its header first.
 */
export async function createEncryptedTempFile(file: TempFile, key: CacheKey, chunkBytes = DEFAULT_CHUNK_BYTES): Promise<TempFile> {
  const { bytes, header } = newHeader(key.id, chunkBytes);
  try {
    await writeFully(file, bytes, 0);
  } catch (error) {
    await file.close();
    throw error;
  }
  return new EncryptedTempFile(file, fileKey(key.secret, header), chunkBytes);
}
