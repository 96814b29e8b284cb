/**
 * Recording facts from the MP3's stream header, read once it is stored: an
 * exact duration from a Xing or VBRI frame count, an estimate from the size
 * for a constant bitrate without one (corrected when a decode proves it
 * wrong), and none for a variable bitrate without a frame count, which the
 * first info.json then decodes. The MP3s are built here from silent MPEG-1
 * Layer III frames, so every expected number is known exactly.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { countedSource, id3v2Tag } from './support/mp3-bytes.js';
import { loadFixtureRecordings } from '../dev/fake-flyflow.js';
import { syntheticRecording } from '../dev/recording-bytes.js';
import { bytesOf, manualClock, namespaceFor, type RunningGateway } from '../dev/gateway-harness.js';
import { analyseMp3, UndecodableRecordingError } from '../src/recordings/analysis/mp3-analysis.js';
import { readStreamHeader } from '../src/recordings/analysis/mp3-header.js';
import { knownFacts } from '../src/recordings/analysis/recording-analyser.js';
import { bodySource } from '../src/recordings/analysis/stored-recording-source.js';
import { gatewayPerTest, settled } from './support/gateway-per-test.js';

const SAMPLE_RATE = 44_100;
const SAMPLES_PER_FRAME = 1152;
const KBPS = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];

/**
 * One MPEG-1 Layer III frame, mono, 44.1 kHz, no CRC, of silence: side
 * information all zero (no main data, no bit reservoir), so frames of any
 * bitrate can follow each other and still decode, each to 1152 samples.
 */
function silentFrame(kbps: number, write?: (frame: Buffer) => void): Buffer {
  const frame = Buffer.alloc(Math.floor((144 * kbps * 1000) / SAMPLE_RATE));
  frame[0] = 0xff;
  frame[1] = 0xfb; // MPEG-1, Layer III, no CRC
  frame[2] = KBPS.indexOf(kbps) << 4; // 44.1 kHz, no padding
  frame[3] = 0xc0; // mono
  write?.(frame);
  return frame;
}

/** A Xing header frame (after the 17 bytes of mono MPEG-1 side information): frame count and audio bytes. */
function xingFrame(frames: number, bytes: number): Buffer {
  return silentFrame(128, (frame) => {
    frame.write('Xing', 21, 'latin1');
    frame.writeUInt32BE(0b11, 25);
    frame.writeUInt32BE(frames, 29);
    frame.writeUInt32BE(bytes, 33);
  });
}

/** A VBRI header frame (32 bytes after the frame header): version, delay, quality, audio bytes, frame count. */
function vbriFrame(frames: number, bytes: number): Buffer {
  return silentFrame(128, (frame) => {
    frame.write('VBRI', 36, 'latin1');
    frame.writeUInt16BE(1, 40);
    frame.writeUInt16BE(0, 42);
    frame.writeUInt16BE(75, 44);
    frame.writeUInt32BE(bytes, 46);
    frame.writeUInt32BE(frames, 50);
  });
}

const FRAMES = 400;
const SECONDS = (FRAMES * SAMPLES_PER_FRAME) / SAMPLE_RATE; // 10.448979...
/** Silent frames whose bitrate changes from one to the next: a variable bitrate. */
const variableFrames = Array.from({ length: FRAMES }, (_, i) => silentFrame([128, 32, 64, 160, 96, 40][i % 6]!));
const variableBytes = variableFrames.reduce((sum, frame) => sum + frame.length, 0);
/** Four frames at 128 kbit/s, then 32 kbit/s: looks constant to a reader of the first frames, and is not. */
const misleadingFrames = Array.from({ length: FRAMES }, (_, i) => silentFrame(i < 4 ? 128 : 32));
const misleadingBytes = misleadingFrames.reduce((sum, frame) => sum + frame.length, 0);

/**
 * A Xing header frame and no audio: MPEG-1 Layer III, 128 kbit/s, 44.1 kHz,
 * joint stereo (417 bytes, the header after 32 bytes of side information),
 * counting one frame of 4 GiB, then 100 bytes of zeros.
 */
function xingOnly(): Buffer {
  const frame = Buffer.alloc(417);
  frame.set([0xff, 0xfb, 0x90, 0x64]);
  frame.write('Xing', 36, 'latin1');
  frame.writeUInt32BE(0b11, 40);
  frame.writeUInt32BE(1, 44);
  frame.writeUInt32BE(0xffff_ffff, 48);
  return Buffer.concat([frame, Buffer.alloc(100)]);
}

const XING = 501;
const VBRI = 502;
const NO_COUNT = 503;
const MISLEADING = 504;
const XING_ONLY = 505;
const recordings = new Map<number, Buffer>([
  [XING, Buffer.concat([xingFrame(FRAMES, variableBytes), ...variableFrames])],
  [VBRI, Buffer.concat([vbriFrame(FRAMES, variableBytes), ...variableFrames])],
  [NO_COUNT, Buffer.concat(variableFrames)],
  [MISLEADING, Buffer.concat(misleadingFrames)],
  [XING_ONLY, xingOnly()],
]);

interface Info {
  duration_seconds: number;
  bitrate: number;
  sample_rate: number;
  channels: number;
}

const bed = gatewayPerTest('rg-facts-headers-', (upstream) => {
  for (const [id, bytes] of recordings) upstream.setRecording(id, bytes);
});

function start(): Promise<RunningGateway> {
  return bed.start({}, { clock: manualClock() });
}

/** Downloads a recording and waits until it is stored and its header read. */
async function store(gateway: RunningGateway, id: number): Promise<void> {
  expect((await bytesOf(await gateway.fetch(`/v1/call/recording/${id}.mp3`))).equals(recordings.get(id)!)).toBe(true);
  await settled(gateway);
}

async function info(gateway: RunningGateway, id: number): Promise<Info> {
  const response = await gateway.fetch(`/v1/call/recording/${id}/info.json`);
  expect(response.status).toBe(200);
  return (await response.json()) as Info;
}

function indexedFacts(gateway: RunningGateway, id: number) {
  return gateway.gateway.index.get(`${namespaceFor(bed.upstream.baseUrl)}/${id}`).then((meta) => meta?.facts);
}

describe('facts from the stream header, at store time', () => {
  test.each([
    ['a Xing header', XING],
    ['a VBRI header', VBRI],
  ])('a variable bitrate with %s has its exact duration and average bitrate right after the store, with no decode', async (_header, id) => {
    const gateway = await start();
    await store(gateway, id);
    expect(gateway.gateway.analyser.counts).toEqual({ headersRead: 1, decodes: 0 });
    const expected = {
      durationSeconds: Math.round(SECONDS * 1e6) / 1e6,
      bitrate: Math.round((variableBytes * 8) / SECONDS),
      sampleRate: SAMPLE_RATE,
      channels: 1,
    };
    expect(await indexedFacts(gateway, id)).toEqual(expected);
    const before = await info(gateway, id);
    expect(before).toMatchObject({
      duration_seconds: expected.durationSeconds,
      bitrate: expected.bitrate,
      sample_rate: SAMPLE_RATE,
      channels: 1,
    });
    // An exact duration is kept when peaks.json decodes the recording: info.json does not change.
    expect((await gateway.fetch(`/v1/call/recording/${id}/peaks.json`)).status).toBe(200);
    expect(gateway.gateway.analyser.counts.decodes).toBe(1);
    expect(await info(gateway, id)).toEqual(before);
    expect(existsSync(bed.recordingFile(id, 'peaks'))).toBe(true);
  });

  test('a variable bitrate without a frame count has no facts after the store; the first info.json decodes it, once', async () => {
    const gateway = await start();
    await store(gateway, NO_COUNT);
    expect(gateway.gateway.analyser.counts).toEqual({ headersRead: 1, decodes: 0 });
    expect(await indexedFacts(gateway, NO_COUNT)).toBeUndefined();

    const first = await info(gateway, NO_COUNT);
    expect(gateway.gateway.analyser.counts.decodes).toBe(1);
    // Every frame decodes to 1152 samples of silence: the duration is exact.
    expect(first.duration_seconds).toBe(Math.round(SECONDS * 1e6) / 1e6);
    expect(first.bitrate).toBe(Math.round((variableBytes * 8) / SECONDS));
    expect(first).toMatchObject({ sample_rate: SAMPLE_RATE, channels: 1 });
    expect((await indexedFacts(gateway, NO_COUNT))?.durationSeconds).toBe(first.duration_seconds);
    // The decode wrote the peaks too: neither route decodes again.
    expect(existsSync(bed.recordingFile(NO_COUNT, 'peaks'))).toBe(true);
    expect(await info(gateway, NO_COUNT)).toEqual(first);
    expect((await gateway.fetch(`/v1/call/recording/${NO_COUNT}/peaks.json`)).status).toBe(200);
    expect(gateway.gateway.analyser.counts.decodes).toBe(1);
  });

  test('an estimate the decode proves wrong is replaced by the decoded duration, in the index too', async () => {
    const gateway = await start();
    await store(gateway, MISLEADING);
    // The first frames say 128 kbit/s constant: the size gives a quarter of the real length.
    const estimated = await info(gateway, MISLEADING);
    expect(estimated.duration_seconds).toBeCloseTo((misleadingBytes * 8) / 128_000, 5);
    expect(estimated.duration_seconds).toBeLessThan(SECONDS / 3);
    expect(await indexedFacts(gateway, MISLEADING)).toMatchObject({ estimated: true });
    expect(gateway.gateway.analyser.counts.decodes).toBe(0);

    expect((await gateway.fetch(`/v1/call/recording/${MISLEADING}/peaks.json`)).status).toBe(200);
    expect(gateway.gateway.analyser.counts.decodes).toBe(1);
    const corrected = await info(gateway, MISLEADING);
    expect(corrected.duration_seconds).toBe(Math.round(SECONDS * 1e6) / 1e6);
    expect(corrected.bitrate).toBe(Math.round((misleadingBytes * 8) / SECONDS));
    const facts = await indexedFacts(gateway, MISLEADING);
    expect(facts?.durationSeconds).toBe(corrected.duration_seconds);
    expect(facts?.estimated).toBeUndefined();
  });
});

describe('frame counts the file does not bear out', () => {
  /** The fixture call 2 (MPEG-2 Layer III, mono, 22.05 kHz, 32 kbit/s CBR) behind a Xing frame of its own format. */
  async function behindXing(frames: number, bytes: number | undefined): Promise<Buffer> {
    const plain = (await loadFixtureRecordings()).get(2)!;
    const frame = Buffer.alloc(104); // 32 kbit/s at 22.05 kHz, no padding
    plain.copy(frame, 0, 0, 4);
    frame.write('Xing', 4 + 9, 'latin1'); // after 9 bytes of mono MPEG-2 side information
    frame.writeUInt32BE(bytes === undefined ? 0b01 : 0b11, 17);
    frame.writeUInt32BE(frames, 21);
    frame.writeUInt32BE(bytes ?? 0, 25);
    return Buffer.concat([frame, plain]);
  }

  function withinMpegBounds(facts: { durationSeconds: number; bitrate: number }, maxBitrate: number): void {
    expect(Number.isFinite(facts.durationSeconds) && facts.durationSeconds > 0).toBe(true);
    expect(facts.bitrate).toBeGreaterThanOrEqual(8_000);
    expect(facts.bitrate).toBeLessThanOrEqual(maxBitrate);
  }

  test('a Xing header frame with no audio after it gives no facts, and its decode finds no audio', async () => {
    const header = await readStreamHeader(bodySource(xingOnly()));
    expect(header?.facts).toBeUndefined();
    await expect(analyseMp3(bodySource(xingOnly()))).rejects.toBeInstanceOf(UndecodableRecordingError);
  });

  test.each([
    ['a frame count of 0xFFFFFFFF', 0xffff_ffff, undefined],
    ['a frame count of 0xFFFFFFFF and the right byte count', 0xffff_ffff, 'size'],
    ['one frame of 0xFFFFFFFF bytes', 1, 0xffff_ffff],
    ['the right frame count and 0xFFFFFFFF bytes', 218, 0xffff_ffff],
  ] as const)('%s on a real recording is ignored: its own frames give the facts', async (_what, frames, bytes) => {
    const plain = (await loadFixtureRecordings()).get(2)!;
    const tagged = await behindXing(frames, bytes === 'size' ? plain.length : bytes);
    // The estimate from the size at the frames' constant bitrate, as without a frame count.
    const header = await readStreamHeader(bodySource(tagged));
    expect(header?.facts).toEqual({
      durationSeconds: Math.round((((plain.length + 104) * 8) / 32_000) * 1e6) / 1e6,
      bitrate: 32_000,
      sampleRate: 22_050,
      channels: 1,
      estimated: true,
    });
    const decodedPlain = (await analyseMp3(bodySource(plain))).facts;
    const { facts } = await analyseMp3(bodySource(tagged));
    withinMpegBounds(facts, 160_000);
    expect(facts.durationSeconds).toBeCloseTo(decodedPlain.durationSeconds, 1);
  });

  test('a right Xing header keeps its exact facts, read and decoded', async () => {
    const expected = {
      durationSeconds: Math.round(SECONDS * 1e6) / 1e6,
      bitrate: Math.round((variableBytes * 8) / SECONDS),
      sampleRate: SAMPLE_RATE,
      channels: 1,
    };
    expect((await readStreamHeader(bodySource(recordings.get(XING)!)))?.facts).toEqual(expected);
    expect((await analyseMp3(bodySource(recordings.get(XING)!))).facts).toEqual(expected);
    expect((await readStreamHeader(bodySource(recordings.get(VBRI)!)))?.facts).toEqual(expected);
  });

  test('random bytes behind an ID3 tag are never taken for audio, however their noise decodes (200 tries)', async () => {
    // At 16 errors a second of 8 kHz noise could pass for audio (4 in 300 such files did).
    for (let attempt = 0; attempt < 200; attempt++) {
      await expect(analyseMp3(bodySource(syntheticRecording(256 * 1024)))).rejects.toBeInstanceOf(UndecodableRecordingError);
    }
  });

  test.each([1, 4, 16, 32])(
    '%i KiB of random bytes after a tag are not audio, though mpg123 decodes frames from them (25 tries)',
    async (kib) => {
      // Once in the 200 tries above a random tag size ended inside the file and left such a tail; up to 32 KiB of it passed.
      for (let attempt = 0; attempt < 25; attempt++) {
        const noise = randomBytes(kib * 1024);
        // Random bytes start with a frame header about once in 3,600: a stream that does is judged as audio with a damaged body.
        noise[0] = 0;
        await expect(analyseMp3(bodySource(Buffer.concat([id3v2Tag(200 * 1024), noise])))).rejects.toBeInstanceOf(
          UndecodableRecordingError,
        );
      }
    },
  );

  test.each([
    ['0xFF 0xFF 0xFF 0xFF', Buffer.alloc(4, 0xff)],
    ['64 bytes of 0xFF', Buffer.alloc(64, 0xff)],
    ['a header with the reserved sample rate', Buffer.from([0xff, 0xfb, 0x9c, 0x00])],
  ])('random bytes after %s behind a tag are not audio either: no stream has such a header (25 tries)', async (_what, start) => {
    for (let attempt = 0; attempt < 25; attempt++) {
      const body = Buffer.concat([id3v2Tag(1024), start, randomBytes(4 * 1024)]);
      await expect(analyseMp3(bodySource(body))).rejects.toBeInstanceOf(UndecodableRecordingError);
    }
  });

  test('junk after the audio does not lift the decoded bitrate above what the stream allows', async () => {
    // One 32 kbit/s frame (MPEG-2 Layer III: at most 160 kbit/s), then 2 KB of zeros.
    const oneFrame = (await loadFixtureRecordings()).get(2)!.subarray(0, 104);
    const { facts } = await analyseMp3(bodySource(Buffer.concat([oneFrame, Buffer.alloc(2048)])));
    expect(facts.durationSeconds).toBe(0.026122);
    withinMpegBounds(facts, 160_000);
  });

  test('facts in an index entry with a bitrate no MPEG stream has are not known: they are read again', () => {
    const facts = { durationSeconds: 0.026122, bitrate: 1_315_333_734_094, sampleRate: 44_100, channels: 2 };
    const meta = (value: typeof facts) => ({ facts: value }) as unknown as Parameters<typeof knownFacts>[0];
    expect(knownFacts(meta(facts))).toBeUndefined();
    expect(knownFacts(meta({ ...facts, bitrate: 128_000 }))).toEqual({ ...facts, bitrate: 128_000 });
  });

  test('info.json and peaks.json both answer 502 for a Xing header frame with no audio, in the JSON error shape', async () => {
    const gateway = await start();
    await store(gateway, XING_ONLY);
    for (const route of ['info.json', 'peaks.json', 'info.json']) {
      const response = await gateway.fetch(`/v1/call/recording/${XING_ONLY}/${route}`);
      expect(response.status, route).toBe(502);
      const body = (await response.json()) as Record<string, unknown>;
      expect(Object.keys(body).sort()).toEqual(['error', 'message']);
      expect(body.message).toBe('The recording could not be decoded for analysis');
    }
    expect(await indexedFacts(gateway, XING_ONLY)).toBeUndefined();
  });
});

describe('reading the stream header', () => {
  test('reads about 64 KB however long the recording and however large its tag (cover art is never read)', async () => {
    const fixture = (await loadFixtureRecordings()).get(2)!;
    const bare = await readStreamHeader(countedSource(fixture));
    const long = Buffer.concat([id3v2Tag(3 * 1024 * 1024), ...Array.from({ length: 40 }, () => fixture)]);
    const source = countedSource(long);
    const header = await readStreamHeader(source);
    expect(source.read).toBeLessThanOrEqual(10 + 64 * 1024 + 128);
    expect(header?.facts).toMatchObject({ bitrate: 32_000, sampleRate: 22_050, channels: 1, estimated: true });
    expect(header!.facts!.durationSeconds).toBeCloseTo(40 * bare!.facts!.durationSeconds, 4);
  });

  test('an ID3v1 tag at the end is not counted as audio', async () => {
    const fixture = (await loadFixtureRecordings()).get(2)!;
    const id3v1 = Buffer.alloc(128);
    id3v1.write('TAG', 0, 'latin1');
    const plain = await readStreamHeader(countedSource(fixture));
    const tagged = await readStreamHeader(countedSource(Buffer.concat([fixture, id3v1])));
    expect(tagged?.facts).toEqual(plain?.facts);
    expect(tagged?.audioBytes).toBe(fixture.length);
  });

  test('a recording of one frame, too short for a header to be read, is decoded: mono from its frame header', async () => {
    // The fixture's first frame: MPEG-2 Layer III, mono, 22.05 kHz, 32 kbit/s, 104 bytes.
    const oneFrame = (await loadFixtureRecordings()).get(2)!.subarray(0, 104);
    expect(await readStreamHeader(countedSource(oneFrame))).toBeUndefined();
    const { facts } = await analyseMp3(bodySource(oneFrame));
    expect(facts).toMatchObject({ durationSeconds: 0.026122, sampleRate: 22_050, channels: 1 });
    // The average over the frame's own bytes (104 of the 104.5 a 32 kbit/s frame holds on average).
    expect(facts.bitrate).toBe(Math.round((104 * 8) / (576 / 22_050)));
  });

  test('bytes between the tag and the first frame are not audio: a mono stream stays mono, its bitrate that of its frames', async () => {
    const fixture = (await loadFixtureRecordings()).get(2)!;
    const decoded = (await analyseMp3(bodySource(Buffer.concat([id3v2Tag(10), Buffer.alloc(1), fixture])))).facts;
    for (const [fill, bytes] of [
      [0x00, 2000],
      [0x20, 20_000],
    ] as const) {
      const padded = Buffer.concat([id3v2Tag(10), Buffer.alloc(bytes, fill), fixture]);
      expect(await readStreamHeader(countedSource(padded))).toBeUndefined();
      const { facts } = await analyseMp3(bodySource(padded));
      expect(facts).toMatchObject({ durationSeconds: decoded.durationSeconds, sampleRate: 22_050, channels: 1 });
      // The fixture is 32 kbit/s CBR; counting the padding as audio made 2,000 bytes of it 34.8 kbit/s, 20,000 60.1.
      expect(Math.abs(facts.bitrate - 32_000)).toBeLessThan(320);
    }
    const stereo = Buffer.concat(
      Array.from({ length: 50 }, () =>
        silentFrame(128, (frame) => {
          frame[3] = 0x00;
        }),
      ),
    );
    const { facts } = await analyseMp3(bodySource(Buffer.concat([id3v2Tag(10), Buffer.alloc(2000), stereo])));
    // 417-byte frames (128 kbit/s at 44.1 kHz, none padded) of 1152 samples each.
    expect(facts).toMatchObject({ sampleRate: SAMPLE_RATE, channels: 2, bitrate: Math.round((417 * 8 * SAMPLE_RATE) / SAMPLES_PER_FRAME) });
  });

  test('no header for what does not start with an MPEG frame after its tag: decoding decides', async () => {
    const noAudio = Buffer.concat([id3v2Tag(10), Buffer.alloc(4096, 0x20)]);
    expect(await readStreamHeader(countedSource(noAudio))).toBeUndefined();
    expect(await readStreamHeader(countedSource(id3v2Tag(4096)))).toBeUndefined();
    expect(await readStreamHeader(countedSource(Buffer.alloc(0)))).toBeUndefined();
  });
});
