import { createHash, type Hash } from 'node:crypto';
import { DamagedFileError, type StoredFile } from './stored-file.js';

/**
 * `file`, with the reads that go through it in order, from its first byte to
 * its last, checked against `sha256`: the read that would hand out the last
 * bytes of a copy that is not the recording fails instead (DamagedFileError
 * `digest`), so a client streaming it gets a transfer cut short, never the
 * damaged copy whole under the recording's ETag. `onIntact` runs when a
 * read-through matched. Reads out of order (a range, a seek) go unchecked.
 */
export function verifyingReadThrough(file: StoredFile, sha256: string, onIntact: () => void): StoredFile {
  let hash: Hash | undefined = createHash('sha256');
  let next = 0;
  return {
    size: file.size,
    changedAtMs: file.changedAtMs,
    async read(buffer, position) {
      const bytesRead = await file.read(buffer, position);
      if (!hash) return bytesRead;
      if (position !== next) {
        hash = undefined;
        return bytesRead;
      }
      hash.update(buffer.subarray(0, bytesRead));
      next += bytesRead;
      if (next < file.size) return bytesRead;
      const digest = hash.digest('hex');
      hash = undefined;
      if (digest !== sha256) throw new DamagedFileError('digest', "its bytes do not have the recording's sha256");
      onIntact();
      return bytesRead;
    },
    readAll: () => file.readAll(),
    close: () => file.close(),
  };
}
