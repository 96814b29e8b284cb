import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { manualClock } from '../dev/manual-clock.js';
import type { Clock } from '../src/clock.js';
import { RedisLink } from '../src/cluster/redis-link.js';
import { RedisUnavailableError } from '../src/redis-unavailable.js';
import { createMemoryRateLimitStore, createRedisRateLimitStore, type RateLimitDecision } from '../src/rate-limit/index.js';
import { describeRateLimitStoreContract } from './rate-limit-store.contract.js';
import { type RunningRedis, startRedisServer } from './support/redis-server.js';
import { seededRandom } from './support/request-fuzz.js';

const LINK_TIMEOUT_MS = 250;
/** Far longer than any take may take with Redis stalled; only here so a hang fails instead of blocking. */
const HANG_GUARD_MS = 10_000;

const run = Math.random().toString(36).slice(2, 8);
let serial = 0;
/** A prefix no other test uses, so state never leaks between tests sharing one Redis. */
const freshPrefix = () => `rg:rl:test-${run}-${++serial}:`;

function openLink(redis: RunningRedis): RedisLink {
  return new RedisLink({ url: redis.url, timeoutMs: LINK_TIMEOUT_MS, logger: pino({ level: 'silent' }) });
}

function settlesWithin<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

/** Polls until the link reaches Redis again (it fails fast for a moment after an outage); bounded. */
async function untilReachable(link: RedisLink): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (await link.check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('redis did not become reachable again within 10 s');
}

describe('redis rate-limit store', () => {
  let redis: RunningRedis;
  let link: RedisLink;
  const fallbacks: unknown[] = [];

  beforeAll(async () => {
    redis = await startRedisServer();
    link = openLink(redis);
  });
  afterAll(async () => {
    link?.close();
    await redis?.stop();
  });
  afterEach(() => {
    // The contract must be met by Redis itself, not by the insurance store answering for it.
    expect(fallbacks).toEqual([]);
  });

  describeRateLimitStoreContract('redis', (clock: Clock) =>
    createRedisRateLimitStore({ link, clock, prefix: freshPrefix(), onFallback: (error) => fallbacks.push(error) }),
  );

  it('shares one budget between replicas: 10 per minute, requests alternating, allows exactly 10', async () => {
    const prefix = freshPrefix();
    const otherLink = openLink(redis);
    try {
      const replicas = [link, otherLink].map((replicaLink) =>
        createRedisRateLimitStore({ link: replicaLink, clock: manualClock(), prefix, onFallback: (error) => fallbacks.push(error) }),
      );
      const decisions: RateLimitDecision[] = [];
      for (let i = 0; i < 20; i++) decisions.push(await (replicas[i % 2]?.take('tenant:acme', 10, 60_000) as Promise<RateLimitDecision>));
      expect(decisions.filter((d) => d.allowed)).toHaveLength(10);
      expect(decisions.slice(0, 10).map((d) => d.remaining)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
      expect(decisions.slice(10).every((d) => !d.allowed && d.retryAfterMs === 6000)).toBe(true);
    } finally {
      otherLink.close();
    }
  });

  it('decides exactly as the memory store does, through limit changes, idle spells and a clock stepping back', async () => {
    const clock = manualClock();
    const memory = createMemoryRateLimitStore({ clock });
    const shared = createRedisRateLimitStore({ link, clock, prefix: freshPrefix(), onFallback: (error) => fallbacks.push(error) });
    const random = seededRandom(20261130);
    const pick = <T>(choices: readonly T[]): T => choices[Math.floor(random() * choices.length)] as T;
    for (let step = 0; step < 400; step++) {
      clock.advance(pick([0, 0, 1, 7, 333, 8571, 60_000, 3_600_000, -5_000]));
      const key = pick(['a', 'b']);
      const capacity = pick([1, 3, 7, 60, 600]);
      const windowMs = pick([1_000, 60_000, 60_000, 86_400_000]);
      expect(await shared.take(key, capacity, windowMs), `step ${step}`).toEqual(memory.take(key, capacity, windowMs));
    }
  });

  it('keeps limiters with different prefixes apart on the same Redis', async () => {
    const clock = manualClock();
    const requests = createRedisRateLimitStore({ link, clock, prefix: freshPrefix() });
    const webhooks = createRedisRateLimitStore({ link, clock, prefix: freshPrefix() });
    expect(await requests.take('tenant:acme', 1, 60_000)).toMatchObject({ allowed: true });
    expect(await requests.take('tenant:acme', 1, 60_000)).toMatchObject({ allowed: false });
    expect(await webhooks.take('tenant:acme', 1, 60_000)).toMatchObject({ allowed: true });
  });

  it('lets an idle bucket vanish from Redis once it would be full again', async () => {
    const prefix = freshPrefix();
    const store = createRedisRateLimitStore({ link, clock: manualClock(), prefix });
    await store.take('tenant:acme', 2, 60_000);
    const ttl = await link.call((client) => client.pTTL(`${prefix}tenant:acme`));
    // One token spent at 2 per minute: full again in 30 s, plus a little slack.
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(30_000 + 1_000);
    expect(await link.call((client) => client.hGetAll(`${prefix}tenant:acme`))).toMatchObject({ capacity: '2', windowMs: '60000' });
  });

  it('re-sends its script when Redis has forgotten it (restart or SCRIPT FLUSH)', async () => {
    const store = createRedisRateLimitStore({
      link,
      clock: manualClock(),
      prefix: freshPrefix(),
      onFallback: (error) => fallbacks.push(error),
    });
    await store.take('a', 3, 60_000);
    await link.call((client) => client.scriptFlush());
    expect(await store.take('a', 3, 60_000)).toMatchObject({ allowed: true, remaining: 1 });
  });
});

describe('redis rate-limit store while Redis is out', () => {
  let redis: RunningRedis;
  let link: RedisLink;

  beforeAll(async () => {
    redis = await startRedisServer();
    link = openLink(redis);
  });
  afterAll(async () => {
    link?.close();
    await redis?.stop();
  });

  function setUp() {
    const clock = manualClock();
    const insurance = createMemoryRateLimitStore({ clock });
    const fallbacks: unknown[] = [];
    const store = createRedisRateLimitStore({
      link,
      clock,
      prefix: freshPrefix(),
      insurance,
      onFallback: (error) => fallbacks.push(error),
    });
    return { insurance, fallbacks, store };
  }

  it('keeps limiting from its insurance when Redis is stopped, then uses Redis again once it is back', async () => {
    const { insurance, fallbacks, store } = setUp();
    expect(await store.take('tenant:acme', 3, 60_000)).toMatchObject({ allowed: true, remaining: 2 });
    expect(fallbacks).toEqual([]);

    const port = redis.port;
    await redis.stop();
    const during: RateLimitDecision[] = [];
    for (let i = 0; i < 4; i++) during.push(await store.take('tenant:acme', 3, 60_000));
    // The insurance starts full: each replica alone gets the whole limit while Redis is out.
    expect(during.map((d) => d.allowed)).toEqual([true, true, true, false]);
    expect(insurance.size).toBe(1);
    expect(fallbacks).toHaveLength(4);
    expect(fallbacks.every((error) => error instanceof RedisUnavailableError)).toBe(true);
    // A bad argument is refused before Redis is asked, so it is not a fallback.
    expect(() => store.take('tenant:acme', 0, 60_000)).toThrow(RangeError);
    expect(fallbacks).toHaveLength(4);

    redis = await startRedisServer({ port });
    await untilReachable(link);
    fallbacks.length = 0;
    // An empty Redis is a full bucket again, answered by Redis, not the insurance.
    expect(await store.take('tenant:acme', 3, 60_000)).toMatchObject({ allowed: true, remaining: 2 });
    expect(await store.take('tenant:acme', 3, 60_000)).toMatchObject({ allowed: true, remaining: 1 });
    expect(fallbacks).toEqual([]);
  });

  it('answers from its insurance within the link timeout when Redis is paused (SIGSTOP)', async () => {
    const { insurance, fallbacks, store } = setUp();
    await untilReachable(link);
    expect(await store.take('tenant:acme', 5, 60_000)).toMatchObject({ allowed: true, remaining: 4 });
    process.kill(redis.pid, 'SIGSTOP');
    try {
      const decision = await settlesWithin(Promise.resolve(store.take('tenant:acme', 5, 60_000)), HANG_GUARD_MS);
      // Answered by the insurance, which has not seen the earlier take.
      expect(decision).toMatchObject({ allowed: true, remaining: 4 });
      expect(insurance.size).toBe(1);
      expect(fallbacks).toHaveLength(1);
      expect(fallbacks[0]).toBeInstanceOf(RedisUnavailableError);
    } finally {
      process.kill(redis.pid, 'SIGCONT');
    }
    await untilReachable(link);
    fallbacks.length = 0;
    // Redis kept the bucket through the pause. The take that timed out was already on the wire, so
    // Redis may still run it when it resumes (it then counts in both stores): 3 or 2 left, not 4.
    const after = await store.take('tenant:acme', 5, 60_000);
    expect(after.allowed).toBe(true);
    expect([2, 3]).toContain(after.remaining);
    expect(fallbacks).toEqual([]);
  });
});
