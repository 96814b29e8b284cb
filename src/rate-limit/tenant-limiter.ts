import { TooManyRequestsError } from '../errors.js';
import type { RateLimitDecision, RateLimitStore } from './rate-limit-store.js';

/** A tenant's limit is per minute (`rate_limit_per_minute`); its burst is one minute's worth. */
export const RATE_LIMIT_WINDOW_MS = 60_000;

/**
 * The response headers of draft-ietf-httpapi-ratelimit-headers (the `RateLimit-Limit`,
 * `-Remaining`, `-Reset` form): integers, `Reset` in seconds until the bucket is full, rounded up.
 */
export type RateLimitHeaders = Readonly<{
  'RateLimit-Limit': string;
  'RateLimit-Remaining': string;
  'RateLimit-Reset': string;
}>;

/** What the limiter needs of a tenant (an authenticated `Tenant` fits). */
export interface RateLimitedTenant {
  readonly id: string;
  /** Requests per minute; `undefined` means no limit. */
  readonly rateLimitPerMinute: number | undefined;
}

export interface TenantRateLimiterOptions {
  /** The counters: `createMemoryRateLimitStore` by default, a shared store across replicas. The store owns time. */
  store: RateLimitStore;
  /**
   * Called when the store fails (a shared store out of reach). The request is then let through
   * without rate-limit headers, as a failing cache tier is bypassed rather than answered 500.
   * Without it, the store's error propagates.
   */
  onStoreError?: (error: unknown, tenantId: string) => void;
}

export interface TenantRateLimiter {
  /**
   * Counts one request for `tenant`. Answers `undefined` when the tenant has no limit, otherwise
   * the headers to add to the response; throws (or rejects with) `TooManyRequestsError` — 429 with
   * `Retry-After` and the same headers — when the tenant is over its limit. Synchronous with the
   * memory store, a promise with a shared one; `await` handles both.
   */
  check(tenant: RateLimitedTenant): Promise<RateLimitHeaders | undefined> | RateLimitHeaders | undefined;
}

/**
 * Per-tenant rate limiting: a token bucket of `rateLimitPerMinute` tokens refilling continuously,
 * so a tenant may spend its minute's worth at once and then gets one request per 60/limit seconds.
 */
export function createTenantRateLimiter(options: TenantRateLimiterOptions): TenantRateLimiter {
  const { store, onStoreError } = options;
  if (typeof store?.take !== 'function') {
    throw new TypeError('createTenantRateLimiter: options.store must have a take(key, capacity, windowMs) method');
  }

  function storeFailed(error: unknown, tenantId: string): undefined {
    if (onStoreError === undefined) throw error;
    onStoreError(error, tenantId);
    return undefined;
  }

  // One string per tenant, made once: its hash is then computed once, not for a new string per request.
  const storeKeys = new Map<string, string>();
  function storeKeyOf(tenantId: string): string {
    let key = storeKeys.get(tenantId);
    if (key === undefined) {
      key = `tenant:${tenantId}`;
      storeKeys.set(tenantId, key);
    }
    return key;
  }

  return {
    check: function checkTenantRateLimit(tenant) {
      const limit = tenant.rateLimitPerMinute;
      if (limit === undefined) return undefined;
      let decision: RateLimitDecision | Promise<RateLimitDecision>;
      try {
        decision = store.take(storeKeyOf(tenant.id), limit, RATE_LIMIT_WINDOW_MS);
      } catch (error) {
        return storeFailed(error, tenant.id);
      }
      if (isPromiseLike(decision)) {
        return Promise.resolve(decision).then(
          (settled) => headersOrThrow(settled, limit),
          (error: unknown) => storeFailed(error, tenant.id),
        );
      }
      return headersOrThrow(decision, limit);
    },
  };
}

function headersOrThrow(decision: RateLimitDecision, limit: number): RateLimitHeaders {
  const headers: RateLimitHeaders = {
    'RateLimit-Limit': String(limit),
    'RateLimit-Remaining': String(Math.max(0, decision.remaining)),
    'RateLimit-Reset': String(Math.ceil(decision.resetMs / 1000)),
  };
  // RFC 9110 §10.2.3: delay-seconds is an integer; 0 would invite an immediate, refused retry.
  if (!decision.allowed) throw new TooManyRequestsError(Math.max(1, Math.ceil(decision.retryAfterMs / 1000)), headers);
  return headers;
}

function isPromiseLike<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as PromiseLike<T> | null)?.then === 'function';
}
