import type { Clock } from '../clock.js';
import type { RateLimitDecision, RateLimitStore } from './rate-limit-store.js';

/** Default bound on the buckets a memory store remembers. */
export const DEFAULT_RATE_LIMIT_MAX_KEYS = 10_000;

/** How many of the least recently used buckets an over-full store inspects for one it can drop for free. */
const SWEEP_LIMIT = 64;

const NAME = 'memory rate-limit store';

export interface MemoryRateLimitStoreOptions {
  /** Time source; tests pass a manual clock. */
  clock: Clock;
  /**
   * At most this many buckets are kept (default {@link DEFAULT_RATE_LIMIT_MAX_KEYS}). Over it, idle
   * buckets that have refilled are dropped first (a missing bucket *is* a full one, so nothing is
   * lost); if that is not enough, the least recently used bucket goes, which hands its key a full
   * bucket again.
   */
  maxKeys?: number;
}

export interface MemoryRateLimitStore extends RateLimitStore {
  /** Always synchronous: no I/O. */
  take(key: string, capacity: number, windowMs: number): RateLimitDecision;
  /** Buckets currently remembered. */
  readonly size: number;
}

interface Bucket {
  /**
   * Tokens scaled by `windowMs`: one token is `windowMs` units and the bucket refills `capacity`
   * units per ms. With an integer clock every step is integer arithmetic, so 7/min refills at
   * exactly 60000/7 ms per token with no float drift.
   */
  level: number;
  updatedAt: number;
  capacity: number;
  windowMs: number;
}

/**
 * A token bucket per key in a `Map`, bounded by `maxKeys`, with no timers and no I/O.
 *
 * Written here rather than taken from `rate-limiter-flexible`: a token bucket is a few lines, this
 * one answers synchronously (no promise, no I/O on the request path) and takes its time from the
 * injected clock, so tests move time instead of sleeping.
 */
export function createMemoryRateLimitStore(options: MemoryRateLimitStoreOptions): MemoryRateLimitStore {
  const { clock } = options;
  if (typeof clock?.now !== 'function') throw new TypeError(`${NAME}: options.clock must have a now() method`);
  const maxKeys = options.maxKeys ?? DEFAULT_RATE_LIMIT_MAX_KEYS;
  if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) {
    throw new RangeError(`${NAME}: options.maxKeys must be an integer from 1, got ${String(maxKeys)}`);
  }

  // Insertion order is recency: a key is deleted and re-set on every take, so the first entries are
  // the least recently used.
  const buckets = new Map<string, Bucket>();

  function evict(now: number): void {
    let looked = 0;
    for (const [key, bucket] of buckets) {
      if (buckets.size <= maxKeys || looked++ >= SWEEP_LIMIT) break;
      if (levelAt(bucket, now) >= bucket.capacity * bucket.windowMs) buckets.delete(key);
    }
    for (const key of buckets.keys()) {
      if (buckets.size <= maxKeys) break;
      buckets.delete(key);
    }
  }

  return {
    get size() {
      return buckets.size;
    },
    take(key, capacity, windowMs) {
      checkArgument('capacity', capacity);
      checkArgument('windowMs', windowMs);
      const full = capacity * windowMs;
      if (!Number.isSafeInteger(full)) {
        throw new RangeError(`${NAME}: capacity × windowMs must stay below 2^53, got ${capacity} × ${windowMs}`);
      }
      const now = clock.now();
      const previous = buckets.get(key);
      let level = full;
      let updatedAt = now;
      if (previous !== undefined) {
        buckets.delete(key);
        // Keep the tokens across a change of limit, in the new window's units, capped below.
        const scaled = previous.windowMs === windowMs ? previous.level : (previous.level / previous.windowMs) * windowMs;
        level = Math.min(full, scaled + Math.max(0, now - previous.updatedAt) * capacity);
        // A clock stepping back must not grant the same interval twice.
        updatedAt = Math.max(previous.updatedAt, now);
      }
      const allowed = level >= windowMs;
      if (allowed) level -= windowMs;
      buckets.set(key, { level, updatedAt, capacity, windowMs });
      if (previous === undefined && buckets.size > maxKeys) evict(now);
      return {
        allowed,
        remaining: Math.floor(level / windowMs),
        retryAfterMs: level >= windowMs ? 0 : Math.ceil((windowMs - level) / capacity),
        resetMs: Math.ceil((full - level) / capacity),
      };
    },
  };
}

function levelAt(bucket: Bucket, now: number): number {
  return bucket.level + Math.max(0, now - bucket.updatedAt) * bucket.capacity;
}

function checkArgument(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${NAME}: ${name} must be a positive integer, got ${String(value)}`);
  }
}
