/**
 * Where the rate limiter keeps its counters. The memory store is the embedded
 * default; a shared store (Redis) can take its place so that replicas share one
 * budget per tenant. Every store passes test/rate-limit-store.contract.ts.
 */
export interface RateLimitStore {
  /**
   * Takes one token for `key` from a bucket of `capacity` refilling at capacity per `windowMs`;
   * answers synchronously when it can (memory) or as a promise (a shared store).
   *
   * `capacity` and `windowMs` are positive integers; a store rejects anything else with a
   * `RangeError` naming the argument. A key seen with a new capacity or window keeps its tokens
   * (capped at the new capacity): changing a limit neither refills nor empties a bucket.
   */
  take(key: string, capacity: number, windowMs: number): RateLimitDecision | Promise<RateLimitDecision>;
}

export interface RateLimitDecision {
  /** Whether a token was taken. A refused take takes nothing, so hammering does not prolong the wait. */
  allowed: boolean;
  /** Whole tokens left after this take; never negative. */
  remaining: number;
  /** ms until one more token, i.e. until the next take would be allowed: 0 while `remaining > 0`. */
  retryAfterMs: number;
  /** ms until the bucket is full again */
  resetMs: number;
}
