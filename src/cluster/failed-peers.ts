import { type Clock, systemClock } from '../clock.js';

export interface FailedPeersOptions {
  /** How long a peer stays passed over for a recording after its answer failed. */
  ttlMs: number;
  /** The most (recording, peer) pairs kept; the oldest go first. */
  maxEntries: number;
  clock?: Clock;
}

/**
 * The peers whose answer for a recording failed its proof or broke off, per
 * recording, for a while: this replica passes them over for that recording
 * and goes to the next source (in the end the upstream) instead of meeting
 * the same failure on every request. Kept here, not in Redis: the fault may
 * lie on the path between the two replicas, not in the holder's copy, which
 * the other replicas may still read whole. Bounded in time and in size.
 */
export class FailedPeers {
  /** `<recording key> <peer url>` → until when it is passed over, oldest first. */
  readonly #until = new Map<string, number>();
  readonly #clock: Clock;

  constructor(private readonly options: FailedPeersOptions) {
    this.#clock = options.clock ?? systemClock;
  }

  remember(key: string, peer: string): void {
    const entry = `${key} ${peer}`;
    this.#until.delete(entry);
    this.#until.set(entry, this.#clock.now() + this.options.ttlMs);
    for (const oldest of this.#until.keys()) {
      if (this.#until.size <= this.options.maxEntries) break;
      this.#until.delete(oldest);
    }
  }

  /** True while `peer`'s answer for `key` is to be passed over. */
  failed(key: string, peer: string): boolean {
    const entry = `${key} ${peer}`;
    const until = this.#until.get(entry);
    if (until === undefined) return false;
    if (until > this.#clock.now()) return true;
    this.#until.delete(entry);
    return false;
  }

  /** Pairs held now (expired ones included until they are looked up or pushed out). */
  get size(): number {
    return this.#until.size;
  }
}
