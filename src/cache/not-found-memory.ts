import { LRUCache } from 'lru-cache';
import type { Clock } from '../clock.js';

/** The most 404s one process keeps in memory. */
export const MAX_REMEMBERED = 10_000;

/** Where upstream 404s are remembered: this process's memory, or the cluster's Redis. */
export interface NotFoundStore {
  /** Synchronous in memory; a promise when shared, settled once every replica can see it. */
  remember(key: string): void | Promise<void>;
  /** Synchronous in memory; a promise when shared. */
  has(key: string): boolean | Promise<boolean>;
  forget(key: string): void;
  /** The keys this process remembers (in a cluster, those remembered while Redis was out). */
  keys(): string[];
}

/**
 * Remembers upstream 404s for a while (cache.not_found_ttl_seconds) so a
 * player retrying a missing recording does not hammer Flyflow. Expiry uses the
 * injected clock, so tests can move time.
 */
export class NotFoundMemory implements NotFoundStore {
  readonly #until = new LRUCache<string, number>({ max: MAX_REMEMBERED });

  constructor(
    private readonly ttlMs: number,
    private readonly clock: Clock,
  ) {}

  remember(key: string): void {
    if (this.ttlMs > 0) this.#until.set(key, this.clock.now() + this.ttlMs);
  }

  has(key: string): boolean {
    const until = this.#until.get(key);
    if (until === undefined) return false;
    if (this.clock.now() < until) return true;
    this.#until.delete(key);
    return false;
  }

  forget(key: string): void {
    this.#until.delete(key);
  }

  /** The keys remembered now (some perhaps past their time), for a purge of a whole namespace. */
  keys(): string[] {
    return [...this.#until.keys()];
  }
}
