import { stat } from 'node:fs/promises';
import type { Logger } from '../logger.js';
import { listStoredFiles, type DiskStore } from './disk-store.js';
import type { RecordingIndex } from './recording-index.js';
import { cacheKey, type RecordingMeta } from './recording-meta.js';

export interface ReconcileReport {
  kept: number;
  /** Index entries whose file was missing or had the wrong size. */
  droppedEntries: number;
  /** Files no index entry describes. */
  removedFiles: number;
}

// A replica sharing the index renames its file into place a moment before it
// indexes it: an unindexed file younger than this may be another replica's
// store in progress, so it is left alone.
const SHARED_ORPHAN_GRACE_MS = 5 * 60_000;
const STAT_CONCURRENCY = 64;

/** What reconciliation keeps of a file: a few numbers, not a whole fs.Stats per file. */
interface StoredFile {
  namespace: string;
  callId: string;
  size: number | undefined;
  mtimeMs: number;
}

async function statAll(disk: DiskStore, files: Array<{ namespace: string; callId: string }>): Promise<Map<string, StoredFile>> {
  const byKey = new Map<string, StoredFile>();
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(STAT_CONCURRENCY, files.length) }, async () => {
      while (next < files.length) {
        const { namespace, callId } = files[next++]!;
        const info = await stat(disk.pathFor(namespace, callId)).catch(() => undefined);
        byKey.set(cacheKey(namespace, callId), { namespace, callId, size: info?.size, mtimeMs: info?.mtimeMs ?? 0 });
      }
    }),
  );
  return byKey;
}

/**
 * Makes the index and the files agree, so that a crash at any moment leaves a
 * consistent cache: an entry without its file, or whose file has another size,
 * is dropped; a file without an entry is removed. (Temporary files are
 * cleared by DiskStore.init.) One directory listing and one stat per file, no
 * reads: 100,000 entries take seconds.
 */
export async function reconcileCache(
  index: RecordingIndex,
  disk: DiskStore,
  logger: Logger,
  now = Date.now(),
): Promise<{ entries: Array<[string, RecordingMeta]>; report: ReconcileReport }> {
  const onDisk = await statAll(disk, await listStoredFiles(disk.dir));

  const entries: Array<[string, RecordingMeta]> = [];
  const dropped: Array<{ key: string; file: { namespace: string; callId: string } | undefined }> = [];
  for await (const [key, meta] of index.entries()) {
    const file = onDisk.get(key);
    onDisk.delete(key);
    if (file?.size === meta.size && cacheKey(meta.namespace, meta.callId) === key) entries.push([key, meta]);
    else dropped.push({ key, file });
  }
  // Deleting while listing would shift the index's pages under the listing: drop afterwards.
  for (const { key, file } of dropped) {
    await index.delete(key);
    if (file) await disk.remove(file.namespace, file.callId);
  }

  let removedFiles = 0;
  for (const orphan of onDisk.values()) {
    if ((index.kind === 'redis' || index.shared) && orphan.mtimeMs > now - SHARED_ORPHAN_GRACE_MS) continue;
    await disk.remove(orphan.namespace, orphan.callId);
    removedFiles++;
  }
  const report = { kept: entries.length, droppedEntries: dropped.length, removedFiles };
  if (report.droppedEntries > 0 || removedFiles > 0) logger.warn(report, 'cache reconciled at start-up');
  return { entries, report };
}
