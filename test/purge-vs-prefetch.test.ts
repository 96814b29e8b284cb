/**
 * A purge wins over a download in progress in any process sharing the cache
 * (contract sections 2 and 4), not only in the gateway that downloads: the
 * CLI's `prefetch` running beside a gateway, or alone, does not store what it
 * downloaded when a purge (a tenant's DELETE, the admin route, `cache purge`)
 * came while it did. Two instances on one cache directory and one real sqlite
 * index, the upstream holding the body until the purge has answered.
 */
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { sha256Hex } from '../src/sha256.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, SERVER_KEY, makeTempDir, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { runCliProcess } from '../dev/run-cli.js';
import { runCliInProcess } from './support/run-cli-in-process.js';
import { recordingPath } from './support/durability.js';

const ID = 4;
const RECORDING = `/v1/call/recording/${ID}.mp3`;
const ADMIN_TOKEN = 'admin-token-for-purge-vs-prefetch-0123456789';
const env = { FLYFLOW_API_KEY: SERVER_KEY };

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway | undefined;

beforeAll(async () => {
  upstream = await startFakeFlyflow({ apiKeys: [SERVER_KEY] });
});

afterAll(async () => {
  await upstream.close();
});

beforeEach(async () => {
  upstream.reset();
  dir = await makeTempDir('rg-purge-prefetch-');
});

afterEach(async () => {
  await gateway?.close();
  gateway = undefined;
  await removeDir(dir);
});

/** The CLI's config: the cache in `<dir>/cache`, the gateway it asks to purge at `port` (1: none there). */
async function writeCliConfig(port: number): Promise<string> {
  const configPath = path.join(dir, 'gateway.yaml');
  await writeFile(
    configPath,
    [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `upstream: { base_url: "${upstream.baseUrl}" }`,
      `cache: { dir: ${JSON.stringify(path.join(dir, 'cache'))} }`,
      'tenants:',
      '  - id: acme',
      `    api_keys: ["sha256:${sha256Hex(ACME_KEY)}"]`,
    ].join('\n'),
  );
  return configPath;
}

/** A gateway on the CLI's cache directory, with the admin route open to ADMIN_TOKEN. */
async function startGatewayOnCache(): Promise<RunningGateway> {
  gateway = await startGateway({
    ...testConfig({ dir: path.join(dir, 'cache'), upstreamBaseUrl: upstream.baseUrl }),
    adminToken: ADMIN_TOKEN,
  });
  return gateway;
}

/** Resolves once the upstream has been asked for the recording `times` times in all. */
async function untilRequested(times: number): Promise<void> {
  for (let waited = 0; upstream.recordingRequests(ID).length < times; waited += 10) {
    if (waited > 15_000) throw new Error(`the upstream was never asked for recording ${ID}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Holds the recording's body at the upstream, starts `prefetch`, and resolves once its download is under way. */
async function prefetchUnderWay<T>(prefetch: () => Promise<T>): Promise<{ finished: Promise<T> }> {
  upstream.setBehaviour(ID, { kind: 'gate' });
  const finished = prefetch();
  await untilRequested(1);
  return { finished };
}

function expectNotStored(): void {
  expect(existsSync(recordingPath(path.join(dir, 'cache'), upstream.baseUrl, ID))).toBe(false);
}

/** A GET that must go to the upstream (nothing stored), then one answered from the cache (later downloads are stored). */
async function expectMissThenHit(running: RunningGateway): Promise<void> {
  const before = upstream.recordingRequests(ID).length;
  const miss = await running.fetch(RECORDING);
  expect(Buffer.from(await miss.arrayBuffer()).equals(upstream.recording(ID)!)).toBe(true);
  expect(miss.headers.get('cache-status')).toContain('fwd=uri-miss');
  expect(upstream.recordingRequests(ID)).toHaveLength(before + 1);
  await running.gateway.downloads.idle();
  const hit = await running.fetch(RECORDING);
  await hit.arrayBuffer();
  expect(hit.headers.get('cache-status')).toMatch(/\bhit\b/);
}

describe('a purge wins over the CLI prefetch under way beside a gateway (sqlite index)', () => {
  test("a tenant's DELETE answered 204 while `prefetch` (a process of its own) downloads: nothing is stored, the next GET misses", async () => {
    const running = await startGatewayOnCache();
    const configPath = await writeCliConfig(1);
    const prefetch = await prefetchUnderWay(() => runCliProcess(['--config', configPath, 'prefetch', String(ID)], { env }));

    const deleted = await running.fetch(RECORDING, { method: 'DELETE' });
    expect(deleted.status).toBe(204);
    upstream.release(ID);
    const { code, stdout } = await prefetch.finished;

    expect(code).toBe(1);
    expect(stdout).toContain(`call ${ID}: failed: purged while it downloaded, so not stored`);
    expectNotStored();
    await expectMissThenHit(running);
  });

  test('an admin purge of the whole tenant reaches a prefetch of a recording the gateway never heard of', async () => {
    const running = await startGatewayOnCache();
    const configPath = await writeCliConfig(1);
    const prefetch = await prefetchUnderWay(() => runCliInProcess(['--config', configPath, 'prefetch', String(ID)], { cwd: dir, env }));

    const purged = await fetch(`${running.baseUrl}/admin/cache/purge`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ tenant: 'acme' }),
    });
    expect(purged.status).toBe(200);
    upstream.release(ID);

    expect((await prefetch.finished).code).toBe(1);
    expectNotStored();
    await expectMissThenHit(running);
  });

  test('`cache purge --call` sent to the running gateway wins too', async () => {
    const running = await startGatewayOnCache();
    const configPath = await writeCliConfig(Number(new URL(running.baseUrl).port));
    const prefetch = await prefetchUnderWay(() => runCliInProcess(['--config', configPath, 'prefetch', String(ID)], { cwd: dir, env }));

    const purge = await runCliInProcess(['--config', configPath, 'cache', 'purge', '--call', String(ID)], { cwd: dir, env });
    expect(purge.stdout).toContain('by the running gateway');
    upstream.release(ID);

    expect((await prefetch.finished).code).toBe(1);
    expectNotStored();
    await expectMissThenHit(running);
  });

  test('a prefetch that begins after the purge is stored as usual', async () => {
    const running = await startGatewayOnCache();
    const configPath = await writeCliConfig(1);
    expect((await running.fetch(RECORDING, { method: 'DELETE' })).status).toBe(204);

    const prefetch = await runCliInProcess(['--config', configPath, 'prefetch', String(ID)], { cwd: dir, env });
    expect(prefetch.code).toBe(0);
    expect(prefetch.stdout).toContain(`call ${ID}: cached`);
    const hit = await running.fetch(RECORDING);
    await hit.arrayBuffer();
    expect(hit.headers.get('cache-status')).toMatch(/\bhit\b/);
  });
});

describe('with no gateway running, `cache purge` wins over a prefetch under way', () => {
  for (const filter of [['--call', String(ID)], ['--tenant', 'acme'], ['--all']]) {
    test(`cache purge ${filter.join(' ')}: the prefetch stores nothing, and a gateway started later fetches the recording`, async () => {
      const configPath = await writeCliConfig(1);
      const prefetch = await prefetchUnderWay(() => runCliInProcess(['--config', configPath, 'prefetch', String(ID)], { cwd: dir, env }));

      const purge = await runCliInProcess(['--config', configPath, 'cache', 'purge', ...filter], { cwd: dir, env });
      expect(purge.code).toBe(0);
      upstream.release(ID);
      const { code, stdout } = await prefetch.finished;

      expect(code).toBe(1);
      expect(stdout).toContain('purged while it downloaded, so not stored');
      expectNotStored();
      await expectMissThenHit(await startGatewayOnCache());
    });
  }
});
