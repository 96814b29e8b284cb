import { statfs } from 'node:fs/promises';

/** What sqlite and the file system say when the disk has no room left. */
const DISK_FULL_CODES = new Set(['SQLITE_FULL', 'ENOSPC', 'EDQUOT']);

/** True when `error`, or an error it was caused by, says the disk is full. */
export function isDiskFull(error: unknown): boolean {
  for (let cause = error, depth = 0; cause instanceof Error && depth < 8; cause = cause.cause, depth++) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && DISK_FULL_CODES.has(code)) return true;
  }
  return false;
}

/**
 * Writes a purge mark (see `PurgeMarks`), which must come before the index
 * entries go so that no download under way is stored after the purge. On a
 * full disk the sqlite index cannot grow to take it, and a full disk is when
 * operators purge: the files being purged, which go anyway, are removed
 * first (`freeRoom`) and the mark is written again. Their index entries stay
 * until the purge removes them; an entry without its file is never served
 * and is dropped at the next start, so a crash in between serves nothing.
 */
export async function markFreeingRoom(mark: () => Promise<void>, freeRoom: () => Promise<void>): Promise<void> {
  try {
    await mark();
  } catch (error) {
    if (!isDiskFull(error)) throw error;
    await freeRoom();
    await mark();
  }
}

/** True when the volume holding `dir` has no room left for this process; false when it cannot tell. */
export async function isVolumeFull(dir: string): Promise<boolean> {
  return statfs(dir).then(
    ({ bavail }) => bavail === 0,
    () => false,
  );
}
