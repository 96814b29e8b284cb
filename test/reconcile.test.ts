/**
 * Start-up reconciliation on a real sqlite index and real files, with more
 * dropped entries and orphans than it removes at once.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createDiskStore, sidecarPath } from '../src/cache/disk-store.js';
import type { RecordingIndex } from '../src/cache/recording-index.js';
import { reconcileCache } from '../src/cache/reconcile.js';
import { cacheKey } from '../src/cache/recording-meta.js';
import { createSqliteIndex } from '../src/cache/sqlite-index.js';
import { silentLogger } from '../src/logger.js';
import { makeTempDir, removeDir } from '../dev/gateway-harness.js';
import { sampleMeta } from './recording-index.contract.js';

const NAMESPACE = 'ns-0123456789abcdef';
const ids = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => String(from + i));

let dir: string;
let index: RecordingIndex | undefined;

afterEach(async () => {
  await index?.close();
  index = undefined;
  await removeDir(dir);
});

describe('start-up reconciliation', () => {
  it('drops every entry whose file is gone and removes every file and sidecar no entry names, however many', async () => {
    dir = await makeTempDir('rg-reconcile-');
    const disk = createDiskStore(dir);
    await disk.init();
    index = createSqliteIndex(dir);
    const write = async (callId: string) => {
      const file = disk.pathFor(NAMESPACE, callId);
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, Buffer.alloc(64, Number(callId)));
    };
    // 1-60 indexed; the files of 1-40 gone; 100-139 on disk, never indexed; sidecars for some of each.
    for (const callId of ids(1, 60)) {
      await index.set(cacheKey(NAMESPACE, callId), sampleMeta(callId, { namespace: NAMESPACE, size: 64 }));
      if (Number(callId) > 40) await write(callId);
    }
    for (const callId of ids(100, 139)) await write(callId);
    for (const callId of ['1', '2', '41', '100', '101', '200']) await disk.writeSidecar(NAMESPACE, callId, 'peaks', Buffer.from('[]'));

    // Counted, not faked: every removal still reaches the real disk.
    const removed: string[] = [];
    const counting = {
      ...disk,
      remove(namespace: string, callId: string) {
        removed.push(callId);
        return disk.remove(namespace, callId);
      },
    };
    const { entries, report } = await reconcileCache(index, counting, silentLogger());

    expect(report).toEqual({ kept: 20, droppedEntries: 40, removedFiles: 40 });
    expect(entries.map(([key]) => key).sort()).toEqual(
      ids(41, 60)
        .map((callId) => cacheKey(NAMESPACE, callId))
        .sort(),
    );
    const listed: string[] = [];
    for await (const [key] of index.entries()) listed.push(key);
    expect(listed.sort()).toEqual(
      ids(41, 60)
        .map((callId) => cacheKey(NAMESPACE, callId))
        .sort(),
    );
    const files = await readdir(path.dirname(disk.pathFor(NAMESPACE, '41')));
    expect(files.sort()).toEqual(
      ids(41, 60)
        .map((callId) => `${callId}.mp3`)
        .sort(),
    );
    const sidecars = await readdir(path.dirname(sidecarPath(dir, NAMESPACE, '41', 'peaks')));
    expect(sidecars).toEqual(['41.peaks']);
    // Only files that were there were asked to go: an entry whose file is gone costs the disk nothing.
    expect(removed.sort()).toEqual(ids(100, 139).sort());
  });

  it('drops an entry that describes another recording than its key names, and removes the file under that key', async () => {
    dir = await makeTempDir('rg-reconcile-');
    const disk = createDiskStore(dir);
    await disk.init();
    index = createSqliteIndex(dir);
    for (const callId of ['7', '8']) {
      const file = disk.pathFor(NAMESPACE, callId);
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, Buffer.alloc(64, 1));
    }
    await index.set(cacheKey(NAMESPACE, '7'), sampleMeta('7', { namespace: NAMESPACE, size: 64 }));
    await index.set(cacheKey(NAMESPACE, '8'), sampleMeta('9', { namespace: NAMESPACE, size: 64 }));

    const { entries, report } = await reconcileCache(index, disk, silentLogger());

    expect(report).toEqual({ kept: 1, droppedEntries: 1, removedFiles: 0 });
    expect(entries.map(([key]) => key)).toEqual([cacheKey(NAMESPACE, '7')]);
    expect(await index.get(cacheKey(NAMESPACE, '8'))).toBeUndefined();
    expect(await readdir(path.dirname(disk.pathFor(NAMESPACE, '7')))).toEqual(['7.mp3']);
  });
});
