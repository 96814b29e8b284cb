import { setImmediate as nextTurn } from 'node:timers/promises';
import type { TempFile } from '../cache/temp-file.js';
import { BadGatewayError, type GatewayError } from '../errors.js';

export interface DownloadSink {
  /** Where the body goes while it arrives; rejects when the disk cannot take it. */
  createTemp(): Promise<TempFile>;
  /** Bodies up to this size are also kept in memory, for the memory tier and for joiners. */
  memoryEntryMaxBytes: number;
  /** Reports a disk problem; the download goes on from memory when it can. */
  onDiskError(error: unknown): void;
}

const FILE_READ_BYTES = 64 * 1024;
// Thrown inside append when the temporary file could not be opened; the sink has been told already.
const NO_FILE = new Error('no temporary file');

/**
 * A body that is still arriving, readable at any offset already received.
 *
 * Bytes go to a temporary file and, for a recording small enough for the
 * memory tier, to memory as well. A large one is read back from the file, so
 * memory stays bounded however many callers read it. If the disk fails midway
 * (ENOSPC, say), the rest is kept in memory from that offset on: earlier bytes
 * stay readable from the file already written, and the download goes on
 * without being stored.
 *
 * It owns its temporary file until it is sealed: a file that is not whole is
 * discarded here, a whole one is handed out for the store to commit, and
 * `close` ends it either way (removing it unless it was committed). The file
 * may still be opening when the first bytes arrive: readers get them at once,
 * and they go to the file once it is open.
 */
export class GrowingBody {
  #received = 0;
  #flushed = 0;
  /** Offset of the first byte held in memory; Infinity when none is. */
  #memoryBase: number;
  #chunks: Buffer[] = [];
  #chunkStarts: number[] = [];
  /**
   * The chunk being written to the file, readable while it is: a reader at
   * the live edge of a recording too large for memory (a cold miss's first
   * bytes) gets it without waiting for the write and reading it back.
   */
  #writing: { start: number; chunk: Buffer } | undefined;
  /** The temporary file, or undefined when it could not be opened (reported to the sink). */
  readonly #opened: Promise<TempFile | undefined>;
  /** The temporary file once it is open. */
  #file: TempFile | undefined;
  #fileComplete = true;
  #state: 'running' | 'complete' | 'failed' = 'running';
  #error: GatewayError | undefined;
  #closing: Promise<void> | undefined;
  #handedOut = false;
  #progress!: Promise<void>;
  #notify!: () => void;

  private constructor(
    private readonly sink: DownloadSink,
    opening: Promise<TempFile>,
    keepInMemory: boolean,
  ) {
    this.#opened = opening.then(
      (file) => {
        this.#file = file;
        return file;
      },
      (error: unknown) => {
        sink.onDiskError(error);
        return undefined;
      },
    );
    this.#memoryBase = keepInMemory ? 0 : Number.POSITIVE_INFINITY;
    this.#resetProgress();
  }

  /**
   * Takes the temporary file `sink.createTemp()` is opening, perhaps still
   * while the first bytes arrive; without one (an unwritable disk) the body
   * lives in memory.
   */
  static create(sink: DownloadSink, declaredSize: number | undefined, opening: Promise<TempFile> = sink.createTemp()): GrowingBody {
    return new GrowingBody(sink, opening, declaredSize === undefined || declaredSize <= sink.memoryEntryMaxBytes);
  }

  get received(): number {
    return this.#received;
  }

  /** True once a reader was given a byte: from then on nobody may swap this body for another. */
  get handedOut(): boolean {
    return this.#handedOut;
  }

  async append(chunk: Buffer): Promise<void> {
    const start = this.#received;
    if (start >= this.#memoryBase) this.#keep(chunk, start);
    this.#received += chunk.length;
    // Without a Content-Length a body may outgrow the memory tier: once the file holds it, let memory go.
    if (this.#memoryBase === 0 && this.#fileComplete && this.#received > this.sink.memoryEntryMaxBytes) this.#dropMemory();
    if (this.#fileComplete && start < this.#memoryBase) this.#writing = { start, chunk };
    this.#signal();
    if (!this.#fileComplete) return;
    // The first chunk goes to the file a turn later: the callers' first bytes leave before the disk is asked for anything.
    if (start === 0) await nextTurn();
    let written = 0;
    try {
      const file = await this.#opened;
      if (!file) throw NO_FILE;
      // A nearly full disk can take part of a chunk before it refuses the rest.
      while (written < chunk.length) {
        const bytesWritten = await file.write(chunk.subarray(written), start + written);
        if (bytesWritten === 0) throw Object.assign(new Error('the disk took no bytes'), { code: 'ENOSPC' });
        written += bytesWritten;
        this.#flushed += bytesWritten;
      }
    } catch (error) {
      if (error !== NO_FILE) this.sink.onDiskError(error);
      this.#fileComplete = false;
      const failedAt = start + written;
      if (failedAt < this.#memoryBase) {
        this.#memoryBase = failedAt;
        this.#keep(chunk.subarray(written), failedAt);
      }
    } finally {
      this.#writing = undefined;
    }
    this.#signal();
  }

  /**
   * Makes the file durable. Resolves with the whole body if memory holds it,
   * and the temporary file if it is whole (to be committed, or discarded by
   * whoever decides not to keep it); a file that is not whole is discarded.
   */
  async seal(): Promise<{ body: Buffer | undefined; file: TempFile | undefined }> {
    if (!(await this.#opened)) this.#fileComplete = false;
    if (this.#fileComplete) {
      await this.#file!.sync().catch((error: unknown) => {
        this.sink.onDiskError(error);
        this.#fileComplete = false;
      });
    }
    this.#state = 'complete';
    this.#signal();
    const file = this.#fileComplete ? this.#file : undefined;
    if (!file) await this.#file?.discard();
    return { body: this.#memoryBase === 0 ? Buffer.concat(this.#chunks, this.#received) : undefined, file };
  }

  /** Ends the body with `error`: readers get it past what was received, and the file is discarded. */
  fail(error: GatewayError): void {
    if (this.#file) void this.#file.discard();
    else void this.#opened.then((file) => file?.discard());
    this.#error = error;
    this.#state = 'failed';
    this.#signal();
  }

  /**
   * Up to `maxBytes` at `offset`, waiting for them; null at the end; rejects
   * if the body fails first. Bytes read back from the file land in `scratch`
   * when given (at least `maxBytes` long).
   */
  async readAt(offset: number, maxBytes: number, scratch?: Buffer): Promise<Uint8Array | null> {
    for (;;) {
      if (offset >= this.#memoryBase && offset < this.#received) {
        this.#handedOut = true;
        return this.#fromMemory(offset, maxBytes);
      }
      if (offset < this.#memoryBase && offset < this.#flushed) {
        this.#handedOut = true;
        return this.#fromFile(offset, Math.min(maxBytes, this.#flushed - offset, this.#memoryBase - offset), scratch);
      }
      const writing = this.#writing;
      if (writing && offset >= writing.start && offset < writing.start + writing.chunk.length) {
        this.#handedOut = true;
        const at = offset - writing.start;
        return writing.chunk.subarray(at, at + maxBytes);
      }
      if (this.#state === 'complete') return null;
      if (this.#state === 'failed') throw this.#error ?? new BadGatewayError('Download failed');
      await this.#progress;
    }
  }

  /** Closes the file (removing it unless it was committed); call it once nobody can read any more. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#opened.then((file) => file?.close());
    return this.#closing;
  }

  #keep(chunk: Buffer, start: number): void {
    this.#chunkStarts.push(start);
    this.#chunks.push(chunk);
  }

  #dropMemory(): void {
    this.#memoryBase = Number.POSITIVE_INFINITY;
    this.#chunks = [];
    this.#chunkStarts = [];
  }

  #fromMemory(offset: number, maxBytes: number): Uint8Array {
    const starts = this.#chunkStarts;
    let low = 0;
    let high = starts.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (starts[middle]! <= offset) low = middle;
      else high = middle - 1;
    }
    const chunk = this.#chunks[low]!;
    const start = offset - starts[low]!;
    return chunk.subarray(start, Math.min(chunk.length, start + maxBytes));
  }

  async #fromFile(offset: number, length: number, scratch: Buffer | undefined): Promise<Uint8Array> {
    const bytes = Math.min(length, FILE_READ_BYTES);
    const buffer = scratch ? scratch.subarray(0, bytes) : Buffer.allocUnsafe(bytes);
    const bytesRead = await this.#file!.read(buffer, offset);
    return buffer.subarray(0, bytesRead);
  }

  #resetProgress(): void {
    this.#progress = new Promise<void>((resolve) => {
      this.#notify = resolve;
    });
  }

  /** Wakes every waiting reader; they look again at what is available. */
  #signal(): void {
    const notify = this.#notify;
    this.#resetProgress();
    notify();
  }
}
