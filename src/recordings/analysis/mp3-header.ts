import type { RecordingFacts } from '../../cache/recording-meta.js';

/** A recording's bytes, read in order from offset 0 to `size`. */
export interface Mp3Source {
  readonly size: number;
  /** Up to `maxBytes` at `offset`; null past the end. */
  readAt(offset: number, maxBytes: number): Promise<Uint8Array | null>;
}

/** What the first bytes of an MP3 say about its audio stream. */
export interface StreamHeader {
  sampleRate: number;
  channels: number;
  /** Set for a constant-bitrate stream only. */
  constantBitrate: number | undefined;
  /** Bytes of audio: the file without its ID3v2 tag (at the start) and ID3v1 tag (at the end). */
  audioBytes: number;
  /** The bitrates (bits per second) the standard allows for the stream's version and layer. */
  bitrateBounds: BitrateBounds;
  /**
   * The facts, when the header gives the duration: from a Xing/Info or VBRI
   * frame count (exact) the file bears out, or from the size and bitrate of a constant-bitrate
   * stream without one (`estimated`). Undefined for a variable bitrate
   * without a frame count: only decoding it tells its duration.
   */
  facts: RecordingFacts | undefined;
}

// What music-metadata is given: this much audio after the ID3v2 tag, enough
// for the first frames and a Xing/Info or VBRI header. The tag itself (cover
// art, possibly megabytes) is never read.
const HEADER_AUDIO_BYTES = 64 * 1024;
const ID3V1_BYTES = 128;
// music-metadata reads the first four frame headers and stops. Between two
// frames that do not follow each other it resynchronises byte by byte, at
// several microseconds a byte (an Error thrown for each false sync) and all
// in one synchronous stretch: 64 KB of 0xFF took 0.3 s. So it is given the
// frames that follow each other from the first (at most four) and this much
// after them, where a damaged frame still resynchronises within a few
// milliseconds; past it the header is unreadable and decoding decides.
const FORMAT_FRAMES = 4;
const RESYNC_BYTES = 512;

/**
 * Reads a recording's stream header from its first bytes: the ID3v2 tag's
 * size, ~64 KB of audio after it (its first frame headers, parsed with
 * music-metadata, loaded on first use; its Xing/Info or VBRI header) and its
 * last 128 bytes (an ID3v1 tag). About a millisecond, however long the
 * recording. Undefined when the audio does not start with an MPEG frame right
 * after the tag, or its frame headers cannot be read: decoding decides then.
 */
export async function readStreamHeader(source: Mp3Source): Promise<StreamHeader | undefined> {
  const tagBytes = id3v2Size(await readUpTo(source, 0, 10));
  if (tagBytes >= source.size) return undefined;
  const head = await readUpTo(source, tagBytes, HEADER_AUDIO_BYTES);
  const frame = frameHeaderAt(head, 0);
  if (!frame) return undefined;
  const format = await readFormat(head.subarray(0, formatBytes(head, frame)));
  if (!format) return undefined;
  const tail = source.size - tagBytes >= ID3V1_BYTES ? await readUpTo(source, source.size - ID3V1_BYTES, ID3V1_BYTES) : undefined;
  const hasId3v1 = tail?.length === ID3V1_BYTES && tail[0] === 0x54 && tail[1] === 0x41 && tail[2] === 0x47; // "TAG"
  const audioBytes = source.size - tagBytes - (hasId3v1 ? ID3V1_BYTES : 0);
  const constantBitrate = format.constantBitrate;
  const header = {
    sampleRate: format.sampleRate,
    channels: format.channels,
    constantBitrate,
    audioBytes,
    bitrateBounds: frame.bitrateBounds,
  };

  // A frame count is a hint only: an encoder's (or a forger's) number, used when the file agrees with it.
  const { tagged, count } = frameCountOf(head, frame);
  const counted = plausibleCount(count, head, frame, format.sampleRate, audioBytes);
  if (counted) {
    const durationSeconds = (counted.frames * frame.samplesPerFrame) / format.sampleRate;
    // A variable bitrate is answered as its average over the whole stream.
    const bitrate = constantBitrate ?? ((counted.bytes ?? audioBytes) * 8) / durationSeconds;
    return { ...header, facts: factsOf(durationSeconds, bitrate, format) };
  }
  // A first frame that only holds a frame-count header, with no audio frame after it: decoding decides.
  if (constantBitrate === undefined || (tagged && !nextFrameFollows(head, frame))) return { ...header, facts: undefined };
  if (constantBitrate < frame.bitrateBounds.min || constantBitrate > frame.bitrateBounds.max) return { ...header, facts: undefined };
  return { ...header, facts: { ...factsOf((audioBytes * 8) / constantBitrate, constantBitrate, format), estimated: true } };
}

/**
 * The lowest and highest bitrates (bits per second) of MPEG audio: any
 * version and layer. A recording's facts outside them were not read from audio.
 */
export const MPEG_BITRATE_BOUNDS = { min: 8_000, max: 448_000 } as const;

function factsOf(durationSeconds: number, bitrate: number, format: { sampleRate: number; channels: number }): RecordingFacts {
  return {
    durationSeconds: Math.round(durationSeconds * 1e6) / 1e6,
    bitrate: Math.round(bitrate),
    sampleRate: format.sampleRate,
    channels: format.channels,
  };
}

/** Up to `bytes` at `offset`, in as many reads as the source needs; fewer at the end. */
async function readUpTo(source: Mp3Source, offset: number, bytes: number): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  let got = 0;
  const wanted = Math.max(0, Math.min(bytes, source.size - offset));
  while (got < wanted) {
    const chunk = await source.readAt(offset + got, wanted - got);
    if (chunk === null || chunk.length === 0) break;
    parts.push(chunk);
    got += chunk.length;
  }
  return Buffer.concat(parts);
}

/** The bytes of an ID3v2 tag at the start of `bytes` (header, syncsafe size, footer), or 0. */
export function id3v2Size(bytes: Uint8Array): number {
  if (bytes.length < 10 || bytes[0] !== 0x49 || bytes[1] !== 0x44 || bytes[2] !== 0x33) return 0;
  const size = ((bytes[6]! & 0x7f) << 21) | ((bytes[7]! & 0x7f) << 14) | ((bytes[8]! & 0x7f) << 7) | (bytes[9]! & 0x7f);
  const footer = (bytes[5]! & 0x10) !== 0 ? 10 : 0;
  return 10 + size + footer;
}

/** What the frame-count headers and the decode need of an MPEG audio frame header. */
export interface FrameHeader {
  samplesPerFrame: number;
  /** Single channel (mode bits 11). */
  mono: boolean;
  /** Layer III only: the side information after the header (and CRC), where a Xing/Info header starts. */
  xingOffset: number | undefined;
  /** The frame's bytes, padding included; undefined for a free-format bitrate. */
  length: number | undefined;
  /** The bitrates the standard allows for this version and layer, in bits per second. */
  bitrateBounds: BitrateBounds;
  /** Version, layer and sample rate bits: every frame of a stream has the same. */
  stream: number;
}

export interface BitrateBounds {
  min: number;
  max: number;
}

// kbit/s by bitrate index (1-14), per version and layer (ISO/IEC 11172-3, 13818-3).
const KBPS = {
  mpeg1: {
    1: [32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
    2: [32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
    3: [32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
  },
  mpeg2: {
    1: [32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
    2: [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    3: [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
  },
} as const;
const MPEG1_SAMPLE_RATES = [44_100, 48_000, 32_000];

/**
 * The MPEG audio frame header at `at`, or undefined when there is none: no
 * sync, or a reserved version, layer or sample rate, or the "bad" bitrate
 * (which `0xFF` padding reads as).
 */
export function frameHeaderAt(bytes: Uint8Array, at: number): FrameHeader | undefined {
  if (at + 4 > bytes.length || bytes[at] !== 0xff || (bytes[at + 1]! & 0xe0) !== 0xe0) return undefined;
  const version = (bytes[at + 1]! >> 3) & 0b11; // 11 MPEG-1, 10 MPEG-2, 00 MPEG-2.5, 01 reserved
  const layer = (bytes[at + 1]! >> 1) & 0b11; // 11 I, 10 II, 01 III, 00 reserved
  const bitrateIndex = bytes[at + 2]! >> 4;
  const rateIndex = (bytes[at + 2]! >> 2) & 0b11;
  if (version === 0b01 || layer === 0b00 || bitrateIndex === 0b1111 || rateIndex === 0b11) return undefined;
  const mpeg1 = version === 0b11;
  const mono = bytes[at + 3]! >> 6 === 0b11;
  const withCrc = (bytes[at + 1]! & 1) === 0;
  const samplesPerFrame = layer === 0b11 ? 384 : layer === 0b10 || mpeg1 ? 1152 : 576;
  const sideInfo = mpeg1 ? (mono ? 17 : 32) : mono ? 9 : 17;
  const table = KBPS[mpeg1 ? 'mpeg1' : 'mpeg2'][(4 - layer) as 1 | 2 | 3];
  const padding = (bytes[at + 2]! >> 1) & 1;
  const sampleRate = MPEG1_SAMPLE_RATES[rateIndex]! / (mpeg1 ? 1 : version === 0b10 ? 2 : 4);
  // Index 0 is free format: a bitrate the header does not say.
  const bitrate = bitrateIndex === 0 ? undefined : table[bitrateIndex - 1]! * 1000;
  let length: number | undefined;
  if (bitrate !== undefined) {
    length =
      layer === 0b11
        ? (Math.floor((12 * bitrate) / sampleRate) + padding) * 4
        : Math.floor(((samplesPerFrame / 8) * bitrate) / sampleRate) + padding;
  }
  return {
    samplesPerFrame,
    mono,
    xingOffset: layer === 0b01 ? at + 4 + (withCrc ? 2 : 0) + sideInfo : undefined,
    length,
    bitrateBounds: { min: table[0]! * 1000, max: table[table.length - 1]! * 1000 },
    stream: (version << 4) | (layer << 2) | rateIndex,
  };
}

/** True when the audio starts with an MPEG frame header right after the ID3v2 tag of `tagBytes`. */
export async function audioStartsWithFrame(source: Mp3Source, tagBytes: number): Promise<boolean> {
  return frameHeaderAt(await readUpTo(source, tagBytes, 4), 0) !== undefined;
}

/**
 * The bytes of `head` music-metadata is given: its first frames while each
 * starts where the one before ends (at most four, what it reads), and
 * {@link RESYNC_BYTES} after the last of them.
 */
function formatBytes(head: Buffer, first: FrameHeader): number {
  let at = 0;
  let frame = first;
  for (let frames = 1; frames < FORMAT_FRAMES && frame.length !== undefined; frames++) {
    const next = frameHeaderAt(head, at + frame.length);
    if (next?.stream !== first.stream) break;
    at += frame.length;
    frame = next;
  }
  return Math.min(head.length, at + (frame.length ?? 0) + RESYNC_BYTES);
}

/** True when another frame of the same stream starts right after the first frame of `head`. */
function nextFrameFollows(head: Buffer, frame: FrameHeader): boolean {
  if (frame.length === undefined) return false;
  return frameHeaderAt(head, frame.length)?.stream === frame.stream;
}

// A frame count's byte total may count a little more than the file holds
// (the header frame itself, a tag the encoder wrote after the audio); more
// than this beyond the audio present, it is not this file's.
const COUNTED_BYTES_SLACK = 2048;

/**
 * A Xing/Info or VBRI frame count, when the file agrees with it: an audio
 * frame follows the header frame, the byte total is no more than the audio
 * present (give or take a header frame or tag), and that many frames in that
 * many bytes is a bitrate the stream's version and layer allow. Otherwise
 * (a forged or damaged header) undefined: the file's own frames decide.
 */
function plausibleCount(
  counted: FrameCount | undefined,
  head: Buffer,
  frame: FrameHeader,
  sampleRate: number,
  audioBytes: number,
): FrameCount | undefined {
  if (!counted || !nextFrameFollows(head, frame)) return undefined;
  if (counted.bytes !== undefined && counted.bytes > audioBytes + COUNTED_BYTES_SLACK) return undefined;
  const bitrate = ((counted.bytes ?? audioBytes) * 8) / ((counted.frames * frame.samplesPerFrame) / sampleRate);
  // The average of frames each within the bounds is within them, give or take a padding byte a frame.
  const { min, max } = frame.bitrateBounds;
  return Number.isFinite(bitrate) && bitrate >= min * 0.99 && bitrate <= max ? counted : undefined;
}

/**
 * Where the audio starts in `bytes` (a recording's first bytes), and its
 * first frame's header: at `from` (the end of the ID3v2 tag) when a frame
 * header is there, as in every recording an encoder wrote; else at the first
 * frame header after it that another frame of the same stream follows, so
 * bytes an editor left between the tag and the audio are skipped; `from`,
 * without a header, when there is none (no audio: decoding decides).
 */
export function firstFrameAt(bytes: Uint8Array, from: number): { at: number; frame: FrameHeader | undefined } {
  const right = frameHeaderAt(bytes, from);
  if (right !== undefined) return { at: from, frame: right };
  for (let at = bytes.indexOf(0xff, from); at !== -1; at = bytes.indexOf(0xff, at + 1)) {
    const frame = frameHeaderAt(bytes, at);
    if (frame?.length !== undefined && frameHeaderAt(bytes, at + frame.length)?.stream === frame.stream) return { at, frame };
  }
  return { at: from, frame: undefined };
}

interface FrameCount {
  frames: number;
  bytes: number | undefined;
}

/**
 * The stream's frame count (and audio bytes, when given) from the first
 * frame's Xing/Info header (LAME and most encoders) or VBRI header
 * (Fraunhofer), both big-endian; no count without one. `tagged` when the
 * first frame holds such a header (and so no audio), whatever its numbers.
 */
function frameCountOf(head: Buffer, frame: FrameHeader): { tagged: boolean; count?: FrameCount } {
  const xing = frame.xingOffset;
  if (xing !== undefined && xing + 16 <= head.length) {
    const tag = head.toString('latin1', xing, xing + 4);
    const flags = head.readUInt32BE(xing + 4);
    if (tag === 'Xing' || tag === 'Info') {
      const frames = (flags & 1) !== 0 ? head.readUInt32BE(xing + 8) : 0;
      const bytes = (flags & 2) !== 0 && xing + 16 <= head.length ? head.readUInt32BE(xing + 12) : undefined;
      return { tagged: true, count: frames > 0 ? { frames, bytes: bytes || undefined } : undefined };
    }
  }
  // VBRI sits 32 bytes after the frame header, whatever the side information: tag, version, delay, quality, bytes, frames.
  const vbri = 4 + 32;
  if (vbri + 18 <= head.length && head.toString('latin1', vbri, vbri + 4) === 'VBRI') {
    const frames = head.readUInt32BE(vbri + 14);
    return { tagged: true, count: frames > 0 ? { frames, bytes: head.readUInt32BE(vbri + 10) || undefined } : undefined };
  }
  return { tagged: false };
}

interface StreamFormat {
  sampleRate: number;
  channels: number;
  constantBitrate: number | undefined;
}

/** Sample rate, channels and (constant) bitrate from the first frames, read with music-metadata; undefined when unreadable. */
async function readFormat(head: Buffer): Promise<StreamFormat | undefined> {
  // Loaded on first use: a gateway that never stores a recording does not carry it.
  const { parseBuffer } = await import('music-metadata');
  try {
    const { format } = await parseBuffer(head, { mimeType: 'audio/mpeg' }, { skipCovers: true, skipPostHeaders: true });
    const positive = (value: number | undefined) => (value !== undefined && Number.isFinite(value) && value > 0 ? value : undefined);
    const sampleRate = positive(format.sampleRate);
    const channels = positive(format.numberOfChannels);
    if (sampleRate === undefined || channels === undefined) return undefined;
    // 'CBR': an Info header, or the first frames all at one bitrate.
    return { sampleRate, channels, constantBitrate: format.codecProfile === 'CBR' ? positive(format.bitrate) : undefined };
  } catch {
    return undefined;
  }
}
