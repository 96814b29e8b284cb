import type { Logger } from '../../logger.js';
import { listCacheFiles, removeFile, sidecarPath, type DiskStore } from '../disk-store.js';
import { DamagedFileError } from '../stored-file.js';

export interface UnreadableSweepOptions {
  disk: DiskStore;
  /** Removes a recording from every tier (RecordingCache.purge). */
  purge(namespace: string, callId: string): Promise<unknown>;
  logger: Logger;
  signal: AbortSignal;
}

/**
 * With `cache.encryption`, removes at start-up (in the background) every
 * stored file the keys cannot open: one stored in the clear before
 * encryption was turned on, or one under a key no longer configured. They
 * could never be served; this way no recording stays on disk in the clear
 * until someone happens to ask for it. Of a recording only the header is
 * read (a chunk that fails authentication is caught when read, or by
 * `cache verify`). Sidecars (waveform peaks, derived from the audio) are
 * small and decrypted whole; one that fails goes on its own, since it is
 * computed again on demand from its recording.
 * Resolves with the number of files removed.
 */
export async function removeUnreadableFiles(options: UnreadableSweepOptions): Promise<number> {
  const { disk, logger, signal } = options;
  const files = await listCacheFiles(disk.dir);
  let recordings = 0;
  for (const { namespace, callId } of files.recordings) {
    if (signal.aborted) break;
    try {
      const file = await disk.openRecording(namespace, callId);
      await file?.close();
    } catch (error) {
      if (!(error instanceof DamagedFileError)) continue;
      await options.purge(namespace, callId).catch(() => {});
      recordings++;
    }
  }
  let sidecars = 0;
  for (const { namespace, callId, kind } of files.sidecars) {
    if (signal.aborted) break;
    try {
      await disk.readSidecar(namespace, callId, kind);
    } catch (error) {
      if (!(error instanceof DamagedFileError)) continue;
      await removeFile(sidecarPath(disk.dir, namespace, callId, kind)).catch(() => {});
      sidecars++;
    }
  }
  if (recordings + sidecars > 0) {
    logger.warn(
      { removed: recordings + sidecars, recordings, sidecars },
      'removed cached files the encryption keys cannot read (stored in the clear, or under a key not configured)',
    );
  }
  return recordings + sidecars;
}
