/**
 * A cap on concurrent upstream downloads. Callers beyond it wait in the order
 * they came (FIFO), each holding its slot until its download ends.
 */
export class DownloadSlots {
  #free: number;
  readonly #waiting: Array<() => void> = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`download slots: limit must be a positive integer, got ${limit}`);
    this.#free = limit;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  get active(): number {
    return this.limit - this.#free;
  }

  /** Resolves with a release function once a slot is free. */
  async acquire(): Promise<() => void> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    };
  }
}
