import { setImmediate as nextTurn } from 'node:timers/promises';
import type { RecordingFacts } from '../../cache/recording-meta.js';
import {
  audioStartsWithFrame,
  type BitrateBounds,
  firstFrameAt,
  id3v2Size,
  MPEG_BITRATE_BOUNDS,
  readStreamHeader,
  type Mp3Source,
} from './mp3-header.js';
import { freeMpegDecoder, loadMpegDecoder } from './mpeg-decoder.js';
import { PeaksBuilder, type WaveformPeaks } from './waveform-peaks.js';

export type { Mp3Source } from './mp3-header.js';

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
// Once this much audio has decoded with at most a damaged frame's errors, the
// stream is known to be audio (random bytes decode a few hundred samples per
// error, and at 8 kHz a second of them can come with 16 errors), and the
// share of errors no longer decides: a damaged frame costs an error or two in
// one piece, and the decode goes on; errors in every piece over this many
// bytes are junk after the audio (a file padded after its last frame), where
// the decode stops, keeping the audio before it.
const KNOWN_AUDIO_SECONDS = 1;
const KNOWN_AUDIO_MAX_ERRORS = 2;
const JUNK_RUN_BYTES = 4 * DECODE_PIECE_BYTES;
// An MPEG frame is at most a couple of kilobytes: this much after the ID3v2
// tag with no sample decoded is not audio (mpg123 resynchronising through
// junk that reports no error, say 0xFF 0xFB repeated). Before any audio the
// recording is undecodable; after some, the rest is junk after the audio,
// which would decode to nothing anyway, and is not scanned to its end.
const MAX_BYTES_WITHOUT_AUDIO = 1024 * 1024;
/**
 * An estimated duration (size and bitrate) further than this from the
 * decoded one was wrong (a variable bitrate that began with equal frames):
 * the decoded facts replace it. Closer, it stays, so info.json does not change.
 */
const ESTIMATE_TOLERANCE_SECONDS = 0.5;

/**
 * Decodes a whole MP3 once (mpg123, WebAssembly, loaded on first use), in
 * slices with a turn of the event loop between them, for its waveform peaks.
 * Its facts are those of its stream header where that gives a duration (so
 * they are the same whether or not it was decoded), unless that was an
 * estimate the decode shows wrong; else the decoded ones: the duration from
 * the samples decoded, the average bitrate over it, the sample rate and
 * channels from the header or, where it cannot be read (a recording of a
 * frame or two), from the decoder and the first frame's header.
 * The decoder and its WebAssembly memory are let go before this resolves.
 * @throws UndecodableRecordingError when no audio could be decoded.
 */
export async function analyseMp3(source: Mp3Source): Promise<Mp3Analysis> {
  const header = await readStreamHeader(source);
  const MPEGDecoder = await loadMpegDecoder();
  const decoder = new MPEGDecoder();
  await decoder.ready;
  const peaks = new PeaksBuilder();
  let sampleRate = 0;
  let decodedChannels = 0;
  let mono = header?.channels === 1;
  let bounds: BitrateBounds = header?.bitrateBounds ?? MPEG_BITRATE_BOUNDS;
  let errors = 0;
  let knownAudio = false;
  let tagBytes = 0;
  // Where the first frame is: the end of the tag, unless bytes that are not audio come between.
  let audioStart = 0;
  // Where the last bytes that decoded to samples end; where a run of pieces with errors began; where the junk the decode stopped at began.
  let audioEnd = 0;
  let erroringFrom: number | undefined;
  let junkFrom: number | undefined;
  let bytesWithoutAudio = 0;
  let sliceStarted = performance.now();
  try {
    decoding: for (let offset = 0; offset < source.size; ) {
      const chunk = await source.readAt(offset, Math.min(READ_BYTES, source.size - offset));
      if (chunk === null || chunk.length === 0) throw new Error(`recording ended at ${offset} of ${source.size} bytes`);
      if (offset === 0) tagBytes = audioStart = id3v2Size(chunk);
      // Without a readable header, the first frames (after any padding behind the tag) still tell a mono stream.
      if (offset === 0 && !header) {
        const first = firstFrameAt(chunk, tagBytes);
        audioStart = first.at;
        mono = first.frame?.mono ?? false;
        bounds = first.frame?.bitrateBounds ?? bounds;
      }
      const chunkOffset = offset;
      offset += chunk.length;
      for (let at = 0; at < chunk.length; at += DECODE_PIECE_BYTES) {
        const piece = chunk.subarray(at, at + DECODE_PIECE_BYTES);
        const pieceStart = chunkOffset + at;
        const decoded = quietly(() => decoder.decode(piece));
        errors += decoded.errors.length;
        if (!knownAudio) {
          // Not audio: stop at once rather than decode the rest of the noise.
          if (tooManyErrors(errors, peaks.totalSamples, sampleRate))
            throw new UndecodableRecordingError(`${errors} decoding errors: not an MPEG audio stream`);
        } else if (decoded.errors.length === 0) {
          if (decoded.samplesDecoded > 0) erroringFrom = undefined;
        } else {
          erroringFrom ??= pieceStart;
          if (pieceStart + piece.length - erroringFrom >= JUNK_RUN_BYTES) {
            junkFrom = erroringFrom;
            break decoding;
          }
        }
        if (decoded.samplesDecoded > 0) {
          sampleRate ||= decoded.sampleRate;
          decodedChannels ||= decoded.channelData.length;
          // mpg123 decodes a mono stream to two equal channels: one is enough for its peaks.
          peaks.add(mono ? decoded.channelData.slice(0, 1) : decoded.channelData, decoded.samplesDecoded);
          bytesWithoutAudio = 0;
          audioEnd = pieceStart + piece.length;
          knownAudio ||= errors <= KNOWN_AUDIO_MAX_ERRORS && peaks.totalSamples >= sampleRate * KNOWN_AUDIO_SECONDS;
        } else {
          bytesWithoutAudio += Math.max(0, pieceStart + piece.length - Math.max(pieceStart, tagBytes));
          if (bytesWithoutAudio > MAX_BYTES_WITHOUT_AUDIO) {
            if (peaks.totalSamples === 0)
              throw new UndecodableRecordingError(`no MPEG audio in the first ${MAX_BYTES_WITHOUT_AUDIO} bytes after the tag`);
            junkFrom = audioEnd;
            break decoding;
          }
        }
        if (performance.now() - sliceStarted >= SLICE_MS) {
          await nextTurn();
          sliceStarted = performance.now();
        }
      }
    }
  } finally {
    freeMpegDecoder(decoder);
  }
  if (peaks.totalSamples === 0 || sampleRate === 0) throw new UndecodableRecordingError('no MPEG audio could be decoded');
  if (!knownAudio) await assertUnprovenStreamStartsAsAudio(source, tagBytes);
  const durationSeconds = peaks.totalSamples / sampleRate;
  // A variable bitrate (or one that only began constant) is answered as its average over the whole stream.
  // Frames each within the standard's bounds average within them: bytes beyond what the highest bitrate
  // fills in the decoded duration are not audio (a frame-count header, junk after the last frame).
  const audioBytes = junkFrom === undefined ? (header?.audioBytes ?? source.size - audioStart) : junkFrom - audioStart;
  const average = (audioBytes * 8) / durationSeconds;
  const decoded: RecordingFacts = {
    durationSeconds: Math.round(durationSeconds * 1e6) / 1e6,
    bitrate: Math.round(Math.min(average, bounds.max)),
    sampleRate: header?.sampleRate ?? sampleRate,
    // mpg123 always decodes to two channels; only a frame header knows a mono stream.
    channels: header?.channels ?? (mono ? 1 : decodedChannels),
  };
  return { facts: settledFacts(header?.facts, decoded), peaks: peaks.finish(sampleRate) };
}

/**
 * A stream that never decoded a second cleanly (at most 2 errors) was never
 * known to be audio: a short one never reached the error floor a long one
 * must pass, and mpg123 decodes a few frames, often without an error, from a
 * few kilobytes of random bytes. Such a stream must start with a frame right
 * after the tag, as a real recording does; a damaged or padded end (errors
 * after its frames) is still its own.
 */
async function assertUnprovenStreamStartsAsAudio(source: Mp3Source, tagBytes: number): Promise<void> {
  if (!(await audioStartsWithFrame(source, tagBytes)))
    throw new UndecodableRecordingError('no clean second of audio, and no frame right after the tag: not an MPEG audio stream');
}

/**
 * The facts a recording keeps once decoded: its header's, unless they were
 * estimated and the decode shows the estimate wrong.
 */
function settledFacts(header: RecordingFacts | undefined, decoded: RecordingFacts): RecordingFacts {
  if (!header) return decoded;
  if (!header.estimated) return header;
  return Math.abs(header.durationSeconds - decoded.durationSeconds) > ESTIMATE_TOLERANCE_SECONDS ? decoded : header;
}

/** A Layer III frame holds 1152 samples in MPEG-1 (32, 44.1 and 48 kHz), 576 in MPEG-2 and 2.5 (the lower rates). */
function samplesPerFrame(sampleRate: number): number {
  return sampleRate >= 32_000 ? 1152 : 576;
}

function tooManyErrors(errors: number, samples: number, sampleRate: number): boolean {
  return errors > TOLERATED_ERRORS && errors > (samples / samplesPerFrame(sampleRate)) * MAX_ERRORS_PER_FRAME;
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
