/**
 * What survives a full, damaged or failing cache disk: the budget, readers
 * under eviction, start-up reconciliation, corruption, an unwritable cache
 * and a real ENOSPC on a small tmpfs. Real files, a real sqlite index, a real
 * upstream on 127.0.0.1.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat, statfs, truncate, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { createDiskStore } from '../src/cache/disk-store.js';
import { createSqliteIndex } from '../src/cache/sqlite-index.js';
import { verifyCache } from '../src/cache/verify.js';
import type { GatewayConfig } from '../src/config/index.js';
import type { Logger } from '../src/logger.js';
import {
  bigRecording,
  collectingLogger,
  isOpenHere,
  keyFor,
  mountTmpfs,
  readRest,
  recordingPath,
  sha256,
  storedFiles,
  unmount,
  WARN,
} from './support/durability.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { syntheticRecording } from '../dev/recording-bytes.js';
import { makeTempDir, manualClock, removeDir, startGateway, tempFilesIn, testConfig, type RunningGateway } from '../dev/gateway-harness.js';

type CacheOptions = Partial<GatewayConfig['cache']>;

const KiB = 1024;
const MiB = 1024 * KiB;
const HIT_MEMORY = 'recording-gateway; hit; detail=memory';
const HIT_DISK = 'recording-gateway; hit; detail=disk';
const MISS = 'recording-gateway; fwd=uri-miss';

let upstream: FakeFlyflow;
let dir: string;
let mounted: string | undefined;
const running: RunningGateway[] = [];

async function start(cache: CacheOptions = {}, logger?: Logger): Promise<RunningGateway> {
  const gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, cache }), {
    clock: manualClock(),
    ...(logger ? { logger } : {}),
  });
  running.push(gateway);
  return gateway;
}

async function stop(gateway: RunningGateway): Promise<void> {
  running.splice(running.indexOf(gateway), 1);
  await gateway.close();
}

/** GETs a recording and reads its whole body; the download (if any) is stored before this returns. */
async function get(gateway: RunningGateway, id: number): Promise<{ response: Response; body: Buffer }> {
  const response = await gateway.fetch(`/v1/call/recording/${id}.mp3`);
  const body = Buffer.from(await response.arrayBuffer());
  await gateway.gateway.downloads.idle();
  // A store's background analysis reads the recording; done before the next request, eviction order is the test's alone.
  await gateway.gateway.analyser.idle();
  return { response, body };
}

async function readyz(gateway: RunningGateway): Promise<{ status: number; message: string | undefined }> {
  const response = await fetch(`${gateway.baseUrl}/readyz`);
  const json = (await response.json()) as { message?: string };
  return { status: response.status, message: json.message };
}

const fileOf = (id: number) => recordingPath(dir, upstream.baseUrl, id);
const keyOf = (id: number) => keyFor(upstream.baseUrl, id);
const recording = (id: number) => upstream.recording(id)!;

async function freeBytes(mountPoint: string): Promise<number> {
  const { bavail, bsize } = await statfs(mountPoint);
  return bavail * bsize;
}

/** Flips `count` bytes in the middle of a file, keeping its size. */
async function corrupt(file: string, count = 16): Promise<void> {
  const { size } = await stat(file);
  const handle = await open(file, 'r+');
  try {
    const at = Math.floor(size / 2);
    const bytes = Buffer.alloc(count);
    await handle.read(bytes, 0, count, at);
    for (let i = 0; i < count; i++) bytes[i] = bytes[i]! ^ 0xff;
    await handle.write(bytes, 0, count, at);
  } finally {
    await handle.close();
  }
  expect((await stat(file)).size).toBe(size);
}

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir('rg-durability-');
});

afterEach(async () => {
  for (const gateway of running.splice(0)) await gateway.close();
  await upstream.close();
  const leftovers = await tempFilesIn(dir);
  if (mounted) {
    await unmount(mounted);
    mounted = undefined;
  }
  await removeDir(dir);
  expect(leftovers, 'temporary files left in the cache tmp/ folder').toEqual([]);
});

describe('disk budget', () => {
  test('a full disk budget evicts the least recently used recording, and the rest stay hits', async () => {
    const [one, two, three] = [recording(1), recording(2), recording(3)];
    const maxDiskBytes = one.length + two.length + three.length - 1;
    // 64 KiB memory entries: the three small fixtures are held in memory too.
    const gateway = await start({ maxDiskBytes, maxMemoryBytes: 512 * KiB });
    expect((await get(gateway, 1)).body.equals(one)).toBe(true);
    expect((await get(gateway, 2)).body.equals(two)).toBe(true);
    // #1 is used again, so #2 is now the least recently used.
    expect((await get(gateway, 1)).response.headers.get('cache-status')).toBe(HIT_MEMORY);

    expect((await get(gateway, 3)).body.equals(three)).toBe(true);

    expect(existsSync(fileOf(2))).toBe(false);
    expect(await gateway.gateway.index.get(keyOf(2))).toBeUndefined();
    expect(existsSync(fileOf(1))).toBe(true);
    expect(existsSync(fileOf(3))).toBe(true);
    const stats = gateway.gateway.cache.stats();
    expect(stats).toMatchObject({ entries: 2, diskBytes: one.length + three.length, evictions: 1 });
    expect(stats.diskBytes).toBeLessThanOrEqual(maxDiskBytes);

    for (const [id, bytes] of [
      [1, one],
      [3, three],
    ] as const) {
      const { response, body } = await get(gateway, id);
      expect(response.headers.get('cache-status')).toBe(HIT_MEMORY);
      expect(body.equals(bytes)).toBe(true);
      expect(upstream.recordingRequests(id)).toHaveLength(1);
    }

    // The index agrees with the files: after a restart the survivors are disk hits, the victim a miss.
    await stop(gateway);
    const restarted = await start({ maxDiskBytes, maxMemoryBytes: 512 * KiB });
    expect(restarted.gateway.cache.stats()).toMatchObject({ entries: 2, diskBytes: one.length + three.length });
    for (const [id, bytes] of [
      [1, one],
      [3, three],
    ] as const) {
      const { response, body } = await get(restarted, id);
      expect(response.headers.get('cache-status')).toBe(HIT_DISK);
      expect(body.equals(bytes)).toBe(true);
    }
    const victim = await get(restarted, 2);
    expect(victim.response.headers.get('cache-status')).toBe(MISS);
    expect(victim.body.equals(two)).toBe(true);
    expect(upstream.recordingRequests(2)).toHaveLength(2);
    expect(restarted.gateway.cache.stats().diskBytes).toBeLessThanOrEqual(maxDiskBytes);
  });

  test('analysing a recording in the background does not count as a use: eviction still takes the one clients used least recently', async () => {
    const [one, two, three] = [recording(1), recording(2), recording(3)];
    const gateway = await start({ maxDiskBytes: one.length + two.length + three.length - 1, maxMemoryBytes: 512 * KiB });
    await get(gateway, 1);
    await get(gateway, 2);
    await get(gateway, 1);
    // #2 is the least recently used; its analysis (a waveform decode, as a queue running late would do it) reads it now.
    const entryOfTwo = gateway.gateway.cache.entries().find((entry) => entry.key === keyOf(2))!;
    const peaks = await gateway.gateway.analyser.peaks(entryOfTwo);
    expect(peaks.totalSamples).toBeGreaterThan(0);

    await get(gateway, 3);

    expect(existsSync(fileOf(2))).toBe(false);
    expect(existsSync(fileOf(1))).toBe(true);
    expect(existsSync(fileOf(3))).toBe(true);
    expect(gateway.gateway.cache.stats()).toMatchObject({ entries: 2, evictions: 1 });
  });

  test('analysing a recording only on disk reads its file without promoting it to memory', async () => {
    const first = await start();
    await get(first, 1);
    await stop(first);
    const gateway = await start();
    const entry = gateway.gateway.cache.entries().find((candidate) => candidate.key === keyOf(1))!;
    expect((await gateway.gateway.analyser.peaks(entry)).totalSamples).toBeGreaterThan(0);

    const { response, body } = await get(gateway, 1);
    expect(response.headers.get('cache-status')).toBe(HIT_DISK);
    expect(body.equals(recording(1))).toBe(true);
  });

  test('a recording larger than the whole disk budget is served whole but not stored, and evicts nothing', async () => {
    const one = recording(1);
    const large = recording(4);
    const maxDiskBytes = 3 * one.length;
    expect(large.length).toBeGreaterThan(maxDiskBytes);
    // 64 KiB memory entries: the large one cannot hide in memory either.
    const gateway = await start({ maxDiskBytes, maxMemoryBytes: 512 * KiB });
    await get(gateway, 1);

    for (let attempt = 1; attempt <= 2; attempt++) {
      const { response, body } = await get(gateway, 4);
      expect(response.status).toBe(200);
      expect(response.headers.get('cache-status')).toBe(MISS);
      expect(body.equals(large)).toBe(true);
      expect(upstream.recordingRequests(4)).toHaveLength(attempt);
    }
    expect(existsSync(fileOf(4))).toBe(false);
    expect(await gateway.gateway.index.get(keyOf(4))).toBeUndefined();
    expect(await storedFiles(dir)).toHaveLength(1);
    expect(existsSync(fileOf(1))).toBe(true);
    expect(gateway.gateway.cache.stats()).toMatchObject({ entries: 1, diskBytes: one.length, evictions: 0 });
  });
});

/** The bytes of every recording file in the cache now, read without yielding to the event loop. */
function bytesOnDiskNow(): number {
  const root = path.join(dir, 'recordings');
  let total = 0;
  for (const namespace of readdirSyncOrNone(root)) {
    for (const name of readdirSyncOrNone(path.join(root, namespace))) {
      try {
        total += statSync(path.join(root, namespace, name)).size;
      } catch {
        // deleted meanwhile
      }
    }
  }
  return total;
}

function readdirSyncOrNone(folder: string): string[] {
  try {
    return readdirSync(folder);
  } catch {
    return [];
  }
}

/** The bytes of every recording file in the cache now. */
async function bytesOnDisk(): Promise<number> {
  let total = 0;
  for (const file of await storedFiles(dir)) {
    total += await stat(path.join(dir, 'recordings', file)).then(
      (stats) => stats.size,
      () => 0,
    );
  }
  return total;
}

describe('disk budget under many stores at once', () => {
  test('24 misses stored at once stay within max_disk_bytes, during the burst and after it', async () => {
    const bytes = recording(1);
    const ids = Array.from({ length: 24 }, (_, i) => 100 + i);
    for (const id of ids) upstream.setRecording(id, bytes);
    const maxDiskBytes = 5 * bytes.length + 100;
    // No memory tier to speak of: every recording goes to disk.
    const gateway = await start({ maxDiskBytes, maxMemoryBytes: 64 * KiB });
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await bytesOnDisk());
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    try {
      const bodies = await Promise.all(
        ids.map(async (id) => Buffer.from(await (await gateway.fetch(`/v1/call/recording/${id}.mp3`)).arrayBuffer())),
      );
      expect(bodies.every((body) => body.equals(bytes))).toBe(true);
      await gateway.gateway.downloads.idle();
    } finally {
      sampling = false;
      await sampler;
    }
    const stats = gateway.gateway.cache.stats();
    expect(stats.diskBytes).toBeLessThanOrEqual(maxDiskBytes);
    expect(await bytesOnDisk()).toBe(stats.diskBytes);
    expect(stats.entries).toBe(5);
    expect(peak).toBeLessThanOrEqual(maxDiskBytes);
  });

  test('45 misses of mixed sizes stored at once stay within max_disk_bytes, and the files, stats and /metrics agree after', async () => {
    const ids = Array.from({ length: 45 }, (_, i) => 300 + i);
    const bodies = new Map(ids.map((id) => [id, syntheticRecording(20_000 + ((id * 7919) % 480_000))]));
    for (const [id, bytes] of bodies) upstream.setRecording(id, bytes);
    const maxDiskBytes = MiB;
    const gateway = await start({ maxDiskBytes, maxMemoryBytes: MiB, maxRecordingBytes: 512 * KiB });
    for (let round = 1; round <= 2; round++) {
      // Sampled synchronously, between any two steps of the gateway's stores and evictions.
      let peak = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          peak = Math.max(peak, bytesOnDiskNow());
          await new Promise((resolve) => setImmediate(resolve));
        }
      })();
      try {
        const answers = await Promise.all(
          ids.map(async (id) => Buffer.from(await (await gateway.fetch(`/v1/call/recording/${id}.mp3`)).arrayBuffer())),
        );
        expect(answers.every((body, i) => body.equals(bodies.get(ids[i]!)!))).toBe(true);
        await gateway.gateway.downloads.idle();
      } finally {
        sampling = false;
        await sampler;
      }
      expect(peak, `round ${round}`).toBeLessThanOrEqual(maxDiskBytes);
    }
    const stats = gateway.gateway.cache.stats();
    expect(stats.diskBytes).toBeLessThanOrEqual(maxDiskBytes);
    expect(await bytesOnDisk()).toBe(stats.diskBytes);
    expect(stats.diskEntries).toBe((await storedFiles(dir)).length);
    const metrics = await (await fetch(`${gateway.baseUrl}/metrics`)).text();
    expect(metrics).toContain(`recording_gateway_cache_entries{tier="disk"} ${stats.diskEntries}\n`);
    expect(metrics).toContain(`recording_gateway_cache_bytes{tier="disk"} ${stats.diskBytes}\n`);
  });

  test('a cache over a budget lowered since is trimmed back within it at start-up', async () => {
    const before = await start();
    for (const id of [1, 2, 3]) await get(before, id);
    await stop(before);

    const { logger, lines } = collectingLogger();
    const sizes = [1, 2, 3].map((id) => recording(id).length);
    const maxDiskBytes = sizes[0]! + sizes[1]! + sizes[2]! - 1;
    const after = await start({ maxDiskBytes }, logger);
    const stats = after.gateway.cache.stats();
    expect(stats.entries).toBe(2);
    expect(stats.diskBytes).toBeLessThanOrEqual(maxDiskBytes);
    expect(await bytesOnDisk()).toBe(stats.diskBytes);
    expect(lines.some((line) => /over cache\.max_disk_bytes at start-up/.test(String(line.msg)))).toBe(true);
    const kept = [1, 2, 3].filter((id) => existsSync(fileOf(id)));
    expect(kept).toHaveLength(2);
    for (const id of kept) {
      expect((await get(after, id)).response.headers.get('cache-status')).toBe(HIT_DISK);
      expect(upstream.recordingRequests(id)).toHaveLength(1);
    }
    const evicted = [1, 2, 3].find((id) => !kept.includes(id))!;
    expect(await after.gateway.index.get(keyOf(evicted))).toBeUndefined();
  });
});

describe('eviction never pulls a file from under its reader', () => {
  // Far more than the loopback socket buffers hold while the client waits, so
  // the gateway is still reading the file when the next store needs room.
  const STREAMED_BYTES = 16 * MiB;
  // 32 KiB memory entries: the big one streams from disk, the fixtures are memory hits.
  const maxMemoryBytes = 256 * KiB;

  test('a recording streamed from disk is skipped by eviction and its reader gets every byte', async () => {
    const big = bigRecording(recording(4), STREAMED_BYTES);
    upstream.setRecording(40, big);
    const [one, two] = [recording(1), recording(2)];
    const maxDiskBytes = big.length + two.length + one.length - 1;
    const gateway = await start({ maxDiskBytes, maxMemoryBytes });
    await get(gateway, 40);
    await get(gateway, 2);

    const reading = await gateway.fetch('/v1/call/recording/40.mp3');
    expect(reading.headers.get('cache-status')).toBe(HIT_DISK);
    const reader = reading.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    // #2 is used again, so the file being read is the least recently used.
    expect((await get(gateway, 2)).response.headers.get('cache-status')).toBe(HIT_MEMORY);
    expect(await isOpenHere(fileOf(40)), 'the gateway is still streaming the file (else this test proves nothing)').toBe(true);

    expect((await get(gateway, 1)).body.equals(one)).toBe(true);

    expect(existsSync(fileOf(40))).toBe(true);
    expect(existsSync(fileOf(2))).toBe(false);
    expect(existsSync(fileOf(1))).toBe(true);
    expect(gateway.gateway.cache.stats().diskBytes).toBeLessThanOrEqual(maxDiskBytes);

    const body = await readRest(reader, [first.value!]);
    expect(body.length).toBe(big.length);
    expect(sha256(body)).toBe(sha256(big));
    // Once read, the file is let go (closed and unpinned).
    await expect.poll(() => isOpenHere(fileOf(40))).toBe(false);
    const again = await gateway.fetch('/v1/call/recording/40.mp3');
    expect(again.headers.get('cache-status')).toBe(HIT_DISK);
    expect(sha256(Buffer.from(await again.arrayBuffer()))).toBe(sha256(big));
    expect(upstream.recordingRequests(40)).toHaveLength(1);
  });

  test('when only a file being read could make room, the newcomer is served but not stored on disk', async () => {
    const big = bigRecording(recording(4), STREAMED_BYTES);
    upstream.setRecording(40, big);
    const one = recording(1);
    const maxDiskBytes = big.length + one.length - 1;
    const gateway = await start({ maxDiskBytes, maxMemoryBytes });
    await get(gateway, 40);

    const reading = await gateway.fetch('/v1/call/recording/40.mp3');
    expect(reading.headers.get('cache-status')).toBe(HIT_DISK);
    const reader = reading.body!.getReader();
    const first = await reader.read();
    expect(await isOpenHere(fileOf(40)), 'the gateway is still streaming the file (else this test proves nothing)').toBe(true);

    const newcomer = await get(gateway, 1);
    expect(newcomer.response.headers.get('cache-status')).toBe(MISS);
    expect(newcomer.body.equals(one)).toBe(true);
    expect(existsSync(fileOf(1))).toBe(false);
    expect(await gateway.gateway.index.get(keyOf(1))).toBeUndefined();
    expect(existsSync(fileOf(40))).toBe(true);
    expect(gateway.gateway.cache.stats()).toMatchObject({ diskBytes: big.length, evictions: 0 });

    const body = await readRest(reader, [first.value!]);
    expect(sha256(body)).toBe(sha256(big));
  });
});

describe('start-up reconciliation', () => {
  test('after a crash, missing files (at start-up) and truncated ones (when opened) are fetched again, and strays are cleared', async () => {
    const before = await start();
    for (const id of [1, 2, 3]) await get(before, id);
    await stop(before);

    const ns = path.dirname(fileOf(1));
    await rm(fileOf(1));
    await truncate(fileOf(2), 1000);
    const orphan = path.join(ns, '999.mp3');
    await writeFile(orphan, recording(3));
    const staleTemp = path.join(dir, 'tmp', 'x.part');
    await writeFile(staleTemp, recording(3).subarray(0, 5000));
    // A download of a process on this host that died (no such pid) mid-write.
    const deadProcessTemp = path.join(dir, 'tmp', `${hostname()}-999999999-0badf00d`);
    await mkdir(deadProcessTemp, { recursive: true });
    await writeFile(path.join(deadProcessTemp, 'y.part'), recording(1).subarray(0, 5000));
    // One of an earlier process that had this pid (a container's PID 1 after a restart): older than this process.
    const samePidTemp = path.join(dir, 'tmp', `${hostname()}-${process.pid}-0badcafe`);
    await mkdir(samePidTemp, { recursive: true });
    await writeFile(path.join(samePidTemp, 'z.part'), recording(1).subarray(0, 5000));
    const beforeThisProcess = new Date(Date.now() - process.uptime() * 1000 - 60_000);
    await utimes(samePidTemp, beforeThisProcess, beforeThisProcess);

    const after = await start();
    // The missing file is dropped at start-up; the truncated one (start-up stats no file) when it is opened.
    expect(after.gateway.cache.stats()).toMatchObject({ entries: 2, diskBytes: recording(2).length + recording(3).length });
    expect(existsSync(orphan)).toBe(false);
    expect(existsSync(staleTemp)).toBe(false);
    expect(existsSync(deadProcessTemp)).toBe(false);
    expect(existsSync(samePidTemp)).toBe(false);
    expect(await after.gateway.index.get(keyOf(1))).toBeUndefined();

    for (const id of [1, 2]) {
      const { response, body } = await get(after, id);
      expect(response.headers.get('cache-status')).toBe(MISS);
      expect(body.equals(recording(id))).toBe(true);
      expect(upstream.recordingRequests(id)).toHaveLength(2);
    }
    const kept = await get(after, 3);
    expect(kept.response.headers.get('cache-status')).toBe(HIT_DISK);
    expect(kept.body.equals(recording(3))).toBe(true);
    expect(upstream.recordingRequests(3)).toHaveLength(1);

    expect(after.gateway.cache.stats().entries).toBe(3);
    expect(await storedFiles(dir)).toEqual(['1.mp3', '2.mp3', '3.mp3'].map((name) => path.join(path.basename(ns), name)));
    expect((await stat(fileOf(2))).size).toBe(recording(2).length);
  });
});

describe('corruption that keeps the size', () => {
  test('a damaged small file is never served: the next GET refetches it', async () => {
    const before = await start();
    await get(before, 1);
    await stop(before);
    await corrupt(fileOf(1));

    const after = await start();
    const { response, body } = await get(after, 1);
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-status')).toBe(MISS);
    expect(body.equals(recording(1))).toBe(true);
    expect(upstream.recordingRequests(1)).toHaveLength(2);

    // The good copy replaced the damaged one, on disk as well.
    const again = await get(after, 1);
    expect(again.response.headers.get('cache-status')).toBe(HIT_MEMORY);
    expect(again.body.equals(recording(1))).toBe(true);
    expect((await readFile(fileOf(1))).equals(recording(1))).toBe(true);
    expect(upstream.recordingRequests(1)).toHaveLength(2);
  });

  test('a large file damaged in place while the gateway runs is never served whole: the stream is cut short, the next GET refetches it', async () => {
    const { logger, lines } = collectingLogger();
    // 32 KiB memory entries: #4 streams from disk.
    const gateway = await start({ maxMemoryBytes: 256 * KiB }, logger);
    await get(gateway, 4);
    for (let read = 1; read <= 2; read++) {
      const { response, body } = await get(gateway, 4);
      expect(response.headers.get('cache-status')).toBe(HIT_DISK);
      expect(body.equals(recording(4))).toBe(true);
    }
    await corrupt(fileOf(4));

    const damaged = await gateway.fetch('/v1/call/recording/4.mp3');
    expect(damaged.status).toBe(200);
    expect(damaged.headers.get('cache-status')).toBe(HIT_DISK);
    const cut = await damaged.arrayBuffer().then(
      () => 'complete',
      () => 'cut short',
    );
    expect(cut).toBe('cut short');
    await expect.poll(() => existsSync(fileOf(4))).toBe(false);
    expect(lines.some((line) => line.level === WARN && /sha256/.test(String(line.msg)))).toBe(true);

    const { response, body } = await get(gateway, 4);
    expect(response.headers.get('cache-status')).toBe(MISS);
    expect(body.equals(recording(4))).toBe(true);
    expect(upstream.recordingRequests(4)).toHaveLength(2);
    // A range is served from the good copy now on disk.
    const range = await gateway.fetch('/v1/call/recording/4.mp3', { headers: { Range: 'bytes=100-199' } });
    expect(range.status).toBe(206);
    expect(Buffer.from(await range.arrayBuffer()).equals(recording(4).subarray(100, 200))).toBe(true);
  });

  test('cache verify finds a damaged large file by its checksum and removes it; the restart refetches it', async () => {
    // 32 KiB memory entries: #4 streams from disk without ever being read whole.
    const cache = { maxMemoryBytes: 256 * KiB };
    const before = await start(cache);
    await get(before, 1);
    await get(before, 4);
    await stop(before);
    await corrupt(fileOf(4));

    const disk = createDiskStore(dir);
    const index = createSqliteIndex(dir);
    try {
      const report = await verifyCache(index, disk);
      expect(report).toEqual({ checked: 2, removed: [{ key: keyOf(4), reason: 'checksum' }] });
      expect(await index.get(keyOf(4))).toBeUndefined();
    } finally {
      await index.close();
    }
    expect(existsSync(fileOf(4))).toBe(false);
    expect(existsSync(fileOf(1))).toBe(true);

    const after = await start(cache);
    const { response, body } = await get(after, 4);
    expect(response.headers.get('cache-status')).toBe(MISS);
    expect(body.equals(recording(4))).toBe(true);
    expect(upstream.recordingRequests(4)).toHaveLength(2);
    const kept = await get(after, 1);
    expect(kept.response.headers.get('cache-status')).toBe(HIT_DISK);
    expect(upstream.recordingRequests(1)).toHaveLength(1);
  });
});

describe('a cache disk that fails', () => {
  test('an unwritable cache still serves every recording, says so on /readyz, logs once, and recovers', async () => {
    const { logger, lines } = collectingLogger();
    const gateway = await start({}, logger);
    expect((await readyz(gateway)).status).toBe(200);
    const tmp = path.join(dir, 'tmp');
    await rm(tmp, { recursive: true, force: true });
    await writeFile(tmp, 'not a directory');

    const ids = [1, 2, 3, 4, 5];
    upstream.setRecording(5, recording(1));
    for (const id of ids) {
      const { response, body } = await get(gateway, id);
      expect(response.status).toBe(200);
      expect(body.equals(recording(id))).toBe(true);
    }
    expect(await storedFiles(dir)).toEqual([]);

    const ready = await readyz(gateway);
    expect(ready.status).toBe(503);
    expect(ready.message).toMatch(/cache directory: ENOTDIR/);
    // Anyone may call /readyz: it names the problem, never a path (README "Operations").
    expect(ready.message).not.toContain(dir);
    // Five requests met the broken disk; the operator reads about it once.
    const diskWarnings = lines.filter((line) => line.level >= WARN && JSON.stringify(line).includes('ENOTDIR'));
    expect(diskWarnings.map((line) => line.msg)).toEqual([
      'cache disk failing; recordings are streamed from upstream without being stored',
    ]);

    await rm(tmp, { force: true });
    await mkdir(tmp);
    upstream.setRecording(6, recording(2));
    const { body } = await get(gateway, 6);
    expect(body.equals(recording(2))).toBe(true);
    expect(existsSync(fileOf(6))).toBe(true);
    expect(await readyz(gateway)).toEqual({ status: 200, message: undefined });
    expect(lines.some((line) => line.msg === 'cache disk works again; caching resumed')).toBe(true);
  });

  test.each([
    ['read back from the file until it fills', 256 * KiB],
    ['kept in memory as well', 64 * MiB],
  ])('a full disk (ENOSPC) mid-download still gives the client the whole recording (body %s)', async (_, maxMemoryBytes) => {
    await mountTmpfs(dir, '200k');
    mounted = dir;
    const big = bigRecording(recording(4), 600_000);
    upstream.setRecording(60, big);
    const gateway = await start({ maxMemoryBytes });
    // What the index and its journal leave free before the download.
    const freeAtStart = await freeBytes(dir);

    const { response, body } = await get(gateway, 60);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-length')).toBe(String(big.length));
    expect(body.length).toBe(big.length);
    expect(sha256(body)).toBe(sha256(big));
    expect(upstream.recordingRequests(60)).toHaveLength(1);

    expect(await storedFiles(dir)).toEqual([]);
    expect(await tempFilesIn(dir)).toEqual([]);
    expect(await gateway.gateway.index.get(keyOf(60))).toBeUndefined();
    const ready = await readyz(gateway);
    expect(ready.status).toBe(503);
    expect(ready.message).toContain('ENOSPC');

    // The partial file is unlinked and closed, so its space comes back (an open
    // handle would keep the disk full for good)...
    expect(freeAtStart).toBeGreaterThan(120 * KiB);
    await expect.poll(() => freeBytes(dir)).toBeGreaterThan(freeAtStart - 16 * KiB);
    // ...and a recording that fits is stored, and the gateway is ready again.
    const small = await get(gateway, 1);
    expect(small.body.equals(recording(1))).toBe(true);
    expect(existsSync(fileOf(1))).toBe(true);
    expect((await readyz(gateway)).status).toBe(200);
  });
});
