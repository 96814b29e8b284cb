/**
 * What a start leaves of other processes' temporary folders on a cache
 * directory shared with other hosts: real folders and files, real times.
 */
import { existsSync } from 'node:fs';
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createDiskStore } from '../src/cache/disk-store.js';
import { makeTempDir, removeDir } from '../dev/gateway-harness.js';

let dir: string;

afterEach(async () => {
  await removeDir(dir);
});

const TWO_HOURS_AGO = new Date(Date.now() - 2 * 60 * 60_000);

/** A temp folder of a process on another host, with one partial download in it; its times set as given. */
async function foreignTemp(name: string, times: { folder: Date; file?: Date }): Promise<string> {
  const folder = path.join(dir, 'tmp', name);
  await mkdir(folder, { recursive: true });
  const file = path.join(folder, 'download.part');
  await writeFile(file, Buffer.alloc(1024, 7));
  if (times.file) await utimes(file, times.file, times.file);
  // Last: writing the file moved the folder's time.
  await utimes(folder, times.folder, times.folder);
  return folder;
}

describe('a start and the temp folders of other hosts', () => {
  it('keeps one whose folder is old but whose download is still being written, and removes one where nothing changed for an hour', async () => {
    dir = await makeTempDir('rg-temp-');
    const writing = await foreignTemp('otherhost-789-cccc3333', { folder: TWO_HOURS_AGO });
    const abandoned = await foreignTemp('otherhost-790-dddd4444', { folder: TWO_HOURS_AGO, file: TWO_HOURS_AGO });
    const fresh = await foreignTemp('otherhost-791-eeee5555', { folder: new Date() });

    await createDiskStore(dir).init();

    expect(existsSync(path.join(writing, 'download.part'))).toBe(true);
    expect(existsSync(abandoned)).toBe(false);
    expect(existsSync(path.join(fresh, 'download.part'))).toBe(true);
  });
});
