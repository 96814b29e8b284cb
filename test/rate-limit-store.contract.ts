/**
 * The contract every RateLimitStore backend passes (keyv's `test-suite` habit):
 * test/rate-limit.test.ts runs it against the memory store, and a shared store
 * (Redis) runs it against a real server. Time comes from the clock handed to
 * `makeStore`, so a shared store under test must take `now` from it.
 */
import { describe, expect, it } from 'vitest';
import type { Clock } from '../src/clock.js';
import { manualClock } from '../dev/manual-clock.js';
import type { RateLimitDecision, RateLimitStore } from '../src/rate-limit/rate-limit-store.js';

/** Opens a store whose time is `clock`. Keys are unique per test, so a shared store needs no flushing between tests. */
export type MakeRateLimitStore = (clock: Clock) => RateLimitStore | Promise<RateLimitStore>;

const run = Math.random().toString(36).slice(2, 8);
let serial = 0;

export function describeRateLimitStoreContract(name: string, makeStore: MakeRateLimitStore): void {
  describe(`RateLimitStore contract: ${name}`, () => {
    async function setUp() {
      const clock = manualClock();
      const store = await makeStore(clock);
      const prefix = `contract-${run}-${++serial}`;
      const take = async (key: string, capacity: number, windowMs = 60_000): Promise<RateLimitDecision> =>
        await store.take(`${prefix}:${key}`, capacity, windowMs);
      const takeMany = async (key: string, n: number, capacity: number, windowMs = 60_000) => {
        const decisions: RateLimitDecision[] = [];
        for (let i = 0; i < n; i++) decisions.push(await take(key, capacity, windowMs));
        return decisions;
      };
      return { clock, store, take, takeMany };
    }

    it('lets a new client spend its whole burst at once, counting down, then refuses', async () => {
      const { takeMany } = await setUp();
      const decisions = await takeMany('a', 6, 5);
      expect(decisions.map((d) => d.allowed)).toEqual([true, true, true, true, true, false]);
      expect(decisions.map((d) => d.remaining)).toEqual([4, 3, 2, 1, 0, 0]);
    });

    it('says when the next request will be allowed: one window / capacity after running dry', async () => {
      const { takeMany } = await setUp();
      const decisions = await takeMany('a', 61, 60);
      expect(decisions[58]?.retryAfterMs).toBe(0);
      expect(decisions[59]).toMatchObject({ allowed: true, remaining: 0, retryAfterMs: 1000 });
      expect(decisions[60]).toMatchObject({ allowed: false, remaining: 0, retryAfterMs: 1000, resetMs: 60_000 });
    });

    it('refills continuously: 60 per minute gives one more request each second', async () => {
      const { clock, take, takeMany } = await setUp();
      await takeMany('a', 60, 60);
      clock.advance(999);
      expect(await take('a', 60)).toMatchObject({ allowed: false, retryAfterMs: 1 });
      clock.advance(1);
      expect(await take('a', 60)).toMatchObject({ allowed: true, remaining: 0 });
      expect((await take('a', 60)).allowed).toBe(false);
      clock.advance(10_000);
      const after = await takeMany('a', 11, 60);
      expect(after.filter((d) => d.allowed)).toHaveLength(10);
    });

    it('refills exactly at uneven rates (7 per minute: one token every 8571.43 ms)', async () => {
      const { clock, take, takeMany } = await setUp();
      await takeMany('a', 7, 7);
      const refused = await take('a', 7);
      expect(refused).toMatchObject({ allowed: false, retryAfterMs: 8572 });
      clock.advance(8571);
      expect(await take('a', 7)).toMatchObject({ allowed: false, retryAfterMs: 1 });
      clock.advance(1);
      expect((await take('a', 7)).allowed).toBe(true);
    });

    it('never holds more than its capacity, however long the client was idle', async () => {
      const { clock, take, takeMany } = await setUp();
      await take('a', 3);
      clock.advance(24 * 3600_000);
      const decisions = await takeMany('a', 4, 3);
      expect(decisions.map((d) => d.allowed)).toEqual([true, true, true, false]);
    });

    it('does not prolong the wait of a client that keeps retrying while refused', async () => {
      const { clock, take, takeMany } = await setUp();
      await takeMany('a', 2, 2);
      for (let i = 0; i < 20; i++) {
        clock.advance(1000);
        expect((await take('a', 2)).allowed).toBe(false);
      }
      clock.advance(10_000); // 30 s after running dry: 30 s per token at 2 per minute
      expect((await take('a', 2)).allowed).toBe(true);
    });

    it('reports how long until the bucket is full again', async () => {
      const { clock, take } = await setUp();
      expect((await take('a', 60)).resetMs).toBe(1000);
      expect((await take('a', 60)).resetMs).toBe(2000);
      clock.advance(500);
      expect((await take('a', 60)).resetMs).toBe(2500);
      clock.advance(60_000);
      expect((await take('a', 60)).resetMs).toBe(1000);
    });

    it('keeps every key to its own budget', async () => {
      const { take, takeMany } = await setUp();
      await takeMany('a', 10, 3);
      expect(await take('b', 3)).toMatchObject({ allowed: true, remaining: 2 });
    });

    it('allows a capacity of one: one request, then one per window', async () => {
      const { clock, take } = await setUp();
      expect((await take('a', 1, 1000)).allowed).toBe(true);
      expect(await take('a', 1, 1000)).toMatchObject({ allowed: false, retryAfterMs: 1000, resetMs: 1000 });
      clock.advance(1000);
      expect((await take('a', 1, 1000)).allowed).toBe(true);
    });

    it('never reports negative or fractional numbers, however hard a client pushes', async () => {
      const { clock, takeMany } = await setUp();
      for (let round = 0; round < 5; round++) {
        for (const d of await takeMany('a', 25, 7)) {
          expect(d.remaining).toBeGreaterThanOrEqual(0);
          expect(d.retryAfterMs).toBeGreaterThanOrEqual(0);
          expect(d.resetMs).toBeGreaterThanOrEqual(0);
          expect(Number.isInteger(d.remaining) && Number.isInteger(d.retryAfterMs) && Number.isInteger(d.resetMs)).toBe(true);
          expect(d.allowed || d.retryAfterMs > 0).toBe(true);
        }
        clock.advance(3333);
      }
    });

    it('keeps a client limited when its limit changes: tokens carry over, capped at the new capacity', async () => {
      const { take, takeMany } = await setUp();
      await takeMany('a', 5, 5);
      expect((await take('a', 10)).allowed).toBe(false);
      await takeMany('b', 2, 10);
      expect(await take('b', 3)).toMatchObject({ allowed: true, remaining: 2 });
    });

    it('grants nothing extra when the clock steps backwards', async () => {
      const { clock, take, takeMany } = await setUp();
      await takeMany('a', 2, 2);
      clock.advance(-3_600_000);
      expect((await take('a', 2)).allowed).toBe(false);
      clock.advance(3_600_000 + 30_000);
      expect((await take('a', 2)).allowed).toBe(true);
    });

    it('rejects a capacity or window that is not a positive integer, naming it', async () => {
      const { store } = await setUp();
      for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
        await expect(async () => await store.take('k', bad, 60_000)).rejects.toThrow(/capacity/);
        await expect(async () => await store.take('k', 10, bad)).rejects.toThrow(/windowMs/);
      }
    });
  });
}
