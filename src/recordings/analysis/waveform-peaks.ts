/**
 * Waveform peaks: the minimum and maximum sample of each run of
 * `samplesPerPixel` samples, all channels merged, as 8-bit values. A
 * recording's peaks are computed once at a fine resolution and kept beside it;
 * `peaks.json?points=N` merges them down without decoding again.
 */

/** Peaks at one resolution. */
export interface WaveformPeaks {
  sampleRate: number;
  /** Samples each min,max pair covers (the last pair may cover fewer). */
  samplesPerPixel: number;
  /** Samples (per channel) in the whole recording. */
  totalSamples: number;
  /** min,max pairs, -128..127. */
  data: Int8Array;
}

/** audiowaveform's JSON format, version 2, as peaks.js and wavesurfer.js read it. */
export interface AudiowaveformJson {
  version: 2;
  /** 1: the recording's channels are merged into one waveform. */
  channels: 1;
  sample_rate: number;
  samples_per_pixel: number;
  bits: 8;
  /** Points: min,max pairs in `data`. */
  length: number;
  data: number[];
}

/**
 * The fine resolution keeps between this many and twice this many pairs (a
 * recording with fewer samples keeps one pair per sample), so any `points`
 * up to this is merged from at least one pair per point.
 */
export const MIN_FINE_PAIRS = 10_000;

/** Builds fine peaks from decoded audio, one slice at a time, without knowing the length in advance. */
export class PeaksBuilder {
  #samplesPerPixel = 1;
  readonly #mins = new Float32Array(2 * MIN_FINE_PAIRS);
  readonly #maxs = new Float32Array(2 * MIN_FINE_PAIRS);
  #pairs = 0;
  #inPixel = 0;
  #min = Number.POSITIVE_INFINITY;
  #max = Number.NEGATIVE_INFINITY;
  #totalSamples = 0;

  get totalSamples(): number {
    return this.#totalSamples;
  }

  /** Adds `samples` samples of each channel (`channels[c][0..samples)`). */
  add(channels: readonly Float32Array[], samples: number): void {
    let start = 0;
    while (start < samples) {
      const end = Math.min(samples, start + this.#samplesPerPixel - this.#inPixel);
      let min = this.#min;
      let max = this.#max;
      for (const channel of channels) {
        for (let i = start; i < end; i++) {
          const value = channel[i]!;
          if (value < min) min = value;
          if (value > max) max = value;
        }
      }
      this.#min = min;
      this.#max = max;
      this.#inPixel += end - start;
      this.#totalSamples += end - start;
      start = end;
      if (this.#inPixel === this.#samplesPerPixel) this.#closePixel();
    }
  }

  /** The peaks of everything added. */
  finish(sampleRate: number): WaveformPeaks {
    if (this.#inPixel > 0) this.#closePixel();
    const data = new Int8Array(this.#pairs * 2);
    for (let i = 0; i < this.#pairs; i++) {
      data[2 * i] = toInt8(this.#mins[i]!);
      data[2 * i + 1] = toInt8(this.#maxs[i]!);
    }
    return { sampleRate, samplesPerPixel: this.#samplesPerPixel, totalSamples: this.#totalSamples, data };
  }

  #closePixel(): void {
    this.#mins[this.#pairs] = this.#min;
    this.#maxs[this.#pairs] = this.#max;
    this.#pairs++;
    this.#inPixel = 0;
    this.#min = Number.POSITIVE_INFINITY;
    this.#max = Number.NEGATIVE_INFINITY;
    if (this.#pairs === this.#mins.length) this.#halveResolution();
  }

  /** Full: each two neighbouring pairs become one, covering twice the samples. */
  #halveResolution(): void {
    const half = this.#pairs / 2;
    for (let i = 0; i < half; i++) {
      this.#mins[i] = Math.min(this.#mins[2 * i]!, this.#mins[2 * i + 1]!);
      this.#maxs[i] = Math.max(this.#maxs[2 * i]!, this.#maxs[2 * i + 1]!);
    }
    this.#pairs = half;
    this.#samplesPerPixel *= 2;
  }
}

/** audiowaveform's 8 bits: a sample in -1..1 scaled by 128, rounded down, clamped. */
function toInt8(sample: number): number {
  return Math.max(-128, Math.min(127, Math.floor(sample * 128)));
}

/**
 * `points` points merged from fine peaks (min of the mins, max of the maxes),
 * each covering an equal share of the recording; fewer when the recording has
 * fewer fine pairs than that. `samples_per_pixel` is that share rounded to an
 * integer, as the format wants one.
 */
export function peaksJson(peaks: WaveformPeaks, points: number): AudiowaveformJson {
  const pairs = peaks.data.length / 2;
  const length = Math.min(points, pairs);
  const data = new Array<number>(length * 2);
  for (let point = 0; point < length; point++) {
    const from = Math.floor((point * pairs) / length);
    const to = Math.floor(((point + 1) * pairs) / length);
    let min = 127;
    let max = -128;
    for (let pair = from; pair < to; pair++) {
      min = Math.min(min, peaks.data[2 * pair]!);
      max = Math.max(max, peaks.data[2 * pair + 1]!);
    }
    data[2 * point] = min;
    data[2 * point + 1] = max;
  }
  const samplesPerPixel = length === pairs ? peaks.samplesPerPixel : Math.max(1, Math.round(peaks.totalSamples / length));
  return { version: 2, channels: 1, sample_rate: peaks.sampleRate, samples_per_pixel: samplesPerPixel, bits: 8, length, data };
}

// The sidecar: a fixed header, then the int8 pairs. Little-endian throughout.
const MAGIC = Buffer.from('RGPEAKS1', 'latin1');
const HEADER_BYTES = 28;

/** The peaks as a compact sidecar file. */
export function encodePeaks(peaks: WaveformPeaks): Buffer {
  const file = Buffer.alloc(HEADER_BYTES + peaks.data.length);
  MAGIC.copy(file, 0);
  file.writeUInt32LE(peaks.sampleRate, 8);
  file.writeUInt32LE(peaks.samplesPerPixel, 12);
  file.writeDoubleLE(peaks.totalSamples, 16);
  file.writeUInt32LE(peaks.data.length / 2, 24);
  file.set(new Uint8Array(peaks.data.buffer, peaks.data.byteOffset, peaks.data.byteLength), HEADER_BYTES);
  return file;
}

/** The peaks of a sidecar file, or undefined when it is not one this version wrote whole. */
export function decodePeaks(file: Uint8Array): WaveformPeaks | undefined {
  if (file.length < HEADER_BYTES) return undefined;
  const bytes = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  if (!bytes.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  const sampleRate = bytes.readUInt32LE(8);
  const samplesPerPixel = bytes.readUInt32LE(12);
  const totalSamples = bytes.readDoubleLE(16);
  const pairs = bytes.readUInt32LE(24);
  const consistent =
    sampleRate > 0 &&
    samplesPerPixel > 0 &&
    pairs > 0 &&
    Number.isSafeInteger(totalSamples) &&
    pairs === Math.ceil(totalSamples / samplesPerPixel) &&
    bytes.length === HEADER_BYTES + pairs * 2;
  if (!consistent) return undefined;
  const data = new Int8Array(pairs * 2);
  data.set(new Int8Array(bytes.buffer, bytes.byteOffset + HEADER_BYTES, pairs * 2));
  return { sampleRate, samplesPerPixel, totalSamples, data };
}
