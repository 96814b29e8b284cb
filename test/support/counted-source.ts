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
