import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  SERVER_KEY,
  makeTempDir,
  rawRequest,
  removeDir,
  startGateway,
  testConfig,
  type RunningGateway,
} from '../dev/gateway-harness.js';

let upstream: FakeFlyflow;
let gateway: RunningGateway;
let dir: string;

beforeAll(async () => {
  upstream = await startFakeFlyflow({ apiKeys: [SERVER_KEY], headers: { 'Set-Cookie': 'upstream=secret' } });
  dir = await makeTempDir();
  gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
});

afterAll(async () => {
  await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

beforeEach(() => upstream.reset());

describe('tenant API keys', () => {
  test('a request without credentials is refused with 401 JSON saying they are missing', async () => {
    const response = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { authorization: '' } });
    expect(response.status).toBe(401);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(await response.json()).toEqual({ error: 'Unauthorized', message: expect.stringMatching(/^Missing credentials/) });
    expect(upstream.recordingRequests()).toHaveLength(0);
  });

  test.each([
    ['an unknown key', `Bearer not-a-tenant-key`],
    ['the Flyflow server key itself', `Bearer ${SERVER_KEY}`],
    ['a Bearer with no token', 'Bearer '],
    ['the right key with trailing junk', `Bearer ${ACME_KEY} extra`],
  ])('%s is refused with 401 "Invalid credentials" and never reaches Flyflow', async (_name, authorization) => {
    const response = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { authorization } });
    expect(response.status).toBe(401);
    expect(await response.json()).toEqual({ error: 'Unauthorized', message: 'Invalid credentials' });
    expect(upstream.recordingRequests()).toHaveLength(0);
  });

  test('a Basic scheme, even around the right key, is refused with 401 "Unsupported authorization scheme" and never reaches Flyflow', async () => {
    const authorization = `Basic ${Buffer.from(`acme:${ACME_KEY}`).toString('base64')}`;
    const response = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { authorization } });
    expect(response.status).toBe(401);
    expect(await response.json()).toEqual({
      error: 'Unauthorized',
      message: 'Unsupported authorization scheme: send Authorization: Bearer <token>',
    });
    expect(upstream.recordingRequests()).toHaveLength(0);
  });

  test('the bearer scheme is case-insensitive, as RFC 9110 says auth schemes are', async () => {
    const response = await gateway.fetch('/v1/call/recording/2.mp3', { headers: { authorization: `bearer ${ACME_KEY}` } });
    expect(response.status).toBe(200);
    await response.arrayBuffer();
  });

  test('a cached recording still needs a valid key: a hit is never served to a stranger', async () => {
    const first = await gateway.fetch('/v1/call/recording/3.mp3');
    expect(first.status).toBe(200);
    await first.arrayBuffer();
    await gateway.gateway.downloads.idle();
    const stranger = await gateway.fetch('/v1/call/recording/3.mp3', { headers: { authorization: 'Bearer guess' } });
    expect(stranger.status).toBe(401);
    expect(stranger.headers.get('etag')).toBeNull();
    expect(Buffer.from(await stranger.arrayBuffer()).includes(upstream.recording(3)!.subarray(0, 64))).toBe(false);
  });
});

describe('what reaches Flyflow', () => {
  test('the server key is injected and nothing of the client is forwarded', async () => {
    const response = await gateway.fetch('/v1/call/recording/4.mp3?cachebuster=123&token=abc', {
      headers: {
        cookie: 'session=client-cookie',
        range: 'bytes=0-99',
        'if-none-match': '"client-etag"',
        'if-modified-since': 'Wed, 01 Jan 2020 00:00:00 GMT',
        'x-forwarded-for': '203.0.113.9',
      },
    });
    expect(response.status).toBe(206);
    await response.arrayBuffer();
    const [received] = upstream.recordingRequests(4);
    expect(received).toBeDefined();
    expect(received!.url).toBe('/v1/call/recording/4.mp3');
    expect(received!.headers.authorization).toBe(`Bearer ${SERVER_KEY}`);
    expect(received!.headers.accept).toBe('audio/mpeg');
    expect(received!.headers['content-type']).toBe('application/json');
    for (const name of ['cookie', 'range', 'if-none-match', 'if-modified-since', 'x-forwarded-for', 'if-range']) {
      expect(received!.headers[name], name).toBeUndefined();
    }
    expect(JSON.stringify(received!.headers)).not.toContain(ACME_KEY);
  });

  test("none of the upstream's own headers pass through to the client", async () => {
    const response = await gateway.fetch('/v1/call/recording/1.mp3');
    await response.arrayBuffer();
    expect(response.headers.get('set-cookie')).toBeNull();
  });
});

describe('call ids', () => {
  test.each([
    ['zero', '/v1/call/recording/0.mp3'],
    ['a leading zero', '/v1/call/recording/01.mp3'],
    ['a minus sign', '/v1/call/recording/-1.mp3'],
    ['a plus sign', '/v1/call/recording/+1.mp3'],
    ['a decimal point', '/v1/call/recording/1.5.mp3'],
    ['an exponent', '/v1/call/recording/1e3.mp3'],
    ['letters', '/v1/call/recording/abc.mp3'],
    ['20 digits', '/v1/call/recording/12345678901234567890.mp3'],
    ['2^53, one past the largest id', '/v1/call/recording/9007199254740992.mp3'],
    ['an encoded slash', '/v1/call/recording/1%2F2.mp3'],
    ['encoded dots and slash', '/v1/call/recording/%2E%2E%2F1.mp3'],
    ['encoded dot segments', '/v1/call/recording/%2E%2E/1.mp3'],
    ['plain dot segments', '/v1/call/recording/../recording/1.mp3'],
    ['an encoded digit', '/v1/call/recording/%31.mp3'],
    ['a nested path', '/v1/call/recording/1/2.mp3'],
    ['an empty id', '/v1/call/recording/.mp3'],
    ['another extension', '/v1/call/recording/1.wav'],
    ['a space', '/v1/call/recording/1%20.mp3'],
  ])('%s is answered 400 without any upstream request', async (_name, path) => {
    const response = await rawRequest(gateway.baseUrl, path, { headers: { authorization: `Bearer ${ACME_KEY}` } });
    expect(response.status).toBe(400);
    expect(response.headers['content-type']).toBe('application/json');
    expect(JSON.parse(response.body.toString())).toMatchObject({ error: 'Bad Request' });
    expect(upstream.recordingRequests()).toHaveLength(0);
  });

  test('the largest id, 2^53-1, is a valid id', async () => {
    const response = await gateway.fetch('/v1/call/recording/9007199254740991.mp3');
    expect(response.status).toBe(404);
    expect(upstream.recordingRequests()).toHaveLength(1);
  });
});
