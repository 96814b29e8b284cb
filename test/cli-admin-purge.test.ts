import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, mkdtemp, readdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { sha256Hex } from '../src/sha256.js';
import { createLocalGrant } from '../src/auth/local-grant.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  SERVER_KEY,
  acmeTenant,
  makeTempDir,
  removeDir,
  startGateway,
  testConfig,
  testTenant,
  type RunningGateway,
} from '../dev/gateway-harness.js';
import { startGatewayProcess, stopGatewayProcess, writeGatewayConfig, type GatewayProcess } from '../dev/gateway-process.js';
import { runCliProcess } from '../dev/run-cli.js';
import { runCliInProcess } from './support/run-cli-in-process.js';

const ADMIN_TOKEN = 'admin-token-for-purge-tests-0123456789';
const BETA_KEY = 'beta-tenant-key-for-tests-00000000002';
const BETA_UPSTREAM_KEY = 'flyflow-key-of-beta-account-0000000';

let upstream: FakeFlyflow;
let dir: string;

beforeAll(async () => {
  upstream = await startFakeFlyflow({ apiKeys: [SERVER_KEY, BETA_UPSTREAM_KEY] });
  dir = await makeTempDir('rg-admin-purge-');
});

afterAll(async () => {
  await upstream.close();
  await removeDir(dir);
});

/** Requests a recording until the gateway answers it from memory (its download is stored by then). */
/** `<dir>/gateway.yaml` for the CLI: the gateway it asks listens on `port`; the acme tenant on `cacheDir`. */
async function writeCliConfig(dir: string, port: number, cacheDir: string): Promise<string> {
  const configPath = path.join(dir, 'gateway.yaml');
  await writeFile(
    configPath,
    [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `upstream: { base_url: "${upstream.baseUrl}" }`,
      `cache: { dir: ${JSON.stringify(cacheDir)} }`,
      'tenants:',
      '  - id: acme',
      `    api_keys: ["sha256:${sha256Hex(ACME_KEY)}"]`,
    ].join('\n'),
  );
  return configPath;
}

async function untilMemoryHit(fetchRecording: () => Promise<Response>): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const response = await fetchRecording();
    await response.arrayBuffer();
    if (response.headers.get('cache-status')?.includes('hit; detail=memory')) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error('the recording never became a memory hit');
}

describe('cache purge reaches a running gateway at once (sqlite index)', () => {
  let gateway: GatewayProcess | undefined;

  afterEach(async () => {
    if (gateway) await stopGatewayProcess(gateway);
    gateway = undefined;
  });

  test('after `cache purge --call N`, the running gateway fetches N again instead of serving its memory copy', async () => {
    const cacheDir = path.join(dir, 'process-cache');
    // Beside the cache, in the file's folder removed at the end.
    const configPath = await writeGatewayConfig(await mkdtemp(path.join(dir, 'config-')), {
      upstreamBaseUrl: upstream.baseUrl,
      cacheDir,
    });
    gateway = await startGatewayProcess(configPath);
    const get = () => fetch(`${gateway!.url}/v1/call/recording/3.mp3`, { headers: { authorization: `Bearer ${ACME_KEY}` } });
    const before = upstream.recordingRequests().length;
    await untilMemoryHit(get);
    expect(upstream.recordingRequests().length - before).toBe(1);

    // The CLI reads the same config; PORT tells it where this gateway (listen.port 0) listens.
    const purge = await runCliProcess(['--config', configPath, 'cache', 'purge', '--call', '3'], {
      env: { FLYFLOW_API_KEY: SERVER_KEY, PORT: String(gateway.port) },
    });
    expect(purge.stderr).toBe('');
    expect(purge.code).toBe(0);

    const after = await get();
    await after.arrayBuffer();
    expect(after.status).toBe(200);
    expect(after.headers.get('cache-status')).toContain('fwd=uri-miss');
    expect(upstream.recordingRequests().length - before).toBe(2);
    expect(purge.stdout).toBe(`purged 1 recording by the running gateway at ${gateway.url}, from every tier\n`);
    // The one-time grant the CLI left in the cache directory is used up.
    expect(await readdir(path.join(cacheDir, 'admin-grants'))).toEqual([]);
  });
});

describe('POST /admin/cache/purge', () => {
  let running: RunningGateway;
  let cacheDir: string;

  beforeAll(async () => {
    cacheDir = path.join(dir, 'route-cache');
    const beta = testTenant('beta', BETA_KEY, { upstreamApiKey: BETA_UPSTREAM_KEY });
    running = await startGateway({
      ...testConfig({ dir: cacheDir, upstreamBaseUrl: upstream.baseUrl, tenants: [acmeTenant(), beta] }),
      adminToken: ADMIN_TOKEN,
    });
  });

  afterAll(() => running.close());

  const purge = (body: unknown, authorization?: string) =>
    fetch(`${running.baseUrl}/admin/cache/purge`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });

  const warm = async (key: string, id: number) =>
    untilMemoryHit(() => running.fetch(`/v1/call/recording/${id}.mp3`, { headers: { authorization: `Bearer ${key}` } }));

  test.each([
    ['no credentials', undefined, 'Missing credentials'],
    ['a wrong admin token', `Bearer ${ADMIN_TOKEN}x`, 'Invalid credentials'],
    ['a tenant API key', `Bearer ${ACME_KEY}`, 'Invalid credentials'],
    ['a made-up local grant', `Bearer local_${'A'.repeat(43)}`, 'Invalid credentials'],
  ])('refuses %s with 401, purging nothing', async (_case, authorization, message) => {
    await warm(ACME_KEY, 1);
    const response = await purge({ all: true }, authorization);
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(await response.json()).toEqual({ error: 'Unauthorized', message: expect.stringContaining(message) });
    const again = await running.fetch('/v1/call/recording/1.mp3');
    expect(again.headers.get('cache-status')).toContain('hit');
  });

  test('a grant left in the cache directory works once, and only while fresh', async () => {
    await warm(ACME_KEY, 1);
    const grant = await createLocalGrant(cacheDir);
    const first = await purge({ call_id: 1 }, `Bearer ${grant.token}`);
    expect(first.status).toBe(200);
    expect(await first.json()).toEqual({ purged: 1 });
    const reused = await purge({ call_id: 1 }, `Bearer ${grant.token}`);
    expect(reused.status).toBe(401);

    const stale = await createLocalGrant(cacheDir);
    const old = new Date(Date.now() - 5 * 60_000);
    await utimes(path.join(cacheDir, 'admin-grants', sha256Hex(stale.token)), old, old);
    expect((await purge({ call_id: 1 }, `Bearer ${stale.token}`)).status).toBe(401);
    expect(await readdir(path.join(cacheDir, 'admin-grants'))).toEqual([]);
  });

  test('--tenant purges that Flyflow account only, from every tier', async () => {
    await warm(ACME_KEY, 2);
    await warm(BETA_KEY, 2);
    const response = await purge({ tenant: 'beta' }, `Bearer ${ADMIN_TOKEN}`);
    expect(await response.json()).toEqual({ purged: 1 });
    const acme = await running.fetch('/v1/call/recording/2.mp3');
    await acme.arrayBuffer();
    expect(acme.headers.get('cache-status')).toContain('hit');
    const beta = await running.fetch('/v1/call/recording/2.mp3', { headers: { authorization: `Bearer ${BETA_KEY}` } });
    await beta.arrayBuffer();
    expect(beta.headers.get('cache-status')).toContain('fwd=uri-miss');
  });

  test('a tenant purge also reaches a download under way (it is not stored) and a remembered 404 (it is forgotten)', async () => {
    const missing = 97;
    expect((await running.fetch(`/v1/call/recording/${missing}.mp3`)).status).toBe(404);
    upstream.setBehaviour(3, { kind: 'slow-body', chunkBytes: 4096, intervalMs: 20 });
    const downloading = await running.fetch('/v1/call/recording/3.mp3');
    expect(running.gateway.downloads.inFlight).toBeGreaterThan(0);

    const response = await purge({ tenant: 'acme' }, `Bearer ${ADMIN_TOKEN}`);
    expect(response.status).toBe(200);
    upstream.setBehaviour(3, undefined);
    await downloading.arrayBuffer().catch(() => {});
    await running.gateway.downloads.idle();
    const next = await running.fetch('/v1/call/recording/3.mp3');
    await next.arrayBuffer();
    expect(next.headers.get('cache-status')).toContain('fwd=uri-miss');

    upstream.setRecording(missing, upstream.recording(1)!);
    expect((await running.fetch(`/v1/call/recording/${missing}.mp3`)).status).toBe(200);
  });

  test('all: true empties the cache', async () => {
    await warm(ACME_KEY, 1);
    await warm(ACME_KEY, 4);
    const response = await purge({ all: true }, `Bearer ${ADMIN_TOKEN}`);
    expect(response.status).toBe(200);
    expect(running.gateway.cache.stats().entries).toBe(0);
  });

  test.each([
    ['not JSON', 'call_id=1', /Expected a JSON body/],
    ['nothing named', {}, /Name a call_id, a tenant or both/],
    ['all with a call', { all: true, call_id: 1 }, /"all" purges everything/],
    ['a bad call id', { call_id: '01' }, /Call id must be/],
    ['an unknown tenant', { tenant: 'nobody' }, /No tenant "nobody"/],
    ['a tenant that is not a string', { tenant: ['acme'] }, /tenant must be a string/],
    ['an unknown field', { call: 1 }, /Unknown field "call"/],
    ['all: false', { all: false }, /"all" must be true/],
  ])('answers 400 with a JSON error for %s', async (_case, body, message) => {
    const response = await purge(body, `Bearer ${ADMIN_TOKEN}`);
    expect(response.status).toBe(400);
    const error = (await response.json()) as { error: string; message: string };
    expect(error.error).toBe('Bad Request');
    expect(error.message).toMatch(message);
  });
});

describe('the CLI against a gateway with ADMIN_TOKEN', () => {
  let running: RunningGateway;
  let configPath: string;
  let cwd: string;

  beforeAll(async () => {
    cwd = await makeTempDir('rg-admin-cli-');
    const cacheDir = path.join(cwd, 'cache');
    running = await startGateway({ ...testConfig({ dir: cacheDir, upstreamBaseUrl: upstream.baseUrl }), adminToken: ADMIN_TOKEN });
    configPath = await writeCliConfig(cwd, Number(new URL(running.baseUrl).port), cacheDir);
  });

  afterAll(async () => {
    await running.close();
    await removeDir(cwd);
  });

  test('a wrong ADMIN_TOKEN is named as the problem, and nothing is purged', async () => {
    await untilMemoryHit(() => running.fetch('/v1/call/recording/1.mp3'));
    const result = await runCliInProcess(['--config', configPath, 'cache', 'purge', '--call', '1'], {
      cwd,
      env: { FLYFLOW_API_KEY: SERVER_KEY, ADMIN_TOKEN: `${ADMIN_TOKEN}-wrong` },
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `error: the gateway at ${running.baseUrl} refused the admin token: set ADMIN_TOKEN to the admin token the gateway runs with; nothing was purged`,
    );
    expect(result.stderr).not.toContain(ADMIN_TOKEN);
    expect(running.gateway.cache.stats().entries).toBe(1);
  });

  test('the right ADMIN_TOKEN purges through the gateway, with --json', async () => {
    await untilMemoryHit(() => running.fetch('/v1/call/recording/1.mp3'));
    const result = await runCliInProcess(['--config', configPath, 'cache', 'purge', '--call', '1', '--json'], {
      cwd,
      env: { FLYFLOW_API_KEY: SERVER_KEY, ADMIN_TOKEN },
    });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ purged: 1, by: 'gateway', gateway_url: running.baseUrl });
    expect(running.gateway.cache.stats().entries).toBe(0);
  });

  test('cache stats says the gateway wants the admin token, or refused a wrong one, instead of "no running gateway"', async () => {
    const stats = (env: Record<string, string>) =>
      runCliInProcess(['--config', configPath, 'cache', 'stats'], { cwd, env: { FLYFLOW_API_KEY: SERVER_KEY, ...env } });
    const without = await stats({});
    expect(without.code).toBe(0);
    expect(without.stdout).toContain(`hit ratio:  unknown: the gateway at ${running.baseUrl} wants the admin token: set ADMIN_TOKEN`);
    expect(without.stdout).not.toContain('no running gateway');
    const wrong = await stats({ ADMIN_TOKEN: `${ADMIN_TOKEN}-wrong` });
    expect(wrong.code).toBe(0);
    expect(wrong.stdout).toContain(`hit ratio:  unknown: the gateway at ${running.baseUrl} refused the admin token: set ADMIN_TOKEN`);
  });
});

describe('the CLI against a gateway whose purge failed part way', () => {
  test('it does not claim that nothing was purged, and says to run it again', async () => {
    const cwd = await makeTempDir('rg-admin-cli-failed-');
    // A stand-in for a gateway whose disk is full: it answers the purge route 503, as the gateway does then.
    const standIn = createServer((request, response) => {
      request.resume();
      response.writeHead(503, { 'Content-Type': 'application/json', 'Retry-After': '1' });
      response.end(JSON.stringify({ error: 'Service Unavailable', message: 'The cache could not remove the recording; try again' }));
    });
    await new Promise<void>((resolve) => standIn.listen(0, '127.0.0.1', resolve));
    try {
      const cacheDir = path.join(cwd, 'cache');
      await mkdir(cacheDir);
      const configPath = await writeCliConfig(cwd, (standIn.address() as AddressInfo).port, cacheDir);
      const result = await runCliInProcess(['--config', configPath, 'cache', 'purge', '--call', '1'], {
        cwd,
        env: { FLYFLOW_API_KEY: SERVER_KEY, ADMIN_TOKEN },
      });
      expect(result.code).toBe(1);
      expect(result.stderr).toContain('answered 503');
      expect(result.stderr).not.toContain('nothing was purged');
      expect(result.stderr).toMatch(/the purge may not have finished: run it again$/);
    } finally {
      await new Promise((resolve) => standIn.close(resolve));
      await removeDir(cwd);
    }
  });
});
