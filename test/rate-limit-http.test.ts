import { afterAll, beforeAll, describe, expect, test } from 'vitest';
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
} from '../dev/gateway-harness.js';

const BETA_KEY = 'beta-tenant-key-for-rate-limits-01';
let upstream: FakeFlyflow;
let gateway: RunningGateway;
let dir: string;
const clock = manualClock();

beforeAll(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  gateway = await startGateway(
    testConfig({
      dir,
      upstreamBaseUrl: upstream.baseUrl,
      tenants: [acmeTenant({ rateLimitPerMinute: 3 }), testTenant('beta', BETA_KEY, { rateLimitPerMinute: 100 })],
    }),
    { clock },
  );
});

afterAll(async () => {
  await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

describe('per-tenant rate limits over HTTP', () => {
  test('a tenant over its limit gets 429 JSON with Retry-After and RateLimit-* headers, cache hits included', async () => {
    const remaining: string[] = [];
    for (let i = 0; i < 3; i++) {
      const response = await gateway.fetch('/v1/call/recording/1.mp3');
      expect(response.status).toBe(200);
      expect(response.headers.get('ratelimit-limit')).toBe('3');
      remaining.push(response.headers.get('ratelimit-remaining')!);
      await response.arrayBuffer();
      await gateway.gateway.downloads.idle();
    }
    expect(remaining).toEqual(['2', '1', '0']);

    const limited = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(limited.status).toBe(429);
    expect(limited.headers.get('content-type')).toBe('application/json');
    expect(limited.headers.get('retry-after')).toBe('20');
    expect(limited.headers.get('ratelimit-remaining')).toBe('0');
    expect(await limited.json()).toMatchObject({ error: 'Too Many Requests' });
    expect(upstream.recordingRequests(1)).toHaveLength(1);

    const other = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { authorization: `Bearer ${BETA_KEY}` } });
    expect(other.status).toBe(200);
    await other.arrayBuffer();

    clock.advance(20_000);
    const refilled = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(refilled.status).toBe(200);
    await refilled.arrayBuffer();
  });

  test('an answer refused after the request was counted (404, 416, 412) carries the RateLimit-* headers of the token it spent', async () => {
    clock.advance(60_000);
    const beta = { authorization: `Bearer ${BETA_KEY}` };
    const first = await gateway.fetch('/v1/call/recording/1.mp3', { headers: beta });
    expect(first.status).toBe(200);
    await first.arrayBuffer();
    const before = Number(first.headers.get('ratelimit-remaining'));

    const refused = [
      await gateway.fetch('/v1/call/recording/987654.mp3', { headers: beta }),
      await gateway.fetch('/v1/call/recording/1.mp3', { headers: { ...beta, range: 'bytes=99999999-' } }),
      await gateway.fetch('/v1/call/recording/1.mp3', { headers: { ...beta, 'if-match': '"not-this-one"' } }),
    ];
    expect(refused.map((response) => response.status)).toEqual([404, 416, 412]);
    for (const [i, response] of refused.entries()) {
      expect(response.headers.get('content-type')).toBe('application/json');
      expect(response.headers.get('ratelimit-limit')).toBe('100');
      expect(response.headers.get('ratelimit-remaining')).toBe(String(before - 1 - i));
      expect(response.headers.get('ratelimit-reset')).toMatch(/^\d+$/);
      await response.arrayBuffer();
    }
    const after = await gateway.fetch('/v1/call/recording/1.mp3', { headers: beta });
    expect(after.headers.get('ratelimit-remaining')).toBe(String(before - 4));
    await after.arrayBuffer();
  });

  test('a refused credential does not spend the tenant budget', async () => {
    clock.advance(60_000);
    for (let i = 0; i < 5; i++) {
      expect((await gateway.fetch('/v1/call/recording/1.mp3', { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    }
    const response = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(response.headers.get('ratelimit-remaining')).toBe('2');
    await response.arrayBuffer();
  });
});
