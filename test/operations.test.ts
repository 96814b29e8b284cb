import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { createLogger } from '../src/logger.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  ACME_SIGNING_SECRET,
  SERVER_KEY,
  acmeTenant,
  makeTempDir,
  removeDir,
  startGateway,
  testConfig,
  type RunningGateway,
} from '../dev/gateway-harness.js';

const ADMIN_TOKEN = 'admin-token-for-tests-0123456789';
const WEBHOOK_TOKEN = 'acme-webhook-token-0123456789abcdef';

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway;
let lines: string[];

function logLines(): Array<Record<string, unknown>> {
  return lines.map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  lines = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      callback();
    },
  });
  const config = testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, tenants: [acmeTenant({ webhookToken: WEBHOOK_TOKEN })] });
  gateway = await startGateway({ ...config, adminToken: ADMIN_TOKEN }, { logger: createLogger({ destination, level: 'info' }) });
});

afterEach(async () => {
  await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

describe('request logs', () => {
  test('one JSON line per request with id, tenant, call id, status, cache result, bytes and timings', async () => {
    const response = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { 'x-request-id': 'client-trace-0001' } });
    await response.arrayBuffer();
    expect(response.headers.get('x-request-id')).toBe('client-trace-0001');
    await waitFor(() => logLines().some((line) => line.msg === 'request'));
    const requests = logLines().filter((line) => line.msg === 'request');
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({
      reqId: 'client-trace-0001',
      method: 'GET',
      path: '/v1/call/recording/1.mp3',
      route: 'recording',
      tenant: 'acme',
      callId: '1',
      credential: 'api-key',
      status: 200,
      cache: 'miss',
      bytes: upstream.recording(1)!.length,
    });
    expect(typeof requests[0]!.durationMs).toBe('number');
    expect(typeof requests[0]!.upstreamMs).toBe('number');
  });

  test('every error answer carries the request id once, as its log line names it', async () => {
    const key = { authorization: `Bearer ${ACME_KEY}` };
    const cases: Array<[string, RequestInit]> = [
      ['/v1/call/recording/1.mp3', {}],
      ['/v1/call/recording/1.mp3', { method: 'HEAD' }],
      ['/v1/call/recording/1.mp3', { headers: { authorization: 'Bearer wrong-key-attempt' } }],
      ['/v1/call/recording/1x.mp3', { headers: key }],
      ['/v1/call/recording/1.mp3', { method: 'PUT', headers: key }],
      ['/v1/call/recording/404404.mp3', { headers: key }],
      ['/no-such-route', {}],
    ];
    const statuses: number[] = [];
    for (const [index, [path, init]] of cases.entries()) {
      const id = `client-trace-error-${index}`;
      // Not gateway.fetch, which would add the key.
      const response = await fetch(gateway.baseUrl + path, { ...init, headers: { ...init.headers, 'x-request-id': id } });
      await response.arrayBuffer();
      statuses.push(response.status);
      // fetch joins a field sent twice with ", ".
      expect(response.headers.get('x-request-id'), path).toBe(id);
      await waitFor(() => logLines().some((line) => line.reqId === id && line.status === response.status));
    }
    expect(statuses).toEqual([401, 401, 401, 400, 405, 404, 404]);
  });

  test('a malformed request id is replaced by a generated one', async () => {
    const response = await gateway.fetch('/healthz', { headers: { 'x-request-id': 'bad id with spaces' } });
    expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  test('no key, signature or token ever appears in the log output', async () => {
    const exp = Math.floor(Date.now() / 1000) + 600;
    const { createHmac } = await import('node:crypto');
    const sig = createHmac('sha256', ACME_SIGNING_SECRET).update(`v1\nacme\n2\n${exp}`).digest('base64url');
    await (await gateway.fetch(`/v1/call/recording/2.mp3?tenant=acme&exp=${exp}&kid=k1&sig=${sig}`)).arrayBuffer();
    await (await gateway.fetch('/v1/call/recording/2.mp3', { headers: { authorization: 'Bearer wrong-key-attempt' } })).arrayBuffer();
    await (await gateway.fetch('/v1/call/recording/99.mp3')).arrayBuffer();
    await (await gateway.fetch('/metrics', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
    await gateway.fetch(`/v1/webhooks/flyflow/acme?token=${WEBHOOK_TOKEN}`, {
      method: 'POST',
      body: JSON.stringify({ event_type: 'call_started', call_id: 3 }),
    });
    upstream.setBehaviour(3, { kind: 'status', status: 500 });
    await (await gateway.fetch('/v1/call/recording/3.mp3')).arrayBuffer();
    await waitFor(() => logLines().filter((line) => line.msg === 'request').length >= 6);
    const output = lines.join('\n');
    for (const secret of [ACME_KEY, SERVER_KEY, ACME_SIGNING_SECRET, sig, ADMIN_TOKEN, WEBHOOK_TOKEN, 'wrong-key-attempt']) {
      expect(output).not.toContain(secret);
    }
  });
});

describe('metrics', () => {
  async function scrape(): Promise<string> {
    const response = await gateway.fetch('/metrics', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    return response.text();
  }

  function value(text: string, pattern: RegExp): number {
    const line = text.split('\n').find((candidate) => pattern.test(candidate));
    return line ? Number(line.split(' ').pop()) : 0;
  }

  test('/metrics needs the admin token', async () => {
    expect((await gateway.fetch('/metrics', { headers: { authorization: '' } })).status).toBe(401);
    expect((await gateway.fetch('/metrics', { headers: { authorization: 'Bearer nope' } })).status).toBe(401);
  });

  test('counters move after a miss and a hit, under Prometheus names', async () => {
    await (await gateway.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
    await gateway.gateway.downloads.idle();
    await (await gateway.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
    await waitFor(() => logLines().filter((line) => line.msg === 'request').length >= 2);
    const text = await scrape();
    const size = upstream.recording(1)!.length;
    expect(value(text, /^recording_gateway_requests_total\{(?=.*cache="miss")(?=.*status="200")(?=.*tenant="acme")/)).toBe(1);
    expect(value(text, /^recording_gateway_requests_total\{(?=.*cache="hit")(?=.*status="200")(?=.*tenant="acme")/)).toBe(1);
    expect(value(text, /^recording_gateway_served_bytes_total\{tier="upstream"\}/)).toBe(size);
    expect(value(text, /^recording_gateway_served_bytes_total\{tier="memory"\}/)).toBe(size);
    expect(value(text, /^recording_gateway_upstream_request_duration_seconds_count\{outcome="ok"\}/)).toBe(1);
    expect(value(text, /^recording_gateway_cache_entries\{tier="disk"\}/)).toBe(1);
    expect(value(text, /^recording_gateway_cache_bytes\{tier="disk"\}/)).toBe(size);
    expect(value(text, /^recording_gateway_downloads_in_flight /)).toBe(0);
    expect(value(text, /^recording_gateway_upstream_circuit_state\{state="closed"\}/)).toBe(1);
    for (const name of [
      'recording_gateway_cache_evictions_total',
      'recording_gateway_download_joiners_total',
      'recording_gateway_upstream_errors_total',
    ]) {
      expect(text).toContain(`# TYPE ${name} counter`);
    }
  });

  test('info.json and peaks.json log their JSON bytes but are no audio served', async () => {
    await (await gateway.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
    await gateway.gateway.downloads.idle();
    const served = (text: string) =>
      ['memory', 'disk', 'upstream'].reduce(
        (sum, tier) => sum + value(text, new RegExp(`^recording_gateway_served_bytes_total\\{tier="${tier}"\\}`)),
        0,
      );
    const before = served(await scrape());
    const bodies = new Map<string, number>();
    for (const path of ['/v1/call/recording/1/info.json', '/v1/call/recording/1/peaks.json?points=50']) {
      const response = await gateway.fetch(path);
      expect(response.status).toBe(200);
      bodies.set(path.split('?')[0]!, (await response.arrayBuffer()).byteLength);
    }
    await waitFor(() => logLines().filter((line) => typeof line.path === 'string' && bodies.has(line.path)).length === 2);
    for (const line of logLines().filter((candidate) => typeof candidate.path === 'string' && bodies.has(candidate.path))) {
      expect(line.bytes).toBe(bodies.get(line.path as string));
    }
    expect(served(await scrape())).toBe(before);
  });

  test('upstream errors are counted by kind', async () => {
    upstream.setBehaviour(2, { kind: 'status', status: 500 });
    await (await gateway.fetch('/v1/call/recording/2.mp3')).arrayBuffer();
    await (await gateway.fetch('/v1/call/recording/98.mp3')).arrayBuffer();
    const text = await scrape();
    expect(value(text, /^recording_gateway_upstream_errors_total\{kind="server_error"\}/)).toBe(1);
    expect(value(text, /^recording_gateway_upstream_request_duration_seconds_count\{outcome="not_found"\}/)).toBe(1);
  });

  test('an answer whose head was fine and whose body then failed counts as an upstream error too', async () => {
    upstream.setBehaviour(2, { kind: 'not-mp3' });
    upstream.setBehaviour(3, { kind: 'truncate', afterBytes: 5000 });
    expect((await gateway.fetch('/v1/call/recording/2.mp3')).status).toBe(502);
    await (await gateway.fetch('/v1/call/recording/3.mp3')).arrayBuffer().catch(() => {});
    await gateway.gateway.downloads.idle();
    const text = await scrape();
    expect(value(text, /^recording_gateway_upstream_errors_total\{kind="bad_response"\}/)).toBe(1);
    // Each cut body is one failed request (fetched again while no client had a byte of it).
    expect(upstream.recordingRequests(3).length).toBeGreaterThan(0);
    expect(value(text, /^recording_gateway_upstream_errors_total\{kind="server_error"\}/)).toBe(upstream.recordingRequests(3).length);
    // Each head was fine: one `ok` per upstream request.
    const requests = upstream.recordingRequests(2).length + upstream.recordingRequests(3).length;
    expect(value(text, /^recording_gateway_upstream_request_duration_seconds_count\{outcome="ok"\}/)).toBe(requests);
  });
});

describe('Flyflow webhooks', () => {
  test.each([
    ['no token', '/v1/webhooks/flyflow/acme'],
    ['a wrong token', '/v1/webhooks/flyflow/acme?token=wrong'],
    ["another tenant's path", `/v1/webhooks/flyflow/nobody?token=${WEBHOOK_TOKEN}`],
  ])('%s is refused with 401 and prefetches nothing', async (_name, path) => {
    const response = await gateway.fetch(path, { method: 'POST', body: JSON.stringify({ event_type: 'call_ended', call_id: 1 }) });
    expect(response.status).toBe(401);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(upstream.recordingRequests()).toHaveLength(0);
  });

  test('call_ended is acknowledged at once and the recording is cached for the first listener', async () => {
    upstream.setBehaviour(3, { kind: 'slow-head', delayMs: 300 });
    const startedAt = Date.now();
    const response = await gateway.fetch(`/v1/webhooks/flyflow/acme?token=${WEBHOOK_TOKEN}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ event_type: 'call_ended', call_id: 3, timestamp: '2026-11-30T10:00:00Z' }),
    });
    expect(response.status).toBe(202);
    expect(await response.json()).toEqual({ status: 'accepted' });
    expect(Date.now() - startedAt).toBeLessThan(300);
    await waitFor(() => gateway.gateway.cache.lookup(`${[...gateway.gateway.tenants.all][0]!.namespace}/3`) !== undefined);
    const listener = await gateway.fetch('/v1/call/recording/3.mp3');
    expect(listener.headers.get('cache-status')).toContain('hit');
    await listener.arrayBuffer();
    expect(upstream.recordingRequests(3)).toHaveLength(1);
  });

  test('a prefetch that meets an upstream failure is retried until the recording is cached', async () => {
    // 500 is not retried by the upstream client itself, so each attempt here is the prefetcher's.
    upstream.setBehaviour(2, { kind: 'status', status: 500, times: 1 });
    await gateway.fetch(`/v1/webhooks/flyflow/acme?token=${WEBHOOK_TOKEN}`, {
      method: 'POST',
      body: JSON.stringify({ event_type: 'call_ended', call_id: 2 }),
    });
    await waitFor(() => gateway.gateway.cache.stats().entries === 1, 10_000);
    expect(upstream.recordingRequests(2)).toHaveLength(2);
  });

  test('other event types are acknowledged and ignored', async () => {
    const response = await gateway.fetch(`/v1/webhooks/flyflow/acme?token=${WEBHOOK_TOKEN}`, {
      method: 'POST',
      body: JSON.stringify({ event_type: 'call_started', call_id: 1 }),
    });
    expect(response.status).toBe(202);
    expect(await response.json()).toEqual({ status: 'ignored' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(upstream.recordingRequests()).toHaveLength(0);
  });

  test('a body that is not JSON, not an event object, or has a bad call id, is a 400', async () => {
    const path = `/v1/webhooks/flyflow/acme?token=${WEBHOOK_TOKEN}`;
    expect((await gateway.fetch(path, { method: 'POST', body: 'call ended' })).status).toBe(400);
    for (const body of ['[]', '{}', 'null', '"call_ended"', '12', '{"event_type": 1}', '[{"event_type": "call_ended", "call_id": 1}]']) {
      const response = await gateway.fetch(path, { method: 'POST', body });
      expect(response.status, body).toBe(400);
      expect(((await response.json()) as { error: string }).error).toBe('Bad Request');
    }
    expect((await gateway.fetch(path, { method: 'POST', body: JSON.stringify({ event_type: 'call_ended', call_id: '01' }) })).status).toBe(
      400,
    );
  });
});
