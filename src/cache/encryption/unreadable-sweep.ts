import type { Logger } from '../../logger.js';
import { listStoredFiles, type DiskStore } from '../disk-store.js';
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
 * until someone happens to ask for it. Only headers are read (a chunk that
 * fails authentication is caught when read, or by `cache verify`).
 * Resolves with the number removed.
 */
export async function removeUnreadableFiles(options: UnreadableSweepOptions): Promise<number> {
  const { disk, logger, signal } = options;
  let removed = 0;
  for (const { namespace, callId } of await listStoredFiles(disk.dir)) {
    if (signal.aborted) break;
    try {
      const file = await disk.openRecording(namespace, callId);
      await file?.close();
    } catch (error) {
      if (!(error instanceof DamagedFileError)) continue;
      await options.purge(namespace, callId).catch(() => {});
      removed++;
    }
  }
  if (removed > 0) {
    logger.warn({ removed }, 'removed cached files the encryption keys cannot read (stored in the clear, or under a key not configured)');
  }
  return removed;
}
