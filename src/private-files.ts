import { chmodSync, existsSync, lstatSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';

/*
 * Recordings are personal data: what the gateway writes about them (the
 * cache, the audit trail) is for its own user and that user's group (an
 * operator group may read it), never for other local users. The modes are
 * given when a file or directory is created, so the umask can take more bits
 * away but never leave any to others.
 */

/** Directories the gateway creates for personal data: `rwxr-x---`. */
export const PRIVATE_DIR_MODE = 0o750;
/** Files the gateway creates for personal data: `rw-r-----`. */
export const PRIVATE_FILE_MODE = 0o640;

const OTHER_BITS = 0o007;

/**
 * Takes the bits for others off a file or directory an older version created
 * (0644 or 0755 under umask 022), adding none and keeping the rest (group
 * access, setgid). Best effort, for start-up: a path that is missing, a
 * symbolic link (the operator's choice) or not this user's stays as it is.
 */
export function closeToOthers(file: string): void {
  try {
    const info = lstatSync(file);
    if (!info.isSymbolicLink() && info.mode & OTHER_BITS) chmodSync(file, info.mode & 0o7777 & ~OTHER_BITS);
  } catch {
    // Missing, or owned by another user (EPERM): the gateway works as before.
  }
}

/**
 * `mkdir -p` with PRIVATE_DIR_MODE. The first missing folder is created on
 * its own, so a file system that refuses it says why: Node's recursive mkdir
 * says ENOENT for EROFS on a read-only volume (nodejs/node#47098), and under
 * a folder that takes no new entries (`/proc`) it never settles, retrying
 * the parent and the child forever. The folders under it are then made by
 * the recursive mkdir.
 */
export async function makePrivateDir(dir: string): Promise<void> {
  let missing = path.resolve(dir);
  while (path.dirname(missing) !== missing && !existsSync(path.dirname(missing))) missing = path.dirname(missing);
  if (!existsSync(missing)) {
    await mkdir(missing, PRIVATE_DIR_MODE).catch((refused: NodeJS.ErrnoException) => {
      // Made meanwhile, by another process or call.
      if (refused.code !== 'EEXIST') throw refused;
    });
  }
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
}
