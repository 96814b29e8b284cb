/**
 * Analysis never holds the event loop: whatever the bytes, reading a
 * recording's stream header (after a store, or for info.json) and decoding it
 * (info.json, peaks.json) run in stretches of a few milliseconds, between
 * which the gateway serves other requests (README, "Recording facts and
 * waveforms"). The inputs are crafted to pass the MP3 check and then make a
 * frame reader resynchronise through megabytes: one MPEG frame header
 * followed by 0xFF bytes, each of which looks like the start of a frame.
 *
 * The bound on the longest pause is a liveness property, not a benchmark: it
 * is far above what analysis takes now (a few milliseconds a slice; a garbage
 * collection may add some) and far below the 0.3-0.6 s a crafted megabyte
 * held the loop for when the header reader and the decoder scanned it in one go.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { countedSource, id3v2Tag } from './support/mp3-bytes.js';
import { loadFixtureRecordings } from '../dev/fake-flyflow.js';
import { manualClock, type RunningGateway } from '../dev/gateway-harness.js';
import { analyseMp3, UndecodableRecordingError } from '../src/recordings/analysis/mp3-analysis.js';
import { readStreamHeader } from '../src/recordings/analysis/mp3-header.js';
import { bodySource } from '../src/recordings/analysis/stored-recording-source.js';
import { gatewayPerTest, settled } from './support/gateway-per-test.js';

const MiB = 1024 * 1024;
/** The longest the event loop may be held while a crafted recording is analysed. */
const MAX_PAUSE_MS = 100;

/** An MPEG-1 Layer III frame header (128 kbit/s, 44.1 kHz, joint stereo), then `bytes` of 0xFF. */
function frameThenFF(bytes: number): Buffer {
  return Buffer.concat([Buffer.from([0xff, 0xfb, 0x90, 0x64]), Buffer.alloc(bytes, 0xff)]);
}

/** `bytes` of 0xFF 0xFB repeated: a frame sync every other byte, which mpg123 skips without reporting an error. */
function syncWords(bytes: number): Buffer {
  const body = Buffer.alloc(bytes);
  for (let at = 0; at < bytes; at += 2) body.set([0xff, 0xfb], at);
  return body;
}

const CRAFTED = 601;
const CRAFTED_AGAIN = 602;

const bed = gatewayPerTest('rg-analysis-liveness-', (upstream) => {
  upstream.setRecording(CRAFTED, frameThenFF(MiB));
  upstream.setRecording(CRAFTED_AGAIN, frameThenFF(MiB));
});

/**
 * The longest the event loop went without running a 1 ms timer while `work`
 * ran: what any other request (a health check, a Redis call's timeout) would
 * have waited at worst.
 */
async function longestPause<T>(work: () => Promise<T>): Promise<{ value: T; pauseMs: number }> {
  let longest = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  try {
    const value = await work();
    // A last turn, so a stretch that ran up to the end is measured too.
    await new Promise((resolve) => setTimeout(resolve, 5));
    return { value, pauseMs: Math.max(longest, performance.now() - last) };
  } finally {
    clearInterval(timer);
  }
}

beforeAll(async () => {
  // Both readers are loaded on first use: that one-off load is not what is measured here.
  const fixture = (await loadFixtureRecordings()).get(2)!;
  await readStreamHeader(bodySource(fixture));
  await analyseMp3(bodySource(fixture));
});

describe('the readers, on crafted bytes', () => {
  test('the stream header of a frame header and 1 MB of 0xFF is read in one short stretch', async () => {
    const { value: header, pauseMs } = await longestPause(() => readStreamHeader(bodySource(frameThenFF(MiB))));
    expect(pauseMs).toBeLessThan(MAX_PAUSE_MS);
    // No frame follows the first: nothing the size could be divided by.
    expect(header?.facts).toBeUndefined();
  });

  test('a decode of a frame header and 1 MB of 0xFF gives up without holding the loop', async () => {
    const { value: failure, pauseMs } = await longestPause(() => analyseMp3(bodySource(frameThenFF(MiB))).catch((error: unknown) => error));
    expect(failure).toBeInstanceOf(UndecodableRecordingError);
    expect(pauseMs).toBeLessThan(MAX_PAUSE_MS);
  });

  test('sync words with no frame in them, which mpg123 skips without an error, are given up on after 1 MiB, not read to the end', async () => {
    const source = countedSource(syncWords(8 * MiB));
    const { value: failure, pauseMs } = await longestPause(() => analyseMp3(source).catch((error: unknown) => error));
    expect(failure).toBeInstanceOf(UndecodableRecordingError);
    expect(pauseMs).toBeLessThan(MAX_PAUSE_MS);
    // The header's ~64 KB, then the decode's 64 KB reads up to a little past 1 MiB.
    expect(source.read).toBeLessThan(2 * MiB);
  });

  test('a tag of more than 1 MiB (cover art) before the audio is not counted: the recording still decodes', async () => {
    const fixture = (await loadFixtureRecordings()).get(2)!;
    const plain = await analyseMp3(bodySource(fixture));
    const tagged = await analyseMp3(bodySource(Buffer.concat([id3v2Tag(3 * MiB), fixture])));
    expect(tagged.peaks).toEqual(plain.peaks);
    expect(tagged.facts).toMatchObject({ sampleRate: plain.facts.sampleRate, channels: plain.facts.channels });
    expect(tagged.facts.durationSeconds).toBeCloseTo(plain.facts.durationSeconds, 1);
  });
});

describe('the gateway, analysing a crafted recording', () => {
  function start(): Promise<RunningGateway> {
    return bed.start({ cache: { maxRecordingBytes: 2 * MiB } }, { clock: manualClock() });
  }

  test('a cold GET, then its stream header read in the background, holds the loop no longer than a short stretch', async () => {
    const gateway = await start();
    const { value: status, pauseMs } = await longestPause(async () => {
      const response = await gateway.fetch(`/v1/call/recording/${CRAFTED}.mp3`);
      await response.arrayBuffer();
      await settled(gateway);
      return response.status;
    });
    expect(status).toBe(200);
    expect(gateway.gateway.analyser.counts.headersRead).toBe(1);
    expect(pauseMs).toBeLessThan(MAX_PAUSE_MS);
  });

  test('info.json and peaks.json answer 502 as before, and /healthz is answered meanwhile', async () => {
    const gateway = await start();
    for (const id of [CRAFTED, CRAFTED_AGAIN]) {
      await (await gateway.fetch(`/v1/call/recording/${id}.mp3`)).arrayBuffer();
    }
    await settled(gateway);
    for (const [id, route] of [
      [CRAFTED, 'info.json'],
      [CRAFTED_AGAIN, 'peaks.json'],
    ] as const) {
      const { value: answer, pauseMs } = await longestPause(async () => {
        const response = await gateway.fetch(`/v1/call/recording/${id}/${route}`);
        return { status: response.status, body: (await response.json()) as Record<string, unknown> };
      });
      expect(answer.status, route).toBe(502);
      expect(answer.body.message, route).toBe('The recording could not be decoded for analysis');
      expect(pauseMs, route).toBeLessThan(MAX_PAUSE_MS);
    }
    expect((await gateway.fetch('/healthz')).status).toBe(200);
  });
});
