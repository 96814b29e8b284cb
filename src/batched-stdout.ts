import { writeSync } from 'node:fs';

/** Lines a reader that stopped reading may leave waiting in memory before newer ones are dropped. */
const MAX_WAITING_BYTES = 8 * 1024 * 1024;
/** How soon bytes a full pipe did not take are offered again. */
const RETRY_MS = 10;

/**
 * A log destination written as nginx writes a buffered access log: lines
 * gather in memory and go out in one synchronous write once `batchBytes`
 * have gathered or {@link flush} is called. Against sonic-boom's
 * asynchronous 4 KiB writes it took a memory hit's CPU from ~47 to ~41 µs
 * (issue 11, measured on the `bytes=0-1` probe). Each line is encoded into
 * one reused buffer as it comes: joining the lines into a string and encoding
 * that per batch cost ~600 ns a line, this ~80.
 *
 * A reader that stops reading (a stalled log shipper) never stops the
 * gateway: on a non-blocking pipe (what Node makes of a pipe on stdout) what
 * it does not take waits in memory, up to `maxWaitingBytes`; lines past that
 * are dropped, and a warning line says how many where they are missing.
 */
export class BatchedStdout {
  /** The lines gathered since the last write, encoded; reused for every batch. */
  readonly #batch: Buffer;
  #used = 0;
  /** Bytes the reader has not taken yet, oldest first: copies, since the batch buffer is reused. */
  readonly #waiting: Buffer[] = [];
  #waitingBytes = 0;
  #dropped = 0;
  #retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly fd: number,
    private readonly batchBytes: number,
    private readonly maxWaitingBytes = MAX_WAITING_BYTES,
  ) {
    this.#batch = Buffer.allocUnsafe(batchBytes);
  }

  write(line: string): boolean {
    return this.#write(line, false);
  }

  /**
   * The same for a line its writer knows to be ASCII: encoded as Latin-1,
   * which copies it as it is, where UTF-8 would first make a pieced-together
   * string flat.
   */
  writeAscii(line: string): boolean {
    return this.#write(line, true);
  }

  #write(line: string, ascii: boolean): boolean {
    if (this.#waitingBytes + this.#used + line.length > this.maxWaitingBytes) {
      this.#dropped++;
      return true;
    }
    if (this.#dropped > 0) {
      this.#append(droppedLinesNote(this.#dropped), false);
      this.#dropped = 0;
    }
    this.#append(line, ascii);
    if (this.#used >= this.batchBytes) this.flush();
    return true;
  }

  /** Writes what has gathered, as far as the reader takes it; `done` is for pino's `logger.flush(cb)`. */
  flush(done?: () => void): void {
    this.#takeBatch();
    this.#writeWaiting();
    if (this.#waiting.length > 0 && this.#retry === undefined) {
      this.#retry = setTimeout(() => {
        this.#retry = undefined;
        this.flush();
      }, RETRY_MS).unref();
    }
    done?.();
  }

  #append(text: string, ascii: boolean): void {
    // UTF-8 takes at most 3 bytes for each UTF-16 code unit.
    const atMost = ascii ? text.length : text.length * 3;
    const encoding = ascii ? 'latin1' : 'utf8';
    if (this.#used + atMost > this.#batch.length) {
      this.flush();
      if (atMost > this.#batch.length) {
        this.#enqueue(Buffer.from(text, encoding));
        this.flush();
        return;
      }
    }
    this.#used += this.#batch.write(text, this.#used, encoding);
  }

  /** Moves the gathered lines out of the batch buffer: written at once when nothing waits before them. */
  #takeBatch(): void {
    if (this.#used === 0) return;
    const batch = this.#batch.subarray(0, this.#used);
    this.#used = 0;
    if (this.#waiting.length > 0) {
      this.#enqueue(Buffer.from(batch));
      return;
    }
    const rest = writeWhatFits(this.fd, batch);
    if (rest !== undefined) this.#enqueue(Buffer.from(rest));
  }

  #enqueue(bytes: Buffer): void {
    this.#waiting.push(bytes);
    this.#waitingBytes += bytes.length;
  }

  #writeWaiting(): void {
    while (this.#waiting.length > 0) {
      const batch = this.#waiting[0]!;
      const rest = writeWhatFits(this.fd, batch);
      this.#waitingBytes -= batch.length - (rest?.length ?? 0);
      if (rest !== undefined) {
        this.#waiting[0] = rest;
        return;
      }
      this.#waiting.shift();
    }
  }
}

/** pino's shape at `warn`, so that log readers see the gap. */
function droppedLinesNote(dropped: number): string {
  return `{"level":40,"time":${Date.now()},"dropped_lines":${dropped},"msg":"log lines dropped: stdout was not being read"}\n`;
}

/**
 * Writes `bytes` and returns what a full non-blocking pipe did not take, or
 * undefined once all is written. A descriptor that fails otherwise (closed,
 * EPIPE, a full disk) has nowhere to say so: its bytes are dropped.
 */
function writeWhatFits(fd: number, bytes: Buffer): Buffer | undefined {
  let offset = 0;
  while (offset < bytes.length) {
    try {
      offset += writeSync(fd, bytes, offset);
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'EAGAIN' ? bytes.subarray(offset) : undefined;
    }
  }
  return undefined;
}
