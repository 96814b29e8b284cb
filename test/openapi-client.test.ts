import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadFixtureRecordings, startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, makeTempDir, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import {
  type AuthCallback,
  type GeneratedPackage,
  generateClient,
  importGeneratedClient,
  typeCheckUsage,
} from './support/openapi-client/generate-client.js';

/** What the generated client put on the wire. */
interface SentRequest {
  url: URL;
  authorization: string | null;
}

const MISSING_CALL_ID = '987654321';

/** The tenant key for the Bearer scheme only: never for the signed URL's `sig`, which would put the key in the URL. */
const apiKeyAuth: AuthCallback = (scheme) => (scheme.type === 'http' && scheme.scheme === 'bearer' ? ACME_KEY : undefined);

describe('a client generated from GET /openapi.json (@hey-api/openapi-ts)', () => {
  let flyflow: FakeFlyflow;
  let gateway: RunningGateway;
  let cacheDir: string;
  let clientDir: string;
  let generated: GeneratedPackage;
  let document: { paths: Record<string, Record<string, { operationId?: string }>> };
  let callId: string;
  let recording: Buffer;
  const sent: SentRequest[] = [];

  /** A generated client instance that records what it sends. */
  function clientWith(auth?: AuthCallback) {
    return generated.createClient({
      baseUrl: gateway.baseUrl,
      ...(auth ? { auth } : {}),
      fetch: (request) => {
        sent.push({ url: new URL(request.url), authorization: request.headers.get('authorization') });
        return fetch(request);
      },
    });
  }

  function lastSent(): SentRequest {
    const request = sent.at(-1);
    if (!request) throw new Error('the generated client sent nothing');
    return request;
  }

  beforeAll(async () => {
    cacheDir = await makeTempDir('rg-openapi-client-cache-');
    clientDir = await makeTempDir('rg-openapi-client-');
    const recordings = await loadFixtureRecordings();
    const [first] = recordings.entries();
    if (!first) throw new Error('no fixture recordings');
    callId = String(first[0]);
    recording = first[1];
    flyflow = await startFakeFlyflow({ recordings });
    gateway = await startGateway(testConfig({ dir: cacheDir, upstreamBaseUrl: flyflow.baseUrl }));

    const response = await fetch(`${gateway.baseUrl}/openapi.json`);
    expect(response.status).toBe(200);
    document = (await response.json()) as typeof document;
    await generateClient(document, path.join(clientDir, 'client'));
    generated = await importGeneratedClient(path.join(clientDir, 'client'));
  });

  afterAll(async () => {
    await gateway?.close();
    await flyflow?.close();
    if (cacheDir) await removeDir(cacheDir);
    if (clientDir) await removeDir(clientDir);
  });

  it('has one function for every operation the document names', () => {
    const operationIds = Object.values(document.paths).flatMap((item) => Object.values(item).map((operation) => operation.operationId));
    expect(operationIds.length).toBeGreaterThan(0);
    for (const operationId of operationIds) {
      expect(operationId, 'every operation has an operationId').toBeTypeOf('string');
      expect(typeof (generated.sdk as unknown as Record<string, unknown>)[operationId as string], operationId).toBe('function');
    }
  });

  it('downloads a recording with an API key, byte for byte, with the key only in the Authorization header', async () => {
    const { data, error, response } = await generated.sdk.getRecording({ client: clientWith(apiKeyAuth), path: { id: callId } });
    expect(error).toBeUndefined();
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('audio/mpeg');
    expect(data).toBeInstanceOf(Blob);
    expect(Buffer.from(await (data as Blob).arrayBuffer()).equals(recording)).toBe(true);

    const request = lastSent();
    expect(request.url.pathname).toBe(`/v1/call/recording/${callId}.mp3`);
    expect(request.authorization).toBe(`Bearer ${ACME_KEY}`);
    expect(request.url.search).toBe('');
  });

  it('downloads a byte range as 206 with exactly those bytes', async () => {
    const { data, error, response } = await generated.sdk.getRecording({
      client: clientWith(apiKeyAuth),
      path: { id: callId },
      headers: { Range: 'bytes=100-1099' },
    });
    expect(error).toBeUndefined();
    expect(response.status).toBe(206);
    expect(response.headers.get('content-range')).toBe(`bytes 100-1099/${recording.length}`);
    expect(Buffer.from(await (data as Blob).arrayBuffer()).equals(recording.subarray(100, 1100))).toBe(true);
  });

  it('mints a signed URL and downloads through it with no API key at all', async () => {
    const minted = await generated.sdk.createSignedUrl({
      client: clientWith(apiKeyAuth),
      path: { id: callId },
      body: { ttl_seconds: 120 },
    });
    expect(minted.error).toBeUndefined();
    expect(minted.response.status).toBe(200);
    const { url, expires_at: expiresAt } = minted.data ?? { url: '', expires_at: 0 };
    expect(expiresAt).toBeGreaterThan(Date.now() / 1000);
    const signed = new URL(url, gateway.baseUrl);
    const query = Object.fromEntries(signed.searchParams);
    expect(Object.keys(query).sort()).toEqual(['exp', 'kid', 'sig', 'tenant']);

    // The signed URL's parameters as the document names them: tenant, exp and kid as parameters, sig as the apiKey scheme.
    const { sig, ...parameters } = query;
    const sigAuth: AuthCallback = (scheme) =>
      scheme.type === 'apiKey' && scheme.in === 'query' && scheme.name === 'sig' ? sig : undefined;
    const { data, error, response } = await generated.sdk.getRecording({
      client: clientWith(sigAuth),
      path: { id: callId },
      query: parameters,
    });
    expect(error).toBeUndefined();
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toMatch(/^private, max-age=\d+, immutable$/);
    expect(Buffer.from(await (data as Blob).arrayBuffer()).equals(recording)).toBe(true);

    const request = lastSent();
    expect(request.authorization).toBeNull();
    expect(Object.fromEntries(request.url.searchParams)).toEqual(query);
  });

  it('sees a missing credential as a typed 401 error, with the reason in its message', async () => {
    const { data, error, response } = await generated.sdk.getRecording({ client: clientWith(), path: { id: callId } });
    expect(data).toBeUndefined();
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(error).toEqual({ error: 'Unauthorized', message: expect.stringMatching(/^Missing credentials/) });
    expect(lastSent().authorization).toBeNull();
  });

  it('sees a tampered signed URL as a typed 401 error', async () => {
    const minted = await generated.sdk.createSignedUrl({ client: clientWith(apiKeyAuth), path: { id: callId } });
    const { sig = '', ...parameters } = Object.fromEntries(new URL(minted.data?.url ?? '', gateway.baseUrl).searchParams);
    expect(sig).not.toBe('');
    const tampered = `${sig.startsWith('A') ? 'B' : 'A'}${sig.slice(1)}`;
    const { error, response } = await generated.sdk.getRecording({
      client: clientWith((scheme) => (scheme.name === 'sig' ? tampered : undefined)),
      path: { id: callId },
      query: parameters,
    });
    expect(response.status).toBe(401);
    expect(error).toEqual({ error: 'Unauthorized', message: expect.stringMatching(/^Invalid/) });
  });

  it('sees a recording Flyflow does not have as a typed 404 error', async () => {
    const { data, error, response } = await generated.sdk.getRecording({ client: clientWith(apiKeyAuth), path: { id: MISSING_CALL_ID } });
    expect(data).toBeUndefined();
    expect(response.status).toBe(404);
    expect(error).toEqual({ error: 'Not Found', message: expect.any(String) });
    expect(flyflow.recordingRequests(Number(MISSING_CALL_ID)).length).toBe(1);
  });

  it("compiles a tenant's code against it under strict tsc, with typed answers and errors", { timeout: 90_000 }, async () => {
    const { code, output } = await typeCheckUsage(clientDir);
    expect(output).toBe('');
    expect(code).toBe(0);
  });
});
