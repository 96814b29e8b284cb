/**
 * Fakes for the unit tests of `src/download/`: a temporary file held in
 * memory (that can run out of room like a full disk), a sink that hands them
 * out, and an upstream body the test feeds chunk by chunk.
 */
import type { TempFile } from '../../src/cache/temp-file.js';
import type { DownloadSink } from '../../src/download/recording-download.js';
import type { UpstreamRecording } from '../../src/upstream/flyflow-client.js';

function diskError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** A TempFile in memory that records what its owner did to it. */
export class MemoryTempFile implements TempFile {
  bytes = Buffer.alloc(0);
  state: 'writing' | 'committed' | 'discarded' = 'writing';
  closed = false;
  syncs = 0;
  committedTo: string | undefined;
  #writesHeld: Promise<void> | undefined;

  /** `capacity`: bytes the "disk" takes before it answers ENOSPC. */
  constructor(
    readonly path: string,
    private readonly capacity = Number.POSITIVE_INFINITY,
  ) {}

  /** Writes wait, as on a slow disk, until the returned function is called. */
  holdWrites(): () => void {
    let release!: () => void;
    this.#writesHeld = new Promise((resolve) => (release = resolve));
    return () => {
      this.#writesHeld = undefined;
      release();
    };
  }

  async write(chunk: Uint8Array, position: number): Promise<number> {
    if (this.#writesHeld) await this.#writesHeld;
    if (this.closed) throw diskError('EBADF', 'file closed');
    const taken = Math.max(0, Math.min(chunk.length, this.capacity - position));
    if (taken === 0) throw diskError('ENOSPC', 'no space left on device');
    if (position + taken > this.bytes.length) {
      const grown = Buffer.alloc(position + taken);
      this.bytes.copy(grown);
      this.bytes = grown;
    }
    Buffer.from(chunk.buffer, chunk.byteOffset, taken).copy(this.bytes, position);
    return taken;
  }

  async read(buffer: Uint8Array, position: number): Promise<number> {
    if (this.closed) throw diskError('EBADF', 'file closed');
    const slice = this.bytes.subarray(position, position + buffer.length);
    Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength).set(slice);
    return slice.length;
  }

  async sync(): Promise<void> {
    this.syncs++;
  }

  async commit(finalPath: string): Promise<void> {
    if (this.state !== 'writing') throw new Error(`cannot commit a ${this.state} file`);
    this.state = 'committed';
    this.committedTo = finalPath;
  }

  async discard(): Promise<void> {
    if (this.state !== 'committed') this.state = 'discarded';
  }

  async close(): Promise<void> {
    await this.discard();
    this.closed = true;
  }
}

export interface FakeSink extends DownloadSink {
  readonly files: MemoryTempFile[];
  readonly diskErrors: unknown[];
}

/** A sink whose files live in memory; `unwritable` makes every createTemp fail, `capacity` fills each file's disk. */
export function fakeSink(options: { memoryEntryMaxBytes?: number; capacity?: number; unwritable?: boolean } = {}): FakeSink {
  const files: MemoryTempFile[] = [];
  const diskErrors: unknown[] = [];
  return {
    files,
    diskErrors,
    memoryEntryMaxBytes: options.memoryEntryMaxBytes ?? 1024 * 1024,
    async createTemp() {
      if (options.unwritable) throw diskError('EACCES', 'permission denied');
      const file = new MemoryTempFile(`tmp/${files.length + 1}.part`, options.capacity);
      files.push(file);
      return file;
    },
    onDiskError(error) {
      diskErrors.push(error);
    },
  };
}

/** An upstream body the test pushes chunk by chunk, then ends or breaks. */
export class ManualUpstream implements UpstreamRecording {
  readonly contentType = 'audio/mpeg';
  readonly lastModified = 'Wed, 01 Jan 2025 00:00:00 GMT';
  cancelled = false;
  readonly #queue: Array<Uint8Array | Error | null> = [];
  #wake: (() => void) | undefined;

  constructor(readonly contentLength: number | undefined) {}

  push(chunk: Uint8Array): void {
    this.#put(chunk);
  }

  end(): void {
    this.#put(null);
  }

  fail(error: Error): void {
    this.#put(error);
  }

  async *chunks(): AsyncIterable<Uint8Array> {
    for (;;) {
      while (this.#queue.length === 0) await new Promise<void>((resolve) => (this.#wake = resolve));
      const next = this.#queue.shift()!;
      if (next === null) return;
      if (next instanceof Error) throw next;
      yield next;
    }
  }

  cancel(): void {
    this.cancelled = true;
  }

  #put(item: Uint8Array | Error | null): void {
    this.#queue.push(item);
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** An upstream that sends `body` in `chunkBytes` pieces, breaking with `breakWith` after `breakAfter` bytes if given. */
export function upstreamOf(
  body: Buffer,
  options: { chunkBytes?: number; declareLength?: boolean; breakAfter?: number; breakWith?: Error } = {},
): ManualUpstream {
  const upstream = new ManualUpstream(options.declareLength === false ? undefined : body.length);
  const step = options.chunkBytes ?? 4096;
  const stop = options.breakAfter ?? body.length;
  for (let at = 0; at < stop; at += step) upstream.push(body.subarray(at, Math.min(stop, at + step)));
  if (options.breakAfter !== undefined) upstream.fail(options.breakWith ?? new Error('socket hang up'));
  else upstream.end();
  return upstream;
}

/** Reads a whole body through `readAt`, as a response stream does. */
export async function readAll(read: (offset: number, maxBytes: number) => Promise<Uint8Array | null>, maxBytes = 1000): Promise<Buffer> {
  const parts: Buffer[] = [];
  let offset = 0;
  for (;;) {
    const chunk = await read(offset, maxBytes);
    if (chunk === null) break;
    parts.push(Buffer.from(chunk));
    offset += chunk.length;
  }
  return Buffer.concat(parts);
}
