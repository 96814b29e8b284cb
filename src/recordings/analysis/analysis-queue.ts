/** A task taken by the queue: its result, and a way to move it ahead while it still waits. */
export interface QueuedTask<T> {
  readonly result: Promise<T>;
  /** Moves the task ahead of its account's background tasks (a request now waits for it); nothing once it runs. */
  promote(): void;
}

interface Waiting {
  start: () => void;
  reject: (error: unknown) => void;
  urgent: boolean;
}

/** One account's share of the queue; kept while it has tasks waiting or running. */
interface Account {
  urgent: Waiting[];
  background: Waiting[];
  running: number;
  /** When it last started a task, counted in starts; 0 for an account that just arrived. */
  lastTurn: number;
}

/** Why a task that was still waiting never ran. */
export class QueueClosedError extends Error {
  override readonly name = 'QueueClosedError';
}

/**
 * Runs at most `concurrency` tasks at a time. Urgent tasks (a request waits
 * for them) go before background ones; background ones beyond `maxWaiting`
 * (all accounts together) are refused, since each only saves a later request
 * some waiting.
 *
 * Tasks are shared fairly between accounts (upstream accounts: the cache
 * namespaces), as download slots are: each account's tasks run in the order
 * they came, and the next to start is the one of the account running the
 * fewest, ties going to the account least recently served. So a task waits
 * for about one task of each other account with work waiting, not for the
 * whole backlog one account has queued (README, "Recording facts and waveforms").
 */
export class AnalysisQueue {
  readonly #accounts = new Map<string, Account>();
  readonly #running = new Set<Promise<unknown>>();
  #waiting = 0;
  #turns = 0;
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
    return this.#waiting;
  }

  /**
   * Queues `task` for `account`; undefined when a background task finds the
   * queue full. The result rejects with QueueClosedError when the queue
   * closes first.
   */
  add<T>(task: () => Promise<T>, urgent: boolean, account: string): QueuedTask<T> | undefined {
    if (this.#closed) return { result: Promise.reject(new QueueClosedError('analysis queue closed')), promote() {} };
    if (!urgent && this.#waiting >= this.maxWaiting) return undefined;
    let settle!: { resolve: (value: T) => void; reject: (error: unknown) => void };
    const result = new Promise<T>((resolve, reject) => {
      settle = { resolve, reject };
    });
    const owner = this.#account(account);
    const waiting: Waiting = {
      urgent,
      reject: settle.reject,
      start: () => {
        owner.running++;
        const running = Promise.resolve().then(task).then(settle.resolve, settle.reject);
        this.#running.add(running);
        void running.finally(() => {
          this.#running.delete(running);
          owner.running--;
          this.#forget(account, owner);
          this.#next();
        });
      },
    };
    (urgent ? owner.urgent : owner.background).push(waiting);
    this.#waiting++;
    this.#next();
    return {
      result,
      promote: () => {
        const at = owner.background.indexOf(waiting);
        if (at === -1) return;
        owner.background.splice(at, 1);
        waiting.urgent = true;
        owner.urgent.push(waiting);
      },
    };
  }

  /** Refuses new tasks, drops the waiting ones (they reject), and resolves once the running ones are done. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const [name, account] of this.#accounts) {
      for (const waiting of [...account.urgent.splice(0), ...account.background.splice(0)]) {
        waiting.reject(new QueueClosedError('analysis queue closed'));
      }
      this.#forget(name, account);
    }
    this.#waiting = 0;
    await Promise.allSettled([...this.#running]);
  }

  #account(name: string): Account {
    let account = this.#accounts.get(name);
    if (!account) {
      account = { urgent: [], background: [], running: 0, lastTurn: 0 };
      this.#accounts.set(name, account);
    }
    return account;
  }

  /** Drops an account once nothing of it waits or runs, so the map holds only accounts with work. */
  #forget(name: string, account: Account): void {
    if (account.running === 0 && account.urgent.length + account.background.length === 0) this.#accounts.delete(name);
  }

  #next(): void {
    while (this.#running.size < this.concurrency && this.#waiting > 0) {
      const account = this.#chosen('urgent') ?? this.#chosen('background')!;
      const waiting = (account.urgent.length > 0 ? account.urgent : account.background).shift()!;
      this.#waiting--;
      account.lastTurn = ++this.#turns;
      waiting.start();
    }
  }

  /**
   * The account whose `kind` task goes next: running the fewest, then least
   * recently served. A scan of the accounts with work, which the config bounds.
   */
  #chosen(kind: 'urgent' | 'background'): Account | undefined {
    let chosen: Account | undefined;
    for (const account of this.#accounts.values()) {
      if (account[kind].length === 0) continue;
      if (!chosen || account.running < chosen.running || (account.running === chosen.running && account.lastTurn < chosen.lastTurn)) {
        chosen = account;
      }
    }
    return chosen;
  }
}
