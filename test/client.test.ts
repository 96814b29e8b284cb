import { createHmac } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  IncompleteDownloadError,
  RecordingGatewayClient,
  RecordingGatewayError,
  RecordingGatewayTimeoutError,
  signRecordingUrl,
} from '@recording-gateway/client';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  ACME_SIGNING_SECRET,
  ACME_SIGNING_SECRET_K2,
  makeTempDir,
  removeDir,
  startGateway,
  testConfig,
  type RunningGateway,
} from '../dev/gateway-harness.js';

/** The contract's formula, written out here so the library is checked against it, not against itself. */
function contractSignature(secret: string, tenant: string, id: string, exp: string): string {
  const mac = createHmac('sha256', secret).update(`v1\n${tenant}\n${id}\n${exp}`).digest();
  return mac.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

describe('RecordingGatewayClient against a live gateway', () => {
  let fake: FakeFlyflow;
  let gw: RunningGateway;
  let cacheDir: string;
  let outDir: string;
  let client: RecordingGatewayClient;

  beforeEach(async () => {
    fake = await startFakeFlyflow();
    cacheDir = await makeTempDir('rg-client-cache-');
    outDir = await makeTempDir('rg-client-out-');
    gw = await startGateway(testConfig({ dir: cacheDir, upstreamBaseUrl: fake.baseUrl }));
    client = new RecordingGatewayClient({ baseUrl: gw.baseUrl, apiKey: ACME_KEY });
  });

  afterEach(async () => {
    await gw.close();
    await fake.close();
    await removeDir(cacheDir);
    await removeDir(outDir);
  });

  it('downloads a recording to the output path byte for byte', async () => {
    const output = path.join(outDir, 'call-1.mp3');
    const result = await client.getCallRecording(1, output);

    expect(result).toMatchObject({ path: output, bytes: fake.recording(1)!.length });
    expect((await readFile(output)).equals(fake.recording(1)!)).toBe(true);
    expect(await readdir(outDir)).toEqual(['call-1.mp3']);
  });

  it("reports the gateway's ETag and needs no second upstream fetch when the recording is downloaded again", async () => {
    await client.getCallRecording('2', path.join(outDir, 'first.mp3'));
    await gw.gateway.downloads.idle(); // the first download is stored once its last byte is in
    const again = await client.getCallRecording('2', path.join(outDir, 'second.mp3'));

    expect(again.etag).toMatch(/^"[^"]+"$/);
    expect(fake.recordingRequests(2)).toHaveLength(1);
    expect((await readFile(again.path)).equals(fake.recording(2)!)).toBe(true);
  });

  it('replaces an existing file at the output path with the whole recording', async () => {
    const output = path.join(outDir, 'call-3.mp3');
    await writeFile(output, 'an older, different file');

    await client.getCallRecording(3, output);

    expect((await readFile(output)).equals(fake.recording(3)!)).toBe(true);
    expect(await readdir(outDir)).toEqual(['call-3.mp3']);
  });

  it("rejects a missing recording with status 404 and the gateway's message, and writes no file", async () => {
    const error = await client.getCallRecording(999, path.join(outDir, 'missing.mp3')).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RecordingGatewayError);
    expect(error).toMatchObject({ status: 404, reason: 'Not Found', callId: '999', gatewayMessage: 'Recording not found' });
    expect((error as Error).message).toContain('Recording not found');
    expect(await readdir(outDir)).toEqual([]);
  });

  it('rejects a wrong API key with 401, never repeating the key, and writes no file', async () => {
    const wrongKey = 'not-the-acme-key-but-a-secret-nonetheless';
    const intruder = new RecordingGatewayClient({ baseUrl: gw.baseUrl, apiKey: wrongKey });

    const error = await intruder.getCallRecording(1, path.join(outDir, 'call-1.mp3')).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RecordingGatewayError);
    expect(error).toMatchObject({ status: 401, reason: 'Unauthorized', gatewayMessage: 'Invalid credentials' });
    const shown = `${String(error)} ${JSON.stringify(error)} ${(error as Error).stack}`;
    expect(shown).not.toContain(wrongKey);
    expect(await readdir(outDir)).toEqual([]);
    expect(fake.recordingRequests()).toHaveLength(0);
  });

  it('rejects a download whose connection breaks mid-body with IncompleteDownloadError, leaving no file or temp file', async () => {
    // Large enough that the gateway has started answering well before Flyflow's connection drops.
    const long = Buffer.concat(Array.from({ length: 4 }, () => fake.recording(4)!));
    fake.setRecording(40, long);
    fake.setBehaviour(40, { kind: 'truncate', afterBytes: Math.floor(long.length / 2) });
    const output = path.join(outDir, 'call-40.mp3');

    const error = await client.getCallRecording(40, output).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(IncompleteDownloadError);
    expect(error).toMatchObject({ status: 0, callId: '40', expectedBytes: long.length });
    expect((error as IncompleteDownloadError).receivedBytes).toBeLessThan(long.length);
    expect(await readdir(outDir)).toEqual([]);
  });

  it('gives up with RecordingGatewayTimeoutError when the gateway stays silent past timeoutMs, writing no file', async () => {
    fake.setBehaviour(1, { kind: 'slow-head', delayMs: 1_000 });
    const impatient = new RecordingGatewayClient({ baseUrl: gw.baseUrl, apiKey: ACME_KEY, timeoutMs: 150 });

    const started = Date.now();
    const error = await impatient.getCallRecording(1, path.join(outDir, 'call-1.mp3')).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RecordingGatewayTimeoutError);
    expect(error).toMatchObject({ status: 0, reason: 'Timeout', timeoutMs: 150, gatewayMessage: undefined });
    expect(Date.now() - started).toBeLessThan(900);
    expect(await readdir(outDir)).toEqual([]);
  });

  it('mints a signed URL that plays without an API key and carries the contract signature', async () => {
    const before = Math.floor(Date.now() / 1000);
    const { url, expiresAt } = await client.createSignedUrl(2, { ttlSeconds: 120 });

    expect(expiresAt).toBeGreaterThanOrEqual(before + 120);
    expect(expiresAt).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + 120);
    const signed = new URL(url, gw.baseUrl);
    expect(signed.pathname).toBe('/v1/call/recording/2.mp3');
    expect(signed.searchParams.get('tenant')).toBe('acme');
    expect(signed.searchParams.get('kid')).toBe('k1');
    expect(signed.searchParams.get('exp')).toBe(String(expiresAt));
    expect(signed.searchParams.get('sig')).toBe(contractSignature(ACME_SIGNING_SECRET, 'acme', '2', String(expiresAt)));

    const response = await fetch(signed); // no Authorization header
    expect(response.status).toBe(200);
    expect(Buffer.from(await response.arrayBuffer()).equals(fake.recording(2)!)).toBe(true);
  });

  it('mints a signed URL with the signing key kid names, which plays', async () => {
    const { url, expiresAt } = await client.createSignedUrl(2, { kid: 'k2' });

    const signed = new URL(url, gw.baseUrl);
    expect(signed.searchParams.get('kid')).toBe('k2');
    expect(signed.searchParams.get('sig')).toBe(contractSignature(ACME_SIGNING_SECRET_K2, 'acme', '2', String(expiresAt)));
    const response = await fetch(signed);
    expect(response.status).toBe(200);
    await response.arrayBuffer();
  });

  it("passes the gateway's refusal of a kid the tenant does not have on as a 400 naming it", async () => {
    const error = await client.createSignedUrl(2, { kid: 'k9' }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RecordingGatewayError);
    expect(error).toMatchObject({ status: 400, reason: 'Bad Request' });
    expect((error as RecordingGatewayError).gatewayMessage).toMatch(/^kid "k9" names no signing key/);
  });

  it("passes the gateway's refusal of a too-long signed URL TTL on as a 400 with its message", async () => {
    const error = await client.createSignedUrl(2, { ttlSeconds: 10 * 86_400 }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RecordingGatewayError);
    expect(error).toMatchObject({ status: 400, reason: 'Bad Request' });
    expect((error as Error).message).toContain('ttl_seconds');
  });

  it('signRecordingUrl alone mints a URL the gateway plays, and only for that call', async () => {
    const expiresAt = Math.floor(Date.now() / 1000) + 60;
    const url = signRecordingUrl({
      baseUrl: `${gw.baseUrl}/`,
      tenant: 'acme',
      callId: 3,
      expiresAt,
      kid: 'k1',
      secret: ACME_SIGNING_SECRET,
    });

    expect(url.startsWith(`${gw.baseUrl}/v1/call/recording/3.mp3?`)).toBe(true);
    const played = await fetch(url);
    expect(played.status).toBe(200);
    expect(Buffer.from(await played.arrayBuffer()).equals(fake.recording(3)!)).toBe(true);

    const forOtherCall = await fetch(url.replace('/3.mp3?', '/1.mp3?'));
    expect(forOtherCall.status).toBe(401);
    expect(await forOtherCall.json()).toMatchObject({ error: 'Unauthorized' });
  });

  it('deleteCallRecording makes the next download fetch the recording from Flyflow again', async () => {
    await client.getCallRecording(1, path.join(outDir, 'a.mp3'));
    await client.getCallRecording(1, path.join(outDir, 'b.mp3'));
    expect(fake.recordingRequests(1)).toHaveLength(1);
    // Let the gateway finish storing the first download: a DELETE that lands while the
    // store is being written can currently lose to it (a gateway race, reported separately).
    await gw.gateway.downloads.idle();

    await expect(client.deleteCallRecording(1)).resolves.toBeUndefined();
    await client.getCallRecording(1, path.join(outDir, 'c.mp3'));

    expect(fake.recordingRequests(1)).toHaveLength(2);
    expect((await readFile(path.join(outDir, 'c.mp3'))).equals(fake.recording(1)!)).toBe(true);
  });

  it("creates the output path's missing folders, as for the README's './recordings/call-694.mp3'", async () => {
    fake.setRecording(694, fake.recording(4)!);
    const cwd = process.cwd();
    process.chdir(outDir);
    try {
      const result = await client.getCallRecording(694, './recordings/call-694.mp3');

      expect(result).toMatchObject({ path: path.join(outDir, 'recordings', 'call-694.mp3'), bytes: fake.recording(694)!.length });
    } finally {
      process.chdir(cwd);
    }
    expect((await readFile(path.join(outDir, 'recordings', 'call-694.mp3'))).equals(fake.recording(694)!)).toBe(true);
    expect(await readdir(path.join(outDir, 'recordings'))).toEqual(['call-694.mp3']);
  });

  it('creates several missing folder levels of the output path', async () => {
    const output = path.join(outDir, 'tenants', 'acme', '2024-06', 'call-2.mp3');

    await client.getCallRecording(2, output);

    expect((await readFile(output)).equals(fake.recording(2)!)).toBe(true);
  });

  it('creates no folder when the gateway refuses the download', async () => {
    const error = await client.getCallRecording(999, path.join(outDir, 'recordings', 'call-999.mp3')).catch((e: unknown) => e);

    expect(error).toMatchObject({ status: 404 });
    expect(await readdir(outDir)).toEqual([]);
  });

  it("fails with the file system's own error, naming the path, when a file stands where the output folder should be", async () => {
    const blocker = path.join(outDir, 'recordings');
    await writeFile(blocker, 'a file where a folder should be');

    const error = await client.getCallRecording(1, path.join(blocker, 'call-1.mp3')).catch((e: unknown) => e);

    // Node reports EEXIST (Linux, macOS) or ENOTDIR for a file in the middle of a path.
    expect(error).toMatchObject({ code: expect.stringMatching(/^(EEXIST|ENOTDIR)$/) });
    expect((error as Error).message).toContain(blocker);
    expect(await readdir(outDir)).toEqual(['recordings']);
  });

  it('accepts a Flyflow-style base URL ending in /v1', async () => {
    const flyflowStyle = new RecordingGatewayClient({ baseUrl: `${gw.baseUrl}/v1/`, apiKey: ACME_KEY });

    const result = await flyflowStyle.getCallRecording(2, path.join(outDir, 'call-2.mp3'));

    expect(result.bytes).toBe(fake.recording(2)!.length);
  });
});

describe('RecordingGatewayClient without a gateway', () => {
  let outDir: string;

  beforeEach(async () => {
    outDir = await makeTempDir('rg-client-out-');
  });
  afterEach(async () => {
    await removeDir(outDir);
  });

  it('refuses an invalid call id with a TypeError before sending any request or creating any file', async () => {
    const fetchSpy = vi.fn<typeof fetch>();
    const client = new RecordingGatewayClient({ baseUrl: 'http://127.0.0.1:9', apiKey: ACME_KEY, fetch: fetchSpy });
    const invalid: unknown[] = [
      0,
      -1,
      1.5,
      Number.NaN,
      2 ** 53,
      '01',
      '1e3',
      '-3',
      ' 7',
      'abc',
      '',
      '9007199254740992',
      null,
      undefined,
      12n,
    ];

    for (const callId of invalid) {
      const asId = callId as number;
      await expect(client.getCallRecording(asId, path.join(outDir, 'x.mp3')), String(callId)).rejects.toThrow(TypeError);
      await expect(client.createSignedUrl(asId), String(callId)).rejects.toThrow(/callId must be an integer from 1 to 9007199254740991/);
      await expect(client.deleteCallRecording(asId), String(callId)).rejects.toThrow(TypeError);
    }

    expect(fetchSpy).not.toHaveBeenCalled();
    expect(await readdir(outDir)).toEqual([]);
  });

  it('sends only the signed-URL fields asked for, and refuses a kid that is not a non-empty string before any request', async () => {
    const bodies: unknown[] = [];
    const client = new RecordingGatewayClient({
      baseUrl: 'https://recordings.example.com',
      apiKey: ACME_KEY,
      fetch: async (_input, init) => {
        const body = JSON.parse(String(init?.body)) as { kid?: string };
        bodies.push(body);
        const url = `/v1/call/recording/2.mp3?tenant=acme&exp=2000000000&kid=${body.kid ?? 'k1'}&sig=x`;
        return Response.json({ url, expires_at: 2_000_000_000 });
      },
    });

    await client.createSignedUrl(2);
    await client.createSignedUrl(2, { ttlSeconds: 60 });
    await client.createSignedUrl(2, { kid: 'k2' });
    await client.createSignedUrl(2, { ttlSeconds: 60, kid: 'k2' });
    expect(bodies).toEqual([{}, { ttl_seconds: 60 }, { kid: 'k2' }, { ttl_seconds: 60, kid: 'k2' }]);

    for (const kid of ['', 2, null]) {
      await expect(client.createSignedUrl(2, { kid: kid as string }), String(kid)).rejects.toThrow(/kid must be a non-empty string/);
    }
    expect(bodies).toHaveLength(4);
  });

  it('fails rather than hand back a URL signed with another key, when the gateway is too old to know kid', async () => {
    const client = new RecordingGatewayClient({
      baseUrl: 'https://recordings.example.com',
      apiKey: ACME_KEY,
      // An older gateway: it ignores kid and signs with the tenant's first key.
      fetch: async () =>
        Response.json({ url: '/v1/call/recording/2.mp3?tenant=acme&exp=2000000000&kid=k1&sig=x', expires_at: 2_000_000_000 }),
    });

    const error = await client.createSignedUrl(2, { kid: 'k2' }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RecordingGatewayError);
    expect(error).toMatchObject({ status: 200, reason: 'Unexpected Response', callId: '2' });
    expect((error as Error).message).toContain('a key other than kid "k2"');
  });

  it('names the bad option when the client is built with a bad baseUrl, apiKey or timeoutMs', () => {
    const build = (options: Record<string, unknown>) => () =>
      new RecordingGatewayClient({ baseUrl: 'http://127.0.0.1:9', apiKey: ACME_KEY, ...options } as never);

    expect(build({ baseUrl: 'not a url' })).toThrow(/baseUrl/);
    expect(build({ baseUrl: 'ftp://example.com' })).toThrow(/baseUrl must be an http or https URL/);
    expect(build({ baseUrl: 'https://user:secret@example.com' })).toThrow(/baseUrl must not contain credentials/);
    expect(build({ apiKey: '' })).toThrow(/apiKey/);
    expect(build({ timeoutMs: 0 })).toThrow(RangeError);
    expect(build({ timeoutMs: 1.5 })).toThrow(/timeoutMs must be an integer/);
  });

  it('turns a non-JSON error page into a RecordingGatewayError that still says what came back', async () => {
    const page = '<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>';
    const client = new RecordingGatewayClient({
      baseUrl: 'https://recordings.example.com',
      apiKey: ACME_KEY,
      fetch: async () => new Response(page, { status: 502, statusText: 'Bad Gateway', headers: { 'content-type': 'text/html' } }),
    });

    const error = await client.getCallRecording(5, path.join(outDir, 'call-5.mp3')).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RecordingGatewayError);
    expect(error).toMatchObject({ status: 502, reason: 'Bad Gateway', callId: '5' });
    expect((error as Error).message).toMatch(/502 Bad Gateway for call 5, with text\/html.*nginx/);
    expect(await readdir(outDir)).toEqual([]);
  });

  it('rejects a body shorter than its Content-Length even when the connection ends cleanly', async () => {
    const client = new RecordingGatewayClient({
      baseUrl: 'https://recordings.example.com',
      apiKey: ACME_KEY,
      fetch: async () =>
        new Response(new Uint8Array(100), { status: 200, headers: { 'content-type': 'audio/mpeg', 'content-length': '250' } }),
    });

    const error = await client.getCallRecording(6, path.join(outDir, 'call-6.mp3')).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(IncompleteDownloadError);
    expect(error).toMatchObject({ receivedBytes: 100, expectedBytes: 250 });
    expect(await readdir(outDir)).toEqual([]);
  });

  it('sends the key only as a Bearer header and never follows a redirect to another host', async () => {
    const seen: Request[] = [];
    const client = new RecordingGatewayClient({
      baseUrl: 'https://recordings.example.com',
      apiKey: ACME_KEY,
      fetch: async (input, init) => {
        seen.push(new Request(input, init));
        return new Response(null, { status: 302, headers: { location: 'https://elsewhere.example/steal' } });
      },
    });

    const error = await client.deleteCallRecording(7).catch((e: unknown) => e);

    expect(seen).toHaveLength(1);
    expect(seen[0]!.url).toBe('https://recordings.example.com/v1/call/recording/7.mp3');
    expect(seen[0]!.headers.get('authorization')).toBe(`Bearer ${ACME_KEY}`);
    expect(seen[0]!.redirect).toBe('manual');
    expect(error).toMatchObject({ status: 302 });
    expect((error as Error).message).toContain('redirects are not followed');
  });

  it('reports an unreachable gateway as a RecordingGatewayError with status 0 and the network cause', async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const client = new RecordingGatewayClient({ baseUrl: `http://127.0.0.1:${closedPort}`, apiKey: ACME_KEY, timeoutMs: 5_000 });

    const error = await client.deleteCallRecording(8).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RecordingGatewayError);
    expect(error).not.toBeInstanceOf(RecordingGatewayTimeoutError);
    expect(error).toMatchObject({ status: 0, reason: 'Network Error' });
    expect((error as Error).cause).toBeDefined();
    expect((error as Error).message).toContain('ECONNREFUSED');
  });
});
