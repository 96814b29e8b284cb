import { LRUCache } from 'lru-cache';
import type { RedisLink } from './redis-link.js';

/**
 * Writes Redis missed while it was out (a call failed), kept in a bounded,
 * expiring memory and sent once the link is back. An entry leaves only when
 * its send succeeded, so a failed one waits for the next time the link comes
 * back; one whose `ttlMs` ran out no longer matters to Redis and is dropped.
 */
export class MissedByRedis<V extends {}> {
  readonly #missed: LRUCache<string, V>;

  /**
   * @param send writes a batch of at most `batch` entries to Redis (through the link).
   */
  constructor(
    link: Pick<RedisLink, 'onUp'>,
    options: { max: number; ttlMs: number; batch?: number },
    private readonly send: (entries: Array<[string, V]>) => Promise<void>,
  ) {
    this.#missed = new LRUCache<string, V>({ max: options.max, ttl: options.ttlMs });
    const batch = options.batch ?? Number.POSITIVE_INFINITY;
    link.onUp(() => void this.#sendAll(batch).catch(() => {}));
  }

  add(key: string, value: V): void {
    this.#missed.set(key, value);
  }

  has(key: string): boolean {
    return this.#missed.has(key);
  }

  delete(key: string): void {
    this.#missed.delete(key);
  }

  async #sendAll(batch: number): Promise<void> {
    const entries = [...this.#missed.entries()];
    for (let i = 0; i < entries.length; i += batch) {
      const part = entries.slice(i, i + batch);
      await this.send(part);
      for (const [key] of part) this.#missed.delete(key);
    }
  }
}
