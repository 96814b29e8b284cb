import { GatewayTimeoutError } from '../errors.js';

/** Gives a slot back; calling it again does nothing. */
export type ReleaseSlot = () => void;

interface Waiter {
  grant: (release: ReleaseSlot) => void;
  /** Set when the waiter's signal aborted; it is skipped when its turn comes. */
  gone: boolean;
}

interface Account {
  /** Slots this account holds now. */
  held: number;
  /** FIFO of waiters from `head` on; leavers stay in place, marked `gone`, so leaving costs O(1). */
  queue: Waiter[];
  head: number;
  /** Waiters in the queue that have not left. */
  waiting: number;
}

/** Served waiters kept at the front of a queue before it is copied down. */
const COMPACT_AFTER = 1024;

/**
 * A cap on concurrent upstream downloads, shared fairly between upstream
 * accounts (README, "Upstream trouble": one account's traffic never holds
 * another back beyond its fair share).
 *
 * Slots are held for a whole download, however slow, so fairness in the queue
 * alone is not enough: one account could hold every slot for minutes, and a
 * slot it holds is never taken back. So each configured account has a fair
 * share, the limit divided evenly between them (at least one), and what it
 * holds below its share stays reserved for it: an account below its share may
 * take any free slot, any other only a slot beyond the reserves, and
 * otherwise waits, within its own timeout, even while slots are free. A lone
 * account may still use every slot; with more accounts than slots, each
 * holds at most one. Accounts not in the configured list get no reserve and
 * share what lies beyond the reserves.
 *
 * Each account has its own FIFO queue. A freed slot goes to the waiting
 * account, among those the reserves allow, that holds the fewest slots, ties
 * going to the one that has waited longest for a turn. A waiter whose signal
 * aborts leaves its queue at once and never takes a slot.
 */
export class DownloadSlots {
  #free: number;
  #queued = 0;
  readonly #accounts = new Map<string, Account>();
  /** Accounts with waiters, in the order they last got a turn (least recent first). */
  readonly #turns = new Set<string>();
  readonly #configured: ReadonlySet<string>;
  /** Each configured account's fair share of the slots. */
  readonly #share: number;
  /** Slots kept free for configured accounts below their share: what they hold short of it, all together. */
  #reserved: number;

  /**
   * @param accounts the upstream accounts in the config (tenants' namespaces;
   *   repeats count once). None: no reserves, any account may take any slot.
   */
  constructor(
    readonly limit: number,
    accounts: Iterable<string> = [],
  ) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`download slots: limit must be a positive integer, got ${limit}`);
    this.#free = limit;
    this.#configured = new Set(accounts);
    this.#share = Math.max(1, Math.floor(limit / Math.max(1, this.#configured.size)));
    this.#reserved = this.#share * this.#configured.size;
  }

  /** Callers waiting for a slot, all accounts together. */
  get queued(): number {
    return this.#queued;
  }

  get active(): number {
    return this.limit - this.#free;
  }

  /** Slots held and callers waiting for one account. */
  usage(account: string): { active: number; queued: number } {
    const entry = this.#accounts.get(account);
    return { active: entry?.held ?? 0, queued: entry?.waiting ?? 0 };
  }

  /**
   * Resolves with a release function once a slot is free for `account`.
   * @param signal ends the wait: the promise then rejects with a 504
   *   GatewayTimeoutError (the wait counts against `upstream.timeout_ms`) and
   *   the caller is out of the queue.
   */
  acquire(account: string, signal?: AbortSignal): Promise<ReleaseSlot> {
    if (signal?.aborted) return Promise.reject(slotTimeout(signal));
    const entry = this.#account(account);
    const free = this.#takeIfFree(account, entry);
    if (free) return Promise.resolve(free);
    return new Promise<ReleaseSlot>((resolve, reject) => {
      const onAbort = () => {
        waiter.gone = true;
        entry.waiting--;
        this.#queued--;
        if (entry.waiting === 0) {
          this.#turns.delete(account);
          entry.queue = [];
          entry.head = 0;
        }
        this.#forget(account);
        reject(slotTimeout(signal));
      };
      const waiter: Waiter = {
        gone: false,
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      entry.queue.push(waiter);
      entry.waiting++;
      this.#queued++;
      this.#turns.add(account);
    });
  }

  /** A slot for `account` if one is free for it now and none of its callers waits before it; else undefined, and nothing changes. */
  take(account: string): ReleaseSlot | undefined {
    const free = this.#takeIfFree(account, this.#account(account));
    if (!free) this.#forget(account);
    return free;
  }

  #takeIfFree(account: string, entry: Account): ReleaseSlot | undefined {
    if (entry.waiting > 0 || !this.#mayTake(account, entry)) return undefined;
    this.#take(account, entry);
    return this.#releaser(account);
  }

  #account(name: string): Account {
    let entry = this.#accounts.get(name);
    if (!entry) {
      entry = { held: 0, queue: [], head: 0, waiting: 0 };
      this.#accounts.set(name, entry);
    }
    return entry;
  }

  /** Drops an account's bookkeeping once it holds and awaits nothing, so the map stays small. */
  #forget(name: string): void {
    const entry = this.#accounts.get(name);
    if (entry && entry.held === 0 && entry.waiting === 0) this.#accounts.delete(name);
  }

  /**
   * Whether `account` may take a free slot now. A configured one below its
   * share always may, since that slot is reserved for it; otherwise the slots
   * reserved for the accounts below their share must stay free.
   */
  #mayTake(account: string, entry: Account): boolean {
    if (this.#free === 0) return false;
    if (this.#belowShare(account, entry.held)) return true;
    return this.#free - 1 >= this.#reserved;
  }

  #belowShare(account: string, held: number): boolean {
    return held < this.#share && this.#configured.has(account);
  }

  #take(account: string, entry: Account): void {
    this.#free--;
    if (this.#belowShare(account, entry.held++)) this.#reserved--;
  }

  #releaser(account: string): ReleaseSlot {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const entry = this.#accounts.get(account)!;
      if (this.#belowShare(account, --entry.held)) this.#reserved++;
      this.#forget(account);
      this.#free++;
      this.#handOut();
    };
  }

  /** Gives free slots to the waiting accounts the reserves allow, holding the fewest, least recently served first. */
  #handOut(): void {
    while (this.#free > 0 && this.#queued > 0) {
      let chosen: string | undefined;
      let fewest = Infinity;
      // #turns holds only accounts with waiters, so this loop is bounded by the
      // number of upstream accounts (from the config), not by the queue length.
      for (const name of this.#turns) {
        const candidate = this.#accounts.get(name)!;
        if (candidate.held < fewest && this.#mayTake(name, candidate)) {
          fewest = candidate.held;
          chosen = name;
        }
      }
      // Everyone waiting is at its share: the free slots stay reserved.
      if (chosen === undefined) return;
      const entry = this.#accounts.get(chosen)!;
      let waiter = entry.queue[entry.head++]!;
      while (waiter.gone) waiter = entry.queue[entry.head++]!;
      entry.waiting--;
      this.#queued--;
      this.#turns.delete(chosen);
      if (entry.waiting > 0) {
        this.#turns.add(chosen);
        if (entry.head > COMPACT_AFTER && entry.head * 2 > entry.queue.length) {
          entry.queue = entry.queue.slice(entry.head);
          entry.head = 0;
        }
      } else {
        entry.queue = [];
        entry.head = 0;
      }
      this.#take(chosen, entry);
      waiter.grant(this.#releaser(chosen));
    }
  }
}

function slotTimeout(signal: AbortSignal | undefined): GatewayTimeoutError {
  return new GatewayTimeoutError('Upstream timed out: no download slot came free in time', { cause: signal?.reason });
}
