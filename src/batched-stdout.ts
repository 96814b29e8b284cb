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
 * (issue 11, measured on the `bytes=0-1` probe).
 *
 * A reader that stops reading (a stalled log shipper) never stops the
 * gateway: on a non-blocking pipe (what Node makes of a pipe on stdout) what
 * it does not take waits in memory, up to `maxWaitingBytes`; lines past that
 * are dropped, and a warning line says how many where they are missing.
 */
export class BatchedStdout {
  #pending = '';
  /** Batches the reader has not taken yet, oldest first (as bytes: a long string of lines costs several times its size). */
  readonly #waiting: Buffer[] = [];
  #waitingBytes = 0;
  #dropped = 0;
  #retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly fd: number,
    private readonly batchBytes: number,
    private readonly maxWaitingBytes = MAX_WAITING_BYTES,
  ) {}

  write(line: string): boolean {
    if (this.#waitingBytes + this.#pending.length + line.length > this.maxWaitingBytes) {
      this.#dropped++;
      return true;
    }
    if (this.#dropped > 0) {
      this.#pending += droppedLinesNote(this.#dropped);
      this.#dropped = 0;
    }
    this.#pending += line;
    if (this.#pending.length >= this.batchBytes) this.flush();
    return true;
  }

  /** Writes what has gathered, as far as the reader takes it; `done` is for pino's `logger.flush(cb)`. */
  flush(done?: () => void): void {
    if (this.#pending !== '') {
      const batch = Buffer.from(this.#pending);
      this.#pending = '';
      this.#waiting.push(batch);
      this.#waitingBytes += batch.length;
    }
    this.#writeWaiting();
    if (this.#waiting.length > 0 && this.#retry === undefined) {
      this.#retry = setTimeout(() => {
        this.#retry = undefined;
        this.flush();
      }, RETRY_MS).unref();
    }
    done?.();
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
