/**
 * GET /v1/call/recording/{id}/info.json on the real fixtures: the facts a
 * player needs (duration, bitrate, sample rate, channels), read from the
 * MP3's header once it is stored (never decoded for them) and then answered
 * from the index without the audio or the upstream; authenticated, limited
 * and fetched exactly like the .mp3.
 */
import { existsSync } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { beforeAll, describe, expect, test } from 'vitest';
import { loadFixtureCatalog, type FixtureRecording } from '../dev/fake-flyflow.js';
import { syntheticRecording } from '../dev/recording-bytes.js';
import {
  ACME_ORIGIN,
  acmeTenant,
  bytesOf,
  expectedEtag,
  manualClock,
  namespaceFor,
  signedQuery,
  type RunningGateway,
  type TestConfigOptions,
} from '../dev/gateway-harness.js';
import { decodePeaks } from '../src/recordings/analysis/waveform-peaks.js';
import { gatewayPerTest, settled } from './support/gateway-per-test.js';

const bed = gatewayPerTest('rg-facts-');
const clock = manualClock();
let catalog: FixtureRecording[];

function start(options: Partial<TestConfigOptions> = {}): Promise<RunningGateway> {
  return bed.start(options, { clock });
}

interface Info {
  call_id: number;
  size: number;
  etag: string;
  duration_seconds: number;
  bitrate: number;
  sample_rate: number;
  channels: number;
}

beforeAll(async () => {
  catalog = await loadFixtureCatalog();
});

describe('info.json', () => {
  test("gives each fixture's duration, bitrate, sample rate and channels, fetching it on a miss", async () => {
    const gateway = await start();
    for (const fixture of catalog) {
      const response = await gateway.fetch(`/v1/call/recording/${fixture.id}/info.json`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('application/json');
      expect(response.headers.get('cache-control')).toBe('private, max-age=86400, immutable');
      expect(response.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
      const info = (await response.json()) as Info;
      const bytes = bed.upstream.recording(fixture.id)!;
      expect(Object.keys(info).sort()).toEqual(['bitrate', 'call_id', 'channels', 'duration_seconds', 'etag', 'sample_rate', 'size']);
      expect(info.call_id).toBe(fixture.id);
      expect(info.size).toBe(bytes.length);
      expect(info.etag).toBe(expectedEtag(bytes));
      // recordings.json holds the length a decoder that drops the encoder's delay and padding reports (lame, soxi).
      expect(Math.abs(info.duration_seconds - fixture.duration_seconds)).toBeLessThan(0.1);
      expect(info.bitrate).toBe(32_000);
      expect(info.sample_rate).toBe(22_050);
      expect(info.channels).toBe(1);
      // Its own tag, not the recording's: a different representation.
      expect(response.headers.get('etag')).toMatch(/^"[A-Za-z0-9_-]+\.info\.v\d+"$/);
      expect(response.headers.get('etag')).not.toBe(info.etag);
    }
    for (const fixture of catalog) expect(bed.upstream.recordingRequests(fixture.id)).toHaveLength(1);
  });

  test('its etag is the one the .mp3 answers with, and the next request is a hit', async () => {
    const gateway = await start();
    const audio = await gateway.fetch('/v1/call/recording/2.mp3');
    await bytesOf(audio);
    await settled(gateway);
    const hit = await gateway.fetch('/v1/call/recording/2/info.json');
    expect(hit.headers.get('cache-status')).toBe('recording-gateway; hit');
    const info = (await hit.json()) as Info;
    const warm = await gateway.fetch('/v1/call/recording/2.mp3', { method: 'HEAD' });
    expect(info.etag).toBe(warm.headers.get('etag'));
    expect(bed.upstream.recordingRequests(2)).toHaveLength(1);
  });

  test("every fixture's facts are in its index entry right after it is stored, read from its header without decoding it", async () => {
    const gateway = await start();
    for (const fixture of catalog) await bytesOf(await gateway.fetch(`/v1/call/recording/${fixture.id}.mp3`));
    await settled(gateway);
    expect(gateway.gateway.analyser.counts).toEqual({ headersRead: catalog.length, decodes: 0 });
    for (const fixture of catalog) {
      const facts = (await gateway.gateway.index.get(`${namespaceFor(bed.upstream.baseUrl)}/${fixture.id}`))?.facts;
      // 32 kbit/s CBR without a Xing/Info frame: the duration is the audio's size over its bitrate.
      expect(Math.abs(facts!.durationSeconds - fixture.duration_seconds)).toBeLessThan(0.1);
      expect(facts).toMatchObject({ bitrate: 32_000, sampleRate: 22_050, channels: 1, estimated: true });
      expect(existsSync(bed.recordingFile(fixture.id, 'peaks'))).toBe(false);
    }
    // Answered from the index: nothing read or decoded again.
    for (const fixture of catalog) {
      const response = await gateway.fetch(`/v1/call/recording/${fixture.id}/info.json`);
      expect(response.headers.get('cache-status')).toBe('recording-gateway; hit');
      const info = (await response.json()) as Info;
      expect(Math.abs(info.duration_seconds - fixture.duration_seconds)).toBeLessThan(0.1);
    }
    expect(gateway.gateway.analyser.counts).toEqual({ headersRead: catalog.length, decodes: 0 });
  });

  test('stays the same once peaks.json has decoded the recording: the estimate was right', async () => {
    const gateway = await start();
    const before = await bytesOf(await gateway.fetch('/v1/call/recording/4/info.json'));
    expect((await gateway.fetch('/v1/call/recording/4/peaks.json')).status).toBe(200);
    await settled(gateway);
    expect(gateway.gateway.analyser.counts.decodes).toBe(1);
    const after = await bytesOf(await gateway.fetch('/v1/call/recording/4/info.json'));
    expect(after.toString()).toBe(before.toString());
    // The decoded length agrees with the estimate to well within a second.
    const sidecar = decodePeaks(await readFile(bed.recordingFile(4, 'peaks')))!;
    const info = JSON.parse(after.toString()) as Info;
    expect(Math.abs(sidecar.totalSamples / sidecar.sampleRate - info.duration_seconds)).toBeLessThan(0.1);
  });

  test('is read when the recording is stored, kept in the index, and answered after a restart without the audio or the upstream', async () => {
    const first = await start();
    await bytesOf(await first.fetch('/v1/call/recording/4.mp3'));
    await settled(first);
    // Stored with the recording's index entry, before anyone asked for it.
    const meta = await first.gateway.index.get(`${namespaceFor(bed.upstream.baseUrl)}/4`);
    expect(meta?.facts?.sampleRate).toBe(22_050);
    expect(meta?.facts?.channels).toBe(1);
    expect(first.gateway.analyser.counts).toEqual({ headersRead: 1, decodes: 0 });
    const expected = (await (await first.fetch('/v1/call/recording/4/info.json')).json()) as Info;
    await bed.stop(first);

    // The upstream is gone, and so (after start-up) is the audio file: only the index can answer.
    await bed.upstream.close();
    const second = await start();
    await rm(bed.recordingFile(4, 'mp3'));
    const response = await second.fetch('/v1/call/recording/4/info.json');
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-status')).toBe('recording-gateway; hit');
    expect(await response.json()).toEqual(expected);
  });

  test('concurrent info, peaks and audio requests for a cold recording share one download and one analysis', async () => {
    bed.upstream.setBehaviour(4, { kind: 'slow-body', chunkBytes: 16 * 1024, intervalMs: 20 });
    const gateway = await start();
    const paths = ['/v1/call/recording/4.mp3', '/v1/call/recording/4/info.json', '/v1/call/recording/4/peaks.json?points=200'];
    const responses = await Promise.all(Array.from({ length: 12 }, (_, i) => gateway.fetch(paths[i % paths.length]!)));
    for (const response of responses) {
      expect(response.status).toBe(200);
      await bytesOf(response);
    }
    await settled(gateway);
    expect(bed.upstream.recordingRequests(4)).toHaveLength(1);
    expect(gateway.gateway.analyser.counts.decodes).toBe(1);
    const sidecar = await stat(bed.recordingFile(4, 'peaks'));

    // Later requests read what the one analysis kept: the sidecar is never written again.
    for (const request of ['/v1/call/recording/4/info.json', '/v1/call/recording/4/peaks.json?points=77']) {
      expect((await gateway.fetch(request)).status).toBe(200);
    }
    await settled(gateway);
    const after = await stat(bed.recordingFile(4, 'peaks'));
    expect([after.ino, after.mtimeMs]).toEqual([sidecar.ino, sidecar.mtimeMs]);
    expect(bed.upstream.recordingRequests(4)).toHaveLength(1);
    expect(gateway.gateway.analyser.counts.decodes).toBe(1);
  });

  test('a recording stored before analysis existed has its header read on the first info.json, and is decoded on the first peaks.json', async () => {
    const first = await start();
    await bytesOf(await first.fetch('/v1/call/recording/3.mp3'));
    await settled(first);
    // What an older version left: an index entry without facts, no sidecar.
    const key = `${namespaceFor(bed.upstream.baseUrl)}/3`;
    const { facts: _facts, ...olderMeta } = (await first.gateway.index.get(key))!;
    await first.gateway.index.set(key, olderMeta);
    await bed.stop(first);
    // A store writes no sidecar any more.
    expect(existsSync(bed.recordingFile(3, 'peaks'))).toBe(false);

    const second = await start();
    expect((await second.gateway.index.get(key))?.facts).toBeUndefined();
    const response = await second.fetch('/v1/call/recording/3/info.json');
    expect(response.status).toBe(200);
    const info = (await response.json()) as Info;
    expect(Math.abs(info.duration_seconds - catalog.find((r) => r.id === 3)!.duration_seconds)).toBeLessThan(0.1);
    await settled(second);
    expect((await second.gateway.index.get(key))?.facts?.durationSeconds).toBe(info.duration_seconds);
    expect(second.gateway.analyser.counts).toEqual({ headersRead: 1, decodes: 0 });
    expect(existsSync(bed.recordingFile(3, 'peaks'))).toBe(false);
    expect((await second.fetch('/v1/call/recording/3/peaks.json')).status).toBe(200);
    expect(second.gateway.analyser.counts).toEqual({ headersRead: 1, decodes: 1 });
    expect(existsSync(bed.recordingFile(3, 'peaks'))).toBe(true);
    expect(bed.upstream.recordingRequests(3)).toHaveLength(1);
  });

  test('answers 304 to If-None-Match, and HEAD the same head without a body', async () => {
    const gateway = await start();
    const full = await gateway.fetch('/v1/call/recording/1/info.json');
    const body = await bytesOf(full);
    const etag = full.headers.get('etag')!;
    const unchanged = await gateway.fetch('/v1/call/recording/1/info.json', { headers: { 'if-none-match': etag } });
    expect(unchanged.status).toBe(304);
    expect(unchanged.headers.get('etag')).toBe(etag);
    expect((await bytesOf(unchanged)).length).toBe(0);
    const changed = await gateway.fetch('/v1/call/recording/1/info.json', { headers: { 'if-none-match': '"another"' } });
    expect(changed.status).toBe(200);
    await bytesOf(changed);
    const head = await gateway.fetch('/v1/call/recording/1/info.json', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(body.length));
    expect(head.headers.get('etag')).toBe(etag);
    expect((await bytesOf(head)).length).toBe(0);
  });
});

describe('info.json credentials and errors, as for the recording', () => {
  test('no credential or a wrong key is 401 with a challenge, in the JSON error shape', async () => {
    const gateway = await start();
    for (const authorization of ['', 'Bearer not-a-key-of-anyone-000000000']) {
      const response = await gateway.fetch('/v1/call/recording/1/info.json', { headers: { authorization } });
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toMatch(/^Bearer /);
      expect(response.headers.get('content-type')).toBe('application/json');
      expect(Object.keys(await response.json()).sort()).toEqual(['error', 'message']);
    }
    expect(bed.upstream.recordingRequests(1)).toHaveLength(0);
  });

  test('a signed URL for the call opens its info.json; one for another call, or tampered, does not', async () => {
    const gateway = await start();
    const exp = Math.floor(clock.now() / 1000) + 300;
    const good = await gateway.fetch(`/v1/call/recording/2/info.json?${signedQuery(2, exp)}`);
    expect(good.status).toBe(200);
    expect(good.headers.get('cache-control')).toBe('private, max-age=300, immutable');
    expect(((await good.json()) as Info).call_id).toBe(2);

    // The signature the gateway mints for the .mp3 opens info.json too: the message is the same.
    const minted = await gateway.fetch('/v1/call/recording/3/signed-url', { method: 'POST' });
    const { url } = (await minted.json()) as { url: string };
    const infoUrl = url.replace('/3.mp3?', '/3/info.json?');
    expect((await gateway.fetch(infoUrl)).status).toBe(200);

    const otherCall = await gateway.fetch(`/v1/call/recording/3/info.json?${signedQuery(2, exp)}`);
    expect(otherCall.status).toBe(401);
    const tampered = await gateway.fetch(
      `/v1/call/recording/2/info.json?${signedQuery(2, exp + 1).replace(`exp=${exp + 1}`, `exp=${exp}`)}`,
    );
    expect(tampered.status).toBe(401);
  });

  test('a bad id is 400 before any upstream call; another method is 405 with Allow', async () => {
    const gateway = await start();
    for (const bad of ['01', '0', 'abc', '9007199254740992', '-1']) {
      const response = await gateway.fetch(`/v1/call/recording/${bad}/info.json`);
      expect(response.status).toBe(400);
      expect(Object.keys(await response.json()).sort()).toEqual(['error', 'message']);
    }
    const post = await gateway.fetch('/v1/call/recording/1/info.json', { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD, OPTIONS');
    const del = await gateway.fetch('/v1/call/recording/1/peaks.json', { method: 'DELETE' });
    expect(del.status).toBe(405);
    expect(bed.upstream.recordingRequests()).toHaveLength(0);
  });

  test('a recording the upstream does not have is 404, and an upstream failure 502, like the .mp3', async () => {
    const gateway = await start();
    const missing = await gateway.fetch('/v1/call/recording/424242/info.json');
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: string }).error).toBe('Not Found');
    bed.upstream.setBehaviour(2, { kind: 'status', status: 500 });
    const failing = await gateway.fetch('/v1/call/recording/2/peaks.json');
    expect(failing.status).toBe(502);
    expect(Object.keys(await failing.json()).sort()).toEqual(['error', 'message']);
  });

  test('an MP3 with no decodable audio is 502 for info and peaks, with no sidecar or facts kept; the recording is still served', async () => {
    // Both pass the MP3 check (an ID3v2 tag): one holds no audio frame, the other random bytes, which decode to noise.
    const noAudio = Buffer.concat([Buffer.from('ID3\x03\x00\x00\x00\x00\x00\x00', 'latin1'), Buffer.alloc(4096, 0x20)]);
    bed.upstream.setRecording(77, noAudio);
    bed.upstream.setRecording(78, syntheticRecording(256 * 1024));
    const gateway = await start();
    for (const id of [77, 78]) {
      const audio = await gateway.fetch(`/v1/call/recording/${id}.mp3`);
      expect(audio.status).toBe(200);
      expect((await bytesOf(audio)).equals(bed.upstream.recording(id)!)).toBe(true);
      await settled(gateway);
      for (const request of [`/v1/call/recording/${id}/info.json`, `/v1/call/recording/${id}/peaks.json`]) {
        const response = await gateway.fetch(request);
        expect(response.status).toBe(502);
        expect(((await response.json()) as { message: string }).message).toMatch(/could not be decoded/);
      }
      expect(existsSync(bed.recordingFile(id, 'peaks'))).toBe(false);
      expect((await gateway.gateway.index.get(`${namespaceFor(bed.upstream.baseUrl)}/${id}`))?.facts).toBeUndefined();
      expect(bed.upstream.recordingRequests(id)).toHaveLength(1);
    }
  });

  test('an MP3 padded after its audio (zeros, 0xFF, random bytes) is 200 for peaks and info alike, with the duration of its audio', async () => {
    // 30,000 bytes of a fixture (about 7.5 s of 22.05 kHz mono), then 100 KB the decoder reports dozens of errors in.
    const audio = bed.upstream.recording(4)!.subarray(0, 30_000);
    const paddings = [Buffer.alloc(100_000), Buffer.alloc(100_000, 0xff), syntheticRecording(100_000).subarray(3)];
    const gateway = await start();
    const plain = 4100;
    bed.upstream.setRecording(plain, audio);
    await bytesOf(await gateway.fetch(`/v1/call/recording/${plain}/peaks.json`));
    const audioSeconds = (await (await gateway.fetch(`/v1/call/recording/${plain}/info.json`)).json()) as Info;
    expect(audioSeconds.duration_seconds).toBeGreaterThan(7);
    for (const [index, padding] of paddings.entries()) {
      const id = 4101 + index;
      bed.upstream.setRecording(id, Buffer.concat([audio, padding]));
      const peaks = await gateway.fetch(`/v1/call/recording/${id}/peaks.json`);
      expect(peaks.status, `padding ${index}`).toBe(200);
      const info = await gateway.fetch(`/v1/call/recording/${id}/info.json`);
      expect(info.status).toBe(200);
      const facts = (await info.json()) as Info;
      // Random bytes decode to some noise until four pieces in a row with errors show them junk (0.03-0.17 s seen).
      expect(facts.duration_seconds - audioSeconds.duration_seconds).toBeGreaterThanOrEqual(0);
      expect(facts.duration_seconds - audioSeconds.duration_seconds).toBeLessThan(index === 2 ? 0.5 : 0.05);
      // The audio's 32 kbit/s, within the 4 KB the decode judges the junk's start by (4,369 bit/s over 7.5 s;
      // random padding was once 2,570 off, over the 2,500 this said before).
      expect(Math.abs(facts.bitrate - audioSeconds.bitrate)).toBeLessThan((4096 * 8) / audioSeconds.duration_seconds);
    }
  });

  test("a tenant's rate limit counts info.json and peaks.json requests too", async () => {
    const gateway = await start({ tenants: [acmeTenant({ rateLimitPerMinute: 2 })] });
    expect((await gateway.fetch('/v1/call/recording/1/info.json')).headers.get('ratelimit-limit')).toBe('2');
    expect((await gateway.fetch('/v1/call/recording/1/peaks.json')).status).toBe(200);
    const limited = await gateway.fetch('/v1/call/recording/1/info.json');
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toMatch(/^\d+$/);
  });

  test('a listed origin gets CORS headers on the answer', async () => {
    const gateway = await start();
    const response = await gateway.fetch('/v1/call/recording/1/info.json', { headers: { origin: ACME_ORIGIN } });
    expect(response.headers.get('access-control-allow-origin')).toBe(ACME_ORIGIN);
    expect(response.headers.get('vary')).toContain('Origin');
    const other = await gateway.fetch('/v1/call/recording/1/info.json', { headers: { origin: 'https://elsewhere.example' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });
});
