import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  ACME_ORIGIN,
  ACME_SIGNING_SECRET,
  ACME_SIGNING_SECRET_K2,
  acmeTenant,
  makeTempDir,
  manualClock,
  removeDir,
  startGateway,
  testConfig,
  testTenant,
  type RunningGateway,
} from '../dev/gateway-harness.js';

const OTHER_ORIGIN = 'https://app.beta.example';
const BETA_KEY = 'beta-tenant-key-for-tests-00000001';
const BETA_SECRET = 'beta-signing-secret-0123456789abc';

let upstream: FakeFlyflow;
let gateway: RunningGateway;
let dir: string;
const clock = manualClock();
const now = () => Math.floor(clock.now() / 1000);

/** The contract's formula, written out here rather than borrowed from the gateway's code. */
function contractSignature(secret: string, tenant: string, id: string | number, exp: number): string {
  // biome-ignore lint/style/useTemplate: spelled exactly as the README's formula
  const message = 'v1\n' + tenant + '\n' + id + '\n' + exp;
  return createHmac('sha256', secret).update(message).digest('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function signedPath(id: number, params: { tenant?: string; exp?: number; kid?: string; sig?: string; secret?: string } = {}): string {
  const tenant = params.tenant ?? 'acme';
  const exp = params.exp ?? now() + 600;
  const sig = params.sig ?? contractSignature(params.secret ?? ACME_SIGNING_SECRET, tenant, id, exp);
  return `/v1/call/recording/${id}.mp3?tenant=${tenant}&exp=${exp}&kid=${params.kid ?? 'k1'}&sig=${sig}`;
}

beforeAll(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  gateway = await startGateway(
    testConfig({
      dir,
      upstreamBaseUrl: upstream.baseUrl,
      publicBaseUrl: 'https://recordings.example.com',
      tenants: [
        acmeTenant({ maxSignedUrlTtlSeconds: 900 }),
        testTenant('beta', BETA_KEY, { signingKeys: [{ kid: 'k1', secret: BETA_SECRET }], allowedOrigins: [OTHER_ORIGIN] }),
      ],
    }),
    { clock },
  );
});

afterAll(async () => {
  await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

beforeEach(() => upstream.reset());

describe('signed URLs', () => {
  test('a URL minted by the documented formula plays without any header', async () => {
    const response = await fetch(gateway.baseUrl + signedPath(1));
    expect(response.status).toBe(200);
    expect(Buffer.from(await response.arrayBuffer()).equals(upstream.recording(1)!)).toBe(true);
  });

  test('both signing keys work during a rotation', async () => {
    const withK1 = await fetch(gateway.baseUrl + signedPath(2, { kid: 'k1', secret: ACME_SIGNING_SECRET }));
    const withK2 = await fetch(gateway.baseUrl + signedPath(2, { kid: 'k2', secret: ACME_SIGNING_SECRET_K2 }));
    expect([withK1.status, withK2.status]).toEqual([200, 200]);
    await Promise.all([withK1.arrayBuffer(), withK2.arrayBuffer()]);
  });

  test("the answer's max-age never outlives the signature", async () => {
    const response = await fetch(gateway.baseUrl + signedPath(1, { exp: now() + 120 }));
    expect(response.headers.get('cache-control')).toBe('private, max-age=120, immutable');
    await response.arrayBuffer();
  });

  test("at a fractional second the max-age rounds down, never past the URL's expiry", async () => {
    const start = clock.now();
    const exp = now() + 120;
    clock.set(start + 400);
    try {
      const recording = await fetch(gateway.baseUrl + signedPath(1, { exp }));
      expect(recording.headers.get('cache-control')).toBe('private, max-age=119, immutable');
      await recording.arrayBuffer();
      const info = await fetch(gateway.baseUrl + signedPath(1, { exp }).replace('.mp3?', '/info.json?'));
      expect(info.status).toBe(200);
      expect(info.headers.get('cache-control')).toBe('private, max-age=119, immutable');
      await info.arrayBuffer();
    } finally {
      clock.set(start);
    }
  });

  test('a miss that waited for the upstream answers with the max-age left when it answers, not when it was asked', async () => {
    const id = 9301;
    upstream.setRecording(id, upstream.recording(1)!);
    // The upstream's head comes 300 ms after its request: the clock moves on in between.
    upstream.setBehaviour(id, { kind: 'slow-head', delayMs: 300 });
    const start = clock.now();
    const exp = now() + 120;
    try {
      const pending = fetch(gateway.baseUrl + signedPath(id, { exp }));
      await expect.poll(() => upstream.recordingRequests(id).length, { interval: 5 }).toBe(1);
      clock.set(start + 30_500);
      const response = await pending;
      expect(response.status).toBe(200);
      expect(response.headers.get('cache-control')).toBe('private, max-age=89, immutable');
      await response.arrayBuffer();
    } finally {
      clock.set(start);
    }
  });

  test('a range whose head waits for bytes still to come answers with the max-age left when its head is sent', async () => {
    const id = 9302;
    const bytes = upstream.recording(1)!;
    upstream.setRecording(id, bytes);
    // The head and the first quarter, then the rest only once released.
    upstream.setBehaviour(id, { kind: 'gate' });
    const start = clock.now();
    const exp = now() + 120;
    try {
      const held = fetch(gateway.baseUrl + signedPath(id, { exp }), { headers: { range: 'bytes=-100' } });
      // A probe of the first bytes is answered once the download's head is in, and so is the held range's wait for the upstream.
      const probe = await fetch(gateway.baseUrl + signedPath(id, { exp }), { headers: { range: 'bytes=0-99' } });
      expect(probe.status).toBe(206);
      await probe.arrayBuffer();
      clock.set(start + 30_500);
      upstream.release(id);
      const response = await held;
      expect(response.status).toBe(206);
      expect(response.headers.get('cache-control')).toBe('private, max-age=89, immutable');
      expect(Buffer.from(await response.arrayBuffer()).equals(bytes.subarray(-100))).toBe(true);
    } finally {
      clock.set(start);
    }
  });

  const exp = () => now() + 600;
  test.each([
    ['an expired signature', () => signedPath(1, { exp: now() - 1 }), 'Expired signature'],
    ['a signature expiring this very second', () => signedPath(1, { exp: now() }), 'Expired signature'],
    [
      'a tampered signature',
      () => signedPath(1).replace(/sig=(.)/, (_m, c: string) => `sig=${c === 'A' ? 'B' : 'A'}`),
      'Invalid credentials',
    ],
    ['a signature for another call id', () => signedPath(1).replace('/1.mp3', '/2.mp3'), 'Invalid credentials'],
    ['a signature for another tenant', () => signedPath(1, { tenant: 'beta', secret: ACME_SIGNING_SECRET }), 'Invalid credentials'],
    ['a stretched expiry', () => signedPath(1).replace(/exp=(\d+)/, (_m, e: string) => `exp=${Number(e) + 3600}`), 'Invalid credentials'],
    ['an unknown kid', () => signedPath(1, { kid: 'k9' }), 'Invalid credentials'],
    ['an unknown tenant', () => signedPath(1, { tenant: 'nobody' }), 'Invalid credentials'],
    [
      'a signature with padding',
      () => signedPath(1, { sig: `${contractSignature(ACME_SIGNING_SECRET, 'acme', 1, exp())}=` }),
      'Invalid credentials',
    ],
    ['a missing sig', () => signedPath(1).replace(/&sig=[^&]*/, ''), 'Invalid credentials'],
    ['a non-numeric exp', () => signedPath(1).replace(/exp=\d+/, 'exp=soon'), 'Invalid credentials'],
  ])('%s is refused with 401 before any upstream work', async (_name, path, message) => {
    const response = await fetch(gateway.baseUrl + path());
    expect(response.status).toBe(401);
    expect(await response.json()).toEqual({ error: 'Unauthorized', message });
    expect(upstream.recordingRequests()).toHaveLength(0);
  });

  test('POST …/signed-url mints an absolute URL that plays, valid for the asked ttl', async () => {
    const response = await gateway.fetch('/v1/call/recording/3/signed-url', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ttl_seconds: 60 }),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    const { url, expires_at } = (await response.json()) as { url: string; expires_at: number };
    expect(expires_at).toBe(now() + 60);
    expect(url.startsWith('https://recordings.example.com/v1/call/recording/3.mp3?')).toBe(true);
    const query = new URL(url).searchParams;
    expect(query.get('sig')).toBe(contractSignature(ACME_SIGNING_SECRET, 'acme', 3, expires_at));
    const played = await fetch(gateway.baseUrl + url.slice('https://recordings.example.com'.length));
    expect(played.status).toBe(200);
    await played.arrayBuffer();
  });

  test('POST …/signed-url without a body uses the 300 s default', async () => {
    const response = await gateway.fetch('/v1/call/recording/3/signed-url', { method: 'POST' });
    expect(((await response.json()) as { expires_at: number }).expires_at).toBe(now() + 300);
  });

  test.each([
    ['a ttl over the tenant maximum', JSON.stringify({ ttl_seconds: 901 })],
    ['a zero ttl', JSON.stringify({ ttl_seconds: 0 })],
    ['a fractional ttl', JSON.stringify({ ttl_seconds: 1.5 })],
    ['a string ttl', JSON.stringify({ ttl_seconds: '60' })],
    ['a body that is not JSON', 'ttl=60'],
    ['a JSON array', '[60]'],
  ])('POST …/signed-url with %s is a 400 naming ttl_seconds or the body', async (_name, body) => {
    const response = await gateway.fetch('/v1/call/recording/3/signed-url', { method: 'POST', body });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { message: string }).message).toMatch(/ttl_seconds|Body/);
  });

  test('POST …/signed-url with a kid signs with that key: the URL names it, carries its signature and plays', async () => {
    const response = await gateway.fetch('/v1/call/recording/3/signed-url', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ttl_seconds: 60, kid: 'k2' }),
    });
    expect(response.status).toBe(200);
    const { url, expires_at } = (await response.json()) as { url: string; expires_at: number };
    expect(expires_at).toBe(now() + 60);
    const query = new URL(url).searchParams;
    expect(query.get('kid')).toBe('k2');
    expect(query.get('sig')).toBe(contractSignature(ACME_SIGNING_SECRET_K2, 'acme', 3, expires_at));
    const played = await fetch(gateway.baseUrl + url.slice('https://recordings.example.com'.length));
    expect(played.status).toBe(200);
    expect(Buffer.from(await played.arrayBuffer()).equals(upstream.recording(3)!)).toBe(true);
  });

  test('POST …/signed-url without a kid still signs with the first key', async () => {
    const response = await gateway.fetch('/v1/call/recording/3/signed-url', { method: 'POST', body: '{"ttl_seconds": 60}' });
    const { url } = (await response.json()) as { url: string };
    expect(new URL(url).searchParams.get('kid')).toBe('k1');
  });

  test.each([
    ['a kid the tenant does not have', { kid: 'k9' }, 'kid "k9" names no signing key of this tenant; it has "k1", "k2"'],
    ['a kid in the wrong case', { kid: 'K1' }, 'kid "K1" names no signing key of this tenant; it has "k1", "k2"'],
    ['an empty kid', { kid: '' }, 'kid "" names no signing key of this tenant; it has "k1", "k2"'],
    ['a number for kid', { kid: 2 }, "kid must be a string: the id of one of the tenant's signing keys"],
    ['null for kid', { kid: null }, "kid must be a string: the id of one of the tenant's signing keys"],
    ['a list for kid', { kid: ['k2'] }, "kid must be a string: the id of one of the tenant's signing keys"],
    ['an unknown field', { x: 1 }, 'Unknown field "x": expected ttl_seconds or kid'],
    ['a misspelt ttl beside a good kid', { ttl: 60, kid: 'k2' }, 'Unknown field "ttl": expected ttl_seconds or kid'],
    [
      'a field named __proto__',
      JSON.parse('{"__proto__": {"kid": "k2"}}') as unknown,
      'Unknown field "__proto__": expected ttl_seconds or kid',
    ],
  ])('POST …/signed-url with %s is a 400 that says so, and mints nothing', async (_name, body, message) => {
    const response = await gateway.fetch('/v1/call/recording/3/signed-url', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(response.status).toBe(400);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await response.json()).toEqual({ error: 'Bad Request', message });
  });

  test('a long unknown kid or field name is cut short in the 400, not echoed whole', async () => {
    const long = 'k'.repeat(3000); // within the route's 4 KB body limit
    for (const body of [{ kid: long }, { [long]: 1 }]) {
      const response = await gateway.fetch('/v1/call/recording/3/signed-url', { method: 'POST', body: JSON.stringify(body) });
      expect(response.status).toBe(400);
      const { message } = (await response.json()) as { message: string };
      expect(message).toContain(`"${'k'.repeat(64)}…"`);
      expect(message.length).toBeLessThan(200);
    }
  });

  test('a signed URL cannot mint signed URLs: POST needs an API key', async () => {
    const path = signedPath(3).replace('3.mp3', '3/signed-url');
    const response = await fetch(gateway.baseUrl + path, { method: 'POST' });
    expect(response.status).toBe(401);
  });
});

describe('CORS', () => {
  test('a listed origin gets its origin back, Vary: Origin and the exposed headers', async () => {
    const response = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { origin: ACME_ORIGIN } });
    await response.arrayBuffer();
    expect(response.headers.get('access-control-allow-origin')).toBe(ACME_ORIGIN);
    // An API key's answer varies by the key as well: a browser asks the gateway again for another key.
    expect(response.headers.get('vary')).toBe('Origin, Authorization');
    expect(response.headers.get('access-control-expose-headers')).toBe('Content-Range, Content-Length, Accept-Ranges, ETag, Cache-Status');
    const signed = await fetch(gateway.baseUrl + signedPath(1), { headers: { origin: ACME_ORIGIN } });
    await signed.arrayBuffer();
    expect(signed.headers.get('vary')).toBe('Origin');
  });

  test("another tenant's origin gets no CORS headers on this tenant's recording", async () => {
    const response = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { origin: OTHER_ORIGIN } });
    await response.arrayBuffer();
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });

  test('an unlisted origin gets no CORS headers, on success or on error', async () => {
    const ok = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { origin: 'https://evil.example' } });
    await ok.arrayBuffer();
    expect(ok.headers.get('access-control-allow-origin')).toBeNull();
    const refused = await fetch(`${gateway.baseUrl}/v1/call/recording/1.mp3`, { headers: { origin: 'https://evil.example' } });
    expect(refused.headers.get('access-control-allow-origin')).toBeNull();
  });

  test('a listed origin can read the JSON of an error, so a frontend can show it', async () => {
    const response = await fetch(gateway.baseUrl + signedPath(1, { exp: now() - 5 }), { headers: { origin: ACME_ORIGIN } });
    expect(response.status).toBe(401);
    expect(response.headers.get('access-control-allow-origin')).toBe(ACME_ORIGIN);
  });

  test('a preflight from a listed origin allows Authorization and Range', async () => {
    const response = await fetch(`${gateway.baseUrl}/v1/call/recording/1.mp3`, {
      method: 'OPTIONS',
      headers: { origin: ACME_ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization, range' },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get('access-control-allow-origin')).toBe(ACME_ORIGIN);
    const allowed = response.headers.get('access-control-allow-headers')!.toLowerCase();
    expect(allowed).toContain('authorization');
    expect(allowed).toContain('range');
    expect(response.headers.get('access-control-allow-methods')).toContain('GET');
  });

  test('a preflight from an unlisted origin gets no CORS headers', async () => {
    const response = await fetch(`${gateway.baseUrl}/v1/call/recording/1.mp3`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' },
    });
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });

  test('the CLI key of one tenant is not a signing secret of another', async () => {
    const response = await fetch(gateway.baseUrl + signedPath(1, { tenant: 'beta', secret: ACME_KEY }));
    expect(response.status).toBe(401);
  });
});
