import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  acmeTenant,
  makeTempDir,
  manualClock,
  removeDir,
  startGateway,
  testConfig,
  testTenant,
  type RunningGateway,
  type TestConfigOptions,
} from '../dev/gateway-harness.js';
import type { Clock } from '../src/clock.js';
import { parseConfig } from '../src/config/index.js';
import { ConfigError } from '../src/config/config-error.js';
import { createLogger } from '../src/logger.js';
import type { GatewayOptions } from '../src/gateway.js';

const WEBHOOK_TOKEN = 'acme-webhook-token-0123456789abcdef';
const BETA_WEBHOOK_TOKEN = 'beta-webhook-token-0123456789abcdef';
const BETA_KEY = 'beta-tenant-key-for-webhooks-0001';

let upstream: FakeFlyflow;
let dir: string;
let running: RunningGateway | undefined;
let lines: string[];
let warnings: Error[];
const onWarning = (warning: Error) => warnings.push(warning);

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  lines = [];
  warnings = [];
  process.on('warning', onWarning);
});

afterEach(async () => {
  process.off('warning', onWarning);
  await running?.close();
  running = undefined;
  await upstream.close();
  await removeDir(dir);
});

async function start(
  options: Omit<TestConfigOptions, 'dir' | 'upstreamBaseUrl'> = {},
  extra: { clock?: Clock; webhookPrefetch?: GatewayOptions['webhookPrefetch'] } = {},
): Promise<RunningGateway> {
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      callback();
    },
  });
  const config = testConfig({
    dir,
    upstreamBaseUrl: upstream.baseUrl,
    tenants: [acmeTenant({ webhookToken: WEBHOOK_TOKEN })],
    ...options,
  });
  running = await startGateway(config, { ...extra, logger: createLogger({ destination, level: 'info' }) });
  return running;
}

function callEnded(gateway: RunningGateway, callId: number, { tenant = 'acme', token = WEBHOOK_TOKEN } = {}): Promise<Response> {
  return gateway.fetch(`/v1/webhooks/flyflow/${tenant}?token=${token}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ event_type: 'call_ended', call_id: callId }),
  });
}

/** Sends the events `batch` at a time, as Flyflow's workers would, and answers each status. */
async function sendAll(gateway: RunningGateway, callIds: number[], batch = 20): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < callIds.length; i += batch) {
    const answers = await Promise.all(callIds.slice(i, i + batch).map((id) => callEnded(gateway, id)));
    for (const answer of answers) {
      statuses.push(answer.status);
      await answer.arrayBuffer();
    }
  }
  return statuses;
}

function range(from: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => from + i);
}

function countOf(values: number[], value: number): number {
  return values.filter((v) => v === value).length;
}

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Log lines saying a prefetch ended without the recording (given up, or not worth retrying). */
function prefetchEndings(): Array<Record<string, unknown>> {
  return lines
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => /^prefetch (gave up|failed)/.test(String(line.msg)));
}

async function metric(gateway: RunningGateway, pattern: RegExp): Promise<number | undefined> {
  const text = await (await gateway.fetch('/metrics')).text();
  const line = text.split('\n').find((candidate) => pattern.test(candidate));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

function listenerWarnings(): Error[] {
  return warnings.filter((warning) => warning.name === 'MaxListenersExceededWarning');
}

describe('webhook prefetch queue', () => {
  test('200 events for distinct calls start only webhooks.max_queued_prefetches downloads; the rest get 503 with Retry-After', async () => {
    const gateway = await start({ webhooks: { rateLimitPerMinute: 10_000, maxQueuedPrefetches: 10 } });
    const ids = range(1001, 200);
    for (const id of ids) {
      upstream.setRecording(id, upstream.recording(1)!);
      upstream.setBehaviour(id, { kind: 'gate' });
    }

    const statuses = await sendAll(gateway, ids);
    expect(countOf(statuses, 202)).toBe(10);
    expect(countOf(statuses, 503)).toBe(190);
    const refused = await callEnded(gateway, 1300);
    expect(refused.status).toBe(503);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await refused.json()).toEqual({
      error: 'Service Unavailable',
      message: expect.stringContaining('deliver the event again later'),
    });
    // Half the 16 download slots run prefetches; the rest of the queue waits, leaving slots for listeners.
    expect(await metric(gateway, /^recording_gateway_webhook_prefetches\{state="running"\}/)).toBe(8);
    expect(await metric(gateway, /^recording_gateway_webhook_prefetches\{state="queued"\}/)).toBe(2);

    for (const id of ids) upstream.release(id);
    await waitFor(() => gateway.gateway.cache.stats().entries === 10);
    await gateway.gateway.downloads.idle();
    expect(upstream.recordingRequests()).toHaveLength(10);
    expect(await metric(gateway, /^recording_gateway_webhook_events_refused_total\{reason="queue_full"\}/)).toBe(191);
    expect(listenerWarnings()).toEqual([]);
  });

  test('200 prefetches waiting out a failing upstream print no MaxListenersExceededWarning', async () => {
    // 64 slots: 32 prefetches run, and back off, at once.
    const gateway = await start(
      { upstream: { maxConcurrentDownloads: 64 }, webhooks: { rateLimitPerMinute: 10_000, maxQueuedPrefetches: 200 } },
      { webhookPrefetch: { attempts: 2, firstDelayMs: 100 } },
    );
    const ids = range(2001, 200);
    for (const id of ids) upstream.setBehaviour(id, { kind: 'status', status: 500 });

    const statuses = await sendAll(gateway, ids);
    expect(countOf(statuses, 202)).toBe(200);
    await waitFor(() => prefetchEndings().length === 200, 15_000);
    expect(listenerWarnings()).toEqual([]);
  });

  test("one tenant with a full queue never refuses another tenant's events", async () => {
    const gateway = await start({
      tenants: [
        acmeTenant({ webhookToken: WEBHOOK_TOKEN }),
        testTenant('beta', BETA_KEY, { webhookToken: BETA_WEBHOOK_TOKEN, upstreamApiKey: 'flyflow-beta-account-key-0000001' }),
      ],
      webhooks: { rateLimitPerMinute: 10_000, maxQueuedPrefetches: 2 },
    });
    for (const id of [1, 2]) upstream.setBehaviour(id, { kind: 'gate' });

    expect(await sendAll(gateway, [1, 2, 3])).toEqual([202, 202, 503]);
    const beta = await callEnded(gateway, 3, { tenant: 'beta', token: BETA_WEBHOOK_TOKEN });
    expect(beta.status).toBe(202);
    await waitFor(() => upstream.recordingRequests(3).length === 1);
    upstream.release(1);
    upstream.release(2);
  });
});

describe('one prefetch per call', () => {
  test('50 events for one call while Flyflow is still answering make one upstream request', async () => {
    const gateway = await start({ webhooks: { rateLimitPerMinute: 10_000, maxQueuedPrefetches: 1 } });
    // Not there yet: Flyflow takes its time, then says 404.
    upstream.setBehaviour(700, { kind: 'slow-head', delayMs: 1_500 });

    const statuses = await Promise.all(range(0, 50).map(async () => (await callEnded(gateway, 700)).status));
    expect(statuses).toEqual(Array(50).fill(202));
    await waitFor(() => prefetchEndings().length > 0);
    await gateway.gateway.downloads.idle();
    expect(upstream.recordingRequests(700)).toHaveLength(1);
  });

  test('an upstream 404 ends the prefetch after one request, and is remembered for listeners', async () => {
    const gateway = await start();
    expect((await callEnded(gateway, 701)).status).toBe(202);
    await waitFor(() => prefetchEndings().length > 0);
    expect(upstream.recordingRequests(701)).toHaveLength(1);
    expect(prefetchEndings()[0]).toMatchObject({ callId: '701', attempt: 1 });

    const listener = await gateway.fetch('/v1/call/recording/701.mp3');
    expect(listener.status).toBe(404);
    await listener.arrayBuffer();
    expect(upstream.recordingRequests(701)).toHaveLength(1);
  });
});

describe('webhook rate limit', () => {
  test('a tenant over webhooks.rate_limit_per_minute gets 429 JSON with Retry-After, and its listeners are not limited', async () => {
    const clock = manualClock();
    const gateway = await start(
      {
        tenants: [acmeTenant({ webhookToken: WEBHOOK_TOKEN, rateLimitPerMinute: 100 })],
        webhooks: { rateLimitPerMinute: 5, maxQueuedPrefetches: 100 },
      },
      { clock },
    );
    // A wrong token spends nothing.
    for (let i = 0; i < 3; i++) expect((await callEnded(gateway, 1, { token: 'not-the-webhook-token-000000000' })).status).toBe(401);

    const accepted = await sendAll(gateway, [1, 2, 3, 1, 2], 1);
    expect(accepted).toEqual([202, 202, 202, 202, 202]);
    const limited = await callEnded(gateway, 4);
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('12');
    expect(limited.headers.get('ratelimit-limit')).toBe('5');
    expect(await limited.json()).toEqual({ error: 'Too Many Requests', message: 'Rate limit exceeded; retry in 12 s' });
    expect(await metric(gateway, /^recording_gateway_webhook_events_refused_total\{reason="rate_limited"\}/)).toBe(1);

    const listener = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(listener.status).toBe(200);
    await listener.arrayBuffer();

    clock.advance(12_000);
    expect((await callEnded(gateway, 4)).status).toBe(202);
    await waitFor(() => gateway.gateway.cache.stats().entries === 4);
    expect(upstream.recordingRequests(4)).toHaveLength(1);
  });
});

describe('shutdown', () => {
  test('closing the gateway with prefetches queued and backing off finishes promptly and starts none of the queued ones', async () => {
    // Two slots: one prefetch runs at a time, the rest wait in the queue.
    const gateway = await start(
      { upstream: { maxConcurrentDownloads: 2 }, webhooks: { rateLimitPerMinute: 10_000, maxQueuedPrefetches: 100 } },
      { webhookPrefetch: { attempts: 3, firstDelayMs: 30_000 } },
    );
    const ids = range(3001, 50);
    for (const id of ids) upstream.setBehaviour(id, { kind: 'status', status: 500 });
    expect(countOf(await sendAll(gateway, ids), 202)).toBe(50);
    await waitFor(() => upstream.recordingRequests(3001).length === 1);

    const startedAt = Date.now();
    running = undefined;
    await gateway.close();
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    expect(upstream.recordingRequests()).toHaveLength(1);
  });
});

describe('webhook credentials', () => {
  test('an event without a token is told to add ?token=, not to send a Bearer key', async () => {
    const gateway = await start();
    const response = await gateway.fetch('/v1/webhooks/flyflow/acme', {
      method: 'POST',
      body: JSON.stringify({ event_type: 'call_ended', call_id: 1 }),
    });
    expect(response.status).toBe(401);
    expect(await response.json()).toEqual({ error: 'Unauthorized', message: 'Missing credentials: add ?token=<webhook token>' });
  });
});

describe('webhooks configuration', () => {
  const tenants = [{ id: 'acme', api_keys: [`sha256:${'a'.repeat(64)}`] }];
  const parse = (raw: Record<string, unknown>) => parseConfig({ tenants, ...raw }, { env: { FLYFLOW_API_KEY: 'k' }, cwd: '/tmp' });

  test('webhooks.rate_limit_per_minute and max_queued_prefetches default to 120 and 100 and can be set', () => {
    expect(parse({}).webhooks).toEqual({ rateLimitPerMinute: 120, maxQueuedPrefetches: 100 });
    expect(parse({ webhooks: { rate_limit_per_minute: 30, max_queued_prefetches: 5 } }).webhooks).toEqual({
      rateLimitPerMinute: 30,
      maxQueuedPrefetches: 5,
    });
  });

  test('a bad webhooks value stops start-up with a message naming the field', () => {
    expect(() => parse({ webhooks: { max_queued_prefetches: 0 } })).toThrow(ConfigError);
    expect(() => parse({ webhooks: { max_queued_prefetches: 0 } })).toThrow(/webhooks\.max_queued_prefetches/);
    expect(() => parse({ webhooks: { rate_limit: 10 } })).toThrow(/webhooks/);
  });
});
