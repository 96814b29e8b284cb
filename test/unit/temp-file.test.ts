import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { createTempFile, type TempFile } from '../../src/cache/temp-file.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'rg-temp-file-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** This process's open descriptors on files under `dir` (Linux /proc). */
async function descriptorsUnder(root: string): Promise<string[]> {
  const targets = await Promise.all((await readdir('/proc/self/fd')).map((fd) => readlink(path.join('/proc/self/fd', fd)).catch(() => '')));
  return targets.filter((target) => target.startsWith(root));
}

async function written(bytes: string): Promise<TempFile> {
  const file = await createTempFile(dir);
  await file.write(Buffer.from(bytes), 0);
  await file.sync();
  return file;
}

describe('a temporary recording file', () => {
  test('commit moves every byte to the final path (creating its folder) and leaves no temporary name behind', async () => {
    const file = await written('ID3 whole recording');
    const finalPath = path.join(dir, 'recordings', 'ns', '7.mp3');
    await file.commit(finalPath);
    await file.close();
    expect(await readFile(finalPath, 'utf8')).toBe('ID3 whole recording');
    expect(existsSync(file.path)).toBe(false);
    expect(await descriptorsUnder(dir)).toEqual([]);
  });

  test('readers keep reading through it after it is committed, until it is closed', async () => {
    const file = await written('ID3 readable');
    await file.commit(path.join(dir, 'final.mp3'));
    const buffer = Buffer.alloc(8);
    expect(await file.read(buffer, 4)).toBe(8);
    expect(buffer.toString()).toBe('readable');
    await file.close();
    await expect(file.read(buffer, 0)).rejects.toThrow();
  });

  test('discard removes the file at once, while its descriptor stays usable for readers until close', async () => {
    const file = await written('ID3 partial');
    await file.discard();
    expect(existsSync(file.path)).toBe(false);
    const buffer = Buffer.alloc(3);
    await file.read(buffer, 0);
    expect(buffer.toString()).toBe('ID3');
    await file.close();
    expect(await descriptorsUnder(dir)).toEqual([]);
  });

  test('closing a file nobody committed or discarded removes it, so no path can leave one behind', async () => {
    const file = await written('ID3 forgotten');
    await file.close();
    expect(await readdir(dir)).toEqual([]);
    expect(await descriptorsUnder(dir)).toEqual([]);
  });

  test('discard after a commit leaves the stored recording alone; a second commit is refused', async () => {
    const file = await written('ID3 kept');
    const finalPath = path.join(dir, 'kept.mp3');
    await file.commit(finalPath);
    await file.discard();
    await expect(file.commit(path.join(dir, 'again.mp3'))).rejects.toThrow('already committed');
    await file.close();
    expect(await readFile(finalPath, 'utf8')).toBe('ID3 kept');
  });

  test('discard and close may be called again and in any order', async () => {
    const file = await written('ID3');
    await Promise.all([file.close(), file.discard(), file.close()]);
    await file.discard();
    await expect(file.commit(path.join(dir, 'late.mp3'))).rejects.toThrow('already discarded');
    expect(await readdir(dir)).toEqual([]);
    expect(await descriptorsUnder(dir)).toEqual([]);
  });
});
