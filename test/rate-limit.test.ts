import { describe, expect, it, vi } from 'vitest';
import { errorResponse, type GatewayError, TooManyRequestsError } from '../src/errors.js';
import {
  createMemoryRateLimitStore,
  createTenantRateLimiter,
  type RateLimitDecision,
  type RateLimitHeaders,
  type RateLimitStore,
  type TenantRateLimiter,
} from '../src/rate-limit/index.js';
import { manualClock } from '../dev/manual-clock.js';
import { describeRateLimitStoreContract } from './rate-limit-store.contract.js';

describeRateLimitStoreContract('memory', (clock) => createMemoryRateLimitStore({ clock }));

/** The same store behind promises, as a shared (Redis) store answers. */
function asyncStore(inner: RateLimitStore): RateLimitStore {
  return { take: async (key, capacity, windowMs) => await inner.take(key, capacity, windowMs) };
}

function setUp(options: { async?: boolean } = {}) {
  const clock = manualClock();
  const memory = createMemoryRateLimitStore({ clock });
  const limiter = createTenantRateLimiter({ store: options.async ? asyncStore(memory) : memory });
  return { clock, memory, limiter };
}

/** Runs `check` and answers the headers, or the 429 it threw. */
async function attempt(limiter: TenantRateLimiter, tenant: Parameters<TenantRateLimiter['check']>[0]) {
  try {
    return { headers: await limiter.check(tenant) };
  } catch (error) {
    if (error instanceof TooManyRequestsError) return { refused: error };
    throw error;
  }
}

const acme = { id: 'acme', rateLimitPerMinute: 60 };

describe('tenant rate limiter', () => {
  it('lets a tenant spend a full minute of requests at once, then answers 429', () => {
    const { limiter } = setUp();
    const tenant = { id: 'acme', rateLimitPerMinute: 600 };
    for (let i = 0; i < 600; i++) expect(() => limiter.check(tenant)).not.toThrow();
    let thrown: unknown;
    try {
      limiter.check(tenant);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(TooManyRequestsError);
    expect((thrown as GatewayError).status).toBe(429);
  });

  it('lets a limited tenant back in as tokens refill: 60 per minute is one more request each second', async () => {
    const { clock, limiter } = setUp();
    for (let i = 0; i < 60; i++) await attempt(limiter, acme);
    expect((await attempt(limiter, acme)).refused).toBeDefined();
    clock.advance(999);
    expect((await attempt(limiter, acme)).refused).toBeDefined();
    clock.advance(1);
    expect((await attempt(limiter, acme)).headers).toBeDefined();
    expect((await attempt(limiter, acme)).refused).toBeDefined();
  });

  it('tells a client the limit, what is left and when it is full again on every allowed response', () => {
    const { clock, limiter } = setUp();
    expect(limiter.check(acme)).toEqual({ 'RateLimit-Limit': '60', 'RateLimit-Remaining': '59', 'RateLimit-Reset': '1' });
    for (let i = 0; i < 9; i++) limiter.check(acme);
    expect(limiter.check(acme)).toEqual({ 'RateLimit-Limit': '60', 'RateLimit-Remaining': '49', 'RateLimit-Reset': '11' });
    clock.advance(10_500);
    // 49 + 10.5 tokens; one taken: 58.5 left (58 whole), 1.5 s until full, rounded up.
    expect(limiter.check(acme)).toEqual({ 'RateLimit-Limit': '60', 'RateLimit-Remaining': '58', 'RateLimit-Reset': '2' });
    clock.advance(3_600_000);
    expect(limiter.check(acme)).toEqual({ 'RateLimit-Limit': '60', 'RateLimit-Remaining': '59', 'RateLimit-Reset': '1' });
  });

  it('answers 429 as JSON with Retry-After and the rate-limit headers', async () => {
    const { limiter } = setUp();
    for (let i = 0; i < 60; i++) limiter.check(acme);
    const { refused } = await attempt(limiter, acme);
    expect(refused).toBeDefined();
    const response = errorResponse(refused!);
    expect(response.status).toBe(429);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(response.headers.get('retry-after')).toBe('1');
    expect(response.headers.get('ratelimit-limit')).toBe('60');
    expect(response.headers.get('ratelimit-remaining')).toBe('0');
    expect(response.headers.get('ratelimit-reset')).toBe('60');
    expect(await response.json()).toEqual({ error: 'Too Many Requests', message: expect.stringMatching(/rate limit/i) });
  });

  it('sets Retry-After to the whole seconds until the next request is allowed, rounded up', async () => {
    const { clock, limiter } = setUp();
    const tenant = { id: 'slow', rateLimitPerMinute: 7 }; // one token every 8571.43 ms
    for (let i = 0; i < 7; i++) limiter.check(tenant);
    expect((await attempt(limiter, tenant)).refused?.headers['Retry-After']).toBe('9');
    clock.advance(8000);
    expect((await attempt(limiter, tenant)).refused?.headers['Retry-After']).toBe('1');
    clock.advance(572);
    expect((await attempt(limiter, tenant)).headers).toBeDefined();
  });

  it('never sends Retry-After: 0, even when the next token is milliseconds away', async () => {
    const { clock, limiter } = setUp();
    const tenant = { id: 'fast', rateLimitPerMinute: 6000 }; // one token every 10 ms
    for (let i = 0; i < 6000; i++) limiter.check(tenant);
    clock.advance(9);
    expect((await attempt(limiter, tenant)).refused?.headers['Retry-After']).toBe('1');
  });

  it('never limits one tenant because of another tenant’s traffic', async () => {
    const { limiter } = setUp();
    const noisy = { id: 'noisy', rateLimitPerMinute: 5 };
    const quiet = { id: 'quiet', rateLimitPerMinute: 5 };
    for (let i = 0; i < 50; i++) await attempt(limiter, noisy);
    expect(await attempt(limiter, quiet)).toEqual({
      headers: { 'RateLimit-Limit': '5', 'RateLimit-Remaining': '4', 'RateLimit-Reset': '12' },
    });
  });

  it('never limits a tenant without a limit, and sends it no rate-limit headers', () => {
    const { memory, limiter } = setUp();
    const unlimited = { id: 'unlimited', rateLimitPerMinute: undefined };
    for (let i = 0; i < 10_000; i++) expect(limiter.check(unlimited)).toBeUndefined();
    expect(memory.size).toBe(0);
  });

  it('never reports a negative RateLimit-Remaining while a tenant keeps hammering', async () => {
    const { clock, limiter } = setUp();
    for (let i = 0; i < 200; i++) {
      const { headers, refused } = await attempt(limiter, acme);
      const remaining = headers?.['RateLimit-Remaining'] ?? refused?.headers['RateLimit-Remaining'];
      expect(Number(remaining)).toBeGreaterThanOrEqual(0);
      clock.advance(137);
    }
  });

  it('works the same with a store that answers with promises (a shared store)', async () => {
    const { limiter } = setUp({ async: true });
    const tenant = { id: 'acme', rateLimitPerMinute: 2 };
    const first = limiter.check(tenant);
    expect(first).toBeInstanceOf(Promise);
    expect(await first).toEqual({ 'RateLimit-Limit': '2', 'RateLimit-Remaining': '1', 'RateLimit-Reset': '30' });
    await limiter.check(tenant);
    await expect(limiter.check(tenant)).rejects.toMatchObject({
      status: 429,
      headers: { 'Retry-After': '30', 'RateLimit-Remaining': '0', 'RateLimit-Reset': '60' },
    });
    expect(limiter.check({ id: 'x', rateLimitPerMinute: undefined })).toBeUndefined();
  });

  it('lets requests through without headers while the shared store is down, when told to report it', async () => {
    const failures: Array<[unknown, string]> = [];
    const down = new Error('connect ECONNREFUSED 127.0.0.1:6379');
    const rejecting: RateLimitStore = { take: () => Promise.reject(down) };
    const throwing: RateLimitStore = {
      take: (): RateLimitDecision => {
        throw down;
      },
    };
    for (const store of [rejecting, throwing]) {
      const reporting = createTenantRateLimiter({ store, onStoreError: (error, id) => failures.push([error, id]) });
      expect(await reporting.check(acme)).toBeUndefined();
      const strict = createTenantRateLimiter({ store });
      await expect(async () => await strict.check(acme)).rejects.toBe(down);
    }
    expect(failures).toEqual([
      [down, 'acme'],
      [down, 'acme'],
    ]);
  });

  it('refuses to start without a store', () => {
    expect(() => createTenantRateLimiter({ store: undefined as unknown as RateLimitStore })).toThrow(/options\.store/);
  });
});

describe('memory rate-limit store', () => {
  it('remembers at most maxKeys buckets however many clients appear', () => {
    const clock = manualClock();
    const store = createMemoryRateLimitStore({ clock, maxKeys: 3 });
    for (let i = 0; i < 1000; i++) {
      store.take(`client-${i}`, 10, 60_000);
      expect(store.size).toBeLessThanOrEqual(3);
    }
  });

  it('drops idle, refilled buckets before a limited client’s, so the limited client stays limited', () => {
    const clock = manualClock();
    const store = createMemoryRateLimitStore({ clock, maxKeys: 2 });
    for (let i = 0; i < 3; i++) store.take('hammering', 3, 60_000);
    store.take('idle', 60, 60_000);
    clock.advance(1000); // `idle` is full again, `hammering` has only 0.05 tokens back
    store.take('newcomer', 10, 60_000);
    expect(store.size).toBe(2);
    expect(store.take('hammering', 3, 60_000).allowed).toBe(false);
  });

  it('drops the least recently used bucket when every bucket is in use', () => {
    const clock = manualClock();
    const store = createMemoryRateLimitStore({ clock, maxKeys: 2 });
    store.take('a', 1, 60_000);
    store.take('b', 1, 60_000);
    store.take('a', 1, 60_000); // refused, but `a` is now the more recent
    store.take('c', 1, 60_000);
    expect(store.size).toBe(2);
    expect(store.take('a', 1, 60_000).allowed).toBe(false);
    expect(store.take('b', 1, 60_000).allowed).toBe(true); // forgotten: a fresh bucket
  });

  it('answers synchronously and leaves no timers behind to keep the process alive', () => {
    vi.useFakeTimers();
    try {
      const store = createMemoryRateLimitStore({ clock: manualClock(), maxKeys: 2 });
      for (let i = 0; i < 10; i++) expect(store.take(`k${i}`, 1, 1000)).not.toBeInstanceOf(Promise);
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('refuses a maxKeys that is not a positive integer, naming the option', () => {
    for (const bad of [0, -1, 2.5, Number.NaN]) {
      expect(() => createMemoryRateLimitStore({ clock: manualClock(), maxKeys: bad })).toThrow(/memory rate-limit store: options\.maxKeys/);
    }
  });
});

// RateLimitHeaders spreads into TooManyRequestsError's and Hono's header records.
const _assignable: Record<string, string> = {} as RateLimitHeaders;
void _assignable;
