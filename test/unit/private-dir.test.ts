import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { makePrivateDir } from '../../src/private-files.js';

const root = mkdtempSync(path.join(tmpdir(), 'private-dir-'));
const readOnly = path.join(root, 'read-only');

/** A read-only tmpfs at `readOnly`, where the machine lets us mount one (root); false elsewhere. */
function mountReadOnly(): boolean {
  try {
    execFileSync('mkdir', ['-p', readOnly]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,ro', 'tmpfs', readOnly], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const mounted = mountReadOnly();

afterAll(() => {
  if (mounted) execFileSync('umount', [readOnly]);
  rmSync(root, { recursive: true, force: true });
});

describe('makePrivateDir', () => {
  test('creates the missing folders, closed to others', async () => {
    const dir = path.join(root, 'a', 'b', 'c');
    await makePrivateDir(dir);
    expect(statSync(dir).isDirectory()).toBe(true);
    expect(statSync(dir).mode & 0o007).toBe(0);
    await makePrivateDir(dir);
  });

  test.skipIf(!mounted)("on a read-only volume says EROFS, where Node's recursive mkdir says ENOENT", async () => {
    await expect(makePrivateDir(path.join(readOnly, 'recordings', 'ns'))).rejects.toMatchObject({ code: 'EROFS' });
  });

  test.skipIf(!existsSync('/proc/self'))(
    "under /proc, which takes no new folder, fails with ENOENT where Node's recursive mkdir never settles",
    async () => {
      const made = makePrivateDir(path.join('/proc', `rg-private-dir-${process.pid}`, 'cache'));
      const stuck = new Promise((resolve) => setTimeout(resolve, 5_000, 'still waiting after 5 s')).then((why) => {
        throw new Error(String(why));
      });
      await expect(Promise.race([made, stuck])).rejects.toMatchObject({ code: 'ENOENT' });
    },
  );

  test('a file where a folder should be is still ENOTDIR or EEXIST, as the file system says', async () => {
    const file = path.join(root, 'file');
    execFileSync('touch', [file]);
    await expect(makePrivateDir(path.join(file, 'x'))).rejects.toMatchObject({ code: expect.stringMatching(/^(ENOTDIR|EEXIST)$/) });
  });
});
