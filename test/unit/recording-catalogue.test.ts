import { describe, expect, test } from 'vitest';
import { RecordingCatalogue } from '../../src/cache/recording-catalogue.js';
import type { RecordingMeta } from '../../src/cache/recording-meta.js';

function meta(callId: string, size: number, fetchedAt = 0): RecordingMeta {
  return { namespace: 'ns', callId, size, sha256: '0'.repeat(64), contentType: 'audio/mpeg', fetchedAt };
}

/** A catalogue holding `sizes` on disk, added in order (the first is the least recently used). */
function catalogueWith(sizes: number[], limits = { maxMemoryBytes: 8000, maxDiskBytes: 1000 }): RecordingCatalogue {
  const catalogue = new RecordingCatalogue(limits);
  sizes.forEach((size, i) => catalogue.add(`ns/${i + 1}`, meta(String(i + 1), size), true));
  return catalogue;
}

describe('hits', () => {
  test('a recording held in memory is a memory hit with its body; one on disk only is a disk hit', () => {
    const catalogue = catalogueWith([100, 100]);
    const body = Buffer.alloc(100, 1);
    catalogue.keepBody(catalogue.peek('ns/1')!, body);
    expect(catalogue.lookup('ns/1')).toMatchObject({ tier: 'memory', body });
    expect(catalogue.lookup('ns/2')).toMatchObject({ tier: 'disk', entry: { key: 'ns/2', onDisk: true } });
    expect(catalogue.lookup('ns/3')).toBeUndefined();
  });

  test('only bodies up to 1/8 of the memory tier are kept in memory, so one long call cannot flush the short ones', () => {
    const catalogue = catalogueWith([1000, 1001], { maxMemoryBytes: 8000, maxDiskBytes: 10_000 });
    expect(catalogue.memoryEntryMaxBytes).toBe(1000);
    catalogue.keepBody(catalogue.peek('ns/1')!, Buffer.alloc(1000));
    catalogue.keepBody(catalogue.peek('ns/2')!, Buffer.alloc(1001));
    expect(catalogue.lookup('ns/1')?.tier).toBe('memory');
    expect(catalogue.lookup('ns/2')?.tier).toBe('disk');
  });

  test('a body read for an entry that was replaced meanwhile is not promoted over the new one', () => {
    const catalogue = catalogueWith([100]);
    const old = catalogue.peek('ns/1')!;
    catalogue.add('ns/1', meta('1', 120), true);
    catalogue.keepBody(old, Buffer.alloc(100));
    expect(catalogue.lookup('ns/1')?.tier).toBe('disk');
  });
});

describe('the disk budget', () => {
  test('room is made by evicting the least recently used first, and a hit makes a recording recent', () => {
    const catalogue = catalogueWith([300, 300, 300]);
    catalogue.lookup('ns/1');
    const victims = catalogue.makeRoom('ns/4', 300);
    expect(victims?.map((entry) => entry.key)).toEqual(['ns/2']);
    expect(catalogue.peek('ns/2')).toBeUndefined();
    expect(catalogue.stats()).toMatchObject({ entries: 2, diskBytes: 600, evictions: 1 });
  });

  test('no eviction is needed while the budget has room', () => {
    const catalogue = catalogueWith([300, 300]);
    expect(catalogue.makeRoom('ns/3', 400)).toEqual([]);
    expect(catalogue.stats().evictions).toBe(0);
  });

  test('a recording being read is never evicted under its reader; the next least recently used goes instead', () => {
    const catalogue = catalogueWith([300, 300, 300]);
    const unpin = catalogue.pin('ns/1');
    expect(catalogue.makeRoom('ns/4', 300)?.map((entry) => entry.key)).toEqual(['ns/2']);
    catalogue.add('ns/4', meta('4', 300), true);
    unpin();
    expect(catalogue.makeRoom('ns/5', 300)?.map((entry) => entry.key)).toEqual(['ns/1']);
  });

  test('when only recordings being read could make room, nothing is evicted and the newcomer is refused', () => {
    const catalogue = catalogueWith([500, 500]);
    catalogue.pin('ns/1');
    catalogue.pin('ns/2');
    expect(catalogue.makeRoom('ns/3', 100)).toBeUndefined();
    expect(catalogue.stats()).toMatchObject({ entries: 2, diskBytes: 1000, evictions: 0 });
  });

  test('a pin held by two readers lasts until both let go, however often one of them unpins', () => {
    const catalogue = catalogueWith([600]);
    const first = catalogue.pin('ns/1');
    const second = catalogue.pin('ns/1');
    first();
    first();
    expect(catalogue.makeRoom('ns/2', 600)).toBeUndefined();
    second();
    expect(catalogue.makeRoom('ns/2', 600)?.map((entry) => entry.key)).toEqual(['ns/1']);
  });

  test('a recording larger than the whole budget is refused without evicting anything', () => {
    const catalogue = catalogueWith([300]);
    expect(catalogue.makeRoom('ns/2', 1001)).toBeUndefined();
    expect(catalogue.stats()).toMatchObject({ entries: 1, evictions: 0 });
  });

  test('replacing a recording counts its old copy as room', () => {
    const catalogue = catalogueWith([600, 400]);
    expect(catalogue.makeRoom('ns/1', 600)).toEqual([]);
    catalogue.add('ns/1', meta('1', 600), true);
    expect(catalogue.stats()).toMatchObject({ entries: 2, diskBytes: 1000 });
  });

  test('a recording in memory only takes no disk budget and is never chosen to free disk', () => {
    const catalogue = catalogueWith([]);
    catalogue.add('ns/1', meta('1', 900), false);
    expect(catalogue.stats().diskBytes).toBe(0);
    expect(catalogue.makeRoom('ns/2', 1000)).toEqual([]);
    expect(catalogue.peek('ns/1')).toBeDefined();
  });

  test('removing a recording frees its disk bytes and its memory copy', () => {
    const catalogue = catalogueWith([300, 200]);
    catalogue.keepBody(catalogue.peek('ns/1')!, Buffer.alloc(300));
    expect(catalogue.remove('ns/1')?.key).toBe('ns/1');
    expect(catalogue.remove('ns/1')).toBeUndefined();
    expect(catalogue.stats()).toEqual({ entries: 1, diskBytes: 200, memoryEntries: 0, memoryBytes: 0, evictions: 0 });
  });
});
