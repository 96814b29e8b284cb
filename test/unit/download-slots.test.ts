import { setMaxListeners } from 'node:events';
import { describe, expect, test } from 'vitest';
import { DownloadSlots, type ReleaseSlot } from '../../src/download/download-slots.js';
import { GatewayTimeoutError } from '../../src/errors.js';

/** Lets every settled promise's callbacks run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** Starts acquire() calls and records, in order, which of them got a slot. */
function tracker(slots: DownloadSlots) {
  const granted: string[] = [];
  const releases = new Map<string, ReleaseSlot>();
  return {
    granted,
    request(account: string, name: string, signal?: AbortSignal): Promise<ReleaseSlot> {
      const acquired = slots.acquire(account, signal);
      acquired.then(
        (release) => {
          granted.push(name);
          releases.set(name, release);
        },
        () => {},
      );
      return acquired;
    },
    release(name: string): void {
      releases.get(name)!();
    },
  };
}

describe('download slots shared between upstream accounts', () => {
  test('a lone account may use every slot, and its waiters go in the order they came', async () => {
    const slots = new DownloadSlots(2);
    const t = tracker(slots);
    for (const name of ['a1', 'a2', 'a3', 'a4']) t.request('A', name);
    await settle();
    expect(t.granted).toEqual(['a1', 'a2']);
    expect(slots.queued).toBe(2);
    t.release('a1');
    await settle();
    t.release('a2');
    await settle();
    expect(t.granted).toEqual(['a1', 'a2', 'a3', 'a4']);
    expect(slots.queued).toBe(0);
  });

  test("another account's first waiter gets the next free slot, however long the flooding account's queue", async () => {
    const slots = new DownloadSlots(2);
    const t = tracker(slots);
    for (let i = 1; i <= 1000; i++) t.request('A', `a${i}`);
    await settle();
    t.request('B', 'b1');
    await settle();
    expect(slots.usage('B')).toEqual({ active: 0, queued: 1 });

    t.release('a1');
    await settle();
    expect(t.granted).toEqual(['a1', 'a2', 'b1']);
  });

  test('under contention the slots end up split evenly between the accounts that want them', async () => {
    const slots = new DownloadSlots(4);
    const t = tracker(slots);
    for (let i = 1; i <= 10; i++) t.request('A', `a${i}`);
    for (let i = 1; i <= 10; i++) t.request('B', `b${i}`);
    await settle();
    expect(slots.usage('A').active).toBe(4);
    // A finishes its downloads one by one; each freed slot goes to B until both hold two.
    t.release('a1');
    await settle();
    t.release('a2');
    await settle();
    expect(slots.usage('A')).toEqual({ active: 2, queued: 6 });
    expect(slots.usage('B')).toEqual({ active: 2, queued: 8 });
    // From then on they take turns.
    t.release('a3');
    await settle();
    t.release('b1');
    await settle();
    expect(t.granted.slice(4)).toEqual(['b1', 'b2', 'a5', 'b3']);
  });

  test('three accounts waiting are served in turn, not one queue after the other', async () => {
    const slots = new DownloadSlots(1);
    const t = tracker(slots);
    t.request('A', 'a0');
    await settle();
    for (const account of ['A', 'B', 'C']) for (let i = 1; i <= 2; i++) t.request(account, `${account.toLowerCase()}${i}`);
    for (const name of ['a0', 'a1', 'b1', 'c1', 'a2', 'b2']) {
      await settle();
      t.release(name);
    }
    await settle();
    expect(t.granted).toEqual(['a0', 'a1', 'b1', 'c1', 'a2', 'b2', 'c2']);
  });

  test('a waiter whose time runs out gets a 504, leaves the queue and never takes a slot', async () => {
    const slots = new DownloadSlots(1);
    const t = tracker(slots);
    t.request('A', 'a1');
    const timeout = new AbortController();
    const waiting = t.request('A', 'late', timeout.signal);
    t.request('A', 'a2');
    await settle();
    expect(slots.queued).toBe(2);

    timeout.abort();
    const error = await waiting.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(GatewayTimeoutError);
    expect((error as GatewayTimeoutError).status).toBe(504);
    expect(slots.queued).toBe(1);

    t.release('a1');
    await settle();
    expect(t.granted).toEqual(['a1', 'a2']);
    expect(slots.active).toBe(1);
  });

  test('a signal that already fired is refused at once, even with a slot free', async () => {
    const slots = new DownloadSlots(1);
    await expect(slots.acquire('A', AbortSignal.abort())).rejects.toBeInstanceOf(GatewayTimeoutError);
    expect(slots.active).toBe(0);
  });

  test('take() hands out a free slot at once; with none free, or the free one reserved for another account, it gives nothing and changes nothing', () => {
    const slots = new DownloadSlots(2, ['A', 'B']);
    const first = slots.take('A');
    expect(first).toBeTypeOf('function');
    // The other slot is B's reserve while B holds none.
    expect(slots.take('A')).toBeUndefined();
    expect(slots.usage('A')).toEqual({ active: 1, queued: 0 });
    const second = slots.take('B');
    expect(second).toBeTypeOf('function');
    expect(slots.take('C')).toBeUndefined();
    expect(slots.usage('C')).toEqual({ active: 0, queued: 0 });
    expect(slots.active).toBe(2);
    first!();
    second!();
    expect(slots.active).toBe(0);
  });

  test('releasing twice frees one slot, and an account that left holds nothing', async () => {
    const slots = new DownloadSlots(1);
    const release = await slots.acquire('A');
    const next = slots.acquire('B');
    release();
    release();
    const releaseB = await next;
    expect(slots.active).toBe(1);
    expect(slots.usage('A')).toEqual({ active: 0, queued: 0 });
    releaseB();
    expect(slots.active).toBe(0);
  });

  test('thousands of waiters timing out together cost little and leave the slots usable', async () => {
    const slots = new DownloadSlots(1);
    const holder = await slots.acquire('A');
    const timeout = new AbortController();
    // One signal for all of them here; each download has its own in the gateway.
    setMaxListeners(0, timeout.signal);
    const waiters = Array.from({ length: 5000 }, () => slots.acquire('A', timeout.signal).catch((error: unknown) => error));
    timeout.abort();
    const outcomes = await Promise.all(waiters);
    expect(outcomes.every((outcome) => outcome instanceof GatewayTimeoutError)).toBe(true);
    expect(slots.queued).toBe(0);
    const b = slots.acquire('B');
    holder();
    await b;
    expect(slots.usage('B').active).toBe(1);
  });

  test('an account holding its share waits, even with slots free, while another account gets its own share at once', async () => {
    const slots = new DownloadSlots(4, ['A', 'B']);
    const t = tracker(slots);
    for (let i = 1; i <= 5; i++) t.request('A', `a${i}`);
    await settle();
    // Each of the two accounts has a share of two; the two B does not hold stay free for it.
    expect(t.granted).toEqual(['a1', 'a2']);
    expect(slots.active).toBe(2);
    expect(slots.usage('A')).toEqual({ active: 2, queued: 3 });

    t.request('B', 'b1');
    t.request('B', 'b2');
    t.request('B', 'b3');
    await settle();
    expect(t.granted).toEqual(['a1', 'a2', 'b1', 'b2']);
    expect(slots.usage('B')).toEqual({ active: 2, queued: 1 });
    // A's own downloads ending hand A's waiters their turn, in order.
    t.release('a1');
    await settle();
    expect(t.granted.at(-1)).toBe('a3');
    expect(slots.queued).toBe(3);
  });

  test('once the other account is busy too, the account that waited may use the slot beyond the reserve', async () => {
    const slots = new DownloadSlots(3, ['A', 'B']);
    const t = tracker(slots);
    t.request('B', 'b1');
    for (let i = 1; i <= 3; i++) t.request('A', `a${i}`);
    await settle();
    expect(t.granted).toEqual(['b1', 'a1', 'a2']);
    t.release('b1');
    await settle();
    // B holds none again, so the freed slot is kept for it.
    expect(t.granted).toEqual(['b1', 'a1', 'a2']);
    expect(slots.usage('A')).toEqual({ active: 2, queued: 1 });
  });

  test('with three accounts, two flooding ones never fill the slot the third may take at once', async () => {
    const slots = new DownloadSlots(4, ['A', 'B', 'C']);
    const t = tracker(slots);
    for (let i = 1; i <= 10; i++) t.request('A', `a${i}`);
    for (let i = 1; i <= 10; i++) t.request('B', `b${i}`);
    await settle();
    expect(slots.usage('A').active).toBe(2);
    expect(slots.usage('B').active).toBe(1);
    expect(slots.active).toBe(3);

    t.request('C', 'c1');
    await settle();
    expect(t.granted.at(-1)).toBe('c1');
    expect(slots.active).toBe(4);
    // With all three holding one, a freed slot goes to a waiter: A and B hold
    // as many, and A has waited longer for a turn.
    t.release('a1');
    await settle();
    expect(t.granted.at(-1)).toBe('a3');
    t.release('a2');
    await settle();
    expect(t.granted.at(-1)).toBe('b2');
  });

  test('a lone configured account still uses every slot', async () => {
    const slots = new DownloadSlots(3, ['A', 'A']);
    const t = tracker(slots);
    for (let i = 1; i <= 4; i++) t.request('A', `a${i}`);
    await settle();
    expect(t.granted).toEqual(['a1', 'a2', 'a3']);
    expect(slots.active).toBe(3);
  });

  test('with more accounts than slots, each account holds at most one', async () => {
    const slots = new DownloadSlots(2, ['A', 'B', 'C']);
    const t = tracker(slots);
    t.request('A', 'a1');
    t.request('A', 'a2');
    await settle();
    // A second slot for A, though free, is left for the others.
    expect(t.granted).toEqual(['a1']);
    t.request('B', 'b1');
    t.request('C', 'c1');
    await settle();
    expect(t.granted).toEqual(['a1', 'b1']);
    // B's slot goes to C, which holds none, not to A's second request.
    t.release('b1');
    await settle();
    expect(t.granted).toEqual(['a1', 'b1', 'c1']);
    t.release('a1');
    await settle();
    expect(t.granted).toEqual(['a1', 'b1', 'c1', 'a2']);
    for (const account of ['A', 'B', 'C']) expect(slots.usage(account).active).toBeLessThanOrEqual(1);
  });

  test('an account not in the config gets no reserve of its own and shares only what lies beyond the reserves', async () => {
    const slots = new DownloadSlots(3, ['A', 'B']);
    const t = tracker(slots);
    for (let i = 1; i <= 3; i++) t.request('X', `x${i}`);
    await settle();
    expect(t.granted).toEqual(['x1']);
    t.request('A', 'a1');
    t.request('B', 'b1');
    await settle();
    expect(t.granted).toEqual(['x1', 'a1', 'b1']);
  });

  test('a waiter held back by its share gets a 504 when its time runs out, and leaves the queue', async () => {
    const slots = new DownloadSlots(2, ['A', 'B']);
    const t = tracker(slots);
    t.request('A', 'a1');
    const timeout = new AbortController();
    const waiting = t.request('A', 'late', timeout.signal);
    await settle();
    expect(slots.usage('A')).toEqual({ active: 1, queued: 1 });

    timeout.abort();
    const error = await waiting.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(GatewayTimeoutError);
    expect((error as GatewayTimeoutError).status).toBe(504);
    expect(slots.queued).toBe(0);
    // Its place is gone: when B takes the reserved slot and A's download ends, nothing is handed to it.
    t.request('B', 'b1');
    t.release('a1');
    await settle();
    expect(t.granted).toEqual(['a1', 'b1']);
    expect(slots.active).toBe(1);
  });

  test('a limit below one is refused with a message naming it', () => {
    expect(() => new DownloadSlots(0)).toThrow(/limit must be a positive integer, got 0/);
  });
});
