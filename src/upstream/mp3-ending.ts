import { frameHeaderAt } from '../recordings/analysis/mp3-header.js';

const ID3V1_BYTES = 128;
const APE_FOOTER_BYTES = 32;
const APE_HAS_HEADER = 0x8000_0000;
// The longest MPEG audio frame: Layer II at 160 kb/s and 8 kHz, padded.
const MAX_FRAME_BYTES = 2_881;

/** Enough of a body's end to hold its last two frames and the tags that may follow them (an APEv2 tag up to 56 KiB, an ID3v1 tag). */
export const MP3_ENDING_BYTES = 64 * 1024;

/**
 * Whether `tail`, the last bytes of a body, ends with whole MPEG audio
 * frames, then perhaps an APEv2 and an ID3v1 tag: two frames of one stream,
 * the second reaching exactly to the tags (or the end). A body cut off at
 * random ends inside its last frame; two frames make a match by chance in
 * the audio rare.
 */
export function endsWithWholeFrame(tail: Uint8Array): boolean {
  const audioEnd = endOfAudio(tail);
  const lowest = Math.max(0, audioEnd - 2 * MAX_FRAME_BYTES);
  for (let last = audioEnd - 4; last >= lowest; last--) {
    const frame = tail[last] === 0xff ? frameHeaderAt(tail, last) : undefined;
    if (frame?.length !== audioEnd - last) continue;
    for (let previous = last - 4; previous >= lowest; previous--) {
      const before = tail[previous] === 0xff ? frameHeaderAt(tail, previous) : undefined;
      if (before?.length === last - previous && before.stream === frame.stream) return true;
    }
  }
  return false;
}

/** Where the audio of `tail` ends: before an ID3v1 tag at its end, and an APEv2 tag before that (or at the end). */
function endOfAudio(tail: Uint8Array): number {
  let end = tail.length;
  if (end >= ID3V1_BYTES && ascii(tail, end - ID3V1_BYTES, 3) === 'TAG') end -= ID3V1_BYTES;
  const footer = end - APE_FOOTER_BYTES;
  if (footer >= 0 && ascii(tail, footer, 8) === 'APETAGEX') {
    const view = new DataView(tail.buffer, tail.byteOffset + footer, APE_FOOTER_BYTES);
    // The size counts the items and the footer; a header, when the flags say there is one, comes on top.
    const size = view.getUint32(12, true) + (view.getUint32(20, true) & APE_HAS_HEADER ? APE_FOOTER_BYTES : 0);
    if (size >= APE_FOOTER_BYTES && size <= end) end -= size;
  }
  return end;
}

function ascii(bytes: Uint8Array, at: number, length: number): string {
  return String.fromCharCode(...bytes.subarray(at, at + length));
}

/** The last {@link MP3_ENDING_BYTES} of a body, kept as it streams by. */
export class BodyEnding {
  readonly #chunks: Uint8Array[] = [];
  #bytes = 0;

  add(chunk: Uint8Array): void {
    this.#chunks.push(chunk);
    this.#bytes += chunk.byteLength;
    while (this.#bytes - this.#chunks[0]!.byteLength >= MP3_ENDING_BYTES) this.#bytes -= this.#chunks.shift()!.byteLength;
  }

  bytes(): Uint8Array {
    const kept = Buffer.concat(this.#chunks);
    return kept.subarray(Math.max(0, kept.length - MP3_ENDING_BYTES));
  }
}
