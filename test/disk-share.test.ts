/**
 * The disk budget shared between upstream accounts: one tenant's flood of new
 * recordings must not evict another account's recordings that are within its
 * share. Two tenants on two Flyflow accounts, real files, a real sqlite index,
 * a real upstream on 127.0.0.1.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { upstreamNamespace } from '../src/auth/tenants.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  acmeTenant,
  makeTempDir,
  manualClock,
  removeDir,
  SERVER_KEY,
  startGateway,
  tempFilesIn,
  testConfig,
  testTenant,
  type RunningGateway,
} from '../dev/gateway-harness.js';
import { storedRecordingFiles, syntheticRecording } from '../dev/recording-bytes.js';

const KiB = 1024;
const SIZE = 20 * KiB;
const BETA_KEY = 'beta-tenant-key-for-tests-00000000001';
const BETA_UPSTREAM_KEY = 'beta-flyflow-account-key-000000000001';
const HIT_DISK = 'recording-gateway; hit; detail=disk';
const BETA_IDS = [101, 102];
const ACME_FLOOD = Array.from({ length: 20 }, (_, i) => i + 1);

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway | undefined;

beforeEach(async () => {
  const recordings = new Map([...BETA_IDS, ...ACME_FLOOD].map((id) => [id, syntheticRecording(SIZE)] as const));
  // Only the two accounts' keys are accepted, so each tenant must be fetched with its own.
  upstream = await startFakeFlyflow({ recordings, apiKeys: [SERVER_KEY, BETA_UPSTREAM_KEY] });
  dir = await makeTempDir('rg-disk-share-');
});

afterEach(async () => {
  await gateway?.close();
  gateway = undefined;
  await upstream.close();
  const leftovers = await tempFilesIn(dir);
  await removeDir(dir);
  expect(leftovers, 'temporary files left in the cache tmp/ folder').toEqual([]);
});

async function get(running: RunningGateway, id: number, apiKey?: string): Promise<{ response: Response; body: Buffer }> {
  const headers: Record<string, string> = apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` };
  const response = await running.fetch(`/v1/call/recording/${id}.mp3`, { headers });
  const body = Buffer.from(await response.arrayBuffer());
  await running.gateway.downloads.idle();
  return { response, body };
}

// Ten recordings fit on disk; memory entries up to 8 KiB, so every recording here lives on disk only.
const MAX_DISK_BYTES = 10 * SIZE;

async function startTwoAccounts(shares: { acme?: number; beta?: number } = {}): Promise<RunningGateway> {
  return startGateway(
    testConfig({
      dir,
      upstreamBaseUrl: upstream.baseUrl,
      cache: { maxDiskBytes: MAX_DISK_BYTES, maxMemoryBytes: 64 * KiB, maxRecordingBytes: MAX_DISK_BYTES },
      tenants: [
        acmeTenant({ diskShare: shares.acme }),
        testTenant('beta', BETA_KEY, { upstreamApiKey: BETA_UPSTREAM_KEY, diskShare: shares.beta }),
      ],
    }),
    { clock: manualClock() },
  );
}

const acmeNamespace = () => upstreamNamespace(upstream.baseUrl, SERVER_KEY);
const betaNamespace = () => upstreamNamespace(upstream.baseUrl, BETA_UPSTREAM_KEY);
const fileOf = (namespace: string, id: number) => path.join(dir, 'recordings', namespace, `${id}.mp3`);

/** Beta stores its two recordings first, so they are the least recently used when acme floods: plain LRU would take them first. */
async function betaThenAcmeFlood(running: RunningGateway): Promise<void> {
  for (const id of BETA_IDS) expect((await get(running, id, BETA_KEY)).response.status).toBe(200);
  expect(BETA_IDS.every((id) => existsSync(fileOf(betaNamespace(), id)))).toBe(true);
  for (const id of ACME_FLOOD) expect((await get(running, id)).response.status).toBe(200);
  const files = await storedRecordingFiles(dir);
  expect(files.reduce((sum, file) => sum + file.size, 0)).toBeLessThanOrEqual(MAX_DISK_BYTES);
}

test("one tenant's flood of new recordings leaves another account's recordings (within its share) on disk, still hits", async () => {
  // No disk_share set: each account's share is half the disk.
  gateway = await startTwoAccounts();
  const [acme, beta] = [acmeNamespace(), betaNamespace()];
  await betaThenAcmeFlood(gateway);

  for (const id of BETA_IDS) expect(existsSync(fileOf(beta, id)), `beta's recording ${id} on disk`).toBe(true);
  const files = await storedRecordingFiles(dir);
  expect(files.filter((file) => path.dirname(file.path).endsWith(acme)).length).toBe(8);
  expect(gateway.gateway.cache.stats().diskBytesByNamespace).toEqual({ [acme]: 8 * SIZE, [beta]: 2 * SIZE });

  for (const id of BETA_IDS) {
    const { response, body } = await get(gateway, id, BETA_KEY);
    expect(response.headers.get('cache-status')).toBe(HIT_DISK);
    expect(body.equals(upstream.recording(id)!)).toBe(true);
    expect(upstream.recordingRequests(id)).toHaveLength(1);
  }
});

test("a tenant's disk_share is what another account's flood must leave it: beyond it, its least recently used go", async () => {
  gateway = await startTwoAccounts({ acme: 9 * SIZE, beta: SIZE });
  const [acme, beta] = [acmeNamespace(), betaNamespace()];
  await betaThenAcmeFlood(gateway);

  expect(existsSync(fileOf(beta, 101)), "beta's older recording, beyond its share").toBe(false);
  expect(existsSync(fileOf(beta, 102)), "beta's newer recording, within its share").toBe(true);
  expect(gateway.gateway.cache.stats().diskBytesByNamespace).toEqual({ [acme]: 9 * SIZE, [beta]: SIZE });
  expect((await get(gateway, 102, BETA_KEY)).response.headers.get('cache-status')).toBe(HIT_DISK);
});
