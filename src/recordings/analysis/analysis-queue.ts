/** A task taken by the queue: its result, and a way to move it ahead while it still waits. */
export interface QueuedTask<T> {
  readonly result: Promise<T>;
  /** Moves the task to the front of the queue (a request now waits for it); nothing once it runs. */
  promote(): void;
}

interface Waiting {
  start: () => void;
  reject: (error: unknown) => void;
  urgent: boolean;
}

/** Why a task that was still waiting never ran. */
export class QueueClosedError extends Error {
  override readonly name = 'QueueClosedError';
}

/**
 * Runs at most `concurrency` tasks at a time. Urgent tasks (a request waits
 * for them) go before background ones; background ones beyond `maxWaiting`
 * are refused, since each only saves a later request some waiting.
 */
export class AnalysisQueue {
  readonly #waiting: Waiting[] = [];
  readonly #running = new Set<Promise<unknown>>();
  #closed = false;

  constructor(
    private readonly concurrency: number,
    private readonly maxWaiting: number,
  ) {
    if (!Number.isInteger(concurrency) || concurrency < 1)
      throw new RangeError(`analysis queue: concurrency must be >= 1, got ${concurrency}`);
  }

  get running(): number {
    return this.#running.size;
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Queues `task`; undefined when a background task finds the queue full.
   * The result rejects with QueueClosedError when the queue closes first.
   */
  add<T>(task: () => Promise<T>, urgent: boolean): QueuedTask<T> | undefined {
    if (this.#closed) return { result: Promise.reject(new QueueClosedError('analysis queue closed')), promote() {} };
    if (!urgent && this.#waiting.length >= this.maxWaiting) return undefined;
    let settle!: { resolve: (value: T) => void; reject: (error: unknown) => void };
    const result = new Promise<T>((resolve, reject) => {
      settle = { resolve, reject };
    });
    const waiting: Waiting = {
      urgent,
      reject: settle.reject,
      start: () => {
        const running = Promise.resolve().then(task).then(settle.resolve, settle.reject);
        this.#running.add(running);
        void running.finally(() => {
          this.#running.delete(running);
          this.#next();
        });
      },
    };
    this.#enqueue(waiting);
    this.#next();
    return {
      result,
      promote: () => {
        const at = this.#waiting.indexOf(waiting);
        if (at === -1 || waiting.urgent) return;
        this.#waiting.splice(at, 1);
        waiting.urgent = true;
        this.#enqueue(waiting);
      },
    };
  }

  /** Refuses new tasks, drops the waiting ones (they reject), and resolves once the running ones are done. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const waiting of this.#waiting.splice(0)) waiting.reject(new QueueClosedError('analysis queue closed'));
    await Promise.allSettled([...this.#running]);
  }

  /** Urgent tasks after the urgent ones already waiting, before every background one. */
  #enqueue(waiting: Waiting): void {
    if (!waiting.urgent) {
      this.#waiting.push(waiting);
      return;
    }
    const firstBackground = this.#waiting.findIndex((other) => !other.urgent);
    this.#waiting.splice(firstBackground === -1 ? this.#waiting.length : firstBackground, 0, waiting);
  }

  #next(): void {
    while (this.#running.size < this.concurrency && this.#waiting.length > 0) this.#waiting.shift()!.start();
  }
}
