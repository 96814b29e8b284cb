import type { CachedRecording, RecordingCache } from '../../cache/recording-cache.js';
import type { Mp3Source } from './mp3-header.js';

/** A stored recording's bytes, open for one analysis. */
export interface OpenedRecording extends Mp3Source {
  /** Frees the file or pin behind it; called once the analysis is done. */
  release(): void;
}

/** The stored recording went away (purged, evicted, replaced) before it could be analysed. */
export class RecordingGoneError extends Error {
  override readonly name = 'RecordingGoneError';
}

/**
 * Opens stored recordings for analysis, without counting a use: a
 * recording analysed in the background is not made more recently used
 * than one a client asked for since, so eviction order is the clients'
 * alone. A small one is read whole (from memory, else from its file,
 * checked against its sha256 as any hit is, and not promoted to memory). A
 * large one is opened afresh for each read and closed again, so an
 * analysis never holds a file or an eviction pin for the seconds it takes:
 * if the recording is evicted or purged meanwhile, the next read finds it
 * gone.
 */
export function storedRecordingOpener(
  cache: Pick<RecordingCache, 'memoryEntryMaxBytes' | 'holds' | 'peekBody' | 'pin' | 'openFile' | 'readVerified'>,
) {
  return async function openStored(entry: CachedRecording): Promise<OpenedRecording | undefined> {
    if (!cache.holds(entry)) return undefined;
    if (entry.meta.size > cache.memoryEntryMaxBytes) return largeFileSource(cache, entry);
    // A file that cannot be read is as good as gone, as it is to a request (which fetches it again).
    const body = cache.peekBody(entry) ?? (await readWhole(cache, entry).catch(() => undefined));
    return body && bodySource(body);
  };
}

async function readWhole(
  cache: Pick<RecordingCache, 'pin' | 'openFile' | 'readVerified'>,
  entry: CachedRecording,
): Promise<Buffer | undefined> {
  const unpin = cache.pin(entry.key);
  try {
    const file = await cache.openFile(entry);
    if (!file) return undefined;
    try {
      return await cache.readVerified(entry, file, false);
    } finally {
      await file.close();
    }
  } finally {
    unpin();
  }
}

function largeFileSource(cache: Pick<RecordingCache, 'pin' | 'openFile'>, entry: CachedRecording): OpenedRecording {
  return {
    size: entry.meta.size,
    async readAt(offset, maxBytes) {
      const unpin = cache.pin(entry.key);
      try {
        const file = await cache.openFile(entry);
        if (!file) throw new RecordingGoneError(`${entry.key} is no longer stored`);
        try {
          const buffer = Buffer.allocUnsafe(maxBytes);
          const bytesRead = await file.read(buffer, offset);
          return bytesRead === 0 ? null : buffer.subarray(0, bytesRead);
        } finally {
          await file.close();
        }
      } finally {
        unpin();
      }
    },
    release() {},
  };
}

/** A recording held whole in memory, as an {@link OpenedRecording}. */
export function bodySource(body: Uint8Array): OpenedRecording {
  return {
    size: body.length,
    readAt: async (offset, maxBytes) => (offset >= body.length ? null : body.subarray(offset, offset + maxBytes)),
    release() {},
  };
}
