/**
 * The cluster's Redis pieces on their own, against one real redis-server: the
 * shared directory of copies, the download leases, the bounded link, the
 * single use of peer nonces, and the pure and on-disk helpers beside them. No gateway runs here; each test uses
 * keys and volumes of its own.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from '@keyv/redis';
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest';
import { makeTempDir, removeDir } from '../dev/gateway-harness.js';
import type { RecordingMeta } from '../src/cache/recording-meta.js';
import { type ClusterCopy, ClusterDirectory } from '../src/cluster/cluster-directory.js';
import { clusterKeys } from '../src/cluster/cluster-keys.js';
import { chooseVictims } from '../src/cluster/cluster-volume-index.js';
import { DownloadLeases, type HeldLease, parseLeaseHolder } from '../src/cluster/download-lease.js';
import { EventSubscription } from '../src/cluster/event-subscription.js';
import { PEER_CLOCK_SKEW_SECONDS } from '../src/cluster/peer-auth.js';
import { PeerNonces } from '../src/cluster/peer-nonces.js';
import { RedisLink } from '../src/cluster/redis-link.js';
import { RedisUnavailableError } from '../src/redis-unavailable.js';
import { readOrCreateVolumeId } from '../src/cluster/volume-id.js';
import { silentLogger } from '../src/logger.js';
import { startRedisServer, type RunningRedis } from './support/redis-server.js';

// A bound on waits for things that happen in the background; never a speed claim.
const HANG_GUARD_MS = 10_000;
const POLL_MS = 25;

// A plain client beside the code under test, to set up and read state.
type RawClient = Awaited<ReturnType<typeof connectRaw>>;

let redis: RunningRedis;
let raw: RawClient;
const cleanups: Array<() => unknown> = [];

beforeAll(async () => {
  redis = await startRedisServer();
  raw = await connectRaw();
});
afterEach(async () => {
  // A paused server would stall every later test.
  if (redis) process.kill(redis.pid, 'SIGCONT');
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
afterAll(async () => {
  raw?.destroy();
  await redis?.stop();
});

async function connectRaw() {
  const client = createClient({ url: redis.url });
  client.on('error', () => {});
  await client.connect();
  return client;
}

function openLink(timeoutMs = 250): RedisLink {
  const link = new RedisLink({ url: redis.url, timeoutMs, logger: silentLogger() });
  cleanups.push(() => link.close());
  return link;
}

const BEACON_NODE = 'gw-beacons';
const BEACON_EVERY_MS = 100;

/** The cluster's event subscription on `channel`, beaconing often. */
function subscribe(link: RedisLink, channel: string, onMessage: (message: string) => void, onResubscribed: () => void): EventSubscription {
  const events = new EventSubscription({
    link,
    channel,
    beaconChannel: clusterKeys.beacon(BEACON_NODE),
    onMessage,
    onResubscribed,
    beaconEveryMs: BEACON_EVERY_MS,
    logger: silentLogger(),
  });
  events.start();
  cleanups.push(() => events.close());
  return events;
}

/** Stops Redis, runs `whileDown`, and starts an empty Redis on the same port. */
async function restartRedis(whileDown: () => unknown = () => {}): Promise<void> {
  raw.destroy();
  await redis.stop();
  try {
    await whileDown();
  } finally {
    redis = await startRedisServer({ port: redis.port });
    raw = await connectRaw();
  }
}

/** Namespace and volume names no other test uses. */
function fresh(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

function metaFor(namespace: string, callId: string, size: number, extra: Partial<RecordingMeta> = {}): RecordingMeta {
  return { namespace, callId, size, sha256: 'ab'.repeat(32), contentType: 'audio/mpeg', fetchedAt: 1_700_000_000_000, ...extra };
}

/** Polls `condition` until it holds; fails after the hang guard, naming what never happened. */
async function eventually(what: string, condition: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + HANG_GUARD_MS;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await sleep(POLL_MS);
  }
}

/** The promise, or a failure if it neither resolves nor rejects within the hang guard. */
async function guarded<T>(promise: Promise<T>, what: string): Promise<T> {
  const settled = new AbortController();
  const hang = sleep(HANG_GUARD_MS, undefined, { signal: settled.signal }).then(
    (): never => {
      throw new Error(`hung: ${what}`);
    },
    () => new Promise<never>(() => {}),
  );
  try {
    return await Promise.race([promise, hang]);
  } finally {
    settled.abort();
  }
}

/** Every message on the cluster's event channel from now on, on a connection of its own. */
async function listenToEvents(): Promise<string[]> {
  const messages: string[] = [];
  const subscriber = await connectRaw();
  cleanups.push(() => subscriber.destroy());
  await subscriber.subscribe(clusterKeys.events, (message) => messages.push(message));
  return messages;
}

describe('ClusterDirectory: which volume holds which copy', () => {
  test('a published copy is found by lookup with its metadata and the purge generation', async () => {
    const directory = new ClusterDirectory(openLink());
    const [ns, volume] = [fresh('ns'), fresh('vol')];
    const meta = metaFor(ns, '1', 1_000, { lastModified: 'Wed, 01 Jan 2025 00:00:00 GMT' });

    expect(await directory.publish(volume, `${ns}/1`, meta, 10)).toEqual({ published: true, volumeBytes: 1_000 });

    expect(await directory.lookup(`${ns}/1`)).toEqual({ copies: [{ volume, meta }], generation: 0 });
    expect(await directory.lookup(`${ns}/never-stored`)).toEqual({ copies: [], generation: 0 });
  });

  test('publishing the same copy twice counts its bytes once, in the total and its namespace', async () => {
    const directory = new ClusterDirectory(openLink());
    const [ns, volume] = [fresh('ns'), fresh('vol')];
    const meta = metaFor(ns, '1', 700);

    await directory.publish(volume, `${ns}/1`, meta, 10);
    expect(await directory.publish(volume, `${ns}/1`, meta, 20)).toEqual({ published: true, volumeBytes: 700 });

    const usage = await directory.usage(volume);
    expect(usage.total).toBe(700);
    expect(usage.byNamespace).toEqual(new Map([[ns, 700]]));
  });

  test('a replaced copy of another size moves the byte counts by the difference', async () => {
    const directory = new ClusterDirectory(openLink());
    const [ns, volume] = [fresh('ns'), fresh('vol')];
    await directory.publish(volume, `${ns}/other`, metaFor(ns, 'other', 50), 5);
    await directory.publish(volume, `${ns}/1`, metaFor(ns, '1', 1_000), 10);

    expect(await directory.publish(volume, `${ns}/1`, metaFor(ns, '1', 400), 20)).toEqual({ published: true, volumeBytes: 450 });

    const usage = await directory.usage(volume);
    expect(usage.total).toBe(450);
    expect(usage.byNamespace.get(ns)).toBe(450);
    expect((await directory.lookup(`${ns}/1`)).copies.map((copy) => copy.meta.size)).toEqual([400]);
  });

  test('remove withdraws only that volume’s copy, gives its bytes back, and a second remove changes nothing', async () => {
    const directory = new ClusterDirectory(openLink());
    const [ns, here, there] = [fresh('ns'), fresh('vol'), fresh('vol')];
    const key = `${ns}/1`;
    await directory.publish(here, key, metaFor(ns, '1', 300), 10);
    await directory.publish(there, key, metaFor(ns, '1', 300), 10);
    const events = await listenToEvents();

    await directory.remove(here, key, false);
    await directory.remove(here, key, false);

    expect((await directory.lookup(key)).copies.map((copy) => copy.volume)).toEqual([there]);
    expect(await directory.usage(here)).toEqual({ total: 0, byNamespace: new Map() });
    expect((await directory.usage(there)).total).toBe(300);
    expect(await directory.listed(here)).toEqual([]);
    // A quiet removal says nothing: a marker published afterwards arrives first.
    await raw.publish(clusterKeys.events, `marker ${key}`);
    await eventually('the marker arrives', () => events.includes(`marker ${key}`));
    expect(events.filter((event) => event.includes(key))).toEqual([`marker ${key}`]);
  });

  test('an announced removal (an eviction) tells the replicas sharing the volume: "evict <volume> <key>"', async () => {
    const directory = new ClusterDirectory(openLink());
    const [ns, volume] = [fresh('ns'), fresh('vol')];
    const key = `${ns}/1`;
    await directory.publish(volume, key, metaFor(ns, '1', 300), 10);
    const events = await listenToEvents();

    await directory.remove(volume, key, true);

    await eventually('the eviction is announced', () => events.includes(`evict ${volume} ${key}`));
    expect((await directory.lookup(key)).copies).toEqual([]);
    expect((await directory.usage(volume)).total).toBe(0);
  });

  test('purge bumps the generation, withdraws the copy on every volume with its bytes, forgets the 404, and announces "purge <key>"', async () => {
    const directory = new ClusterDirectory(openLink());
    const [ns, one, two] = [fresh('ns'), fresh('vol'), fresh('vol')];
    const key = `${ns}/1`;
    await directory.publish(one, key, metaFor(ns, '1', 500), 10);
    await directory.publish(one, `${ns}/kept`, metaFor(ns, 'kept', 80), 11);
    await directory.publish(two, key, metaFor(ns, '1', 500), 12);
    await directory.rememberNotFound(key, 60_000);
    const events = await listenToEvents();

    expect(await directory.purge(key)).toEqual({ generation: 1, copies: 2 });

    expect(await directory.lookup(key)).toEqual({ copies: [], generation: 1 });
    expect(await directory.usage(one)).toEqual({ total: 80, byNamespace: new Map([[ns, 80]]) });
    expect(await directory.usage(two)).toEqual({ total: 0, byNamespace: new Map() });
    expect(await directory.listed(one)).toEqual([`${ns}/kept`]);
    expect(await directory.listed(two)).toEqual([]);
    expect(await directory.isNotFound(key)).toBe(false);
    await eventually('the purge is announced', () => events.includes(`purge ${key}`));
    expect(await directory.purge(key)).toEqual({ generation: 2, copies: 0 });
  });

  test('knownKeys lists every key of a namespace the cluster knows of: copies on any volume, remembered 404s; not other namespaces', async () => {
    const directory = new ClusterDirectory(openLink());
    const [ns, other, volume] = [fresh('ns'), fresh('ns'), fresh('vol')];
    await directory.publish(volume, `${ns}/1`, metaFor(ns, '1', 10), 1);
    await directory.publish(fresh('vol'), `${ns}/1`, metaFor(ns, '1', 10), 2);
    await directory.rememberNotFound(`${ns}/2`, 60_000);
    await directory.publish(volume, `${other}/3`, metaFor(other, '3', 10), 3);
    const keys = async (namespace: string | undefined) => {
      const found: string[] = [];
      for await (const key of directory.knownKeys(namespace)) found.push(key);
      return found;
    };
    expect((await keys(ns)).sort()).toEqual([`${ns}/1`, `${ns}/2`]);
    expect(await keys(other)).toEqual([`${other}/3`]);
    expect(await keys(undefined)).toEqual(expect.arrayContaining([`${ns}/1`, `${ns}/2`, `${other}/3`]));
  });

  test('a copy whose download began before a purge is refused and changes nothing; one from the new generation is stored', async () => {
    const directory = new ClusterDirectory(openLink());
    const [ns, volume, other] = [fresh('ns'), fresh('vol'), fresh('vol')];
    const key = `${ns}/1`;
    await directory.purge(key);
    await directory.purge(key);
    await directory.publish(other, key, metaFor(ns, '1', 90, { generation: 2 }), 5);

    expect(await directory.publish(volume, key, metaFor(ns, '1', 500, { generation: 1 }), 10)).toEqual({ published: false });
    expect(await directory.publish(volume, key, metaFor(ns, '1', 500), 10)).toEqual({ published: false });

    expect((await directory.lookup(key)).copies.map((copy) => copy.volume)).toEqual([other]);
    expect(await directory.usage(volume)).toEqual({ total: 0, byNamespace: new Map() });
    expect(await directory.listed(volume)).toEqual([]);
    expect(await directory.publish(volume, key, metaFor(ns, '1', 500, { generation: 2 }), 10)).toEqual({
      published: true,
      volumeBytes: 500,
    });
  });

  test('a published copy ends the remembered 404 for every replica; a copy a purge refused leaves it', async () => {
    const directory = new ClusterDirectory(openLink());
    const [ns, volume] = [fresh('ns'), fresh('vol')];
    await directory.rememberNotFound(`${ns}/1`, 60_000);
    await directory.purge(`${ns}/2`);
    await directory.rememberNotFound(`${ns}/2`, 60_000);

    expect(await directory.publish(volume, `${ns}/1`, metaFor(ns, '1', 100), 10)).toMatchObject({ published: true });
    expect(await directory.publish(volume, `${ns}/2`, metaFor(ns, '2', 100), 10)).toEqual({ published: false });

    expect(await directory.isNotFound(`${ns}/1`)).toBe(false);
    expect(await directory.isNotFound(`${ns}/2`)).toBe(true);
  });

  test('generations() answers each key’s purge generation, 0 for keys never purged', async () => {
    const directory = new ClusterDirectory(openLink());
    const ns = fresh('ns');
    await directory.purge(`${ns}/a`);
    await directory.purge(`${ns}/b`);
    await directory.purge(`${ns}/b`);

    expect(await directory.generations([`${ns}/a`, `${ns}/never`, `${ns}/b`])).toEqual([1, 0, 2]);
    expect(await directory.generations([])).toEqual([]);
  });

  test('oldest() lists the least recently used copies first and drops leftover keys that have no copy', async () => {
    const directory = new ClusterDirectory(openLink());
    const [ns, volume] = [fresh('ns'), fresh('vol')];
    await directory.publish(volume, `${ns}/new`, metaFor(ns, 'new', 1), 300);
    await directory.publish(volume, `${ns}/old`, metaFor(ns, 'old', 1), 100);
    await directory.publish(volume, `${ns}/mid`, metaFor(ns, 'mid', 1), 200);
    // A leftover in the recency order, as a crash between two writes could leave.
    await raw.zAdd(clusterKeys.volumeRecency(volume), { score: 50, value: `${ns}/gone` });

    const callIds = (copies: ClusterCopy[]) => copies.map((copy) => copy.meta.callId);
    expect(callIds(await directory.oldest(volume, 10))).toEqual(['old', 'mid', 'new']);
    await eventually('the leftover leaves the recency order', async () => !(await directory.listed(volume)).includes(`${ns}/gone`));
    expect(callIds(await directory.oldest(volume, 2))).toEqual(['old', 'mid']);
    expect(await directory.oldest(fresh('empty-vol'), 5)).toEqual([]);
  });

  test('touch() moves used copies to the back of the eviction order and never adds keys the volume does not hold', async () => {
    const directory = new ClusterDirectory(openLink());
    const [ns, volume] = [fresh('ns'), fresh('vol')];
    for (const [i, id] of ['a', 'b', 'c'].entries()) await directory.publish(volume, `${ns}/${id}`, metaFor(ns, id, 1), i + 1);

    await directory.touch(volume, [`${ns}/a`, `${ns}/not-here`], 1_000);
    await directory.touch(volume, [], 2_000);

    expect(await directory.listed(volume)).toEqual([`${ns}/b`, `${ns}/c`, `${ns}/a`]);
  });

  test('the 404 memory is shared until it expires, and can be forgotten at once', async () => {
    const directory = new ClusterDirectory(openLink());
    const ns = fresh('ns');
    await directory.rememberNotFound(`${ns}/short`, 150);
    await directory.rememberNotFound(`${ns}/long`, 60_000);

    expect(await directory.isNotFound(`${ns}/long`)).toBe(true);
    expect(await directory.isNotFound(`${ns}/never`)).toBe(false);
    await eventually('the short 404 memory expires', async () => !(await directory.isNotFound(`${ns}/short`)));
    await directory.forgetNotFound(`${ns}/long`);
    expect(await directory.isNotFound(`${ns}/long`)).toBe(false);
  });

  test('epoch() keeps the first answer until Redis loses its data (FLUSHALL), then takes the next candidate', async () => {
    const directory = new ClusterDirectory(openLink());
    await raw.del(clusterKeys.epoch);

    expect(await directory.epoch('first')).toBe('first');
    expect(await directory.epoch('second')).toBe('first');
    await raw.flushAll();
    expect(await directory.epoch('third')).toBe('third');
    expect(await directory.epoch('fourth')).toBe('third');
  });
});

describe('DownloadLeases: one upstream download per recording for the cluster', () => {
  const TTL_MS = 300;

  function replica(nodeId: string, link = openLink()): DownloadLeases {
    return new DownloadLeases({ link, nodeId, ttlMs: TTL_MS });
  }

  function keep(lease: HeldLease): HeldLease {
    cleanups.push(() => lease.release());
    return lease;
  }

  async function acquireOrFail(leases: DownloadLeases, key: string, url: string): Promise<HeldLease> {
    const attempt = await leases.acquire(key, url);
    if (!attempt.acquired) throw new Error(`expected the lease, but ${attempt.holder.node} holds it`);
    return keep(attempt.lease);
  }

  /** Polls until `leases` gets the lease (the current holder released it or it lapsed). */
  async function acquireEventually(leases: DownloadLeases, key: string, url: string): Promise<HeldLease> {
    let lease: HeldLease | undefined;
    await eventually(`the lease on ${key} is free`, async () => {
      const attempt = await leases.acquire(key, url);
      if (attempt.acquired) lease = keep(attempt.lease);
      return attempt.acquired;
    });
    return lease as HeldLease;
  }

  const tokenOf = (value: string) => Number(value.split('|')[0]);

  test('the second replica is told who downloads (node and URL) and the recording’s purge generation', async () => {
    const [a, b] = [replica('gw-a'), replica('gw-b')];
    const key = `${fresh('ns')}/1`;
    await new ClusterDirectory(openLink()).purge(key);

    const first = await a.acquire(key, 'http://gw-a.test:8080');
    expect(first).toMatchObject({ acquired: true, generation: 1 });
    if (first.acquired) keep(first.lease);

    const second = await b.acquire(key, 'http://gw-b.test:8080');
    expect(second).toMatchObject({ acquired: false, generation: 1, holder: { node: 'gw-a', url: 'http://gw-a.test:8080' } });
    if (first.acquired && !second.acquired) expect(second.holder.value).toBe(first.lease.value);
  });

  test('a held lease outlives its TTL while its holder renews it', async () => {
    const [a, b] = [replica('gw-a'), replica('gw-b')];
    const key = `${fresh('ns')}/1`;
    const lease = await acquireOrFail(a, key, 'http://gw-a.test');

    await sleep(TTL_MS * 3);

    expect(lease.held).toBe(true);
    const attempt = await b.acquire(key, 'http://gw-b.test');
    expect(attempt).toMatchObject({ acquired: false, holder: { node: 'gw-a', value: lease.value } });
  });

  test('a released lease can be taken by another replica at once', async () => {
    const [a, b] = [replica('gw-a'), replica('gw-b')];
    const key = `${fresh('ns')}/1`;
    const lease = await acquireOrFail(a, key, 'http://gw-a.test');

    lease.release();
    lease.release();

    const next = await acquireEventually(b, key, 'http://gw-b.test');
    expect(parseLeaseHolder(next.value).node).toBe('gw-b');
  });

  test('a holder that stops renewing (its Redis connection gone) loses the lease after the TTL', async () => {
    const dyingLink = openLink();
    const [a, b] = [replica('gw-a', dyingLink), replica('gw-b')];
    const key = `${fresh('ns')}/1`;
    const lease = await acquireOrFail(a, key, 'http://gw-a.test');

    dyingLink.close();
    expect(await b.acquire(key, 'http://gw-b.test')).toMatchObject({ acquired: false, holder: { node: 'gw-a' } });

    const next = await acquireEventually(b, key, 'http://gw-b.test');
    expect(tokenOf(next.value)).toBeGreaterThan(tokenOf(lease.value));
  });

  test('takeOver removes only the exact lease it was told about: a stale holder value leaves a newer lease alone', async () => {
    const dyingLink = openLink();
    const [a, b, c] = [replica('gw-a', dyingLink), replica('gw-b'), replica('gw-c')];
    const key = `${fresh('ns')}/1`;
    const stale = await acquireOrFail(a, key, 'http://gw-a.test');
    dyingLink.close();
    const current = await acquireEventually(b, key, 'http://gw-b.test');

    await c.takeOver(key, parseLeaseHolder(stale.value));
    expect(await raw.get(clusterKeys.lease(key))).toBe(current.value);

    await c.takeOver(key, parseLeaseHolder(current.value));
    expect(await raw.get(clusterKeys.lease(key))).toBeNull();
    await eventually('the taken-over holder notices it lost the lease', () => !current.held);
  });

  test('fencing tokens only grow, across recordings and replicas', async () => {
    const [a, b] = [replica('gw-a'), replica('gw-b')];
    const ns = fresh('ns');
    const tokens: number[] = [];
    for (const [i, leases] of [a, b, a, b].entries()) {
      const lease = await acquireOrFail(leases, `${ns}/${i}`, 'http://gw.test');
      tokens.push(tokenOf(lease.value));
    }
    expect(tokens.every((token, i) => i === 0 || token > (tokens[i - 1] as number))).toBe(true);
  });
});

describe('RedisLink: every Redis call bounded, and recovery without a restart', () => {
  test('a paused Redis (SIGSTOP) fails a call after timeoutMs, later calls fail at once, and SIGCONT brings the link back by itself', async () => {
    const link = openLink(200);
    let ups = 0;
    link.onUp(() => ups++);
    expect(await link.call((client) => client.ping())).toBe('PONG');
    expect([link.up, ups]).toEqual([true, 1]);

    process.kill(redis.pid, 'SIGSTOP');
    const stalled = await guarded(
      link.call((client) => client.ping()).catch((error: unknown) => error),
      'a call to a paused Redis',
    );
    expect(stalled).toBeInstanceOf(RedisUnavailableError);
    expect(String(stalled)).toMatch(/did not answer within 200 ms/);
    expect(link.up).toBe(false);
    // The next call does not wait for Redis: it fails from the link's own state.
    await expect(link.call((client) => client.ping())).rejects.toThrow(/is unreachable/);

    process.kill(redis.pid, 'SIGCONT');
    await eventually('the link finds Redis again', () => ups === 2);
    expect(link.up).toBe(true);
    expect(await link.call((client) => client.ping())).toBe('PONG');
  });

  test('a Redis that refuses the connection is reported without the URL’s password', async () => {
    const secret = 'not-for-logs-4f1c';
    const link = new RedisLink({ url: `redis://user:${secret}@127.0.0.1:${redis.port}`, timeoutMs: 1_000, logger: silentLogger() });
    cleanups.push(() => link.close());

    const failure = await guarded(
      link.call((client) => client.ping()).catch((error: unknown) => error),
      'a refused login',
    );

    expect(failure).toBeInstanceOf(RedisUnavailableError);
    expect(String(failure)).toContain(`127.0.0.1:${redis.port}`);
    expect(String(failure)).not.toContain(secret);
    expect(link.where).not.toContain(secret);
  });

  test('a subscription gets messages, and after a Redis restart on the same port it resubscribes and says so', async () => {
    const channel = fresh('channel');
    const messages: string[] = [];
    let resubscribed = 0;
    const events = subscribe(
      openLink(),
      channel,
      (message) => messages.push(message),
      () => resubscribed++,
    );
    // The subscription starts in the background: publish until it is there.
    await eventually('the first message arrives', async () => {
      await raw.publish(channel, 'before');
      return messages.includes('before');
    });

    await restartRedis();

    await eventually('the subscriber reconnects', () => resubscribed >= 1);
    await eventually('a message after the restart arrives', async () => {
      await raw.publish(channel, 'after');
      return messages.includes('after');
    });
    const heard = events.heardUpTo;
    await eventually('its beacons are heard again', () => events.heardUpTo > heard);
  });

  test('a subscription knows how recently it heard: its beacons come back over the connection that carries the events', async () => {
    const started = performance.now();
    const channel = fresh('channel');
    const messages: string[] = [];
    const events = subscribe(
      openLink(),
      channel,
      (message) => messages.push(message),
      () => {},
    );
    const firstHeard = events.heardUpTo;
    expect(firstHeard).toBeGreaterThanOrEqual(started);
    await eventually('a beacon is heard', () => events.heardUpTo > firstHeard);
    const heard = events.heardUpTo;
    await eventually('the next one too', () => events.heardUpTo > heard);
    // A beacon it did not send is ignored: the event published after it arrives after it, on the same connection.
    const stale = events.heardUpTo;
    await raw.publish(clusterKeys.beacon(BEACON_NODE), 'not a beacon');
    await raw.publish(clusterKeys.beacon(BEACON_NODE), String(Date.now() + 60_000));
    await raw.publish(clusterKeys.beacon(BEACON_NODE), '0123456789abcdef 999999');
    await raw.publish(channel, 'marker');
    await eventually('the marker arrives', () => messages.includes('marker'));
    expect(Number.isFinite(events.heardUpTo)).toBe(true);
    expect(events.heardUpTo).toBeGreaterThanOrEqual(stale);
    expect(events.heardUpTo).toBeLessThanOrEqual(performance.now());
  });

  test('its beacons are heard across a step back of the wall clock (an NTP step): hearing is timed on the monotonic clock', async () => {
    const events = subscribe(
      openLink(),
      fresh('channel'),
      () => {},
      () => {},
    );
    const started = events.heardUpTo;
    await eventually('a beacon is heard', () => events.heardUpTo > started);
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() - 50_000);
      const before = events.heardUpTo;
      await eventually('a beacon sent after the step is heard', () => events.heardUpTo > before);
    } finally {
      vi.useRealTimers();
    }
  });

  test('a link made while Redis is down answers once Redis is up, finding it by itself', async () => {
    let link: RedisLink | undefined;
    let ups = 0;
    await restartRedis(async () => {
      link = openLink();
      link.onUp(() => ups++);
      await expect(
        guarded(
          link.call((client) => client.ping()),
          'a call while Redis is down',
        ),
      ).rejects.toBeInstanceOf(RedisUnavailableError);
      expect(link.up).toBe(false);
    });

    await eventually('the link finds Redis by itself', () => ups === 1);
    expect(await link?.call((client) => client.ping())).toBe('PONG');
  });

  // A SUBSCRIBE queued before the connection would be sent twice (node-redis resubscribes on connect) and the
  // doubled reply would leave the subscription deaf: openSubscriber() waits for connect() first.
  test('a subscription made while Redis is down delivers once Redis is up (a replica started during an outage hears purges)', async () => {
    const channel = fresh('channel');
    const messages: string[] = [];
    await restartRedis(() => {
      subscribe(
        openLink(),
        channel,
        (message) => messages.push(message),
        () => {},
      );
    });

    await eventually('the late subscription delivers', async () => {
      await raw.publish(channel, 'hello');
      return messages.includes('hello');
    });
  });
});

describe('PeerNonces: each signed peer request is taken once', () => {
  const freshNonce = () => randomBytes(16).toString('hex');

  test('a nonce is taken once for the cluster: again on the same replica or another, it is refused', async () => {
    const [here, elsewhere] = [new PeerNonces(openLink()), new PeerNonces(openLink())];
    const node = fresh('gw');
    const nonce = freshNonce();
    const before = new Set(await raw.keys(clusterKeys.peerNonce('*')));

    expect(await here.claim(node, nonce)).toBe(true);
    expect(await here.claim(node, nonce)).toBe(false);
    expect(await elsewhere.claim(node, nonce)).toBe(false);
    expect(await elsewhere.claim(node, freshNonce())).toBe(true);

    // Redis holds a digest, never the nonce, and only for as long as a request's time can be accepted.
    const added = (await raw.keys(clusterKeys.peerNonce('*'))).filter((key) => !before.has(key));
    expect(added).toHaveLength(2);
    expect(added.join(' ')).not.toContain(nonce);
    for (const key of added) {
      const ttl = await raw.pTTL(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(2 * PEER_CLOCK_SKEW_SECONDS * 1_000);
    }
  });

  test('while Redis is paused, claims do not hang and a replay to the same replica is still refused', async () => {
    const [here, elsewhere] = [new PeerNonces(openLink(200)), new PeerNonces(openLink(200))];
    const node = fresh('gw');
    const nonce = freshNonce();

    process.kill(redis.pid, 'SIGSTOP');
    expect(await guarded(here.claim(node, nonce), 'a claim while Redis is paused')).toBe(true);
    expect(await guarded(here.claim(node, nonce), 'a replay while Redis is paused')).toBe(false);
    // Without Redis, only the replica that took the nonce remembers it.
    expect(await guarded(elsewhere.claim(node, nonce), 'a claim on another replica while Redis is paused')).toBe(true);
  });

  test('nonces taken while Redis was paused are claimed in Redis once it is back, for the rest of their window: a replay elsewhere is refused', async () => {
    const [here, elsewhere] = [new PeerNonces(openLink(200)), new PeerNonces(openLink(200))];
    const node = fresh('gw');
    const nonce = freshNonce();
    const before = new Set(await raw.keys(clusterKeys.peerNonce('*')));
    const added = async () => (await raw.keys(clusterKeys.peerNonce('*'))).filter((key) => !before.has(key));

    process.kill(redis.pid, 'SIGSTOP');
    try {
      expect(await guarded(here.claim(node, nonce), 'a claim while Redis is paused')).toBe(true);
    } finally {
      process.kill(redis.pid, 'SIGCONT');
    }

    await eventually('the claim reaches Redis once it is back', async () => (await added()).length === 1);
    const [key] = await added();
    const ttl = await raw.pTTL(key!);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThan(2 * PEER_CLOCK_SKEW_SECONDS * 1_000);
    expect(await elsewhere.claim(node, nonce)).toBe(false);
  });
});

describe('chooseVictims: which copies a full shared volume evicts', () => {
  const copy = (namespace: string, callId: string, size: number): ClusterCopy => ({
    volume: 'v',
    meta: metaFor(namespace, callId, size),
  });
  const names = (victims: ClusterCopy[]) => victims.map((victim) => `${victim.meta.namespace}/${victim.meta.callId}`);
  const usageOf = (byNamespace: Record<string, number>) => ({
    total: Object.values(byNamespace).reduce((sum, bytes) => sum + bytes, 0),
    byNamespace: new Map(Object.entries(byNamespace)),
  });
  const shares = new Map([
    ['hog', 200],
    ['fair', 200],
    ['new', 200],
  ]);

  test('a namespace over its share goes first, even when another namespace’s copies are older', () => {
    const candidates = [copy('fair', '1', 100), copy('hog', '1', 100), copy('hog', '2', 100)];
    const victims = chooseVictims(candidates, usageOf({ fair: 100, hog: 400 }), shares, { key: 'new/9', namespace: 'new' }, 100);
    expect(names(victims)).toEqual(['hog/1']);
  });

  test('a namespace over its share gives up copies only down to its share, then the newcomer’s own namespace pays', () => {
    const candidates = [copy('hog', '1', 100), copy('new', '1', 100), copy('hog', '2', 100), copy('new', '2', 100)];
    const usage = usageOf({ hog: 300, new: 200 });
    const victims = chooseVictims(candidates, usage, shares, { key: 'new/9', namespace: 'new' }, 300);
    expect(names(victims)).toEqual(['hog/1', 'new/1', 'new/2']);
  });

  test('never the newcomer itself, and never a namespace within its share for another’s traffic, even when too little is freed', () => {
    const candidates = [copy('new', '9', 100), copy('fair', '1', 100), copy('fair', '2', 50), copy('new', '1', 100)];
    const usage = usageOf({ fair: 150, new: 200 });
    const victims = chooseVictims(candidates, usage, shares, { key: 'new/9', namespace: 'new' }, 1_000);
    expect(names(victims)).toEqual(['new/1']);
  });

  test('stops as soon as enough is freed, and at maxVictims', () => {
    const candidates = [copy('hog', '1', 60), copy('hog', '2', 60), copy('hog', '3', 60), copy('hog', '4', 60)];
    const usage = usageOf({ hog: 1_000 });
    const newcomer = { key: 'new/9', namespace: 'new' };
    expect(names(chooseVictims(candidates, usage, shares, newcomer, 100))).toEqual(['hog/1', 'hog/2']);
    expect(names(chooseVictims(candidates, usage, shares, newcomer, 1_000, 3))).toEqual(['hog/1', 'hog/2', 'hog/3']);
    expect(chooseVictims(candidates, usage, shares, newcomer, 0)).toEqual([]);
  });
});

describe('readOrCreateVolumeId: a cache directory names itself once', () => {
  let dir: string;
  afterEach(async () => {
    await removeDir(dir);
  });

  test('the first call writes an id, later calls read the same one', async () => {
    dir = await makeTempDir('rg-volume-id-');
    const id = await readOrCreateVolumeId(dir);

    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(await readOrCreateVolumeId(dir)).toBe(id);
    expect((await readFile(path.join(dir, 'volume-id'), 'utf8')).trim()).toBe(id);
  });

  test('replicas starting together on a new volume agree on one id', async () => {
    dir = await makeTempDir('rg-volume-id-');
    const ids = await Promise.all(Array.from({ length: 8 }, () => readOrCreateVolumeId(dir)));

    expect(new Set(ids).size).toBe(1);
    expect((await readFile(path.join(dir, 'volume-id'), 'utf8')).trim()).toBe(ids[0]);
  });

  test('a corrupt id file stops start-up with an error that says what to do, and is left as it was', async () => {
    dir = await makeTempDir('rg-volume-id-');
    await writeFile(path.join(dir, 'volume-id'), 'not an id\n');

    await expect(guarded(readOrCreateVolumeId(dir), 'reading a corrupt volume id')).rejects.toThrow(
      /volume-id is not a volume id; remove it/,
    );
    expect(await readFile(path.join(dir, 'volume-id'), 'utf8')).toBe('not an id\n');
  });
});
