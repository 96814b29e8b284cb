import { stat } from 'node:fs/promises';
import { eachAtMost } from '../each-at-most.js';
import type { Logger } from '../logger.js';
import { FILE_REMOVALS_AT_ONCE, listCacheFiles, removeFile, sidecarPath, type DiskStore } from './disk-store.js';
import { deleteEntries, type RecordingIndex } from './recording-index.js';
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
  const files = await listCacheFiles(disk.dir);
  for (const file of files.recordings) onDisk.set(cacheKey(file.namespace, file.callId), file);
  const listed = new Set(onDisk.keys());

  const entries: Array<[string, RecordingMeta]> = [];
  const dropped: string[] = [];
  // Dropped though their file is there: an entry that describes another recording than its key names.
  const droppedFiles: Array<{ namespace: string; callId: string }> = [];
  for await (const [key, meta] of index.entries()) {
    const file = onDisk.get(key);
    onDisk.delete(key);
    if (file && cacheKey(meta.namespace, meta.callId) === key) {
      entries.push([key, meta]);
      continue;
    }
    dropped.push(key);
    if (file) droppedFiles.push(file);
  }
  // Deleting while listing would shift the index's pages under the listing: drop afterwards.
  // The entries first, then their files. An entry whose file is gone has nothing
  // left to remove here (its sidecars go with the orphan sidecars, below): asking
  // the disk anyway cost 80 µs per entry, 8 s for 100,000 files deleted by hand.
  await deleteEntries(index, dropped);
  await eachAtMost(droppedFiles, FILE_REMOVALS_AT_ONCE, (file) => disk.remove(file.namespace, file.callId));

  let removedFiles = 0;
  const shared = index.shared === true;
  await eachAtMost(onDisk.values(), FILE_REMOVALS_AT_ONCE, async (orphan) => {
    if (shared && (await youngerThanGrace(disk.pathFor(orphan.namespace, orphan.callId), now))) return;
    await disk.remove(orphan.namespace, orphan.callId);
    removedFiles++;
  });
  await removeOrphanSidecars(disk, files, listed, shared, now);
  const report = { kept: entries.length, droppedEntries: dropped.length, removedFiles };
  if (report.droppedEntries > 0 || removedFiles > 0) logger.warn(report, 'cache reconciled at start-up');
  return { entries, report };
}

/**
 * A sidecar whose recording was not on disk when the recordings were listed
 * (a crash or a purge between the two) is removed, and so is a sidecar write
 * a crash interrupted; on a shared volume, only once old enough not to be
 * another replica's store or write in progress. Sidecars of the recordings
 * removed above went with them (DiskStore.remove).
 */
async function removeOrphanSidecars(
  disk: DiskStore,
  files: Pick<Awaited<ReturnType<typeof listCacheFiles>>, 'sidecars' | 'sidecarStrays'>,
  recordings: ReadonlySet<string>,
  shared: boolean,
  now: number,
): Promise<void> {
  const orphans = files.sidecars
    .filter(({ namespace, callId }) => !recordings.has(cacheKey(namespace, callId)))
    .map(({ namespace, callId, kind }) => sidecarPath(disk.dir, namespace, callId, kind));
  await eachAtMost([...orphans, ...files.sidecarStrays], FILE_REMOVALS_AT_ONCE, async (file) => {
    if (shared && (await youngerThanGrace(file, now))) return;
    await removeFile(file);
  });
}

/** On a shared volume a young file may be another replica's store or write in progress. */
async function youngerThanGrace(file: string, now: number): Promise<boolean> {
  const mtimeMs = await stat(file).then(
    (info) => info.mtimeMs,
    () => 0,
  );
  return mtimeMs > now - SHARED_ORPHAN_GRACE_MS;
}
