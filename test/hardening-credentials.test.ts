import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { syntheticRecording } from '../dev/recording-bytes.js';
import {
  ACME_SIGNING_SECRET,
  acmeTenant,
  makeTempDir,
  manualClock,
  removeDir,
  startGateway,
  testConfig,
  type RunningGateway,
} from '../dev/gateway-harness.js';

const ADMIN_TOKEN = 'admin-token-for-credential-tests-01';
const WEBHOOK_TOKEN = 'acme-webhook-token-for-credential-01';
const MAX_TTL_SECONDS = 900;
const SKEW_SECONDS = 60;
const MISSING = 'Bearer realm="recording-gateway"';
const INVALID = 'Bearer realm="recording-gateway", error="invalid_token"';

let upstream: FakeFlyflow;
let gateway: RunningGateway;
let dir: string;
const clock = manualClock();
const now = () => Math.floor(clock.now() / 1000);

/** The contract's formula, written out here rather than borrowed from the gateway. */
function signedPath(id: number, exp: number, secret = ACME_SIGNING_SECRET): string {
  const sig = createHmac('sha256', secret).update(`v1\nacme\n${id}\n${exp}`).digest('base64url');
  return `/v1/call/recording/${id}.mp3?tenant=acme&exp=${exp}&kid=k1&sig=${sig}`;
}

beforeAll(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  const config = testConfig({
    dir,
    upstreamBaseUrl: upstream.baseUrl,
    tenants: [acmeTenant({ maxSignedUrlTtlSeconds: MAX_TTL_SECONDS, webhookToken: WEBHOOK_TOKEN })],
  });
  gateway = await startGateway({ ...config, adminToken: ADMIN_TOKEN }, { clock });
});

afterAll(async () => {
  await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

beforeEach(() => upstream.reset());

describe('every 401 carries a WWW-Authenticate: Bearer challenge (RFC 9110 15.5.2)', () => {
  const none = { authorization: '' };
  test.each([
    ['a recording without credentials', '/v1/call/recording/1.mp3', 'GET', none, MISSING],
    ['a recording with a wrong key', '/v1/call/recording/1.mp3', 'GET', { authorization: 'Bearer wrong-key' }, INVALID],
    ['a HEAD with a wrong key', '/v1/call/recording/1.mp3', 'HEAD', { authorization: 'Bearer wrong-key' }, INVALID],
    ['a recording with an expired signed URL', () => signedPath(1, now() - 1), 'GET', none, INVALID],
    ['a recording with a tampered signed URL', () => signedPath(1, now() + 60).replace('exp=', 'exp=1'), 'GET', none, INVALID],
    ['minting a signed URL without a key', '/v1/call/recording/1/signed-url', 'POST', none, MISSING],
    ['a purge with a wrong key', '/v1/call/recording/1.mp3', 'DELETE', { authorization: 'Bearer wrong-key' }, INVALID],
    ['/metrics without the admin token', '/metrics', 'GET', none, MISSING],
    ['/metrics with a wrong admin token', '/metrics', 'GET', { authorization: 'Bearer not-the-admin-token' }, INVALID],
    ['a webhook with a wrong token', '/v1/webhooks/flyflow/acme?token=wrong', 'POST', none, INVALID],
    // RFC 6750 3.1: another scheme carries no bearer credentials, so the challenge has no error code.
    ['a recording with Basic credentials', '/v1/call/recording/1.mp3', 'GET', { authorization: 'Basic YWxhZGRpbjpvcGVu' }, MISSING],
    ['a HEAD with a bare key, no scheme', '/v1/call/recording/1.mp3', 'HEAD', { authorization: 'acme-key-without-scheme' }, MISSING],
    ['a purge with a Token scheme', '/v1/call/recording/1.mp3', 'DELETE', { authorization: 'Token wrong-key' }, MISSING],
    ['/metrics with Basic credentials', '/metrics', 'GET', { authorization: 'Basic YWRtaW46YWRtaW4=' }, MISSING],
    ['a recording with a Bearer scheme and no token', '/v1/call/recording/1.mp3', 'GET', { authorization: 'Bearer' }, INVALID],
  ])('%s', async (_name, target, method, headers, challenge) => {
    const path = typeof target === 'function' ? target() : target;
    const response = await gateway.fetch(path, { method, headers });
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe(challenge);
    if (method !== 'HEAD') expect(((await response.json()) as { error: string }).error).toBe('Unauthorized');
  });
});

describe('an Authorization header of another scheme than Bearer', () => {
  const UNSUPPORTED = { error: 'Unauthorized', message: 'Unsupported authorization scheme: send Authorization: Bearer <token>' };

  test('is refused as unsupported, not invalid, also on a memory hit (the door answers those)', async () => {
    const warm = await gateway.fetch('/v1/call/recording/3.mp3');
    expect(warm.status).toBe(200);
    await warm.arrayBuffer();
    for (const authorization of ['Basic YWxhZGRpbjpvcGVu', 'Bearer-ish token']) {
      const response = await fetch(`${gateway.baseUrl}/v1/call/recording/3.mp3`, { headers: { authorization } });
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toBe(MISSING);
      expect(await response.json()).toEqual(UNSUPPORTED);
    }
  });

  test('a Bearer scheme in any case is judged by its token', async () => {
    const response = await fetch(`${gateway.baseUrl}/v1/call/recording/3.mp3`, { headers: { authorization: 'bEARER wrong-key' } });
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe(INVALID);
    expect(await response.json()).toEqual({ error: 'Unauthorized', message: 'Invalid credentials' });
  });
});

describe('a signed URL with a parameter given twice is refused, whichever value comes first', () => {
  const repeated = (path: string, name: string, other: string, first: boolean) => {
    const value = new URL(path, 'http://x').searchParams.get(name)!;
    const pair = first ? `${name}=${value}&${name}=${other}` : `${name}=${other}&${name}=${value}`;
    return path.replace(`${name}=${value}`, pair);
  };

  test.each([
    ['sig', 'AAAA', 'a miss', 61],
    ['tenant', 'beta', 'a miss', 62],
    ['exp', '1', 'a miss', 63],
    ['kid', 'k2', 'a miss', 64],
    ['sig', 'AAAA', 'a memory hit', 65],
    ['tenant', 'beta', 'a memory hit', 66],
  ])('%s twice (the other value %s), on %s', async (name, other, where, id) => {
    upstream.setRecording(id, syntheticRecording(8 * 1024));
    const good = signedPath(id, now() + 120);
    if (where === 'a memory hit') {
      const warm = await fetch(gateway.baseUrl + good);
      expect(warm.status).toBe(200);
      await warm.arrayBuffer();
    }
    for (const first of [true, false]) {
      const response = await fetch(gateway.baseUrl + repeated(good, name, other, first));
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toBe(INVALID);
      expect(await response.json()).toEqual({ error: 'Unauthorized', message: 'Invalid credentials' });
    }
    expect(upstream.recordingRequests()).toHaveLength(where === 'a miss' ? 0 : 1);
    const once = await fetch(gateway.baseUrl + good);
    expect(once.status).toBe(200);
    await once.arrayBuffer();
  });
});

describe("a signed URL's expiry is bounded by the tenant's max_signed_url_ttl_seconds", () => {
  test('a validly signed URL with exp=999999999999 (the year 33658) is refused and never reaches Flyflow', async () => {
    const response = await fetch(gateway.baseUrl + signedPath(1, 999_999_999_999));
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe(INVALID);
    expect(await response.json()).toEqual({
      error: 'Unauthorized',
      message: "Invalid signature: its expiry lies further ahead than the tenant's max_signed_url_ttl_seconds allows",
    });
    expect(upstream.recordingRequests()).toHaveLength(0);
  });

  test('an expiry one second past the tenant maximum plus 60 s of clock skew is refused', async () => {
    const response = await fetch(gateway.baseUrl + signedPath(1, now() + MAX_TTL_SECONDS + SKEW_SECONDS + 1));
    expect(response.status).toBe(401);
    expect(upstream.recordingRequests()).toHaveLength(0);
  });

  test("an expiry at the tenant maximum plus 60 s (a minter's clock slightly ahead) still plays", async () => {
    const response = await fetch(gateway.baseUrl + signedPath(2, now() + MAX_TTL_SECONDS + SKEW_SECONDS));
    expect(response.status).toBe(200);
    expect(Buffer.from(await response.arrayBuffer()).equals(upstream.recording(2)!)).toBe(true);
  });

  test('a far expiry with a bad signature says only "Invalid credentials", so it tells nothing about the tenant', async () => {
    const forged = signedPath(1, 999_999_999_999, 'not-the-secret-of-acme-000000000');
    const response = await fetch(gateway.baseUrl + forged);
    expect(response.status).toBe(401);
    expect(await response.json()).toEqual({ error: 'Unauthorized', message: 'Invalid credentials' });
  });
});
