import { setImmediate as nextTurn } from 'node:timers/promises';
import { MPEGDecoder } from 'mpg123-decoder';
import { parseBuffer } from 'music-metadata';
import type { RecordingFacts } from '../../cache/recording-meta.js';
import { PeaksBuilder, type WaveformPeaks } from './waveform-peaks.js';

/** A recording's bytes, read in order from offset 0 to `size`. */
export interface Mp3Source {
  readonly size: number;
  /** Up to `maxBytes` at `offset`; null past the end. */
  readAt(offset: number, maxBytes: number): Promise<Uint8Array | null>;
}

/** What one decode of a recording yields: its facts and its fine waveform peaks. */
export interface Mp3Analysis {
  facts: RecordingFacts;
  peaks: WaveformPeaks;
}

/** The recording is not audio this decoder can read: analysing it again would only fail again. */
export class UndecodableRecordingError extends Error {
  override readonly name = 'UndecodableRecordingError';
}

// Bytes read at a time, and handed to the decoder in pieces small enough
// (a fraction of a second of audio) that it yields to the event loop every
// few milliseconds: requests keep flowing while a long call is analysed.
const READ_BYTES = 64 * 1024;
const DECODE_PIECE_BYTES = 4 * 1024;
const SLICE_MS = 4;
// mpg123 resynchronises on anything that looks like a frame header, so even
// random bytes decode to some noise. A real recording decodes with no errors
// or a few (a damaged frame); more than this share of errors per frame is not
// a recording.
const MAX_ERRORS_PER_FRAME = 1 / 4;
const TOLERATED_ERRORS = 16;
const SAMPLES_PER_FRAME = 1152;
// What the header parser is given: the ID3v2 tag (if any) and this much
// audio after it, enough for the first frames and a Xing/Info header.
const HEADER_AUDIO_BYTES = 64 * 1024;
// An ID3v2 tag larger than this (cover art) is not kept for the header
// parser; the facts then come from the decoder alone.
const MAX_HEADER_BYTES = 1024 * 1024;

/**
 * Decodes a whole MP3 once (mpg123, WebAssembly), in slices with a turn of
 * the event loop between them, and reads its facts: the duration from the
 * samples decoded; the bitrate, sample rate and channels from its frame
 * headers (music-metadata), or, where those cannot be read, from the decoder
 * and the size.
 * @throws UndecodableRecordingError when no audio could be decoded.
 */
export async function analyseMp3(source: Mp3Source, signal?: AbortSignal): Promise<Mp3Analysis> {
  const decoder = new MPEGDecoder();
  await decoder.ready;
  const peaks = new PeaksBuilder();
  const head: Uint8Array[] = [];
  let headBytes = 0;
  let tagBytes = 0;
  let headWanted = HEADER_AUDIO_BYTES;
  let sampleRate = 0;
  let decodedChannels = 0;
  let mono = false;
  let errors = 0;
  let sliceStarted = performance.now();
  try {
    for (let offset = 0; offset < source.size; ) {
      signal?.throwIfAborted();
      const chunk = await source.readAt(offset, Math.min(READ_BYTES, source.size - offset));
      if (chunk === null || chunk.length === 0) throw new Error(`recording ended at ${offset} of ${source.size} bytes`);
      if (offset === 0) {
        tagBytes = id3v2Size(chunk);
        headWanted = Math.min(MAX_HEADER_BYTES, tagBytes + HEADER_AUDIO_BYTES);
        mono = isMonoFrame(chunk, tagBytes);
      }
      offset += chunk.length;
      if (headBytes < headWanted) {
        head.push(Uint8Array.from(chunk.subarray(0, headWanted - headBytes)));
        headBytes += Math.min(chunk.length, headWanted - headBytes);
      }
      for (let at = 0; at < chunk.length; at += DECODE_PIECE_BYTES) {
        const decoded = quietly(() => decoder.decode(chunk.subarray(at, at + DECODE_PIECE_BYTES)));
        errors += decoded.errors.length;
        // Not audio: stop at once rather than decode the rest of the noise.
        if (tooManyErrors(errors, peaks.totalSamples))
          throw new UndecodableRecordingError(`${errors} decoding errors: not an MPEG audio stream`);
        if (decoded.samplesDecoded > 0) {
          sampleRate ||= decoded.sampleRate;
          decodedChannels ||= decoded.channelData.length;
          // mpg123 decodes a mono stream to two equal channels: one is enough for its peaks.
          peaks.add(mono ? decoded.channelData.slice(0, 1) : decoded.channelData, decoded.samplesDecoded);
        }
        if (performance.now() - sliceStarted >= SLICE_MS) {
          await nextTurn();
          sliceStarted = performance.now();
        }
      }
    }
  } finally {
    decoder.free();
  }
  if (peaks.totalSamples === 0 || sampleRate === 0) throw new UndecodableRecordingError('no MPEG audio could be decoded');
  const durationSeconds = peaks.totalSamples / sampleRate;
  const header = await readHeader(Buffer.concat(head), source.size);
  return {
    facts: {
      durationSeconds: Math.round(durationSeconds * 1e6) / 1e6,
      // A variable bitrate is answered as its average over the whole stream.
      bitrate: Math.round(
        header?.constantBitrate ?? ((tagBytes < source.size ? source.size - tagBytes : source.size) * 8) / durationSeconds,
      ),
      sampleRate: header?.sampleRate ?? sampleRate,
      // mpg123 always decodes to two channels; only the header knows a mono stream.
      channels: header?.channels ?? decodedChannels,
    },
    peaks: peaks.finish(sampleRate),
  };
}

function tooManyErrors(errors: number, samples: number): boolean {
  return errors > TOLERATED_ERRORS && errors > (samples / SAMPLES_PER_FRAME) * MAX_ERRORS_PER_FRAME;
}

/**
 * Runs a decode with the console silenced: mpg123-decoder (and the mpg123
 * build inside it) print every decoding error with console.error, which would
 * flood the gateway's output for one damaged file; the errors are counted
 * from the result instead. `decode` is synchronous, so nothing else runs
 * while the console is swapped.
 */
function quietly<T>(decode: () => T): T {
  const { error, log } = console;
  console.error = () => {};
  console.log = () => {};
  try {
    return decode();
  } finally {
    console.error = error;
    console.log = log;
  }
}

/** The bytes of an ID3v2 tag at the start of `bytes` (header, syncsafe size, footer), or 0. */
function id3v2Size(bytes: Uint8Array): number {
  if (bytes.length < 10 || bytes[0] !== 0x49 || bytes[1] !== 0x44 || bytes[2] !== 0x33) return 0;
  const size = ((bytes[6]! & 0x7f) << 21) | ((bytes[7]! & 0x7f) << 14) | ((bytes[8]! & 0x7f) << 7) | (bytes[9]! & 0x7f);
  const footer = (bytes[5]! & 0x10) !== 0 ? 10 : 0;
  return 10 + size + footer;
}

interface StreamHeader {
  /** Set for a constant-bitrate stream only. */
  constantBitrate: number | undefined;
  sampleRate: number | undefined;
  channels: number | undefined;
}

/** True when an MPEG audio frame header at `at` says single channel (mode bits 11). */
function isMonoFrame(bytes: Uint8Array, at: number): boolean {
  if (at + 4 > bytes.length || bytes[at] !== 0xff || (bytes[at + 1]! & 0xe0) !== 0xe0) return false;
  return bytes[at + 3]! >> 6 === 0b11;
}

/** The stream's bitrate, sample rate and channels from its first frames, or undefined when they cannot be read. */
async function readHeader(head: Buffer, size: number): Promise<StreamHeader | undefined> {
  try {
    const { format } = await parseBuffer(head, { mimeType: 'audio/mpeg', size }, { skipCovers: true, skipPostHeaders: true });
    const positive = (value: number | undefined) => (value !== undefined && Number.isFinite(value) && value > 0 ? value : undefined);
    return {
      constantBitrate: format.codecProfile === 'CBR' ? positive(format.bitrate) : undefined,
      sampleRate: positive(format.sampleRate),
      channels: positive(format.numberOfChannels),
    };
  } catch {
    return undefined;
  }
}
