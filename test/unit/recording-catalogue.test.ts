import { describe, expect, test } from 'vitest';
import { RecordingCatalogue, accountDiskShares } from '../../src/cache/recording-catalogue.js';
import type { RecordingMeta } from '../../src/cache/recording-meta.js';

function meta(callId: string, size: number, fetchedAt = 0, namespace = 'ns'): RecordingMeta {
  return { namespace, callId, size, sha256: '0'.repeat(64), contentType: 'audio/mpeg', fetchedAt };
}

/** A catalogue holding `sizes` on disk, added in order (the first is the least recently used). */
function catalogueWith(sizes: number[], limits = { maxMemoryBytes: 8000, maxDiskBytes: 1000 }): RecordingCatalogue {
  const catalogue = new RecordingCatalogue(limits);
  sizes.forEach((size, i) => {
    catalogue.add(`ns/${i + 1}`, meta(String(i + 1), size), true);
  });
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

describe('recordings held in memory only', () => {
  test('evicted from memory, each leaves with its entry, and every other one keeps its own body', () => {
    // Memory holds 8 bodies of 100 bytes; 40 recordings the disk refused (onDisk false) pass through it.
    const catalogue = new RecordingCatalogue({ maxMemoryBytes: 800, maxDiskBytes: 10_000 });
    for (let id = 1; id <= 40; id++) {
      const entry = catalogue.add(`ns/${id}`, meta(String(id), 100), false);
      catalogue.keepBody(entry, Buffer.alloc(100, id));
      for (let earlier = 1; earlier <= id; earlier++) {
        const hit = catalogue.lookup(`ns/${earlier}`);
        if (hit) expect(hit.tier === 'memory' && hit.body[0], `ns/${earlier} after ${id} stored`).toBe(earlier);
      }
    }
    const held = Array.from({ length: 40 }, (_, i) => catalogue.lookup(`ns/${i + 1}`)).filter((hit) => hit !== undefined);
    expect(held.length).toBe(8);
    expect(catalogue.stats().entries).toBe(8);
  });
});

describe('memoryKey: the key of a recording memory holds', () => {
  test('is the very key string the catalogue holds, while memory holds the body, and only then', () => {
    const catalogue = catalogueWith([100, 100]);
    expect(catalogue.memoryKey('ns', '1')).toBeUndefined();
    const entry = catalogue.peek('ns/1')!;
    catalogue.keepBody(entry, Buffer.alloc(100, 1));
    const key = catalogue.memoryKey('ns', '1');
    expect(key).toBe('ns/1');
    expect(Object.is(key, entry.key)).toBe(true);
    expect(catalogue.lookup(key!)).toMatchObject({ tier: 'memory' });
    expect(catalogue.memoryKey('ns', '2')).toBeUndefined();
    expect(catalogue.memoryKey('other', '1')).toBeUndefined();
  });

  test('is forgotten when the body leaves memory: evicted, its entry removed or replaced; kept when the body is replaced', () => {
    // Memory holds 8 bodies of 100 bytes (maxMemoryBytes 800; an entry may take 1/8).
    const catalogue = catalogueWith(
      Array.from({ length: 10 }, () => 100),
      { maxMemoryBytes: 800, maxDiskBytes: 10_000 },
    );
    for (let id = 1; id <= 8; id++) catalogue.keepBody(catalogue.peek(`ns/${id}`)!, Buffer.alloc(100));
    expect(catalogue.memoryKey('ns', '1')).toBe('ns/1');
    catalogue.keepBody(catalogue.peek('ns/1')!, Buffer.alloc(100, 2));
    expect(catalogue.memoryKey('ns', '1')).toBe('ns/1');
    catalogue.keepBody(catalogue.peek('ns/9')!, Buffer.alloc(100));
    expect(catalogue.memoryKey('ns', '2'), 'the least recently used body, evicted').toBeUndefined();
    expect(catalogue.memoryKey('ns', '9')).toBe('ns/9');
    catalogue.remove('ns/3');
    expect(catalogue.memoryKey('ns', '3')).toBeUndefined();
    catalogue.add('ns/4', meta('4', 100), true);
    expect(catalogue.memoryKey('ns', '4'), 'a new entry under the key has no body yet').toBeUndefined();
    expect(catalogue.lookup('ns/4')?.tier).toBe('disk');
  });

  test("is never another recording's: an entry whose key is not its namespace and call id is not listed", () => {
    const catalogue = new RecordingCatalogue({ maxMemoryBytes: 8000, maxDiskBytes: 1000 });
    const entry = catalogue.add('ns/7', meta('8', 100), true);
    catalogue.keepBody(entry, Buffer.alloc(100));
    expect(catalogue.lookup('ns/7')?.tier).toBe('memory');
    expect(catalogue.memoryKey('ns', '8')).toBeUndefined();
    expect(catalogue.memoryKey('ns', '7')).toBeUndefined();
  });
});

describe('the disk budget', () => {
  test('room is made by evicting the least recently used first, and a hit makes a recording recent', () => {
    const catalogue = catalogueWith([300, 300, 300]);
    catalogue.lookup('ns/1');
    const victims = catalogue.makeRoom('ns/4', 'ns', 300);
    expect(victims?.map((entry) => entry.key)).toEqual(['ns/2']);
    expect(catalogue.peek('ns/2')).toBeUndefined();
    expect(catalogue.stats()).toMatchObject({ entries: 2, diskBytes: 600, evictions: 1 });
  });

  test('a hit after a newer recording arrived makes the hit one the most recent again', () => {
    const catalogue = catalogueWith([200, 200, 200], { maxMemoryBytes: 8000, maxDiskBytes: 800 });
    catalogue.lookup('ns/1');
    catalogue.lookup('ns/1');
    catalogue.add('ns/4', meta('4', 200), true);
    catalogue.lookup('ns/1');
    const victims = catalogue.makeRoom('ns/5', 'ns', 800);
    expect(victims?.map((entry) => entry.key)).toEqual(['ns/2', 'ns/3', 'ns/4', 'ns/1']);
  });

  test('no eviction is needed while the budget has room', () => {
    const catalogue = catalogueWith([300, 300]);
    expect(catalogue.makeRoom('ns/3', 'ns', 400)).toEqual([]);
    expect(catalogue.stats().evictions).toBe(0);
  });

  test('a recording being read is never evicted under its reader; the next least recently used goes instead', () => {
    const catalogue = catalogueWith([300, 300, 300]);
    const unpin = catalogue.pin('ns/1');
    expect(catalogue.makeRoom('ns/4', 'ns', 300)?.map((entry) => entry.key)).toEqual(['ns/2']);
    catalogue.add('ns/4', meta('4', 300), true);
    unpin();
    expect(catalogue.makeRoom('ns/5', 'ns', 300)?.map((entry) => entry.key)).toEqual(['ns/1']);
  });

  test('when only recordings being read could make room, nothing is evicted and the newcomer is refused', () => {
    const catalogue = catalogueWith([500, 500]);
    catalogue.pin('ns/1');
    catalogue.pin('ns/2');
    expect(catalogue.makeRoom('ns/3', 'ns', 100)).toBeUndefined();
    expect(catalogue.stats()).toMatchObject({ entries: 2, diskBytes: 1000, evictions: 0 });
  });

  test('a pin held by two readers lasts until both let go, however often one of them unpins', () => {
    const catalogue = catalogueWith([600]);
    const first = catalogue.pin('ns/1');
    const second = catalogue.pin('ns/1');
    first();
    first();
    expect(catalogue.makeRoom('ns/2', 'ns', 600)).toBeUndefined();
    second();
    expect(catalogue.makeRoom('ns/2', 'ns', 600)?.map((entry) => entry.key)).toEqual(['ns/1']);
  });

  test('a recording larger than the whole budget is refused without evicting anything', () => {
    const catalogue = catalogueWith([300]);
    expect(catalogue.makeRoom('ns/2', 'ns', 1001)).toBeUndefined();
    expect(catalogue.stats()).toMatchObject({ entries: 1, evictions: 0 });
  });

  test('replacing a recording counts its old copy as room', () => {
    const catalogue = catalogueWith([600, 400]);
    expect(catalogue.makeRoom('ns/1', 'ns', 600)).toEqual([]);
    catalogue.add('ns/1', meta('1', 600), true);
    expect(catalogue.stats()).toMatchObject({ entries: 2, diskBytes: 1000 });
  });

  test('a recording in memory only takes no disk budget and is never chosen to free disk', () => {
    const catalogue = catalogueWith([]);
    catalogue.add('ns/1', meta('1', 900), false);
    expect(catalogue.stats().diskBytes).toBe(0);
    expect(catalogue.makeRoom('ns/2', 'ns', 1000)).toEqual([]);
    expect(catalogue.peek('ns/1')).toBeDefined();
  });

  test('removing a recording frees its disk bytes and its memory copy', () => {
    const catalogue = catalogueWith([300, 200]);
    catalogue.keepBody(catalogue.peek('ns/1')!, Buffer.alloc(300));
    expect(catalogue.remove('ns/1')?.key).toBe('ns/1');
    expect(catalogue.remove('ns/1')).toBeUndefined();
    expect(catalogue.stats()).toEqual({
      entries: 1,
      diskEntries: 1,
      diskBytes: 200,
      memoryEntries: 0,
      memoryBytes: 0,
      evictions: 0,
      diskBytesByNamespace: { ns: 200 },
    });
  });

  test('a recording held in memory only is forgotten once its body leaves memory, and never counts as on disk', () => {
    const catalogue = new RecordingCatalogue({ maxMemoryBytes: 800, maxDiskBytes: 1000 });
    for (const callId of ['1', '2', '3']) {
      const entry = catalogue.add(`ns/${callId}`, meta(callId, 100), false);
      catalogue.keepBody(entry, Buffer.alloc(100));
    }
    catalogue.add('ns/4', meta('4', 300), true);
    expect(catalogue.stats()).toMatchObject({ entries: 4, diskEntries: 1, diskBytes: 300, memoryEntries: 3 });
    // Six more bodies push the oldest memory-only one out of the 800-byte memory tier.
    for (const callId of ['5', '6', '7', '8', '9', '10']) {
      catalogue.keepBody(catalogue.add(`ns/${callId}`, meta(callId, 100), true), Buffer.alloc(100));
    }
    expect(catalogue.peek('ns/1')).toBeUndefined();
    expect(catalogue.lookup('ns/1')).toBeUndefined();
    expect(catalogue.peek('ns/2')?.onDisk).toBe(false);
    expect(catalogue.stats()).toMatchObject({ entries: 9, diskEntries: 7 });
  });

  test('stores under way at once each count the room the others took, not the same free bytes', () => {
    const catalogue = catalogueWith([300, 300]);
    expect(catalogue.makeRoom('ns/3', 'ns', 300)).toEqual([]);
    // 600 stored and 300 on its way: the next 300 needs the least recently used gone.
    expect(catalogue.makeRoom('ns/4', 'ns', 300)?.map((entry) => entry.key)).toEqual(['ns/1']);
    catalogue.add('ns/3', meta('3', 300), true);
    catalogue.add('ns/4', meta('4', 300), true);
    expect(catalogue.stats()).toMatchObject({ entries: 3, diskBytes: 900 });
  });

  test('the room a failed store took is free again once given back', () => {
    const catalogue = catalogueWith([300, 300]);
    expect(catalogue.makeRoom('ns/3', 'ns', 400)).toEqual([]);
    catalogue.giveBackRoom('ns/3');
    catalogue.giveBackRoom('ns/3');
    expect(catalogue.makeRoom('ns/4', 'ns', 400)).toEqual([]);
    expect(catalogue.stats().evictions).toBe(0);
  });

  test('a catalogue over its budget (lowered since) is trimmed back, least recently used first', () => {
    const catalogue = catalogueWith([400, 400, 400]);
    catalogue.lookup('ns/1');
    expect(catalogue.trimToBudget().map((entry) => entry.key)).toEqual(['ns/2']);
    expect(catalogue.stats()).toMatchObject({ entries: 2, diskBytes: 800, evictions: 1 });
    expect(catalogue.trimToBudget()).toEqual([]);
    expect(catalogue.makeRoom('ns/4', 'ns', 200)).toEqual([]);
  });
});

/** A 1000-byte disk shared by accounts `a` and `b`, with these shares. */
function sharedDisk(shares: Record<string, number>): RecordingCatalogue {
  return new RecordingCatalogue({ maxMemoryBytes: 8000, maxDiskBytes: 1000, diskShares: new Map(Object.entries(shares)) });
}

/** Stores a recording as the cache does (room first, then the entry); answers the victims' keys, or undefined if refused. */
function store(catalogue: RecordingCatalogue, namespace: string, callId: string, size: number): string[] | undefined {
  const key = `${namespace}/${callId}`;
  const victims = catalogue.makeRoom(key, namespace, size);
  if (victims) catalogue.add(key, meta(callId, size, 0, namespace), true);
  return victims?.map((entry) => entry.key);
}

describe('disk shares between upstream accounts', () => {
  test('trimming an over-budget disk takes from the account over its share only', () => {
    const catalogue = sharedDisk({ a: 500, b: 500 });
    for (const [callId, namespace, size] of [
      ['1', 'b', 400],
      ['2', 'a', 300],
      ['3', 'a', 300],
      ['4', 'a', 200],
    ] as const) {
      catalogue.add(`${namespace}/${callId}`, meta(callId, size, 0, namespace), true);
    }
    // 1,200 bytes on a 1,000-byte budget: b's older recording stays, within b's share.
    expect(catalogue.trimToBudget().map((entry) => entry.key)).toEqual(['a/2']);
    expect(catalogue.stats().diskBytesByNamespace).toEqual({ a: 500, b: 400 });
  });

  test("a flood from one account never evicts another account's recordings that are within its share", () => {
    const catalogue = sharedDisk({ a: 500, b: 500 });
    store(catalogue, 'b', '1', 200);
    store(catalogue, 'b', '2', 200);
    const victims: string[] = [];
    for (let i = 0; i < 50; i++) victims.push(...(store(catalogue, 'a', String(i), 100) ?? []));
    expect(victims.length).toBeGreaterThan(0);
    expect(victims.every((key) => key.startsWith('a/'))).toBe(true);
    expect(catalogue.peek('b/1')).toBeDefined();
    expect(catalogue.peek('b/2')).toBeDefined();
    expect(catalogue.stats().diskBytesByNamespace).toEqual({ a: 600, b: 400 });
  });

  test('an account over its share makes room from its own least recently used recordings first', () => {
    const catalogue = sharedDisk({ a: 500, b: 500 });
    store(catalogue, 'b', '1', 300);
    for (const id of ['1', '2', '3']) store(catalogue, 'a', id, 200);
    catalogue.lookup('a/1');
    expect(store(catalogue, 'a', '4', 200)).toEqual(['a/2']);
    expect(store(catalogue, 'a', '5', 400)).toEqual(['a/3', 'a/1']);
    expect(catalogue.peek('b/1')).toBeDefined();
  });

  test("an account that grew past its share while the disk was free gives the excess back to another account's traffic", () => {
    const catalogue = sharedDisk({ a: 500, b: 500 });
    for (const id of ['1', '2', '3', '4']) store(catalogue, 'b', id, 200);
    store(catalogue, 'a', '1', 200);
    expect(catalogue.stats().diskBytesByNamespace).toEqual({ a: 200, b: 800 });
    // b is over its share, so its oldest go first, until b is back within it...
    expect(store(catalogue, 'a', '2', 200)).toEqual(['b/1']);
    expect(store(catalogue, 'a', '3', 200)).toEqual(['b/2']);
    // ...then a, now over its own, evicts its own and b keeps its 400 bytes.
    expect(store(catalogue, 'a', '4', 200)).toEqual(['a/1']);
    expect(catalogue.stats().diskBytesByNamespace).toEqual({ a: 600, b: 400 });
  });

  test("recordings of an account no longer configured (a removed tenant's) are evicted before anyone's within their share", () => {
    const catalogue = sharedDisk({ a: 500, b: 500 });
    store(catalogue, 'a', '1', 300);
    store(catalogue, 'b', '1', 300);
    catalogue.add('gone/1', meta('1', 400, 0, 'gone'), true);
    expect(store(catalogue, 'a', '2', 200)).toEqual(['gone/1']);
    expect(catalogue.peek('a/1')).toBeDefined();
    expect(catalogue.peek('b/1')).toBeDefined();
  });

  test('a recording being read is not evicted even when its account is over its share; the refused newcomer takes nothing', () => {
    const catalogue = sharedDisk({ a: 500, b: 500 });
    store(catalogue, 'b', '1', 400);
    store(catalogue, 'b', '2', 200);
    store(catalogue, 'a', '1', 400);
    const unpinB = catalogue.pin('b/1');
    const unpinB2 = catalogue.pin('b/2');
    catalogue.pin('a/1');
    expect(store(catalogue, 'a', '2', 100)).toBeUndefined();
    expect(catalogue.stats()).toMatchObject({ entries: 3, diskBytes: 1000, evictions: 0 });
    unpinB2();
    unpinB();
    expect(store(catalogue, 'a', '2', 100)).toEqual(['b/1']);
  });

  test("when only recordings within another account's share could make room, the newcomer is refused", () => {
    const catalogue = sharedDisk({ a: 300, b: 700 });
    store(catalogue, 'b', '1', 700);
    store(catalogue, 'a', '1', 300);
    catalogue.pin('a/1');
    expect(store(catalogue, 'a', '2', 100)).toBeUndefined();
    expect(catalogue.peek('b/1')).toBeDefined();
  });
});

describe('account disk shares from the tenants', () => {
  test('tenants on one account add their shares; accounts without one split what is left equally', () => {
    const shares = accountDiskShares(1000, [
      { namespace: 'a', diskShare: 200 },
      { namespace: 'a', diskShare: 100 },
      { namespace: 'b' },
      { namespace: 'c' },
      { namespace: 'c' },
    ]);
    expect(Object.fromEntries(shares)).toEqual({ a: 300, b: 350, c: 350 });
  });

  test('without any disk_share every account gets an equal share of the disk', () => {
    expect(Object.fromEntries(accountDiskShares(1000, [{ namespace: 'a' }, { namespace: 'b' }, { namespace: 'a' }]))).toEqual({
      a: 500,
      b: 500,
    });
  });
});
