/**
 * One upstream account's trouble never fails another's requests (README,
 * "Upstream trouble"): each account has its own circuit breaker, download slots are
 * shared fairly between accounts, and the wait for a slot counts against
 * `upstream.timeout_ms`.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  SERVER_KEY,
  acmeTenant,
  bytesOf,
  makeTempDir,
  removeDir,
  startGateway,
  testConfig,
  testTenant,
  type RunningGateway,
  type TestConfigOptions,
} from '../dev/gateway-harness.js';
import { eventually } from '../dev/recording-bytes.js';
import { upstreamNamespace } from '../src/auth/tenants.js';

const BETA_KEY = 'beta-tenant-key-for-tests-00000000001';
const BETA_UPSTREAM_KEY = 'beta-flyflow-account-key-0000000000';
const GAMMA_KEY = 'gamma-tenant-key-for-tests-0000000001';

let upstream: FakeFlyflow;
let dir: string;
const running: RunningGateway[] = [];

/** acme and gamma share the server key's Flyflow account; beta has an account of its own. */
async function start(options: Partial<TestConfigOptions> = {}): Promise<RunningGateway> {
  const tenants = [acmeTenant(), testTenant('beta', BETA_KEY, { upstreamApiKey: BETA_UPSTREAM_KEY }), testTenant('gamma', GAMMA_KEY)];
  const gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, tenants, ...options }));
  running.push(gateway);
  return gateway;
}

const as = (key: string) => ({ headers: { authorization: `Bearer ${key}` } });

/** Gated copies of recording `from`: each download sends its head and first quarter, then holds its slot until `upstream.release`. */
function gated(ids: number[], from: number): void {
  for (const id of ids) {
    upstream.setRecording(id, upstream.recording(from)!);
    upstream.setBehaviour(id, { kind: 'gate' });
  }
}

async function downloadGauges(gateway: RunningGateway): Promise<{ inFlight: number; queued: number }> {
  const text = await (await gateway.fetch('/metrics')).text();
  const gauge = (name: string) => Number(new RegExp(`^recording_gateway_${name} (\\S+)$`, 'm').exec(text)?.[1]);
  return { inFlight: gauge('downloads_in_flight'), queued: gauge('downloads_queued') };
}

async function errorOf(response: Response): Promise<{ status: number; body: unknown }> {
  return { status: response.status, body: await response.json() };
}

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir('rg-fairness-');
});

afterEach(async () => {
  upstream.reset();
  for (const gateway of running.splice(0)) await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

describe('a circuit breaker per upstream account', () => {
  test("one account's failures open its circuit only: another account's cold misses still reach upstream and are served", async () => {
    const gateway = await start({ upstream: { circuitBreaker: { failureThreshold: 5, cooldownSeconds: 30 } } });
    upstream.setBehaviour(2, { kind: 'status', status: 500 });
    for (let failure = 0; failure < 5; failure++) {
      expect((await errorOf(await gateway.fetch('/v1/call/recording/2.mp3'))).status).toBe(502);
    }

    // acme's account is now failing fast, for every tenant on it (gamma too)...
    for (const key of [undefined, GAMMA_KEY]) {
      const refused = await gateway.fetch('/v1/call/recording/3.mp3', key ? as(key) : {});
      expect(refused.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
      expect(await errorOf(refused)).toEqual({ status: 503, body: { error: 'Service Unavailable', message: expect.any(String) } });
    }
    expect(upstream.recordingRequests(3)).toHaveLength(0);

    // ...while beta, on another Flyflow account, gets its recording from upstream.
    const served = await gateway.fetch('/v1/call/recording/3.mp3', as(BETA_KEY));
    expect(served.status).toBe(200);
    expect((await bytesOf(served)).equals(upstream.recording(3)!)).toBe(true);
    expect(upstream.recordingRequests(3).map((request) => request.headers.authorization)).toEqual([`Bearer ${BETA_UPSTREAM_KEY}`]);
  });

  test('/metrics counts open circuits and names the open one by a short account prefix, never a key', async () => {
    const gateway = await start({ upstream: { circuitBreaker: { failureThreshold: 2, cooldownSeconds: 30 } } });
    upstream.setBehaviour(2, { kind: 'status', status: 500 });
    for (let failure = 0; failure < 2; failure++) await (await gateway.fetch('/v1/call/recording/2.mp3')).arrayBuffer();

    const text = await (await gateway.fetch('/metrics')).text();
    const acmeAccount = upstreamNamespace(upstream.baseUrl, SERVER_KEY).slice(0, 12);
    const betaAccount = upstreamNamespace(upstream.baseUrl, BETA_UPSTREAM_KEY).slice(0, 12);
    expect(text).toMatch(/^recording_gateway_upstream_circuit_state\{state="open"\} 1$/m);
    expect(text).toMatch(/^recording_gateway_upstream_circuit_state\{state="closed"\} 1$/m);
    expect(text).toContain(`recording_gateway_upstream_account_circuit_state{account="${acmeAccount}",state="open"} 1`);
    expect(text).toContain(`recording_gateway_upstream_account_circuit_state{account="${betaAccount}",state="closed"} 1`);
    for (const secret of [SERVER_KEY, BETA_UPSTREAM_KEY, upstreamNamespace(upstream.baseUrl, SERVER_KEY)])
      expect(text).not.toContain(secret);
  });
});

describe('download slots shared fairly between accounts', () => {
  test("while one tenant floods the download queue, another account's cold miss goes up at once, ahead of the flood", async () => {
    const gateway = await start({ upstream: { maxConcurrentDownloads: 2 } });
    const flood = Array.from({ length: 40 }, (_, i) => 1000 + i);
    for (const id of flood) upstream.setBehaviour(id, { kind: 'slow-head', delayMs: 1_000 });
    const flooding = flood.map((id) => gateway.fetch(`/v1/call/recording/${id}.mp3`, { method: 'HEAD' }));
    expect(await eventually(() => gateway.gateway.downloads.inFlight === flood.length)).toBe(true);
    // Two accounts, two slots: acme may hold one, the other stays free for beta.
    expect(upstream.recordingRequests()).toHaveLength(1);

    const response = await gateway.fetch('/v1/call/recording/3.mp3', as(BETA_KEY));
    expect(response.status).toBe(200);
    expect((await bytesOf(response)).equals(upstream.recording(3)!)).toBe(true);
    // beta's request went up before acme's first download had ended, not after acme's 39 queued ones
    // (which of the flood's requests reached the gateway first is up to the machine).
    const upstreamIds = upstream.recordingRequests().map((request) => request.id);
    expect(upstreamIds).toHaveLength(2);
    expect(flood).toContain(upstreamIds[0]);
    expect(upstreamIds[1]).toBe(3);
    expect(gateway.gateway.downloads.inFlight).toBeGreaterThan(10);

    upstream.reset();
    for (const answer of await Promise.all(flooding)) expect(answer.status).toBe(404);
  });
});

describe('download slots one account cannot fill', () => {
  test("one account's slow downloads holding slots never make another account's cold miss wait for one", async () => {
    const gateway = await start({ upstream: { maxConcurrentDownloads: 4, timeoutMs: 3_000 } });
    // Each body trickles in for about 5.5 s; a HEAD starts the download, which keeps its slot after the answer.
    const slow = [1001, 1002, 1003, 1004];
    for (const id of slow) {
      upstream.setRecording(id, upstream.recording(1)!);
      upstream.setBehaviour(id, { kind: 'slow-body', chunkBytes: 2_000, intervalMs: 500 });
    }
    const heads = slow.map((id) => gateway.fetch(`/v1/call/recording/${id}.mp3`, { method: 'HEAD' }));
    expect(await eventually(() => upstream.recordingRequests().length >= 2)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 200));

    const startedAt = Date.now();
    const response = await gateway.fetch('/v1/call/recording/3.mp3', as(BETA_KEY));
    const body = await bytesOf(response);
    const elapsedMs = Date.now() - startedAt;
    expect(response.status).toBe(200);
    expect(body.equals(upstream.recording(3)!)).toBe(true);
    // Generous: without a share per account this waits out the whole 3 s timeout and is a 504.
    expect(elapsedMs).toBeLessThan(1_500);
    // acme's trickling downloads were all still under way meanwhile.
    expect(slow.every((id) => upstream.recordingRequests(id).length <= 1)).toBe(true);
    expect(gateway.gateway.downloads.inFlight).toBeGreaterThanOrEqual(3);
    expect(upstream.recordingRequests(3).map((request) => request.headers.authorization)).toEqual([`Bearer ${BETA_UPSTREAM_KEY}`]);

    // acme holds its share, two of the four slots; its other downloads waited
    // for one of its own and ran out of time, since each body takes 5.5 s.
    expect((await Promise.all(heads)).map((head) => head.status).sort()).toEqual([200, 200, 504, 504]);
  });

  test("an account already downloading gets its fair share: its second cold miss is served while another account's backlog waits", async () => {
    const gateway = await start({ upstream: { maxConcurrentDownloads: 4, timeoutMs: 1_500 } });
    const backlog = [1001, 1002, 1003, 1004, 1005, 1006];
    gated(backlog, 1);
    gated([2001], 2);
    const heads = backlog.map((id) => gateway.fetch(`/v1/call/recording/${id}.mp3`, { method: 'HEAD' }));
    expect(await eventually(() => gateway.gateway.downloads.inFlight === backlog.length)).toBe(true);

    // beta's long download, its listener still connected, takes one slot...
    const listening = await gateway.fetch('/v1/call/recording/2001.mp3', as(BETA_KEY));
    expect(listening.status).toBe(200);
    // ...and its next cold miss the other slot of its share, ahead of acme's backlog.
    const response = await gateway.fetch('/v1/call/recording/3.mp3', as(BETA_KEY));
    expect(response.status).toBe(200);
    expect((await bytesOf(response)).equals(upstream.recording(3)!)).toBe(true);
    expect(upstream.recordingRequests(3).map((request) => request.headers.authorization)).toEqual([`Bearer ${BETA_UPSTREAM_KEY}`]);

    // acme held its share, two of the four slots; the rest of its backlog waited for those and ran out of time.
    expect((await Promise.all(heads)).map((head) => head.status).sort()).toEqual([200, 200, 504, 504, 504, 504]);
    upstream.release(2001);
    expect((await bytesOf(listening)).equals(upstream.recording(2001)!)).toBe(true);
  });
});

describe('the download gauges', () => {
  test('downloads_in_flight counts only downloads holding a slot; those waiting for one are downloads_queued', async () => {
    const gateway = await start({ upstream: { maxConcurrentDownloads: 4 } });
    const acme = [1001, 1002, 1003];
    const beta = [2001, 2002, 2003];
    gated(acme, 1);
    gated(beta, 2);
    const heads = [
      ...acme.map((id) => gateway.fetch(`/v1/call/recording/${id}.mp3`, { method: 'HEAD' })),
      ...beta.map((id) => gateway.fetch(`/v1/call/recording/${id}.mp3`, { method: 'HEAD', ...as(BETA_KEY) })),
    ];
    expect(await eventually(() => gateway.gateway.downloads.inFlight === heads.length)).toBe(true);
    // Six downloads, four slots: four are under way, two wait for a slot.
    expect(await eventually(() => upstream.recordingRequests().length === 4)).toBe(true);
    expect(await downloadGauges(gateway)).toEqual({ inFlight: 4, queued: 2 });

    for (const id of [...acme, ...beta]) upstream.release(id);
    for (const head of await Promise.all(heads)) expect(head.status).toBe(200);
    await gateway.gateway.downloads.idle();
    expect(await downloadGauges(gateway)).toEqual({ inFlight: 0, queued: 0 });
  });
});

describe('the wait for a download slot counts against upstream.timeout_ms', () => {
  test('with one slot busy past the timeout, a queued request gets a JSON 504 and never reaches upstream, and the slot is not lost', async () => {
    const gateway = await start({ upstream: { maxConcurrentDownloads: 1, timeoutMs: 1_000 } });
    upstream.setBehaviour(1, { kind: 'gate' });
    const first = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(first.status).toBe(200);
    const firstBody = bytesOf(first);

    // Without the fix this request would wait for the gate and then succeed.
    const opening = setTimeout(() => upstream.release(1), 3_000);
    try {
      const queued = await gateway.fetch('/v1/call/recording/2.mp3');
      expect(await errorOf(queued)).toEqual({ status: 504, body: { error: 'Gateway Timeout', message: expect.any(String) } });
    } finally {
      clearTimeout(opening);
    }

    upstream.release(1);
    expect((await firstBody).equals(upstream.recording(1)!)).toBe(true);
    await gateway.gateway.downloads.idle();
    expect(upstream.recordingRequests(2)).toHaveLength(0);

    const later = await gateway.fetch('/v1/call/recording/2.mp3');
    expect(later.status).toBe(200);
    expect((await bytesOf(later)).equals(upstream.recording(2)!)).toBe(true);
  });

  test('the slot wait and the upstream head share one budget: together over the timeout is a 504 even when each alone is under it', async () => {
    const gateway = await start({ upstream: { maxConcurrentDownloads: 1, timeoutMs: 1_000 } });
    upstream.setBehaviour(1, { kind: 'gate' });
    upstream.setBehaviour(2, { kind: 'slow-head', delayMs: 900 });
    const first = await gateway.fetch('/v1/call/recording/1.mp3');
    const firstBody = bytesOf(first);

    const opening = setTimeout(() => upstream.release(1), 300);
    try {
      const queued = await gateway.fetch('/v1/call/recording/2.mp3');
      expect(await errorOf(queued)).toEqual({ status: 504, body: { error: 'Gateway Timeout', message: expect.any(String) } });
    } finally {
      clearTimeout(opening);
      upstream.release(1);
    }
    expect((await firstBody).equals(upstream.recording(1)!)).toBe(true);
  });
});
