import { randomBytes } from 'node:crypto';
import { mkdir, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sha256Hex } from '../sha256.js';

/*
 * A one-time grant for the admin routes, left in the cache directory by a
 * process that can write there (the CLI): an empty file named by the sha256
 * of a random token, which the process then presents. Such a process can
 * delete the cached files anyway, so the grant gives it nothing more.
 */

const GRANTS_DIR = 'admin-grants';
const GRANT_PREFIX = 'local_';
/** A grant is made right before its one request; an older one is stale. */
const GRANT_MAX_AGE_MS = 60_000;

/**
 * Leaves a one-time grant for the admin routes in the cache directory.
 * @returns the token to send as `Authorization: Bearer`, and a function that removes the grant if it was not used.
 */
export async function createLocalGrant(cacheDir: string): Promise<{ token: string; revoke(): Promise<void> }> {
  const token = `${GRANT_PREFIX}${randomBytes(32).toString('base64url')}`;
  const dir = path.join(cacheDir, GRANTS_DIR);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, sha256Hex(token));
  await writeFile(file, '', { flag: 'wx', mode: 0o600 });
  return { token, revoke: () => rm(file, { force: true }) };
}

/** True when `token` names a fresh grant in the cache directory; the grant is used up. */
export async function redeemLocalGrant(cacheDir: string, token: string): Promise<boolean> {
  if (!token.startsWith(GRANT_PREFIX)) return false;
  const file = path.join(cacheDir, GRANTS_DIR, sha256Hex(token));
  try {
    const info = await stat(file);
    const fresh = info.isFile() && Date.now() - info.mtimeMs < GRANT_MAX_AGE_MS;
    // Of two requests with one token, only the one whose unlink succeeds gets in.
    await unlink(file);
    return fresh;
  } catch {
    return false;
  }
}
