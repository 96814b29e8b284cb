import { stat } from 'node:fs/promises';
import type { Logger } from '../logger.js';
import { listStoredFiles, type DiskStore } from './disk-store.js';
import type { RecordingIndex } from './recording-index.js';
import { cacheKey, type RecordingMeta } from './recording-meta.js';

export interface ReconcileReport {
  kept: number;
  /** Index entries whose file was missing. */
  droppedEntries: number;
  /** Files no index entry describes. */
  removedFiles: number;
}

// A replica sharing the index renames its file into place a moment before it
// indexes it: an unindexed file younger than this may be another replica's
// store in progress, so it is left alone.
const SHARED_ORPHAN_GRACE_MS = 5 * 60_000;

/**
 * Makes the index and the files agree, so that a crash at any moment leaves a
 * consistent cache: an entry without its file is dropped; a file without an
 * entry is removed. (Temporary files are cleared by DiskStore.init.) One
 * directory listing and no per-file stat (a file is renamed into place only
 * once whole, and its size is checked when it is opened): 100,000 entries
 * load in about a second.
 */
export async function reconcileCache(
  index: RecordingIndex,
  disk: DiskStore,
  logger: Logger,
  now = Date.now(),
): Promise<{ entries: Array<[string, RecordingMeta]>; report: ReconcileReport }> {
  const onDisk = new Map<string, { namespace: string; callId: string }>();
  for (const file of await listStoredFiles(disk.dir)) onDisk.set(cacheKey(file.namespace, file.callId), file);

  const entries: Array<[string, RecordingMeta]> = [];
  const dropped: string[] = [];
  for await (const [key, meta] of index.entries()) {
    if (onDisk.delete(key) && cacheKey(meta.namespace, meta.callId) === key) entries.push([key, meta]);
    else dropped.push(key);
  }
  // Deleting while listing would shift the index's pages under the listing: drop afterwards.
  for (const key of dropped) {
    await index.delete(key);
    const [namespace = '', callId = ''] = key.split('/');
    await disk.remove(namespace, callId);
  }

  let removedFiles = 0;
  const shared = index.kind === 'redis' || index.shared === true;
  for (const orphan of onDisk.values()) {
    if (shared) {
      const mtimeMs = await stat(disk.pathFor(orphan.namespace, orphan.callId)).then(
        (info) => info.mtimeMs,
        () => 0,
      );
      if (mtimeMs > now - SHARED_ORPHAN_GRACE_MS) continue;
    }
    await disk.remove(orphan.namespace, orphan.callId);
    removedFiles++;
  }
  const report = { kept: entries.length, droppedEntries: dropped.length, removedFiles };
  if (report.droppedEntries > 0 || removedFiles > 0) logger.warn(report, 'cache reconciled at start-up');
  return { entries, report };
}
