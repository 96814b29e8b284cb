import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { makeTempDir, manualClock, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { DiskHealth } from '../src/cache/disk-health.js';
import { silentLogger } from '../src/logger.js';

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway | undefined;
let clock: ReturnType<typeof manualClock>;

beforeAll(async () => {
  upstream = await startFakeFlyflow();
});
afterAll(async () => {
  await upstream.close();
});
beforeEach(async () => {
  dir = await makeTempDir();
  clock = manualClock();
  upstream.reset();
});
afterEach(async () => {
  await gateway?.close();
  gateway = undefined;
  await removeDir(dir);
});

async function start(): Promise<RunningGateway> {
  gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }), { clock });
  return gateway;
}

async function readyz(): Promise<{ status: number; cacheControl: string | null; message: string | undefined }> {
  const response = await fetch(`${gateway!.baseUrl}/readyz`);
  const body = (await response.json()) as { message?: string };
  return { status: response.status, cacheControl: response.headers.get('cache-control'), message: body.message };
}

/** Puts a file where the cache writes its temporary files, as a bad volume mount or a wrong owner would break it. */
async function breakTempFolder(): Promise<void> {
  const tmp = path.join(dir, 'tmp');
  await rm(tmp, { recursive: true, force: true });
  await writeFile(tmp, 'not a directory');
}

async function repairTempFolder(): Promise<void> {
  const tmp = path.join(dir, 'tmp');
  await rm(tmp, { force: true });
  // The gateway's background probe may make the folder again between the two calls.
  await mkdir(tmp, { recursive: true });
}

/** A recording request that meets the broken disk: it is still served, and the disk failure is reported. */
async function playThroughBrokenDisk(id: number): Promise<void> {
  const response = await gateway!.fetch(`/v1/call/recording/${id}.mp3`);
  expect(response.status).toBe(200);
  await response.arrayBuffer();
  await gateway!.gateway.downloads.idle();
}

describe('/healthz and /readyz', () => {
  test('neither answer is ever cached by a proxy or a browser (Cache-Control: no-store), failing or not', async () => {
    await start();
    const health = await fetch(`${gateway!.baseUrl}/healthz`);
    expect(health.headers.get('cache-control')).toBe('no-store');
    expect((await readyz()).cacheControl).toBe('no-store');
    await breakTempFolder();
    await playThroughBrokenDisk(1);
    expect(await readyz()).toMatchObject({ status: 503, cacheControl: 'no-store' });
  });

  test('an unwritable cache is reported on /readyz without a path, the host name or the pid', async () => {
    await start();
    await breakTempFolder();
    await playThroughBrokenDisk(1);
    const ready = await readyz();
    expect(ready.status).toBe(503);
    expect(ready.message).toBe('cache directory: ENOTDIR, a folder of the cache is not a directory');
    expect(ready.message).not.toContain(dir);
    expect(ready.message).not.toContain(hostname());
    expect(ready.message).not.toMatch(new RegExp(`\\b${process.pid}\\b`));
  });

  test('a missing cache directory is reported on /readyz without its path', async () => {
    await start();
    await removeDir(dir);
    const ready = await readyz();
    expect(ready.status).toBe(503);
    // The index file went with it (see test/index-file-deleted.test.ts).
    expect(ready.message).toBe(
      'cache directory: ENOENT, the cache directory or a folder in it is missing; sqlite index: its file was deleted while the gateway ran; restoring it',
    );
  });
});

describe('/readyz checks the cache directory actively', () => {
  test('once the cache directory is repaired, /readyz turns 200 again with no recording traffic', async () => {
    await start();
    await breakTempFolder();
    await playThroughBrokenDisk(1);
    expect((await readyz()).status).toBe(503);

    await repairTempFolder();
    upstream.reset();
    // A load balancer polls /readyz and sends nothing else while the replica is not ready.
    clock.advance(16_000);
    expect(await readyz()).toMatchObject({ status: 200, message: undefined });
    expect(upstream.requests).toHaveLength(0);
  });

  test('a cache directory that breaks while no traffic arrives is noticed by /readyz', async () => {
    await start();
    expect((await readyz()).status).toBe(200);
    await breakTempFolder();
    clock.advance(16_000);
    expect(await readyz()).toMatchObject({ status: 503, message: 'cache directory: ENOTDIR, a folder of the cache is not a directory' });
  });

  test('a flood of /readyz writes to the disk at most once per probe interval, not once per call', async () => {
    await start();
    expect((await readyz()).status).toBe(200);
    await breakTempFolder();
    // Within the interval the answer comes from the last probe: no write per call.
    for (let i = 0; i < 20; i++) expect((await readyz()).status).toBe(200);
    clock.advance(16_000);
    expect((await readyz()).status).toBe(503);
  });

  test('probes leave no file behind in the cache', async () => {
    await start();
    for (let i = 0; i < 5; i++) {
      clock.advance(16_000);
      expect((await readyz()).status).toBe(200);
    }
    expect((await readdir(path.join(dir, 'tmp'))).filter((name) => name.startsWith('.probe'))).toEqual([]);
  });
});

describe('a failing disk is probed in the background', () => {
  test('while the disk fails it is probed a few times a minute, so readiness returns with no request at all', async () => {
    const health = new DiskHealth(silentLogger(), clock, { dir, probeIntervalMs: 50 });
    try {
      await mkdir(path.join(dir, 'tmp'));
      await breakTempFolder();
      health.report(Object.assign(new Error(`ENOTDIR: not a directory, open '${dir}/tmp/x.part'`), { code: 'ENOTDIR' }));
      // Still failing: the background probes meet the same broken folder.
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(health.problem).toBe('ENOTDIR, a folder of the cache is not a directory');

      await repairTempFolder();
      await expect.poll(() => health.problem, { timeout: 5_000 }).toBeUndefined();
      expect(await readdir(path.join(dir, 'tmp'))).toEqual([]);
    } finally {
      health.close();
    }
  });
});
