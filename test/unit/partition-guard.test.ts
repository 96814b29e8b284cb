/**
 * When a replica that lost Redis stops answering from its stored copies: only
 * once the others could have dropped it (a purge then misses it), and only when
 * some other replica still reaches Redis (in an outage for everyone no purge can
 * succeed); and when it starts again: once it is counted again and has synced.
 * A replica whose own process stood still past its heartbeat learns so on its
 * first request after, before a check has run; so does one that reaches Redis
 * but has not heard the cluster's events for as long.
 */
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, test, vi } from 'vitest';
import type { Peer } from '../../src/cluster/membership.js';
import { PartitionGuard } from '../../src/cluster/partition-guard.js';
import type { RememberedPeer } from '../../src/cluster/remembered-peers.js';
import { silentLogger } from '../../src/logger.js';

const TTL_MS = 10_000;
const MARGIN_MS = 2_000;
const PEER: Peer = { node: 'gw-1', url: 'http://gw-1', volume: 'v1' };

interface SetupOptions {
  peers?: Peer[];
  peerAnswer?: (url: string) => Promise<boolean>;
  silentForMs?: number;
  /** Not one heartbeat since it started. */
  neverBeaten?: boolean;
  remembered?: RememberedPeer[];
}

function setup(options: SetupOptions) {
  const state = {
    up: false,
    renewedAt: options.neverBeaten ? Number.NEGATIVE_INFINITY : Date.now() - (options.silentForMs ?? TTL_MS),
    /** While Redis is up and this is false, every event (and beacon) is heard at once. */
    eventsStalled: false,
    heardUpTo: performance.now() - (options.silentForMs ?? TTL_MS),
    asked: 0,
    synced: 0,
    syncResult: true,
  };
  const guard = new PartitionGuard({
    link: {
      get up() {
        return state.up;
      },
    },
    membership: {
      get renewedAt() {
        return state.renewedAt;
      },
      ttlMs: TTL_MS,
      peers: options.peers ?? [PEER],
      async beat() {
        if (state.up) state.renewedAt = Date.now();
      },
    },
    events: {
      get heardUpTo() {
        if (state.up && !state.eventsStalled) state.heardUpTo = performance.now();
        return state.heardUpTo;
      },
    },
    peers: {
      redisUp: (url) => {
        state.asked++;
        return (options.peerAnswer ?? (async () => true))(url);
      },
    },
    remembered: () => options.remembered ?? [],
    checkEveryMs: 500,
    marginMs: MARGIN_MS,
    rejoinMs: 0,
    catchUp: async () => {
      state.synced++;
      return state.syncResult;
    },
    logger: silentLogger(),
  });
  return { guard, state };
}

describe('PartitionGuard', () => {
  test('a replica silent for less than the membership TTL (less the margin) keeps its copies and asks nobody', async () => {
    const { guard, state } = setup({ silentForMs: TTL_MS - MARGIN_MS - 1_000 });
    await guard.check();
    expect(guard.trusted).toBe(true);
    expect(state.asked).toBe(0);
  });

  test('past the TTL, while another replica still reaches Redis, its copies are unverified until it is back and synced', async () => {
    const { guard, state } = setup({});
    await guard.check();
    expect(guard.trusted).toBe(false);
    await guard.check(); // still no Redis
    expect(guard.trusted).toBe(false);
    expect(state.synced).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 2)); // its next beat comes after it stopped trusting
    state.up = true;
    await guard.check(); // beats first, so the others count it again
    expect(guard.trusted).toBe(false);
    state.syncResult = false; // a sync Redis broke off
    await guard.check();
    expect(guard.trusted).toBe(false);
    state.syncResult = true;
    await guard.check();
    expect(guard.trusted).toBe(true);
    expect(state.synced).toBe(2);
  });

  test('a replica it knew that does not answer counts as one that may have purged', async () => {
    const { guard } = setup({ peerAnswer: () => Promise.reject(new Error('no answer')) });
    await guard.check();
    expect(guard.trusted).toBe(false);
  });

  test('Redis out for everyone: no purge can succeed, so the copies stay good', async () => {
    const { guard, state } = setup({ peers: [PEER, { ...PEER, node: 'gw-3', url: 'http://gw-3' }], peerAnswer: async () => false });
    await guard.check();
    expect(guard.trusted).toBe(true);
    expect(state.asked).toBe(2);
  });

  test('a replica that knows no other keeps its copies', async () => {
    const { guard, state } = setup({ peers: [] });
    await guard.check();
    expect(guard.trusted).toBe(true);
    expect(state.asked).toBe(0);
  });

  describe('a replica that has not reached Redis since it started (it knows no live replica)', () => {
    const REMEMBERED: RememberedPeer[] = [
      { node: 'gw-1', url: 'http://gw-1' },
      { node: 'gw-3', url: 'http://gw-3' },
    ];

    test('asks the replicas its volume remembers: one that reaches Redis may have purged, so the copies wait until it is back and synced', async () => {
      const { guard, state } = setup({ peers: [], neverBeaten: true, remembered: REMEMBERED });
      await guard.check();
      expect(state.asked).toBe(2);
      expect(guard.trusted).toBe(false);
      await new Promise((resolve) => setTimeout(resolve, 2));
      state.up = true;
      await guard.check(); // beats
      await guard.check(); // counted: syncs
      expect(guard.trusted).toBe(true);
      expect(state.synced).toBe(1);
    });

    test('remembered replicas that say Redis is out for them too: the copies stay good', async () => {
      const { guard, state } = setup({ peers: [], neverBeaten: true, remembered: REMEMBERED, peerAnswer: async () => false });
      await guard.check();
      expect(state.asked).toBe(2);
      expect(guard.trusted).toBe(true);
    });

    test('a remembered replica that does not answer is taken for gone; another that reaches Redis still counts', async () => {
      const gone = () => Promise.reject(new Error('connection refused'));
      const allGone = setup({ peers: [], neverBeaten: true, remembered: REMEMBERED, peerAnswer: gone });
      await allGone.guard.check();
      expect(allGone.state.asked).toBe(2);
      expect(allGone.guard.trusted).toBe(true);

      const oneUp = setup({
        peers: [],
        neverBeaten: true,
        remembered: REMEMBERED,
        peerAnswer: async (url) => (url === 'http://gw-3' ? true : gone()),
      });
      await oneUp.guard.check();
      expect(oneUp.guard.trusted).toBe(false);
    });

    test('remembering none, it is alone and keeps its copies', async () => {
      const { guard, state } = setup({ peers: [], neverBeaten: true });
      await guard.check();
      expect(state.asked).toBe(0);
      expect(guard.trusted).toBe(true);
    });

    test('once it has beaten, the live list decides: the remembered replicas are not asked', async () => {
      const { guard, state } = setup({ peers: [], remembered: REMEMBERED });
      await guard.check();
      expect(state.asked).toBe(0);
      expect(guard.trusted).toBe(true);
    });

    test('a check asked for while one is under way waits for that one (the start waits for the first)', async () => {
      let answer: (up: boolean) => void = () => {};
      const { guard } = setup({
        peers: [],
        neverBeaten: true,
        remembered: REMEMBERED.slice(0, 1),
        peerAnswer: () => new Promise((resolve) => (answer = resolve)),
      });
      const first = guard.check();
      const second = guard.check();
      answer(true);
      await second;
      expect(guard.trusted).toBe(false);
      await first;
    });
  });

  describe('a process that stood still', () => {
    let stop: (() => void) | undefined;
    afterEach(() => {
      stop?.();
      vi.useRealTimers();
    });

    test('Redis up and the heartbeat lapsed: the first request after is answered from no copy, before any check runs; it catches up as after a partition', async () => {
      const { guard, state } = setup({ silentForMs: 0 });
      state.up = true;
      guard.start();
      stop = () => guard.stop();
      expect(guard.trusted).toBe(true);
      state.renewedAt = Date.now() - (TTL_MS - MARGIN_MS);
      expect(guard.trusted).toBe(false);
      await new Promise((resolve) => setTimeout(resolve, 2)); // its next beat comes after it stopped trusting
      await guard.check(); // beats
      await guard.check(); // counted again: syncs
      expect(guard.trusted).toBe(true);
      expect(state.synced).toBe(1);
    });

    test('Redis out for everyone while the guard looks every half second: a request past the heartbeat keeps the copies', async () => {
      const { guard } = setup({ peerAnswer: async () => false });
      guard.start();
      stop = () => guard.stop();
      expect(guard.trusted).toBe(true);
      await guard.check();
      expect(guard.trusted).toBe(true);
    });

    test('Redis out and the guard has not looked for longer than the margin: the process stood still, the copies are not trusted', () => {
      vi.useFakeTimers({ toFake: ['Date'] });
      const { guard } = setup({ peerAnswer: async () => false });
      guard.start();
      stop = () => guard.stop();
      expect(guard.trusted).toBe(true);
      vi.setSystemTime(Date.now() + MARGIN_MS + 1);
      expect(guard.trusted).toBe(false);
    });

    test('Redis up, the heartbeat kept, but no event heard for the TTL less the margin (a stalled subscription): the copies are not trusted until it hears again and has synced', async () => {
      const { guard, state } = setup({ silentForMs: 0 });
      state.up = true;
      guard.start();
      stop = () => guard.stop();
      state.eventsStalled = true;
      state.heardUpTo = performance.now() - (TTL_MS - MARGIN_MS - 1_000);
      expect(guard.trusted).toBe(true);
      state.heardUpTo = performance.now() - (TTL_MS - MARGIN_MS);
      expect(guard.trusted).toBe(false);
      await new Promise((resolve) => setTimeout(resolve, 2)); // its next beat comes after it stopped trusting
      await guard.check(); // beats
      await guard.check(); // counted again, but still deaf: no sync yet
      expect(guard.trusted).toBe(false);
      expect(state.synced).toBe(0);
      state.eventsStalled = false;
      await guard.check();
      expect(guard.trusted).toBe(true);
      expect(state.synced).toBe(1);
    });

    test('a check notices events unheard even when no request comes', async () => {
      const { guard, state } = setup({ silentForMs: 0 });
      state.up = true;
      state.eventsStalled = true;
      state.heardUpTo = performance.now() - TTL_MS;
      await guard.check();
      expect(state.asked).toBe(0);
      state.eventsStalled = false;
      expect(guard.trusted).toBe(false);
    });

    test('events unheard are judged on the monotonic clock: a step back of the wall clock does not hide them', () => {
      vi.useFakeTimers({ toFake: ['Date'] });
      const { guard, state } = setup({ silentForMs: 0 });
      state.up = true;
      guard.start();
      stop = () => guard.stop();
      state.eventsStalled = true;
      vi.setSystemTime(Date.now() - 50_000);
      state.renewedAt = Date.now();
      state.heardUpTo = performance.now() - (TTL_MS - MARGIN_MS);
      expect(guard.trusted).toBe(false);
    });

    test("events unheard while Redis is out for this replica are the partition check's to judge, not a stall", async () => {
      const { guard, state } = setup({ silentForMs: 0, peerAnswer: async () => true });
      state.heardUpTo = performance.now() - TTL_MS;
      guard.start();
      stop = () => guard.stop();
      expect(guard.trusted).toBe(true);
      await guard.check();
      expect(guard.trusted).toBe(true);
      expect(state.asked).toBe(0);
    });

    test('before it starts (the replica has not joined yet), the guard does not judge', () => {
      const { guard, state } = setup({});
      state.up = true;
      expect(guard.trusted).toBe(true);
    });
  });
});
