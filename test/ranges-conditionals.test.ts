import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { expectedEtag, makeTempDir, removeDir, startGateway, testConfig, type RunningGateway, bytesOf } from '../dev/gateway-harness.js';

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway;

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
});

afterEach(async () => {
  await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

// Each tier gets the same range checks: a memory hit, a disk hit streamed from
// the file (memory too small to hold it), and a cold miss answered from the download.
const tiers = {
  memory: { maxMemoryBytes: 64 * 1024 ** 2, warm: true, status: 'hit; detail=memory' },
  disk: { maxMemoryBytes: 256 * 1024, warm: true, status: 'hit; detail=disk' },
  miss: { maxMemoryBytes: 64 * 1024 ** 2, warm: false, status: 'fwd=uri-miss' },
} as const;

describe.each(Object.entries(tiers))('byte ranges on a %s answer', (_tier, setup) => {
  async function prepared(): Promise<Buffer> {
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, cache: { maxMemoryBytes: setup.maxMemoryBytes } }));
    if (setup.warm) {
      await bytesOf(await gateway.fetch('/v1/call/recording/4.mp3'));
      await gateway.gateway.downloads.idle();
    }
    return upstream.recording(4)!;
  }

  test.each([
    ['the Safari probe bytes=0-1', 'bytes=0-1', 0, 1],
    ['the first byte bytes=0-0', 'bytes=0-0', 0, 0],
    ['an open range from the middle', 'bytes=60000-', 60000, undefined],
    ['a suffix of the last 500 bytes', 'bytes=-500', -500, undefined],
    ['a range past the end, clamped', 'bytes=100000-99999999', 100000, undefined],
  ])('%s answers 206 with the exact bytes and Content-Range', async (_name, range, start, end) => {
    const body = await prepared();
    const first = start < 0 ? body.length + start : start;
    const last = end ?? body.length - 1;
    const response = await gateway.fetch('/v1/call/recording/4.mp3', { headers: { range } });
    expect(response.status).toBe(206);
    expect(response.headers.get('cache-status')).toContain(setup.status);
    expect(response.headers.get('content-range')).toBe(`bytes ${first}-${last}/${body.length}`);
    expect(response.headers.get('content-length')).toBe(String(last - first + 1));
    expect((await bytesOf(response)).equals(body.subarray(first, last + 1))).toBe(true);
  });

  test('a range starting past the end is 416 with Content-Range: bytes */size', async () => {
    const body = await prepared();
    const response = await gateway.fetch('/v1/call/recording/4.mp3', { headers: { range: `bytes=${body.length}-` } });
    expect(response.status).toBe(416);
    expect(response.headers.get('content-range')).toBe(`bytes */${body.length}`);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(await response.json()).toMatchObject({ error: 'Range Not Satisfiable' });
  });

  test.each([
    ['a malformed range', 'bytes=abc'],
    ['another unit', 'items=0-1'],
    ['a backwards range', 'bytes=5-2'],
    ['two ranges that do not touch', 'bytes=0-1,100-200'],
  ])('%s is ignored: 200 with the whole body', async (_name, range) => {
    const body = await prepared();
    const response = await gateway.fetch('/v1/call/recording/4.mp3', { headers: { range } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-range')).toBeNull();
    expect((await bytesOf(response)).equals(body)).toBe(true);
  });

  test('overlapping ranges are answered as the one range they make', async () => {
    const body = await prepared();
    const response = await gateway.fetch('/v1/call/recording/4.mp3', { headers: { range: 'bytes=0-99,50-199' } });
    expect(response.status).toBe(206);
    expect(response.headers.get('content-range')).toBe(`bytes 0-199/${body.length}`);
    expect((await bytesOf(response)).equals(body.subarray(0, 200))).toBe(true);
  });

  test("If-None-Match with the recording's ETag is 304, cold or warm", async () => {
    const body = await prepared();
    const response = await gateway.fetch('/v1/call/recording/4.mp3', { headers: { 'if-none-match': expectedEtag(body) } });
    expect(response.status).toBe(304);
    expect(response.headers.get('etag')).toBe(expectedEtag(body));
    expect((await bytesOf(response)).length).toBe(0);
  });

  test('HEAD ignores Range, as RFC 9110 defines ranges for GET only', async () => {
    const body = await prepared();
    const response = await gateway.fetch('/v1/call/recording/4.mp3', { method: 'HEAD', headers: { range: 'bytes=0-1' } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-length')).toBe(String(body.length));
  });
});

describe('ranges while the download is under way', () => {
  test('a range already downloaded is answered at once; one beyond waits only for its bytes', async () => {
    upstream.setBehaviour(4, { kind: 'gate' });
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
    const body = upstream.recording(4)!;
    const starter = await gateway.fetch('/v1/call/recording/4.mp3');
    await starter.body!.getReader().read();

    // The gate holds three quarters of the body: the first quarter is here.
    const early = await gateway.fetch('/v1/call/recording/4.mp3', { headers: { range: 'bytes=1000-1999' } });
    expect(early.status).toBe(206);
    expect(early.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss; collapsed');
    expect((await bytesOf(early)).equals(body.subarray(1000, 2000))).toBe(true);
    expect(gateway.gateway.downloads.inFlight).toBe(1);

    // Its head goes out with its first bytes, once the upstream sends them.
    const answer = gateway.fetch('/v1/call/recording/4.mp3', { headers: { range: 'bytes=-1000' } });
    upstream.release(4);
    const late = await answer;
    expect(late.status).toBe(206);
    expect(late.headers.get('content-range')).toBe(`bytes ${body.length - 1000}-${body.length - 1}/${body.length}`);
    expect((await bytesOf(late)).equals(body.subarray(body.length - 1000))).toBe(true);
    expect(upstream.recordingRequests(4)).toHaveLength(1);
  });
});

describe('conditional requests', () => {
  async function warm(): Promise<{ body: Buffer; etag: string; lastModified: string }> {
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
    const first = await gateway.fetch('/v1/call/recording/1.mp3');
    await bytesOf(first);
    await gateway.gateway.downloads.idle();
    const hit = await gateway.fetch('/v1/call/recording/1.mp3', { method: 'HEAD' });
    return { body: upstream.recording(1)!, etag: hit.headers.get('etag')!, lastModified: hit.headers.get('last-modified')! };
  }

  test('the ETag is strong and derived from the content', async () => {
    const { body, etag } = await warm();
    expect(etag).toBe(expectedEtag(body));
    expect(etag.startsWith('W/')).toBe(false);
  });

  test('If-None-Match with the current ETag is 304 with the ETag and no body', async () => {
    const { etag } = await warm();
    const response = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { 'if-none-match': etag } });
    expect(response.status).toBe(304);
    expect(response.headers.get('etag')).toBe(etag);
    expect(response.headers.get('cache-control')).toContain('max-age');
    expect((await bytesOf(response)).length).toBe(0);
  });

  test('If-None-Match with another ETag, or a list holding the current one, behaves per RFC 9110', async () => {
    const { body, etag } = await warm();
    const other = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { 'if-none-match': '"something-else"' } });
    expect(other.status).toBe(200);
    expect((await bytesOf(other)).equals(body)).toBe(true);
    const list = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { 'if-none-match': `"a", W/${etag}` } });
    expect(list.status).toBe(304);
  });

  test('If-Modified-Since at Last-Modified is 304; an earlier date gets the body', async () => {
    const { lastModified } = await warm();
    const same = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { 'if-modified-since': lastModified } });
    expect(same.status).toBe(304);
    const earlier = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { 'if-modified-since': 'Mon, 01 Jan 2024 00:00:00 GMT' } });
    expect(earlier.status).toBe(200);
    await bytesOf(earlier);
  });

  test('If-Range with the current ETag gets the range; with another ETag, the whole body', async () => {
    const { body, etag } = await warm();
    const current = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { range: 'bytes=0-9', 'if-range': etag } });
    expect(current.status).toBe(206);
    expect((await bytesOf(current)).equals(body.subarray(0, 10))).toBe(true);
    const stale = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { range: 'bytes=0-9', 'if-range': '"stale"' } });
    expect(stale.status).toBe(200);
    expect((await bytesOf(stale)).equals(body)).toBe(true);
  });

  test('If-Match that does not match is 412', async () => {
    await warm();
    const response = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { 'if-match': '"nope"' } });
    expect(response.status).toBe(412);
    expect(await response.json()).toMatchObject({ error: 'Precondition Failed' });
  });

  test('on a cold miss If-Range waits for the ETag: a stale one gets the whole body, the current one the range', async () => {
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
    const stale = await gateway.fetch('/v1/call/recording/2.mp3', { headers: { range: 'bytes=0-9', 'if-range': '"anything"' } });
    expect(stale.status).toBe(200);
    expect(stale.headers.get('etag')).toBe(expectedEtag(upstream.recording(2)!));
    expect((await bytesOf(stale)).equals(upstream.recording(2)!)).toBe(true);

    await gateway.gateway.recordings.purge(gateway.gateway.tenants.byId('acme')!.namespace, '2');
    const current = await gateway.fetch('/v1/call/recording/2.mp3', {
      headers: { range: 'bytes=0-9', 'if-range': expectedEtag(upstream.recording(2)!) },
    });
    expect(current.status).toBe(206);
    expect((await bytesOf(current)).equals(upstream.recording(2)!.subarray(0, 10))).toBe(true);
    expect(upstream.recordingRequests(2)).toHaveLength(2);
  });
});

describe('a conditional DELETE is judged against the copy held (RFC 9110 13.1)', () => {
  const path = '/v1/call/recording/1.mp3';

  async function warm(): Promise<{ etag: string; lastModified: string }> {
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
    await bytesOf(await gateway.fetch(path));
    await gateway.gateway.downloads.idle();
    const hit = await gateway.fetch(path, { method: 'HEAD' });
    return { etag: hit.headers.get('etag')!, lastModified: hit.headers.get('last-modified')! };
  }

  const secondBefore = (date: string) => new Date(Date.parse(date) - 1000).toUTCString();

  test.each([
    ['If-Match with another ETag', () => ({ 'if-match': '"not-the-etag"' })],
    [
      'If-Unmodified-Since before Last-Modified',
      (v: { lastModified: string }) => ({ 'if-unmodified-since': secondBefore(v.lastModified) }),
    ],
    ['If-None-Match: *', () => ({ 'if-none-match': '*' })],
    ['If-None-Match with the current ETag', (v: { etag: string }) => ({ 'if-none-match': v.etag })],
  ])('%s is 412 in the JSON shape, and the copy is kept', async (_name, conditions) => {
    const validators = await warm();
    const response = await gateway.fetch(path, { method: 'DELETE', headers: conditions({ ...validators }) });
    expect(response.status).toBe(412);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(await response.json()).toMatchObject({ error: 'Precondition Failed' });
    const after = await gateway.fetch(path, { method: 'HEAD' });
    expect(after.headers.get('cache-status')).toContain('hit');
    expect(upstream.recordingRequests(1)).toHaveLength(1);
  });

  test.each([
    ['If-Match with the current ETag', (v: { etag: string }) => ({ 'if-match': `"other", ${v.etag}` })],
    ['If-Match: *', () => ({ 'if-match': '*' })],
    ['If-Unmodified-Since at Last-Modified', (v: { lastModified: string }) => ({ 'if-unmodified-since': v.lastModified })],
    ['If-None-Match with another ETag', () => ({ 'if-none-match': '"not-the-etag"' })],
  ])('%s holds: 204, and the copy is gone', async (_name, conditions) => {
    const validators = await warm();
    const response = await gateway.fetch(path, { method: 'DELETE', headers: conditions({ ...validators }) });
    expect(response.status).toBe(204);
    const after = await gateway.fetch(path, { method: 'HEAD' });
    expect(after.headers.get('cache-status')).toContain('fwd=uri-miss');
    expect(upstream.recordingRequests(1)).toHaveLength(2);
  });

  test('with no copy held, If-Match (even *) is 412 and If-None-Match: * holds; neither asks the upstream', async () => {
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
    for (const ifMatch of ['*', expectedEtag(upstream.recording(1)!)]) {
      const refused = await gateway.fetch(path, { method: 'DELETE', headers: { 'if-match': ifMatch } });
      expect(refused.status, ifMatch).toBe(412);
      expect(await refused.json()).toMatchObject({ error: 'Precondition Failed' });
    }
    expect((await gateway.fetch(path, { method: 'DELETE', headers: { 'if-none-match': '*' } })).status).toBe(204);
    expect(upstream.requests).toHaveLength(0);
  });
});
