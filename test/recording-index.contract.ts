/**
 * The contract every RecordingIndex backend passes, run against the real
 * stores (keyv's `test-suite` habit): test/recording-index.test.ts calls it
 * once per backend.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { RecordingIndex } from '../src/cache/recording-index.js';
import { cacheKey, type RecordingMeta } from '../src/cache/recording-meta.js';
import { StaleCopyError } from '../src/cache/stale-copy.js';

/** One index opened for a test. */
export interface IndexUnderTest {
  index: RecordingIndex;
  /** Where its data lives: `open(location)` opens the same data again. */
  location: string;
  /**
   * Writes `raw` under `key` exactly as the store keeps it, bypassing the
   * index's encoding: how another program, an older version or a corrupted
   * store would leave it. Optional: a backend that cannot skips those tests.
   */
  writeRaw?(key: string, raw: string): Promise<void>;
  /** Closes the index and removes its data. Safe to call more than once. */
  cleanup(): Promise<void>;
}

/** Opens a fresh, empty index; given a location, opens that one again. */
export type OpenIndex = (location?: string) => Promise<IndexUnderTest>;

let serial = 0;

/** A complete, valid meta; `overrides` replace fields. */
export function sampleMeta(callId: string | number, overrides: Partial<RecordingMeta> = {}): RecordingMeta {
  const id = String(callId);
  const n = ++serial;
  return {
    namespace: 'ns-0123456789abcdef',
    callId: id,
    size: 1_000 + n,
    sha256: (n.toString(16).padStart(8, '0') + 'ab'.repeat(28)).slice(0, 64),
    contentType: 'audio/mpeg',
    fetchedAt: Date.UTC(2026, 0, 1) + n,
    lastModified: 'Wed, 01 Jan 2025 00:00:00 GMT',
    ...overrides,
  };
}

function withoutLastModified(meta: RecordingMeta): RecordingMeta {
  const { lastModified: _omitted, ...rest } = meta;
  return rest;
}

async function collect(index: RecordingIndex): Promise<Map<string, RecordingMeta>> {
  const seen = new Map<string, RecordingMeta>();
  for await (const [key, meta] of index.entries()) {
    expect(seen.has(key), `entries() listed ${key} twice`).toBe(false);
    seen.set(key, meta);
  }
  return seen;
}

export function describeRecordingIndexContract(name: string, open: OpenIndex): void {
  describe(`RecordingIndex contract: ${name}`, () => {
    const opened: IndexUnderTest[] = [];
    async function fresh(location?: string): Promise<IndexUnderTest> {
      const subject = await open(location);
      opened.push(subject);
      return subject;
    }

    afterEach(async () => {
      // Reverse order: a reopened index closes before the one that made its location.
      for (const subject of opened.splice(0).reverse()) await subject.cleanup();
    });

    it('returns a stored recording exactly, Last-Modified included', async () => {
      const { index } = await fresh();
      const meta = sampleMeta(1);
      await index.set(cacheKey(meta.namespace, meta.callId), meta);
      expect(await index.get(cacheKey(meta.namespace, meta.callId))).toEqual(meta);
    });

    it('returns a recording stored without Last-Modified without inventing one', async () => {
      const { index } = await fresh();
      const meta = withoutLastModified(sampleMeta(2));
      await index.set('ns/2', meta);
      const got = await index.get('ns/2');
      expect(got).toEqual(meta);
      expect(got).not.toHaveProperty('lastModified');
    });

    it('answers undefined for a recording never stored (a miss, not an error)', async () => {
      const { index } = await fresh();
      expect(await index.get('ns/404')).toBeUndefined();
    });

    it('keeps only the latest value when a recording is stored again', async () => {
      const { index } = await fresh();
      const first = sampleMeta(3);
      const second = sampleMeta(3, { size: 4_242, lastModified: 'Thu, 02 Jan 2025 00:00:00 GMT' });
      await index.set('ns/3', first);
      await index.set('ns/3', second);
      expect(await index.get('ns/3')).toEqual(second);
      expect([...(await collect(index)).entries()]).toEqual([['ns/3', second]]);
    });

    it('forgets a deleted recording, and only that one', async () => {
      const { index } = await fresh();
      const kept = sampleMeta(4);
      await index.set('ns/4', kept);
      await index.set('ns/5', sampleMeta(5));
      await index.delete('ns/5');
      expect(await index.get('ns/5')).toBeUndefined();
      expect(await index.get('ns/4')).toEqual(kept);
      expect([...(await collect(index)).keys()]).toEqual(['ns/4']);
    });

    it('accepts deleting a recording that is not there', async () => {
      const { index } = await fresh();
      await expect(index.delete('ns/never-stored')).resolves.toBeUndefined();
      await index.set('ns/6', sampleMeta(6));
      await index.delete('ns/6');
      await expect(index.delete('ns/6')).resolves.toBeUndefined();
    });

    it('deletes many recordings at once, and only those (1,100: more than one operation on the store)', async () => {
      const { index } = await fresh();
      expect(index.deleteMany).toBeTypeOf('function');
      const kept = new Map<string, RecordingMeta>();
      const deleted: string[] = [];
      for (let id = 1; id <= 1_200; id++) {
        const meta = sampleMeta(id, { size: id });
        await index.set(`ns/${id}`, meta);
        if (id % 12 === 0) kept.set(`ns/${id}`, meta);
        else deleted.push(`ns/${id}`);
      }
      // Keys that are not there are no error, as for delete.
      await index.deleteMany!([...deleted, 'ns/never-stored']);
      expect(new Map([...(await collect(index))].sort())).toEqual(new Map([...kept].sort()));
      expect(await index.get('ns/1')).toBeUndefined();
      if (index.usage) expect((await index.usage()).total).toBe([...kept.values()].reduce((sum, meta) => sum + meta.size, 0));
      await expect(index.deleteMany!([])).resolves.toBeUndefined();
    });

    it('tells another process watching the index of each recording deleted many at once', async (ctx) => {
      const writer = await fresh();
      // Only an index other processes share announces deletes (Redis).
      if (!writer.index.watchDeletes) ctx.skip();
      const watcher = await fresh(writer.location);
      const seen: string[] = [];
      await watcher.index.watchDeletes!((key) => seen.push(key));
      for (let id = 1; id <= 3; id++) await writer.index.set(`ns/${id}`, sampleMeta(id));
      await writer.index.deleteMany!(['ns/1', 'ns/3']);
      await expect.poll(() => [...seen].sort()).toEqual(['ns/1', 'ns/3']);
    });

    it('lists nothing when empty', async () => {
      const { index } = await fresh();
      expect((await collect(index)).size).toBe(0);
    });

    it('lists every stored recording once with its value (250 entries)', async () => {
      const { index } = await fresh();
      const expected = new Map<string, RecordingMeta>();
      for (let id = 1; id <= 250; id++) {
        const meta = id % 2 === 0 ? sampleMeta(id) : withoutLastModified(sampleMeta(id));
        expected.set(cacheKey(meta.namespace, meta.callId), meta);
      }
      for (const [key, meta] of expected) await index.set(key, meta);
      const listed = await collect(index);
      expect(listed.size).toBe(250);
      expect(new Map([...listed].sort())).toEqual(new Map([...expected].sort()));
    });

    it('lists every entry once even while entries are deleted as they are listed (start-up reconciliation does)', async () => {
      const { index } = await fresh();
      for (let id = 1; id <= 250; id++) await index.set(`ns/${id}`, sampleMeta(id));
      const listed = new Set<string>();
      for await (const [key] of index.entries()) {
        expect(listed.has(key), `entries() listed ${key} twice`).toBe(false);
        listed.add(key);
        if (listed.size % 2 === 1) await index.delete(key);
      }
      expect(listed.size).toBe(250);
      expect((await collect(index)).size).toBe(125);
    });

    it('lists what is left after deletes', async () => {
      const { index } = await fresh();
      for (let id = 1; id <= 30; id++) await index.set(`ns/${id}`, sampleMeta(id));
      for (let id = 1; id <= 30; id += 3) await index.delete(`ns/${id}`);
      const keys = [...(await collect(index)).keys()].sort();
      const expected = Array.from({ length: 30 }, (_, i) => i + 1)
        .filter((id) => (id - 1) % 3 !== 0)
        .map((id) => `ns/${id}`)
        .sort();
      expect(keys).toEqual(expected);
    });

    it('answers ping (what /readyz asks)', async () => {
      const { index } = await fresh();
      await expect(index.ping()).resolves.toBeUndefined();
    });

    it('keeps what it stored across close and reopen (a restart loses no cache)', async () => {
      const first = await fresh();
      const kept = sampleMeta(7);
      const plain = withoutLastModified(sampleMeta(8));
      await first.index.set('ns/7', kept);
      await first.index.set('ns/8', plain);
      await first.index.set('ns/9', sampleMeta(9));
      await first.index.delete('ns/9');
      await first.index.close();
      await first.index.close(); // closing twice is harmless

      const again = await fresh(first.location);
      expect(await again.index.get('ns/7')).toEqual(kept);
      expect(await again.index.get('ns/8')).toEqual(plain);
      expect(await again.index.get('ns/9')).toBeUndefined();
      expect(new Map([...(await collect(again.index))].sort())).toEqual(
        new Map([
          ['ns/7', kept],
          ['ns/8', plain],
        ]),
      );
    });

    it("keeps keys with '/' and ':' in them intact, in get and in entries", async () => {
      const { index } = await fresh();
      const keys = [
        'a:b:c/1',
        'ns/with/slashes/2',
        'ns::double/3',
        'recordings:looks-prefixed/4',
        'recordings::looks-prefixed/5',
        ':leading/6',
        'trailing:/7',
        'ünïcødé/8',
      ];
      const expected = new Map(keys.map((key, i) => [key, sampleMeta(i + 1)] as const));
      for (const [key, meta] of expected) await index.set(key, meta);
      for (const [key, meta] of expected) expect(await index.get(key), key).toEqual(meta);
      expect(new Map([...(await collect(index))].sort())).toEqual(new Map([...expected].sort()));
      await index.delete('recordings:looks-prefixed/4');
      expect(await index.get('recordings:looks-prefixed/4')).toBeUndefined();
      expect((await collect(index)).size).toBe(keys.length - 1);
    });

    describe('purge marks (a purge wins over a download in another process sharing the index)', () => {
      it('counts the purges of a recording, of its namespace and of everything, and no other', async () => {
        const { index } = await fresh();
        const purges = index.purges!;
        const seen = await purges.count('pm-a/1');
        const otherSeen = await purges.count('pm-b/1');
        await purges.mark('pm-a', '1');
        expect(await purges.count('pm-a/1')).toBe(seen + 1);
        await purges.mark('pm-a', '2');
        await purges.mark('pm-b', '1');
        expect(await purges.count('pm-a/1')).toBe(seen + 1);
        await purges.mark('pm-a');
        expect(await purges.count('pm-a/1')).toBe(seen + 2);
        await purges.mark();
        expect(await purges.count('pm-a/1')).toBe(seen + 3);
        expect(await purges.count('pm-b/1')).toBe(otherSeen + 2);
      });

      it('stores an entry when no purge came since the count it was given, and refuses it (writing nothing) when one did', async () => {
        const { index } = await fresh();
        const before = sampleMeta(21, { namespace: 'pm-c' });
        await index.set('pm-c/21', before);
        const seen = await index.purges!.count('pm-c/21');
        const fresher = sampleMeta(21, { namespace: 'pm-c' });
        await index.set('pm-c/21', fresher, seen);
        expect(await index.get('pm-c/21')).toEqual(fresher);

        await index.purges!.mark('pm-c', '21');
        await expect(index.set('pm-c/21', sampleMeta(21, { namespace: 'pm-c' }), seen)).rejects.toBeInstanceOf(StaleCopyError);
        expect(await index.get('pm-c/21')).toEqual(fresher);
        await index.delete('pm-c/21');
        await expect(index.set('pm-c/21', before, seen)).rejects.toBeInstanceOf(StaleCopyError);
        expect(await index.get('pm-c/21')).toBeUndefined();
        // Marks are not entries.
        expect([...(await collect(index)).keys()]).toEqual([]);
        // A download that began after the purge is stored.
        await index.set('pm-c/21', before, await index.purges!.count('pm-c/21'));
        expect(await index.get('pm-c/21')).toEqual(before);
      });

      it("sees a purge recorded through another connection to the same index (another process's)", async () => {
        const first = await fresh();
        const second = await fresh(first.location);
        const seen = await first.index.purges!.count('pm-d/22');
        await second.index.purges!.mark('pm-d');
        await expect(first.index.set('pm-d/22', sampleMeta(22, { namespace: 'pm-d' }), seen)).rejects.toBeInstanceOf(StaleCopyError);
        expect(await second.index.get('pm-d/22')).toBeUndefined();
      });
    });

    describe('values it did not write', () => {
      const VALID = sampleMeta(10);
      const FOREIGN: Record<string, string> = {
        'not JSON': 'this is not json {',
        "a meta without keyv's envelope": JSON.stringify(VALID),
        'another kind of value': JSON.stringify({ value: { hello: 'world' }, expires: null }),
        'a meta with a bad sha256': JSON.stringify({ value: { ...VALID, sha256: 'not-hex' } }),
        'a meta missing its size': JSON.stringify({ value: { ...VALID, size: undefined } }),
        'a plain string': JSON.stringify({ value: 'just a string' }),
        null: 'null',
      };

      it('ignores them in get and entries instead of failing start-up', async (ctx) => {
        const subject = await fresh();
        if (!subject.writeRaw) return ctx.skip();
        const { index } = subject;
        await index.set('ns/ok', VALID);
        for (const [label, raw] of Object.entries(FOREIGN)) await subject.writeRaw(`ns/foreign-${label}`, raw);
        for (const label of Object.keys(FOREIGN)) expect(await index.get(`ns/foreign-${label}`), label).toBeUndefined();
        expect([...(await collect(index)).entries()]).toEqual([['ns/ok', VALID]]);
      });

      it('replaces an unreadable value when the recording is stored again', async (ctx) => {
        const subject = await fresh();
        if (!subject.writeRaw) return ctx.skip();
        await subject.writeRaw('ns/11', 'garbage');
        const meta = sampleMeta(11);
        await subject.index.set('ns/11', meta);
        expect(await subject.index.get('ns/11')).toEqual(meta);
      });

      it("reads a value in keyv's stored form, as earlier versions wrote it", async (ctx) => {
        const subject = await fresh();
        if (!subject.writeRaw) return ctx.skip();
        const meta = sampleMeta(12);
        await subject.writeRaw('ns/12', JSON.stringify({ value: meta, expires: null }));
        expect(await subject.index.get('ns/12')).toEqual(meta);
        expect([...(await collect(subject.index)).entries()]).toEqual([['ns/12', meta]]);
      });
    });
  });
}
