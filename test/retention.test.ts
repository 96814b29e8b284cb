import { existsSync } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { capturingLogger } from './support/capturing-logger.js';
import {
  ACME_KEY,
  acmeTenant,
  bytesOf,
  makeTempDir,
  manualClock,
  namespaceFor,
  removeDir,
  startGateway,
  tempFilesIn,
  testConfig,
  testTenant,
  SERVER_KEY,
  type RunningGateway,
} from '../dev/gateway-harness.js';
import type { ManualClock } from '../dev/manual-clock.js';
import { upstreamNamespace } from '../src/auth/tenants.js';
import { createSqliteIndex } from '../src/cache/sqlite-index.js';
import { cacheKey, type RecordingMeta } from '../src/cache/recording-meta.js';
import { createCopyRetention, RetentionSweeper, retentionByNamespace } from '../src/cache/retention.js';
import type { CachedRecording } from '../src/cache/recording-catalogue.js';
import type { GatewayConfig, TenantConfig } from '../src/config/index.js';
import { silentLogger, type Logger } from '../src/logger.js';
import { sha256Hex } from '../src/sha256.js';
import { gatewayPerTest } from './support/gateway-per-test.js';
import { runCliInProcess } from './support/run-cli-in-process.js';
import { startRedisServer, type RunningRedis } from './support/redis-server.js';

const DAY_MS = 86_400_000;
const BETA_KEY = 'beta-tenant-key-for-retention-tests-01';
const GAMMA_KEY = 'gamma-tenant-key-for-retention-test-02';
const BETA_UPSTREAM_KEY = 'flyflow-key-of-beta-account-000000000';

const bed = gatewayPerTest('rg-retention-');

interface StartOptions {
  cache?: Partial<GatewayConfig['cache']>;
  tenants?: TenantConfig[];
  clock?: ManualClock;
  logger?: Logger;
  sweepMs?: number;
}

function start(options: StartOptions = {}): Promise<RunningGateway> {
  return bed.start(
    { cache: options.cache ?? {}, ...(options.tenants ? { tenants: options.tenants } : {}) },
    {
      clock: options.clock ?? manualClock(),
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.sweepMs === undefined ? {} : { retentionSweepIntervalMs: options.sweepMs }),
    },
  );
}

function fileOf(namespace: string, callId: number, cacheDir = bed.dir): string {
  return path.join(cacheDir, 'recordings', namespace, `${callId}.mp3`);
}

/** Every recording file under recordings/ of a cache directory (sidecars, written in the background, left out). */
async function recordingFiles(cacheDir = bed.dir): Promise<string[]> {
  const entries = await readdir(path.join(cacheDir, 'recordings'), { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((entry) => entry.isFile() && entry.name.endsWith('.mp3')).map((entry) => entry.name);
}

/** Downloads a recording whole and waits until it is stored. */
async function play(gateway: RunningGateway, callId: number, headers: Record<string, string> = {}): Promise<Response> {
  const response = await gateway.fetch(`/v1/call/recording/${callId}.mp3`, { headers });
  expect(response.status).toBe(200);
  expect((await bytesOf(response)).equals(bed.upstream.recording(callId)!)).toBe(true);
  await gateway.gateway.downloads.idle();
  return response;
}

async function metricValue(gateway: RunningGateway, name: string): Promise<number | undefined> {
  const text = await gateway.gateway.metrics.registry.metrics();
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

/** Waits (bounded) until `condition` holds; fails the test if it never does. */
async function eventually(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(20);
  }
}

describe('an expired copy is deleted from memory, disk and index', () => {
  test('the sweep deletes it unasked, counts and logs it, and the next request goes upstream again', async () => {
    const clock = manualClock();
    const { logger, lines } = capturingLogger();
    const gateway = await start({ cache: { retentionDays: 1 }, clock, logger });
    const namespace = namespaceFor(bed.upstream.baseUrl);
    const key = cacheKey(namespace, '1');
    await play(gateway, 1);
    expect(existsSync(fileOf(namespace, 1))).toBe(true);
    expect(await gateway.gateway.index.get(key)).toBeDefined();
    expect(gateway.gateway.cache.stats().memoryEntries).toBe(1);

    clock.advance(DAY_MS - 1);
    expect(await gateway.gateway.retention!.sweep()).toBe(0);
    expect(existsSync(fileOf(namespace, 1))).toBe(true);

    clock.advance(2);
    expect(await gateway.gateway.retention!.sweep()).toBe(1);
    expect(existsSync(fileOf(namespace, 1))).toBe(false);
    expect(await recordingFiles()).toEqual([]);
    expect(await gateway.gateway.index.get(key)).toBeUndefined();
    expect(gateway.gateway.cache.stats()).toMatchObject({ entries: 0, memoryEntries: 0, diskBytes: 0 });
    expect(await metricValue(gateway, 'recording_gateway_retention_expired_total')).toBe(1);
    expect(lines.filter((line) => line.msg === 'retention: deleted expired recordings').map((line) => line.count)).toEqual([1]);

    const again = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(again.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    expect((await bytesOf(again)).equals(bed.upstream.recording(1)!)).toBe(true);
    expect(bed.upstream.recordingRequests(1)).toHaveLength(2);
  });

  test('between sweeps an expired copy is never served: it is fetched again and the fresh copy is kept', async () => {
    const clock = manualClock();
    const gateway = await start({ cache: { retentionDays: 0.5 }, clock });
    const namespace = namespaceFor(bed.upstream.baseUrl);
    await play(gateway, 2);
    const first = await gateway.gateway.index.get(cacheKey(namespace, '2'));

    clock.advance(DAY_MS / 2 + 1);
    const response = await gateway.fetch('/v1/call/recording/2.mp3', { headers: { range: 'bytes=0-99' } });
    expect(response.status).toBe(206);
    expect(response.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    expect((await bytesOf(response)).equals(bed.upstream.recording(2)!.subarray(0, 100))).toBe(true);
    await gateway.gateway.downloads.idle();
    expect(bed.upstream.recordingRequests(2)).toHaveLength(2);

    const fresh = await gateway.gateway.index.get(cacheKey(namespace, '2'));
    expect(fresh?.fetchedAt).toBe(clock.now());
    expect(fresh?.fetchedAt).toBeGreaterThan(first!.fetchedAt);
    // The sweep leaves the fresh copy alone.
    expect(await gateway.gateway.retention!.sweep()).toBe(0);
    expect(existsSync(fileOf(namespace, 2))).toBe(true);
    const hit = await gateway.fetch('/v1/call/recording/2.mp3');
    expect(hit.headers.get('cache-status')).toMatch(/hit/);
    await bytesOf(hit);
  });

  test('the periodic sweep removes it with no request and no one calling it', async () => {
    const clock = manualClock();
    const gateway = await start({ cache: { retentionDays: 1 }, clock, sweepMs: 50 });
    const namespace = namespaceFor(bed.upstream.baseUrl);
    await play(gateway, 3);
    expect(existsSync(fileOf(namespace, 3))).toBe(true);

    clock.advance(DAY_MS + 1);
    await eventually(() => !existsSync(fileOf(namespace, 3)), 'the expired file is gone');
    await eventually(async () => (await gateway.gateway.index.get(cacheKey(namespace, '3'))) === undefined, 'the index entry is gone');
    expect(gateway.gateway.cache.stats().entries).toBe(0);
  });

  test('a copy in memory only (the disk refused it) expires too', async () => {
    const clock = manualClock();
    // No room on disk for any recording: it lives in memory only.
    const gateway = await start({ cache: { retentionDays: 1, maxDiskBytes: 1024, maxRecordingBytes: 1024 * 1024 }, clock });
    await play(gateway, 1);
    expect(await recordingFiles()).toEqual([]);
    expect(gateway.gateway.cache.stats().memoryEntries).toBe(1);

    clock.advance(DAY_MS + 1);
    expect(await gateway.gateway.retention!.sweep()).toBe(1);
    expect(gateway.gateway.cache.stats()).toMatchObject({ entries: 0, memoryEntries: 0 });
  });
});

describe('per-tenant retention', () => {
  test("a tenant's retention_days overrides the cache's; tenants on another account keep theirs", async () => {
    const clock = manualClock();
    const tenants = [acmeTenant({ retentionDays: 1 }), testTenant('beta', BETA_KEY, { upstreamApiKey: BETA_UPSTREAM_KEY })];
    const gateway = await start({ cache: { retentionDays: 30 }, tenants, clock });
    const acme = namespaceFor(bed.upstream.baseUrl);
    const beta = upstreamNamespace(bed.upstream.baseUrl, BETA_UPSTREAM_KEY);
    await play(gateway, 1);
    await play(gateway, 1, { authorization: `Bearer ${BETA_KEY}` });
    expect(existsSync(fileOf(acme, 1))).toBe(true);
    expect(existsSync(fileOf(beta, 1))).toBe(true);

    clock.advance(2 * DAY_MS);
    expect(await gateway.gateway.retention!.sweep()).toBe(1);
    expect(existsSync(fileOf(acme, 1))).toBe(false);
    expect(existsSync(fileOf(beta, 1))).toBe(true);

    clock.advance(29 * DAY_MS);
    expect(await gateway.gateway.retention!.sweep()).toBe(1);
    expect(existsSync(fileOf(beta, 1))).toBe(false);
  });

  test('tenants sharing an upstream account share its copies, which follow the shortest retention among them', async () => {
    const clock = manualClock();
    // gamma uses the server key too: the same namespace as acme.
    const tenants = [acmeTenant({ retentionDays: 7 }), testTenant('gamma', GAMMA_KEY, { retentionDays: 1 })];
    const gateway = await start({ tenants, clock });
    const namespace = namespaceFor(bed.upstream.baseUrl);
    await play(gateway, 4);

    clock.advance(DAY_MS + 1);
    expect(await gateway.gateway.retention!.sweep()).toBe(1);
    expect(existsSync(fileOf(namespace, 4))).toBe(false);
  });
});

describe('retention_days 0', () => {
  test('the recording is served, and from memory again, but nothing is written to disk or the index', async () => {
    const gateway = await start({ cache: { retentionDays: 0 } });
    const namespace = namespaceFor(bed.upstream.baseUrl);
    const [first, joined] = await Promise.all([gateway.fetch('/v1/call/recording/1.mp3'), gateway.fetch('/v1/call/recording/1.mp3')]);
    expect((await bytesOf(first)).equals(bed.upstream.recording(1)!)).toBe(true);
    expect((await bytesOf(joined)).equals(bed.upstream.recording(1)!)).toBe(true);
    await gateway.gateway.downloads.idle();
    // The two requests shared one download.
    expect(bed.upstream.recordingRequests(1)).toHaveLength(1);

    expect(await recordingFiles()).toEqual([]);
    expect(await tempFilesIn(bed.dir)).toEqual([]);
    expect(await gateway.gateway.index.get(cacheKey(namespace, '1'))).toBeUndefined();
    const again = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(again.headers.get('cache-status')).toBe('recording-gateway; hit; detail=memory');
    await bytesOf(again);
    expect(bed.upstream.recordingRequests(1)).toHaveLength(1);
  });

  test('a restart with 0 deletes what an earlier configuration left on disk', async () => {
    const before = await start();
    await play(before, 2);
    await bed.stop(before);
    expect(await recordingFiles()).toEqual(['2.mp3']);

    const after = await start({ cache: { retentionDays: 0 } });
    await after.gateway.retention!.sweep();
    expect(await recordingFiles()).toEqual([]);
  });
});

describe('beside the CLI on the same sqlite index', () => {
  test("a copy `prefetch` stored while the gateway ran expires on the gateway's sweep, though the gateway never served it", async () => {
    // The CLI stamps its copy with the real time; the gateway's clock starts there.
    const clock = manualClock(Date.now());
    const gateway = await start({ cache: { retentionDays: 1 }, clock });
    const namespace = namespaceFor(bed.upstream.baseUrl);
    const key = cacheKey(namespace, '2');
    const configPath = path.join(bed.dir, '..', `${path.basename(bed.dir)}-cli.yaml`);
    await writeFile(
      configPath,
      [
        `upstream: { base_url: "${bed.upstream.baseUrl}" }`,
        `cache: { dir: ${JSON.stringify(bed.dir)}, retention_days: 1 }`,
        'tenants:',
        '  - id: acme',
        `    api_keys: ["sha256:${sha256Hex(ACME_KEY)}"]`,
      ].join('\n'),
    );
    try {
      const prefetch = await runCliInProcess(['--config', configPath, 'prefetch', '2'], {
        cwd: bed.dir,
        env: { FLYFLOW_API_KEY: SERVER_KEY },
      });
      expect(prefetch.stdout).toContain('call 2: cached');
    } finally {
      await rm(configPath, { force: true });
    }
    expect(existsSync(fileOf(namespace, 2))).toBe(true);
    expect(await gateway.gateway.retention!.sweep()).toBe(0);

    clock.advance(DAY_MS + 1_000);
    expect(await gateway.gateway.retention!.sweep()).toBe(1);
    expect(existsSync(fileOf(namespace, 2))).toBe(false);
    expect(await gateway.gateway.index.get(key)).toBeUndefined();
    const again = await gateway.fetch('/v1/call/recording/2.mp3');
    expect(again.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    await bytesOf(again);
  });
});

describe('after a restart', () => {
  test('an expired copy left on disk is deleted at start-up and fetched again when asked', async () => {
    const clock = manualClock();
    const before = await start({ clock });
    const namespace = namespaceFor(bed.upstream.baseUrl);
    await play(before, 3);
    await bed.stop(before);
    expect(existsSync(fileOf(namespace, 3))).toBe(true);

    clock.advance(3 * DAY_MS);
    const after = await start({ cache: { retentionDays: 2 }, clock });
    // Joins the sweep start-up began.
    await after.gateway.retention!.sweep();
    expect(existsSync(fileOf(namespace, 3))).toBe(false);
    await bed.stop(after);

    const index = createSqliteIndex(bed.dir);
    try {
      expect(await index.get(cacheKey(namespace, '3'))).toBeUndefined();
    } finally {
      await index.close();
    }
    const third = await start({ cache: { retentionDays: 2 }, clock });
    await play(third, 3);
    expect(bed.upstream.recordingRequests(3)).toHaveLength(2);
  });

  test('a copy still within its retention is kept and served from disk', async () => {
    const clock = manualClock();
    const before = await start({ cache: { retentionDays: 2 }, clock });
    await play(before, 3);
    await bed.stop(before);

    clock.advance(DAY_MS);
    const after = await start({ cache: { retentionDays: 2 }, clock });
    expect(await after.gateway.retention!.sweep()).toBe(0);
    const hit = await after.fetch('/v1/call/recording/3.mp3');
    expect(hit.headers.get('cache-status')).toBe('recording-gateway; hit; detail=disk');
    await bytesOf(hit);
    expect(bed.upstream.recordingRequests(3)).toHaveLength(1);
  });
});

describe('without any retention_days', () => {
  test('nothing expires and no sweeper runs', async () => {
    const clock = manualClock();
    const gateway = await start({ clock });
    await play(gateway, 1);
    clock.advance(10_000 * DAY_MS);
    expect(gateway.gateway.retention).toBeUndefined();
    const hit = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(hit.headers.get('cache-status')).toBe('recording-gateway; hit; detail=memory');
    await bytesOf(hit);
  });
});

describe('the retention rules', () => {
  const meta = (namespace: string, fetchedAt: number): RecordingMeta => ({
    namespace,
    callId: '1',
    size: 10,
    sha256: 'a'.repeat(64),
    contentType: 'audio/mpeg',
    fetchedAt,
  });

  test('the shortest retention among the tenants of a namespace wins; a tenant without one counts with the default', () => {
    const { byNamespace, defaultMs } = retentionByNamespace({
      defaultDays: 10,
      tenants: [
        { namespace: 'a', retentionDays: 3 },
        { namespace: 'a', retentionDays: 5 },
        { namespace: 'b', retentionDays: undefined },
        { namespace: 'b', retentionDays: 20 },
        { namespace: 'c', retentionDays: 0.5 },
      ],
    });
    expect(Object.fromEntries(byNamespace)).toEqual({ a: 3 * DAY_MS, b: 10 * DAY_MS, c: DAY_MS / 2 });
    expect(defaultMs).toBe(10 * DAY_MS);
  });

  test('without a default, a tenant without retention does not limit the others on its account', () => {
    const { byNamespace } = retentionByNamespace({
      defaultDays: undefined,
      tenants: [
        { namespace: 'a', retentionDays: undefined },
        { namespace: 'a', retentionDays: 2 },
        { namespace: 'b', retentionDays: undefined },
      ],
    });
    expect(Object.fromEntries(byNamespace)).toEqual({ a: 2 * DAY_MS });
  });

  test('nothing configured: no rules at all', () => {
    expect(createCopyRetention({ defaultDays: undefined, tenants: [{ namespace: 'a', retentionDays: undefined }] }, manualClock())).toBe(
      undefined,
    );
  });

  test('expiry is strictly after the retention; a namespace no tenant reaches gets the default', () => {
    const clock = manualClock();
    const retention = createCopyRetention({ defaultDays: 1, tenants: [{ namespace: 'short', retentionDays: 0.5 }] }, clock)!;
    const now = clock.now();
    expect(retention.expired(meta('gone-tenant', now - DAY_MS), true)).toBe(false);
    expect(retention.expired(meta('gone-tenant', now - DAY_MS - 1), true)).toBe(true);
    expect(retention.expired(meta('short', now - DAY_MS / 2 - 1), false)).toBe(true);
    expect(retention.keepsOnDisk('short')).toBe(true);
    // What a sweep reads of the index: copies fetched before the shortest retention began, no newer one.
    expect(retention.keptFrom()).toBe(now - DAY_MS / 2);
  });

  test('0 keeps a copy in memory only: any copy on disk is expired, a memory-only one is not', () => {
    const clock = manualClock();
    const retention = createCopyRetention({ defaultDays: undefined, tenants: [{ namespace: 'none', retentionDays: 0 }] }, clock)!;
    expect(retention.keepsOnDisk('none')).toBe(false);
    expect(retention.keepsOnDisk('other')).toBe(true);
    expect(retention.expired(meta('none', clock.now()), true)).toBe(true);
    expect(retention.expired(meta('none', clock.now() - 1000), false)).toBe(false);
    expect(retention.expired(meta('other', 0), true)).toBe(false);
    expect(retention.keptFrom()).toBe(clock.now() + 1);
  });
});

describe('the sweeper', () => {
  const clock = manualClock();
  const retention = createCopyRetention({ defaultDays: 1, tenants: [] }, clock)!;
  const entry = (callId: string, fetchedAt: number): CachedRecording => ({
    key: cacheKey('ns', callId),
    onDisk: true,
    meta: { namespace: 'ns', callId, size: 1, sha256: 'b'.repeat(64), contentType: 'audio/mpeg', fetchedAt },
  });

  test('leaves a copy whose download is under way, and tries a failed deletion again next time', async () => {
    const entries = [entry('1', clock.now() - 2 * DAY_MS), entry('2', clock.now() - 2 * DAY_MS), entry('3', clock.now())];
    const attempts: string[] = [];
    let failing = true;
    const sweeper = new RetentionSweeper({
      cache: {
        entries: () => entries,
        async expire(key) {
          attempts.push(key);
          if (key === cacheKey('ns', '2') && failing) throw new Error('disk says no');
          return true;
        },
      },
      retention,
      busy: (key) => key === cacheKey('ns', '1'),
      logger: silentLogger(),
    });
    expect(await sweeper.sweep()).toBe(0);
    expect(attempts).toEqual([cacheKey('ns', '2')]);
    failing = false;
    expect(await sweeper.sweep()).toBe(1);
    expect(attempts).toEqual([cacheKey('ns', '2'), cacheKey('ns', '2')]);
  });

  /** A sweeper over `held` (this process's copies) and the index's `entries`, recording what it expires. */
  function sweeperOver(held: ReturnType<typeof entry>[], entries: () => AsyncIterable<[string, RecordingMeta]>) {
    const expired: string[] = [];
    const sweeper = new RetentionSweeper({
      cache: {
        entries: () => held,
        async expire(key) {
          expired.push(key);
          return true;
        },
      },
      retention,
      index: { entries },
      logger: silentLogger(),
    });
    return { sweeper, expired };
  }

  test('lists the index too, for copies other processes stored', async () => {
    const listed: Array<[string, RecordingMeta]> = [[cacheKey('ns', '9'), entry('9', clock.now() - 2 * DAY_MS).meta]];
    const { sweeper, expired } = sweeperOver([], async function* () {
      yield* listed;
    });
    expect(await sweeper.sweep()).toBe(1);
    expect(expired).toEqual([cacheKey('ns', '9')]);
  });

  test('an index that cannot be listed still lets the copies this process holds expire', async () => {
    // biome-ignore lint/correctness/useYield: a listing that fails before its first entry
    const { sweeper, expired } = sweeperOver([entry('1', clock.now() - 2 * DAY_MS)], async function* () {
      throw new Error('index: disk I/O error');
    });
    expect(await sweeper.sweep()).toBe(1);
    expect(expired).toEqual([cacheKey('ns', '1')]);
  });

  test('refuses a bad interval', () => {
    expect(
      () =>
        new RetentionSweeper({ cache: { entries: () => [], expire: async () => true }, retention, logger: silentLogger(), intervalMs: 0 }),
    ).toThrow(/intervalMs must be a positive number/);
  });
});

describe('in a cluster', () => {
  let redis: RunningRedis;
  const PEER_SECRET = 'peer-secret-for-retention-tests-0123456789';

  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  async function replica(nodeId: string, cacheDir: string, clock: ManualClock): Promise<RunningGateway> {
    const config: GatewayConfig = {
      ...testConfig({ dir: cacheDir, upstreamBaseUrl: bed.upstream.baseUrl, cache: { retentionDays: 1 } }),
      cluster: { redisUrl: redis.url, nodeId, peerSecret: PEER_SECRET, redisTimeoutMs: 1_000 },
    };
    const gateway = bed.track(await startGateway(config, { clock }));
    await gateway.gateway.joinCluster(gateway.baseUrl);
    return gateway;
  }

  test("a peer's copy keeps its age, and every replica deletes its copy and withdraws it from the cluster's directory", async () => {
    const dirB = await makeTempDir('rg-retention-b-');
    try {
      const clockA = manualClock();
      const clockB = manualClock();
      const a = await replica('gw-a', bed.dir, clockA);
      const b = await replica('gw-b', dirB, clockB);
      const namespace = namespaceFor(bed.upstream.baseUrl);
      const key = cacheKey(namespace, '1');

      await play(a, 1);
      // B's clock is a day ahead of when A fetched it: its copy from A must still count from A's fetch.
      clockB.advance(DAY_MS / 2);
      await eventually(() => b.gateway.cluster!.membership.peers.length === 1, 'replica B sees replica A');
      const fromPeer = await b.fetch('/v1/call/recording/1.mp3');
      expect((await bytesOf(fromPeer)).equals(bed.upstream.recording(1)!)).toBe(true);
      await b.gateway.downloads.idle();
      expect(bed.upstream.recordingRequests(1)).toHaveLength(1);
      const metaA = await a.gateway.index.get(key);
      const metaB = await b.gateway.index.get(key);
      expect(metaB?.fetchedAt).toBe(metaA?.fetchedAt);
      expect((await a.gateway.cluster!.directory.lookup(key)).copies).toHaveLength(2);

      clockA.advance(DAY_MS + 1);
      clockB.advance(DAY_MS / 2 + 1);
      expect(await a.gateway.retention!.sweep()).toBe(1);
      expect(await b.gateway.retention!.sweep()).toBe(1);
      expect(existsSync(fileOf(namespace, 1, bed.dir))).toBe(false);
      expect(existsSync(fileOf(namespace, 1, dirB))).toBe(false);
      expect(await a.gateway.index.get(key)).toBeUndefined();
      expect(await b.gateway.index.get(key)).toBeUndefined();
      expect((await a.gateway.cluster!.directory.lookup(key)).copies).toEqual([]);

      await play(b, 1);
      expect(bed.upstream.recordingRequests(1)).toHaveLength(2);
    } finally {
      await bed.stopAll();
      await removeDir(dirB);
    }
  });
});
