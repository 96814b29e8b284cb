import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { BadGatewayError, GatewayError } from '../http/errors.js';
import type { UpstreamRecording } from '../upstream/flyflow-client.js';
import { MP3_SIGNATURE_BYTES, looksLikeMp3 } from '../upstream/mp3-signature.js';

/** What a caller needs to start answering: known once the first bytes passed the MP3 check. */
export interface DownloadHead {
  /** The body's length: the upstream's Content-Length, or, without one, the length once complete. */
  size: number;
  contentType: string;
  lastModified: string | undefined;
}

/** The finished body, handed to whoever stores it. */
export interface CompletedDownload {
  size: number;
  sha256: string;
  contentType: string;
  lastModified: string | undefined;
  /** The whole body when it was small enough to keep in memory. */
  body: Buffer | undefined;
  /** The fsynced temporary file holding the body, when the disk took it. */
  tempPath: string | undefined;
}

export interface DownloadSink {
  /** Where the body goes while it arrives; undefined when the disk cannot take it. */
  createTemp(): Promise<{ path: string; handle: FileHandle } | undefined>;
  /** Bodies up to this size are also kept in memory, for the memory tier and for joiners. */
  memoryEntryMaxBytes: number;
  /** Reports a disk problem; the download goes on from memory when it can. */
  onDiskError(error: unknown): void;
  /** Removes the temporary file of a failed download. */
  discardTemp(path: string): Promise<void>;
}

const FILE_READ_BYTES = 64 * 1024;

/**
 * One upstream download shared by every caller that wants the same recording.
 * The body goes to a temporary file (and to memory when it is small) as it
 * arrives; callers read any offset already received and wait for the rest, so
 * a joiner gets what has landed at once and never waits for the whole file.
 * Nobody's disconnect stops it: the download is driven by the upstream alone.
 */
export class RecordingDownload {
  readonly head: Promise<DownloadHead>;
  /** Settles when the body is complete and verified; rejects with the failure. */
  readonly completed: Promise<CompletedDownload>;

  #received = 0;
  #flushed = 0;
  #size: number | undefined;
  #chunks: Buffer[] | undefined = [];
  #chunkStarts: number[] = [];
  #file: { path: string; handle: FileHandle } | undefined;
  #state: 'running' | 'complete' | 'failed' = 'running';
  #error: GatewayError | undefined;
  #progress!: Promise<void>;
  #notify!: () => void;
  #readers = 0;
  #signature = Buffer.alloc(0);
  #resolveHead!: (head: DownloadHead) => void;
  #rejectHead!: (error: unknown) => void;

  constructor(open: () => Promise<UpstreamRecording>, private readonly sink: DownloadSink) {
    this.#resetProgress();
    this.head = new Promise<DownloadHead>((resolve, reject) => {
      this.#resolveHead = resolve;
      this.#rejectHead = reject;
    });
    this.head.catch(() => {});
    this.completed = this.#run(open);
    this.completed.catch(() => {});
  }

  /** Bytes known so far: the final size once complete or declared by Content-Length. */
  get size(): number | undefined {
    return this.#size;
  }

  get state(): 'running' | 'complete' | 'failed' {
    return this.#state;
  }

  /**
   * Up to `maxBytes` bytes at `offset`, waiting until they arrive.
   * Resolves null at the end of the body; rejects if the download fails first.
   */
  async readAt(offset: number, maxBytes: number): Promise<Uint8Array | null> {
    for (;;) {
      const available = this.#chunks ? this.#received : this.#flushed;
      if (offset < available) return this.#copyOut(offset, Math.min(maxBytes, available - offset));
      if (this.#state === 'complete') return null;
      if (this.#state === 'failed') throw this.#error;
      await this.#progress;
    }
  }

  /** Marks a reader, so that the temporary file stays open until the last one is done. */
  acquire(): () => void {
    this.#readers++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#readers--;
      void this.#closeFileIfIdle();
    };
  }

  async #run(open: () => Promise<UpstreamRecording>): Promise<CompletedDownload> {
    let upstream: UpstreamRecording | undefined;
    try {
      upstream = await open();
      this.#size = upstream.contentLength;
      if (upstream.contentLength !== undefined && upstream.contentLength > this.sink.memoryEntryMaxBytes) {
        this.#chunks = undefined;
      }
      this.#file = await this.sink.createTemp().catch((error: unknown) => {
        this.sink.onDiskError(error);
        return undefined;
      });
      if (!this.#file) this.#keepInMemoryFromStart();
      const sha256 = await this.#pump(upstream);
      const size = this.#received;
      if (upstream.contentLength !== undefined && size !== upstream.contentLength) {
        throw new BadGatewayError('Upstream body ended before its Content-Length');
      }
      if (size < MP3_SIGNATURE_BYTES) throw new BadGatewayError('Upstream answered with a body that is not MP3 audio');
      if (this.#file) {
        await this.#file.handle.sync().catch((error: unknown) => this.#dropFile(error));
      }
      const tempPath = this.#file?.path;
      this.#size = size;
      this.#state = 'complete';
      const head = { size, contentType: upstream.contentType, lastModified: upstream.lastModified };
      this.#resolveHead(head);
      this.#signal();
      void this.#closeFileIfIdle();
      return {
        ...head,
        sha256,
        body: this.#chunks ? Buffer.concat(this.#chunks, size) : undefined,
        tempPath,
      };
    } catch (error) {
      upstream?.cancel();
      this.#fail(error);
      throw this.#error;
    }
  }

  async #pump(upstream: UpstreamRecording): Promise<string> {
    const hash = createHash('sha256');
    let signatureChecked = false;
    for await (const piece of upstream.chunks()) {
      const chunk = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
      hash.update(chunk);
      if (!signatureChecked) this.#signature = Buffer.concat([this.#signature, chunk]).subarray(0, MP3_SIGNATURE_BYTES);
      this.#append(chunk);
      if (!signatureChecked && this.#signature.length >= MP3_SIGNATURE_BYTES) {
        signatureChecked = true;
        if (!looksLikeMp3(this.#signature)) {
          throw new BadGatewayError('Upstream answered with a body that is not MP3 audio');
        }
      }
      if (this.#file) await this.#write(chunk);
      // Joiners may start once the body is known to be audio and its length is known.
      if (signatureChecked && upstream.contentLength !== undefined) {
        this.#resolveHead({ size: upstream.contentLength, contentType: upstream.contentType, lastModified: upstream.lastModified });
      }
    }
    return hash.digest('hex');
  }

  #append(chunk: Buffer): void {
    if (this.#chunks) {
      this.#chunkStarts.push(this.#received);
      this.#chunks.push(chunk);
    }
    this.#received += chunk.length;
    // An upstream without Content-Length: keep memory bounded once the file holds it.
    if (this.#chunks && this.#file && this.#received > this.sink.memoryEntryMaxBytes) this.#chunks = undefined;
    this.#signal();
  }

  async #write(chunk: Buffer): Promise<void> {
    const file = this.#file!;
    try {
      await file.handle.write(chunk, 0, chunk.length, this.#flushed);
      this.#flushed += chunk.length;
      this.#signal();
    } catch (error) {
      // Without the file, only a body still held in memory can go on.
      if (!this.#chunks) throw new BadGatewayError('Cache disk failed during the download', { cause: error });
      this.#dropFile(error);
    }
  }

  #dropFile(error: unknown): void {
    this.sink.onDiskError(error);
    const file = this.#file;
    this.#file = undefined;
    if (file) void file.handle.close().catch(() => {});
  }

  #keepInMemoryFromStart(): void {
    this.#chunks ??= [];
  }


  #copyOut(offset: number, length: number): Promise<Uint8Array> | Uint8Array {
    if (this.#chunks) {
      const index = this.#chunkIndexAt(offset);
      const chunk = this.#chunks[index]!;
      const start = offset - this.#chunkStarts[index]!;
      return chunk.subarray(start, Math.min(chunk.length, start + length));
    }
    return this.#readFile(offset, Math.min(length, FILE_READ_BYTES));
  }

  async #readFile(offset: number, length: number): Promise<Uint8Array> {
    const buffer = Buffer.allocUnsafe(length);
    const { bytesRead } = await this.#file!.handle.read(buffer, 0, length, offset);
    return buffer.subarray(0, bytesRead);
  }

  #chunkIndexAt(offset: number): number {
    const starts = this.#chunkStarts;
    let low = 0;
    let high = starts.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (starts[middle]! <= offset) low = middle;
      else high = middle - 1;
    }
    return low;
  }

  #fail(error: unknown): void {
    if (this.#file) void this.sink.discardTemp(this.#file.path);
    this.#error =
      error instanceof GatewayError ? error : new BadGatewayError('Download failed', { cause: error });
    this.#state = 'failed';
    this.#rejectHead(this.#error);
    this.#signal();
    void this.#closeFileIfIdle();
  }

  async #closeFileIfIdle(): Promise<void> {
    if (this.#state === 'running' || this.#readers > 0 || !this.#file) return;
    const file = this.#file;
    this.#file = undefined;
    await file.handle.close().catch(() => {});
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
