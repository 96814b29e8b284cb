/**
 * GET /v1/call/recording/{id}/peaks.json: waveform peaks in audiowaveform's
 * JSON format, computed once by decoding the MP3 on the first request for
 * them (never after a plain store), kept in a sidecar file beside the
 * recording, merged down to any `points` without decoding again, and gone
 * with the recording.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { MPEGDecoder } from 'mpg123-decoder';
import { describe, expect, test } from 'vitest';
import { loadFixtureRecordings } from '../dev/fake-flyflow.js';
import {
  acmeTenant,
  bytesOf,
  manualClock,
  signedQuery,
  testTenant,
  type RunningGateway,
  type TestConfigOptions,
} from '../dev/gateway-harness.js';
import { eventually } from '../dev/recording-bytes.js';
import { PeaksBuilder, decodePeaks, encodePeaks, peaksJson, type WaveformPeaks } from '../src/recordings/analysis/waveform-peaks.js';
import { gatewayPerTest, settled } from './support/gateway-per-test.js';

interface PeaksAnswer {
  version: number;
  channels: number;
  sample_rate: number;
  samples_per_pixel: number;
  bits: number;
  length: number;
  data: number[];
}

const bed = gatewayPerTest('rg-peaks-');
const clock = manualClock();

function start(options: Partial<TestConfigOptions> = {}): Promise<RunningGateway> {
  return bed.start(options, { clock });
}

async function peaksOf(gateway: RunningGateway, id: number, query = ''): Promise<PeaksAnswer> {
  const response = await gateway.fetch(`/v1/call/recording/${id}/peaks.json${query}`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toBe('application/json');
  return (await response.json()) as PeaksAnswer;
}

/**
 * The expected waveform, computed here on its own: the whole fixture decoded
 * in one call, each point's equal share of the samples scanned, and scaled as
 * audiowaveform does (floor of sample x 128).
 */
async function independentPeaks(mp3: Buffer, points: number): Promise<{ data: number[]; totalSamples: number }> {
  const decoder = new MPEGDecoder();
  await decoder.ready;
  const { channelData, samplesDecoded } = decoder.decode(mp3);
  decoder.free();
  const data: number[] = [];
  for (let point = 0; point < points; point++) {
    const from = Math.floor((point * samplesDecoded) / points);
    const to = Math.floor(((point + 1) * samplesDecoded) / points);
    let min = 1;
    let max = -1;
    for (const channel of channelData) {
      for (let i = from; i < to; i++) {
        min = Math.min(min, channel[i]!);
        max = Math.max(max, channel[i]!);
      }
    }
    data.push(Math.max(-128, Math.floor(min * 128)), Math.min(127, Math.floor(max * 128)));
  }
  return { data, totalSamples: samplesDecoded };
}

describe('peaks.json', () => {
  test('answers audiowaveform v2 with exactly the points asked for (1000 by default)', async () => {
    const gateway = await start();
    for (const [query, points] of [
      ['', 1000],
      ['?points=1', 1],
      ['?points=333', 333],
      ['?points=10000', 10_000],
    ] as const) {
      const peaks = await peaksOf(gateway, 4, query);
      expect(peaks.version).toBe(2);
      expect(peaks.channels).toBe(1);
      expect(peaks.sample_rate).toBe(22_050);
      expect(peaks.bits).toBe(8);
      expect(peaks.length).toBe(points);
      expect(peaks.data).toHaveLength(2 * points);
      expect(Number.isInteger(peaks.samples_per_pixel) && peaks.samples_per_pixel >= 1).toBe(true);
      // The points cover the recording: 30.9 s of it, within a point's rounding.
      const seconds = (peaks.length * peaks.samples_per_pixel) / peaks.sample_rate;
      expect(Math.abs(seconds - 30.9)).toBeLessThan(0.3);
      for (let i = 0; i < peaks.data.length; i += 2) {
        const [min, max] = [peaks.data[i]!, peaks.data[i + 1]!];
        expect(Number.isInteger(min) && Number.isInteger(max)).toBe(true);
        expect(min).toBeGreaterThanOrEqual(-128);
        expect(max).toBeLessThanOrEqual(127);
        expect(min).toBeLessThanOrEqual(max);
      }
    }
    expect(bed.upstream.recordingRequests(4)).toHaveLength(1);
  });

  test("matches the fixture's own waveform: loud speech and the quiet pauses between its parts", async () => {
    const gateway = await start();
    const mp3 = bed.upstream.recording(4)!;
    const points = 400;
    const answer = await peaksOf(gateway, 4, `?points=${points}`);
    const expected = await independentPeaks(mp3, points);
    // The gateway merges fine peaks, whose edges fall a few samples from these: compare the envelopes.
    const amplitude = (data: number[], i: number) => data[2 * i + 1]! - data[2 * i]!;
    let difference = 0;
    for (let i = 0; i < points; i++) difference += Math.abs(amplitude(answer.data, i) - amplitude(expected.data, i));
    expect(difference / points).toBeLessThan(2);
    const order = [...Array(points).keys()].sort((a, b) => amplitude(expected.data, a) - amplitude(expected.data, b));
    const quietest = order.slice(0, 10);
    const loudest = order.slice(-10);
    for (const i of quietest) expect(amplitude(answer.data, i)).toBeLessThanOrEqual(amplitude(expected.data, i) + 4);
    for (const i of loudest) expect(amplitude(answer.data, i)).toBeGreaterThan(100);
    // The pauses are real silence in the fixture, the speech near full scale.
    expect(amplitude(expected.data, quietest[0]!)).toBeLessThan(4);
    expect(amplitude(expected.data, loudest[0]!)).toBeGreaterThan(100);
  });

  test('a download decodes nothing; the first peaks.json writes the sidecar beside the recording, and DELETE removes it with the recording', async () => {
    const gateway = await start();
    await bytesOf(await gateway.fetch('/v1/call/recording/4.mp3'));
    await settled(gateway);
    expect(gateway.gateway.analyser.counts.decodes).toBe(0);
    expect(existsSync(bed.recordingFile(4, 'peaks'))).toBe(false);

    await peaksOf(gateway, 4, '?points=10');
    expect(gateway.gateway.analyser.counts.decodes).toBe(1);
    const sidecar = decodePeaks(await readFile(bed.recordingFile(4, 'peaks')));
    expect(sidecar).toBeDefined();
    expect(sidecar!.sampleRate).toBe(22_050);
    expect(sidecar!.data.length / 2).toBeGreaterThanOrEqual(10_000);
    expect(sidecar!.totalSamples / sidecar!.sampleRate).toBeCloseTo(30.9, 1);

    const purge = await gateway.fetch('/v1/call/recording/4.mp3', { method: 'DELETE' });
    expect(purge.status).toBe(204);
    expect(existsSync(bed.recordingFile(4, 'mp3'))).toBe(false);
    expect(existsSync(bed.recordingFile(4, 'peaks'))).toBe(false);
  });

  test('is merged from the sidecar without decoding again', async () => {
    const gateway = await start();
    await peaksOf(gateway, 1, '?points=10');
    await settled(gateway);
    // A sidecar this test writes, whose every pair is (-5, 5): what the answer must now be built from.
    const stored = decodePeaks(await readFile(bed.recordingFile(1, 'peaks')))!;
    const flat: WaveformPeaks = { ...stored, data: Int8Array.from(stored.data, (_, i) => (i % 2 === 0 ? -5 : 5)) };
    await writeFile(bed.recordingFile(1, 'peaks'), encodePeaks(flat));
    const answer = await peaksOf(gateway, 1, '?points=50');
    expect(new Set(answer.data)).toEqual(new Set([-5, 5]));
    expect(bed.upstream.recordingRequests(1)).toHaveLength(1);
    expect(gateway.gateway.analyser.counts.decodes).toBe(1);
  });

  test('a damaged or missing sidecar is computed again from the stored recording', async () => {
    const gateway = await start();
    const before = await peaksOf(gateway, 2, '?points=64');
    await settled(gateway);
    await writeFile(bed.recordingFile(2, 'peaks'), Buffer.from('not peaks'));
    expect(await peaksOf(gateway, 2, '?points=64')).toEqual(before);
    await settled(gateway);
    expect(decodePeaks(await readFile(bed.recordingFile(2, 'peaks')))).toBeDefined();
    expect(bed.upstream.recordingRequests(2)).toHaveLength(1);
    expect(gateway.gateway.analyser.counts.decodes).toBe(2);
  });

  test('bad points are 400 in the JSON error shape, before any upstream call', async () => {
    const gateway = await start();
    for (const points of ['0', '10001', '-1', '1.5', 'abc', '', '01', '1e3', '99999999999']) {
      const response = await gateway.fetch(`/v1/call/recording/3/peaks.json?points=${points}`);
      expect(response.status, `points=${points}`).toBe(400);
      expect(response.headers.get('content-type')).toBe('application/json');
      const body = (await response.json()) as { error: string; message: string };
      expect(body.error).toBe('Bad Request');
      expect(body.message).toContain('points');
    }
    expect(bed.upstream.recordingRequests()).toHaveLength(0);
  });

  test('a signed URL for the call opens it (other query parameters ignored); unauthorised is 401', async () => {
    const gateway = await start();
    const exp = Math.floor(clock.now() / 1000) + 600;
    const signed = await gateway.fetch(`/v1/call/recording/4/peaks.json?points=20&${signedQuery(4, exp)}&_=cachebuster`);
    expect(signed.status).toBe(200);
    expect(((await signed.json()) as PeaksAnswer).length).toBe(20);
    const forAnotherCall = await gateway.fetch(`/v1/call/recording/1/peaks.json?${signedQuery(4, exp)}`);
    expect(forAnotherCall.status).toBe(401);
    const anonymous = await gateway.fetch('/v1/call/recording/4/peaks.json', { headers: { authorization: '' } });
    expect(anonymous.status).toBe(401);
  });

  test('answers 304 to its ETag, which differs with the points', async () => {
    const gateway = await start();
    const hundred = await gateway.fetch('/v1/call/recording/3/peaks.json?points=100');
    await bytesOf(hundred);
    const etag = hundred.headers.get('etag')!;
    expect(etag).toMatch(/\.peaks\.100\.v\d+"$/);
    const again = await gateway.fetch('/v1/call/recording/3/peaks.json?points=100', { headers: { 'if-none-match': etag } });
    expect(again.status).toBe(304);
    const other = await gateway.fetch('/v1/call/recording/3/peaks.json?points=101', { headers: { 'if-none-match': etag } });
    expect(other.status).toBe(200);
    expect(other.headers.get('etag')).not.toBe(etag);
  });
});

describe('peaks sidecars on disk', () => {
  test('eviction removes the sidecar with the recording', async () => {
    const sizes = await loadFixtureRecordings();
    // Room for call 4 and one short call, not two.
    const gateway = await start({ cache: { maxDiskBytes: sizes.get(4)!.length + sizes.get(1)!.length + 1000 } });
    for (const id of [1, 4]) {
      await bytesOf(await gateway.fetch(`/v1/call/recording/${id}.mp3`));
      await peaksOf(gateway, id);
      await settled(gateway);
    }
    expect(existsSync(bed.recordingFile(1, 'peaks'))).toBe(true);
    await bytesOf(await gateway.fetch('/v1/call/recording/2.mp3'));
    await peaksOf(gateway, 2);
    await settled(gateway);
    expect(existsSync(bed.recordingFile(1, 'mp3'))).toBe(false);
    expect(existsSync(bed.recordingFile(1, 'peaks'))).toBe(false);
    expect(existsSync(bed.recordingFile(2, 'peaks'))).toBe(true);
  });

  test('start-up removes a sidecar whose recording is gone, and a sidecar write a crash cut short, and keeps the others', async () => {
    const first = await start();
    await bytesOf(await first.fetch('/v1/call/recording/1.mp3'));
    await peaksOf(first, 1);
    await settled(first);
    await bed.stop(first);
    const orphan = bed.recordingFile(999, 'peaks');
    await mkdir(path.dirname(orphan), { recursive: true });
    await writeFile(orphan, 'left behind by a crash');
    const unfinished = path.join(path.dirname(orphan), '0123456789abcdef01234567.part');
    await writeFile(unfinished, 'cut short');
    const kept = await stat(bed.recordingFile(1, 'peaks'));

    await start();
    expect(existsSync(orphan)).toBe(false);
    expect(existsSync(unfinished)).toBe(false);
    expect((await stat(bed.recordingFile(1, 'peaks'))).ino).toBe(kept.ino);
    expect(existsSync(bed.recordingFile(1, 'mp3'))).toBe(true);
  });
});

describe('decodes shared fairly between accounts', () => {
  const BETA_KEY = 'beta-tenant-key-for-tests-00000000001';
  const asBeta = { headers: { authorization: `Bearer ${BETA_KEY}` } };

  test("another account's peaks.json waits for about one of a flood's decodes, not for the whole flood", async () => {
    const flood = Array.from({ length: 10 }, (_, i) => 2000 + i);
    const acmeId = 2100;
    // Recordings of their own (so no decode is shared), each a minute long so that the flood's requests arrive during its first decode.
    const fixture = bed.upstream.recording(4)!;
    for (const id of [...flood, acmeId]) bed.upstream.setRecording(id, Buffer.concat([fixture, fixture, Buffer.from(`#${id}`)]));
    // beta reaches Flyflow with a key of its own: another account than acme's.
    const beta = testTenant('beta', BETA_KEY, { upstreamApiKey: 'beta-flyflow-account-key-0000000000' });
    const gateway = await start({ tenants: [acmeTenant(), beta] });
    await Promise.all([
      ...flood.map(async (id) => bytesOf(await gateway.fetch(`/v1/call/recording/${id}.mp3`, asBeta))),
      gateway.fetch(`/v1/call/recording/${acmeId}.mp3`).then(bytesOf),
    ]);
    await settled(gateway);
    const { analyser } = gateway.gateway;

    const flooding = flood.map(async (id) => {
      const response = await gateway.fetch(`/v1/call/recording/${id}/peaks.json`, asBeta);
      await response.arrayBuffer();
      return response.status;
    });
    // Most of the flood waits (the machine decides how many arrive during the first decode).
    expect(await eventually(() => analyser.waiting.decodes >= flood.length - 2)).toBe(true);
    const ahead = flood.length - analyser.waiting.decodes;
    await peaksOf(gateway, acmeId);
    // The decodes beta had started when acme asked, one more that may have begun while acme's request was on its way,
    // acme's, and perhaps beta's next one: not the rest of the flood.
    expect(analyser.counts.decodes).toBeLessThanOrEqual(ahead + 3);
    expect(await Promise.all(flooding)).toEqual(flood.map(() => 200));
    expect(analyser.counts.decodes).toBe(flood.length + 1);
  });
});

describe('peaks, computed', () => {
  test('the fine peaks keep between 10,000 and 20,000 pairs, each the min and max of its samples', () => {
    const samples = Float32Array.from({ length: 123_457 }, (_, i) => Math.sin(i / 50) * (i % 1000 === 0 ? 1 : 0.5));
    const builder = new PeaksBuilder();
    // Fed in uneven slices, as a decoder hands them over.
    for (let at = 0; at < samples.length; ) {
      const slice = samples.subarray(at, at + 1 + (at % 3001));
      builder.add([slice], slice.length);
      at += slice.length;
    }
    const peaks = builder.finish(8000);
    const pairs = peaks.data.length / 2;
    expect(pairs).toBeGreaterThanOrEqual(10_000);
    expect(pairs).toBeLessThan(20_000);
    expect(pairs).toBe(Math.ceil(samples.length / peaks.samplesPerPixel));
    for (const pair of [0, 1, 4321, pairs - 1]) {
      const slice = samples.subarray(pair * peaks.samplesPerPixel, (pair + 1) * peaks.samplesPerPixel);
      expect(peaks.data[2 * pair]).toBe(Math.floor(Math.min(...slice) * 128));
      expect(peaks.data[2 * pair + 1]).toBe(Math.min(127, Math.floor(Math.max(...slice) * 128)));
    }
    expect(decodePeaks(encodePeaks(peaks))).toEqual(peaks);
  });

  test('a short recording keeps one pair per sample, and asks for more points get what there is', () => {
    const builder = new PeaksBuilder();
    builder.add([Float32Array.of(0, 0.5, -0.5, 1)], 4);
    const json = peaksJson(builder.finish(8000), 10);
    expect(json).toEqual({
      version: 2,
      channels: 1,
      sample_rate: 8000,
      samples_per_pixel: 1,
      bits: 8,
      length: 4,
      data: [0, 0, 64, 64, -64, -64, 127, 127],
    });
  });

  test('merging takes the min of the mins and the max of the maxes', () => {
    const peaks: WaveformPeaks = {
      sampleRate: 100,
      samplesPerPixel: 10,
      totalSamples: 60,
      data: Int8Array.of(-1, 1, -9, 2, -3, 3, -4, 8, 0, 0, -2, 5),
    };
    expect(peaksJson(peaks, 3)).toMatchObject({ length: 3, samples_per_pixel: 20, data: [-9, 2, -4, 8, -2, 5] });
    expect(peaksJson(peaks, 1)).toMatchObject({ length: 1, samples_per_pixel: 60, data: [-9, 8] });
  });

  test('a sidecar cut short or of another format is refused', () => {
    const builder = new PeaksBuilder();
    builder.add([Float32Array.from({ length: 100 }, (_, i) => i / 100)], 100);
    const encoded = encodePeaks(builder.finish(8000));
    expect(decodePeaks(encoded.subarray(0, encoded.length - 1))).toBeUndefined();
    expect(decodePeaks(Buffer.concat([Buffer.from('X'), encoded.subarray(1)]))).toBeUndefined();
    expect(decodePeaks(Buffer.alloc(0))).toBeUndefined();
  });
});
