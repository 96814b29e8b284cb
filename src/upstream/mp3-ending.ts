import { frameHeaderAt } from '../recordings/analysis/mp3-header.js';

const ID3V1_BYTES = 128;
/**
 * Enough of a body's end to hold its last two frames (the longest MPEG audio
 * frame, Layer II at 160 kb/s and 8 kHz, is 2,880 bytes) and an ID3v1 tag.
 */
export const MP3_ENDING_BYTES = 2 * 2_880 + ID3V1_BYTES;

/**
 * Whether `tail`, the last bytes of a body, ends with whole MPEG audio
 * frames (then perhaps an ID3v1 tag): two frames of one stream, the second
 * reaching exactly to the end. A body cut off at random ends inside its last
 * frame; two frames make a match by chance in the audio rare.
 */
export function endsWithWholeFrame(tail: Uint8Array): boolean {
  const withId3v1 =
    tail.length >= ID3V1_BYTES && tail[tail.length - 128] === 0x54 && tail[tail.length - 127] === 0x41 && tail[tail.length - 126] === 0x47; // "TAG"
  const audioEnd = withId3v1 ? tail.length - ID3V1_BYTES : tail.length;
  for (let last = audioEnd - 4; last >= 0; last--) {
    const frame = tail[last] === 0xff ? frameHeaderAt(tail, last) : undefined;
    if (frame?.length !== audioEnd - last) continue;
    for (let previous = last - 4; previous >= 0; previous--) {
      const before = tail[previous] === 0xff ? frameHeaderAt(tail, previous) : undefined;
      if (before?.length === last - previous && before.stream === frame.stream) return true;
    }
  }
  return false;
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
