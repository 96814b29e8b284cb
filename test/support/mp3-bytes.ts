import type { Mp3Source } from '../../src/recordings/analysis/mp3-header.js';
import { bodySource } from '../../src/recordings/analysis/stored-recording-source.js';

/** An MP3 source over `bytes` that counts the bytes read from it. */
export function countedSource(bytes: Buffer): Mp3Source & { read: number } {
  const body = bodySource(bytes);
  const source = {
    size: bytes.length,
    read: 0,
    async readAt(offset: number, maxBytes: number) {
      const chunk = await body.readAt(offset, maxBytes);
      source.read += chunk?.length ?? 0;
      return chunk;
    },
  };
  return source;
}

/** An ID3v2.3 tag of `size` bytes in all (header included), its size syncsafe. */
export function id3v2Tag(size: number): Buffer {
  const tag = Buffer.alloc(size);
  tag.write('ID3\x03\x00\x00', 0, 'latin1');
  const body = size - 10;
  tag.set([(body >> 21) & 0x7f, (body >> 14) & 0x7f, (body >> 7) & 0x7f, body & 0x7f], 6);
  return tag;
}
