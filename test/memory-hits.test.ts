import { createHmac } from 'node:crypto';
import { request as httpRequest, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  ACME_ORIGIN,
  ACME_SIGNING_SECRET,
  acmeTenant,
  makeTempDir,
  manualClock,
  removeDir,
  testConfig,
} from '../dev/gateway-harness.js';
import { createGateway, type Gateway } from '../src/gateway.js';
import { createHttpServer } from '../src/server.js';

/*
 * The memory-hit path (src/routes/memory-hits.ts) answers without the app.
 * Two servers on one gateway: one with the path in front of the app, one with
 * the app alone. Every request must get the same answer from both, and a
 * memory hit must never reach the app behind the path.
 */

const CALL = 1;
const clock = manualClock();
let upstream: FakeFlyflow;
let dir: string;
let gateway: Gateway;
let withPath: string;
let appOnly: string;
let reachedApp = 0;
const servers: Server[] = [];

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function signature(exp: number, id: number = CALL, secret = ACME_SIGNING_SECRET): string {
  return createHmac('sha256', secret).update(`v1\nacme\n${id}\n${exp}`).digest('base64url');
}

function signedPath(exp: number, sig = signature(exp)): string {
  return `/v1/call/recording/${CALL}.mp3?tenant=acme&exp=${exp}&kid=k1&sig=${sig}`;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

// Differ between any two answers by nature: the date, a fresh request id, the tokens left.
const VARYING = new Set(['date', 'x-request-id', 'ratelimit-remaining', 'ratelimit-reset', 'keep-alive', 'connection']);

async function ask(base: string, path: string, init: RequestInit): Promise<Answer> {
  const response = await fetch(`${base}${path}`, init);
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    if (!VARYING.has(name)) headers[name] = value;
  });
  return { status: response.status, headers, body: Buffer.from(await response.arrayBuffer()) };
}

/** The same request to both servers; their answers must be equal. */
async function askBoth(path: string, headers: Record<string, string>, method = 'GET'): Promise<{ answer: Answer; viaApp: number }> {
  const before = reachedApp;
  const fast = await ask(withPath, path, { method, headers });
  const viaApp = reachedApp - before;
  const plain = await ask(appOnly, path, { method, headers });
  expect(fast).toEqual(plain);
  return { answer: fast, viaApp };
}

const key = { authorization: `Bearer ${ACME_KEY}` };

beforeAll(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  gateway = await createGateway({
    config: testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, tenants: [acmeTenant({ rateLimitPerMinute: 10_000 })] }),
    clock,
  });
  const counting = (app: RequestListener): RequestListener =>
    gateway.answeringMemoryHitsFirst((request, response) => {
      reachedApp++;
      app(request, response);
    });
  withPath = await listen(createHttpServer(gateway.app, '127.0.0.1', { wrapListener: counting }));
  appOnly = await listen(createHttpServer(gateway.app, '127.0.0.1'));
  // The first request is a miss: it goes through the app and fills the memory tier.
  const first = await fetch(`${withPath}/v1/call/recording/${CALL}.mp3`, { headers: key });
  expect(first.status).toBe(200);
  await first.arrayBuffer();
  expect(reachedApp).toBe(1);
  // Stored a moment after its last byte went out; until then a request joins the download.
  const namespace = gateway.tenants.byApiKey(ACME_KEY)!.namespace;
  for (let i = 0; i < 200 && !gateway.recordings.findInMemory(namespace, String(CALL)); i++) await sleep(10);
  expect(gateway.recordings.findInMemory(namespace, String(CALL))).toBeDefined();
});

afterAll(async () => {
  for (const server of servers) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  await gateway?.close();
  await upstream?.close();
  await removeDir(dir);
});

describe('a memory hit answered without the app', () => {
  const recording = `/v1/call/recording/${CALL}.mp3`;

  test.each([
    ['a whole GET', {}],
    ['the Safari probe', { range: 'bytes=0-1' }],
    ['a suffix range', { range: 'bytes=-500' }],
    ['an open range', { range: 'bytes=1000-' }],
    ['a range past the end, clipped', { range: 'bytes=100-99999999' }],
    ['two ranges, answered whole', { range: 'bytes=0-1,5-9' }],
    ['a range of another unit, ignored', { range: 'items=0-1' }],
    ['an allowed origin', { origin: ACME_ORIGIN, range: 'bytes=0-1' }],
    ['another origin', { origin: 'https://elsewhere.example' }],
    ['a caller request id', { 'x-request-id': 'caller-chosen-id-0001' }],
  ])('%s: the same answer, and the app is not asked', async (_name, headers) => {
    const { answer, viaApp } = await askBoth(recording, { ...key, ...headers });
    expect([200, 206]).toContain(answer.status);
    expect(answer.headers['cache-status']).toBe('recording-gateway; hit; detail=memory');
    expect(answer.headers['ratelimit-limit']).toBe('10000');
    expect(viaApp).toBe(0);
  });

  test('HEAD and conditionals: the same answers, without the app', async () => {
    const { answer: whole } = await askBoth(recording, key);
    const etag = whole.headers.etag!;
    const head = await askBoth(recording, key, 'HEAD');
    expect(head.answer.status).toBe(200);
    expect(head.answer.body.length).toBe(0);
    expect(head.answer.headers['content-length']).toBe(String(whole.body.length));
    const notModified = await askBoth(recording, { ...key, 'if-none-match': etag });
    expect(notModified.answer.status).toBe(304);
    expect(notModified.answer.headers.etag).toBe(etag);
    const ifRangeMatches = await askBoth(recording, { ...key, range: 'bytes=0-9', 'if-range': etag });
    expect(ifRangeMatches.answer.status).toBe(206);
    const ifRangeStale = await askBoth(recording, { ...key, range: 'bytes=0-9', 'if-range': '"other"' });
    expect(ifRangeStale.answer.status).toBe(200);
    expect(head.viaApp + notModified.viaApp + ifRangeMatches.viaApp + ifRangeStale.viaApp).toBe(0);
  });

  test('a signed URL: the same answer, with its shorter max-age', async () => {
    const exp = Math.floor(clock.now() / 1000) + 120;
    const { answer, viaApp } = await askBoth(signedPath(exp), { range: 'bytes=0-1' });
    expect(answer.status).toBe(206);
    expect(answer.headers['cache-control']).toBe('private, max-age=120, immutable');
    expect(viaApp).toBe(0);
  });

  test('a signed URL at a fractional second: a max-age that ends no later than the URL', async () => {
    const start = clock.now();
    const exp = Math.floor(start / 1000) + 120;
    clock.set(start + 400);
    try {
      const { answer, viaApp } = await askBoth(signedPath(exp), { range: 'bytes=0-1' });
      expect(answer.headers['cache-control']).toBe('private, max-age=119, immutable');
      expect(viaApp).toBe(0);
    } finally {
      clock.set(start);
    }
  });
});

describe("a request for a recording without a valid credential: the app's 401, made without the app", () => {
  const now = () => Math.floor(clock.now() / 1000);
  test.each<[string, () => string, Record<string, string>, string]>([
    ['no credentials', () => `/v1/call/recording/${CALL}.mp3`, {}, 'GET'],
    ['no credentials, HEAD', () => `/v1/call/recording/${CALL}.mp3`, {}, 'HEAD'],
    ['no credentials, from an allowed origin', () => `/v1/call/recording/${CALL}.mp3`, { origin: ACME_ORIGIN }, 'GET'],
    ['a wrong key', () => `/v1/call/recording/${CALL}.mp3`, { authorization: 'Bearer wrong-key-000000000000000' }, 'GET'],
    ['a wrong key for a recording not in memory', () => '/v1/call/recording/77.mp3', { authorization: 'Bearer wrong-key-0' }, 'GET'],
    ['an expired signed URL', () => signedPath(now() - 1), {}, 'GET'],
    ['a forged signed URL', () => signedPath(now() + 60, signature(now() + 60, CALL + 1)), {}, 'GET'],
  ])('%s', async (_name, path, headers, method) => {
    const { answer, viaApp } = await askBoth(path(), headers, method);
    expect(answer.status).toBe(401);
    expect(answer.headers['www-authenticate']).toMatch(/^Bearer realm="recording-gateway"/);
    expect(answer.headers['content-length']).toMatch(/^[1-9]\d+$/);
    expect(answer.body.length).toBe(method === 'HEAD' ? 0 : Number(answer.headers['content-length']));
    expect(answer.headers['access-control-allow-origin']).toBe(headers.origin);
    expect(viaApp).toBe(0);
  });
});

describe('what the path hands to the app', () => {
  const recording = `/v1/call/recording/${CALL}.mp3`;

  test.each([
    ['an unsatisfiable range', recording, { ...key, range: 'bytes=999999999-' }, 416],
    ['a failed If-Match', recording, { ...key, 'if-match': '"other"' }, 412],
    ['a leading zero', `/v1/call/recording/0${CALL}.mp3`, key, 400],
    ['an id past 2^53', '/v1/call/recording/9007199254740993.mp3', key, 400],
  ])('%s: answered by the app, as without the path', async (_name, path, headers, status) => {
    const { answer, viaApp } = await askBoth(path, headers);
    expect(answer.status).toBe(status);
    expect(viaApp).toBe(1);
  });

  test('a recording not in memory is the app to fetch', async () => {
    const before = reachedApp;
    const miss = await fetch(`${withPath}/v1/call/recording/2.mp3`, { headers: key });
    expect(miss.status).toBe(200);
    expect(miss.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    expect(Buffer.from(await miss.arrayBuffer())).toEqual(upstream.recording(2));
    expect(reachedApp - before).toBe(1);
  });

  test('two Authorization headers are the app to judge (it sees them joined and refuses them)', async () => {
    const before = reachedApp;
    const twice = await new Promise<number>((resolve, reject) => {
      const { hostname, port } = new URL(withPath);
      const request = httpRequest(
        {
          hostname,
          port,
          path: recording,
          headers: ['Host', 'gateway', 'Authorization', `Bearer ${ACME_KEY}`, 'Authorization', 'Bearer another-key-0000000000000'],
        },
        (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        },
      );
      request.once('error', reject);
      request.end();
    });
    expect(twice).toBe(401);
    expect(reachedApp - before).toBe(1);
  });

  test('a DELETE is never the path to answer, and after it the recording is no memory hit', async () => {
    const before = reachedApp;
    const deleted = await fetch(`${withPath}${recording}`, { method: 'DELETE', headers: key });
    expect(deleted.status).toBe(204);
    const again = await fetch(`${withPath}${recording}`, { headers: key });
    expect(again.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    await again.arrayBuffer();
    expect(reachedApp - before).toBe(2);
  });
});
