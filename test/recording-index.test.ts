/**
 * The index contract against both real backends (a sqlite file in a temp dir,
 * a real redis-server), plus what only one backend can get wrong.
 */
import KeyvSqlite from '@keyv/sqlite';
import { createClient } from '@keyv/redis';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { RecordingIndex } from '../src/cache/recording-index.js';
import { createSqliteIndex } from '../src/cache/sqlite-index.js';
import { createRedisIndex } from '../src/cache/redis-index.js';
import { cacheKey, type RecordingMeta } from '../src/cache/recording-meta.js';
import { describeRecordingIndexContract, sampleMeta, type IndexUnderTest } from './recording-index.contract.js';
import { makeTempDir, removeDir } from '../dev/gateway-harness.js';
import { startRedisServer, type RunningRedis } from './support/redis-server.js';

// The stored layouts, pinned here on purpose: changing them orphans every
// index already on disk or in Redis.
const SQLITE_KEY_PREFIX = 'recordings:';
const REDIS_KEY_PREFIX = 'recordings::';

function sqliteStore(dir: string): KeyvSqlite {
  return new KeyvSqlite({ uri: `sqlite://${path.join(dir, 'index.sqlite')}`, busyTimeout: 5_000 });
}

async function listAll(index: RecordingIndex): Promise<Map<string, RecordingMeta>> {
  const entries = new Map<string, RecordingMeta>();
  for await (const [key, meta] of index.entries()) entries.set(key, meta);
  return entries;
}

// ---------------------------------------------------------------- sqlite

async function openSqlite(location?: string): Promise<IndexUnderTest> {
  const dir = location ?? (await makeTempDir('rg-index-'));
  const index = createSqliteIndex(dir);
  return {
    index,
    location: dir,
    async writeRaw(key, raw) {
      const store = sqliteStore(dir);
      try {
        await store.set(SQLITE_KEY_PREFIX + key, raw);
      } finally {
        await store.disconnect();
      }
    },
    async cleanup() {
      await index.close();
      await removeDir(dir);
    },
  };
}

describeRecordingIndexContract('sqlite', openSqlite);

describe('sqlite index', () => {
  let dir: string;
  afterEach(async () => {
    await removeDir(dir);
  });

  it('lists all of 20,000 entries at start-up, past the first pages', async () => {
    dir = await makeTempDir('rg-index-big-');
    const COUNT = 20_000;
    const metas = Array.from({ length: COUNT }, (_, i) => sampleMeta(i + 1, { namespace: `ns${i % 7}` }));
    const writer = createSqliteIndex(dir);
    // A few through the index itself, the rest in one statement: 20,000
    // separate commits would take minutes on a slow disk.
    for (const meta of metas.slice(0, 10)) await writer.set(cacheKey(meta.namespace, meta.callId), meta);
    await writer.close();
    const store = sqliteStore(dir);
    const rows = metas
      .slice(10)
      .map((meta) => [SQLITE_KEY_PREFIX + cacheKey(meta.namespace, meta.callId), JSON.stringify({ value: meta, expires: null })]);
    await store.query(
      `INSERT INTO keyv (key, value) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)`,
      JSON.stringify(rows),
    );
    await store.disconnect();

    const index = createSqliteIndex(dir);
    try {
      const listed = await listAll(index);
      expect(listed.size).toBe(COUNT);
      for (const meta of [metas[0], metas[9], metas[10], metas[9_999], metas[10_000], metas[COUNT - 1]]) {
        expect(listed.get(cacheKey(meta!.namespace, meta!.callId))).toEqual(meta);
      }
    } finally {
      await index.close();
    }
  });

  it('lists only the entries fetched before a time, for the retention sweep, skipping a value that is not JSON', async () => {
    dir = await makeTempDir('rg-index-old-');
    const index = createSqliteIndex(dir);
    try {
      const old = sampleMeta(1, { fetchedAt: 1_000 });
      const edge = sampleMeta(2, { fetchedAt: 2_000 });
      const fresh = sampleMeta(3, { fetchedAt: 3_000 });
      for (const meta of [old, edge, fresh]) await index.set(cacheKey(meta.namespace, meta.callId), meta);
      const store = sqliteStore(dir);
      await store.query('INSERT INTO keyv (key, value) VALUES (?, ?)', [`${SQLITE_KEY_PREFIX}ns/4`, 'not json']);
      await store.disconnect();
      const listed: string[] = [];
      for await (const [key] of index.entriesFetchedBefore!(2_000)) listed.push(key);
      expect(listed).toEqual([cacheKey(old.namespace, old.callId)]);
    } finally {
      await index.close();
    }
  });

  it('lists every one of 20,000 entries while some are deleted as they are listed (start-up reconciliation does)', async () => {
    dir = await makeTempDir('rg-index-big-');
    const COUNT = 20_000;
    const store = sqliteStore(dir);
    await store.query(`CREATE TABLE IF NOT EXISTS keyv(key VARCHAR(255) PRIMARY KEY, value TEXT)`);
    const metas = Array.from({ length: COUNT }, (_, i) => sampleMeta(i + 1));
    const rows = metas.map((meta) => [
      SQLITE_KEY_PREFIX + cacheKey(meta.namespace, meta.callId),
      JSON.stringify({ value: meta, expires: null }),
    ]);
    await store.query(
      `INSERT INTO keyv (key, value) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)`,
      JSON.stringify(rows),
    );
    await store.disconnect();

    const index = createSqliteIndex(dir);
    try {
      // Paging by OFFSET would now skip as many live entries as were deleted.
      const DELETED = 200;
      const listed = new Set<string>();
      for await (const [key] of index.entries()) {
        listed.add(key);
        if (listed.size <= DELETED) await index.delete(key);
      }
      expect(listed.size).toBe(COUNT);
      expect((await listAll(index)).size).toBe(COUNT - DELETED);
    } finally {
      await index.close();
    }
  });

  it("counts the entries' bytes by namespace with every write, another process's and an index's written before it was counted", async () => {
    dir = await makeTempDir('rg-index-bytes-');
    const [a, b, c] = [sampleMeta(1, { namespace: 'a' }), sampleMeta(2, { namespace: 'a' }), sampleMeta(3, { namespace: 'b' })];
    // Written before the count existed: no index opened on it yet.
    const store = sqliteStore(dir);
    await store.set(SQLITE_KEY_PREFIX + cacheKey(a.namespace, a.callId), JSON.stringify({ value: a, expires: null }));
    await store.disconnect();

    const index = createSqliteIndex(dir);
    const other = createSqliteIndex(dir);
    try {
      expect(await index.usage?.()).toEqual({ total: a.size, byNamespace: new Map([['a', a.size]]) });
      await other.set(cacheKey(b.namespace, b.callId), b);
      await index.set(cacheKey(c.namespace, c.callId), c, 0);
      await other.set(cacheKey(a.namespace, a.callId), { ...a, size: 10 });
      expect(await index.usage?.()).toEqual({
        total: 10 + b.size + c.size,
        byNamespace: new Map([
          ['a', 10 + b.size],
          ['b', c.size],
        ]),
      });
      await other.delete(cacheKey(c.namespace, c.callId));
      expect(await index.usage?.()).toEqual({ total: 10 + b.size, byNamespace: new Map([['a', 10 + b.size]]) });
    } finally {
      await other.close();
      await index.close();
    }
  });

  // sqlite refuses a switch to WAL at once (SQLITE_BUSY, no busy wait) while
  // another connection holds the write lock of a database not yet in WAL.
  async function openWhileLocked(holdMs: number): Promise<{ index: RecordingIndex; size: number }> {
    dir = await makeTempDir('rg-index-locked-');
    const meta = sampleMeta(1, { namespace: 'a' });
    const other = sqliteStore(dir);
    await other.set(SQLITE_KEY_PREFIX + cacheKey(meta.namespace, meta.callId), JSON.stringify({ value: meta, expires: null }));
    await other.query('BEGIN IMMEDIATE');
    const index = createSqliteIndex(dir);
    setTimeout(() => {
      void other.query('COMMIT').then(() => other.disconnect());
    }, holdMs);
    return { index, size: meta.size };
  }

  // The second is held past the busy timeout: only trying again at usage() can count then.
  it.each([
    ["counts the bytes of an index opened while another connection held the database's write lock", 300],
    ['counts them once a write lock held past the busy timeout is gone, instead of never', 5_600],
  ])(
    '%s',
    async (_name, holdMs) => {
      const { index, size } = await openWhileLocked(holdMs);
      try {
        expect(await index.usage?.()).toEqual({ total: size, byNamespace: new Map([['a', size]]) });
      } finally {
        await index.close();
      }
    },
    20_000,
  );

  it('rejects operations once closed instead of touching a closed database', async () => {
    dir = await makeTempDir('rg-index-closed-');
    const index = createSqliteIndex(dir);
    await index.set('ns/1', sampleMeta(1));
    await index.close();
    await expect(index.get('ns/1')).rejects.toThrow(/sqlite index/);
    await expect(index.ping()).rejects.toThrow(/sqlite index: closed/);
  });
});

// ---------------------------------------------------------------- redis

describe('with a real redis-server', () => {
  let redis: RunningRedis;
  let raw: ReturnType<typeof createClient>;

  beforeAll(async () => {
    redis = await startRedisServer();
    raw = createClient({ url: redis.url });
    await raw.connect();
  });
  afterAll(async () => {
    if (raw?.isOpen) raw.destroy();
    await redis?.stop();
  });

  async function openRedis(location?: string): Promise<IndexUnderTest> {
    const url = location ?? redis.url;
    const index = createRedisIndex(url);
    return {
      index,
      location: url,
      async writeRaw(key, value) {
        await raw.set(REDIS_KEY_PREFIX + key, value);
      },
      async cleanup() {
        await index.close();
        await raw.flushDb();
      },
    };
  }

  describeRecordingIndexContract('redis', openRedis);

  describe('redis index', () => {
    const extra: Array<{ stop(): Promise<void> } | RecordingIndex> = [];
    async function own<T extends { stop(): Promise<void> } | RecordingIndex>(thing: T): Promise<T> {
      extra.push(thing);
      return thing;
    }
    afterEach(async () => {
      for (const thing of extra.splice(0).reverse()) await ('close' in thing ? thing.close() : thing.stop());
      await raw.flushDb();
    });

    it('keeps one Redis key per recording, under recordings::', async () => {
      const index = await own(createRedisIndex(redis.url));
      await index.set('ns/1', sampleMeta(1));
      await index.set('a:b/2', sampleMeta(2));
      expect((await raw.keys('*')).sort()).toEqual([`${REDIS_KEY_PREFIX}a:b/2`, `${REDIS_KEY_PREFIX}ns/1`]);
    });

    it('lists all of 5,000 entries at start-up, across several SCAN pages', async () => {
      const COUNT = 5_000;
      const metas = Array.from({ length: COUNT }, (_, i) => sampleMeta(i + 1, { namespace: `ns${i % 7}` }));
      await raw.mSet(
        metas.map((meta): [string, string] => [
          REDIS_KEY_PREFIX + cacheKey(meta.namespace, meta.callId),
          JSON.stringify({ value: meta, expires: null }),
        ]),
      );
      const index = await own(createRedisIndex(redis.url));
      const listed = await listAll(index);
      expect(listed.size).toBe(COUNT);
      for (const meta of [metas[0], metas[2_500], metas[COUNT - 1]]) {
        expect(listed.get(cacheKey(meta!.namespace, meta!.callId))).toEqual(meta);
      }
    });

    it('ignores keys outside its namespace and keys of another type', async () => {
      const index = await own(createRedisIndex(redis.url));
      const meta = sampleMeta(3);
      await index.set('ns/3', meta);
      await raw.set('ns/3', JSON.stringify({ value: sampleMeta(4) }));
      await raw.set('other::ns/4', JSON.stringify({ value: sampleMeta(4) }));
      await raw.hSet(`${REDIS_KEY_PREFIX}ns/5`, 'value', 'a hash, not a string');
      expect([...(await listAll(index)).entries()]).toEqual([['ns/3', meta]]);
    });

    it('fails at once when Redis is unreachable, so start-up and /readyz do not hang', async () => {
      const nobody = await startRedisServer();
      const url = nobody.url;
      await nobody.stop();
      const index = await own(createRedisIndex(url));
      // "cannot connect", not "did not answer within": refused, not waited out.
      await expect(index.ping()).rejects.toThrow(/redis index: cannot connect to redis:\/\/127\.0\.0\.1:\d+/);
      await expect(index.get('ns/1')).rejects.toThrow(/cannot read ns\/1/);
      await expect(index.set('ns/1', sampleMeta(1))).rejects.toThrow(/cannot store ns\/1/);
      await expect(index.delete('ns/1')).rejects.toThrow(/cannot delete ns\/1/);
      await expect(listAll(index)).rejects.toThrow(/cannot connect/);
      await expect(index.close()).resolves.toBeUndefined();
    });

    it('never puts a password from the URL into its errors', async () => {
      const nobody = await startRedisServer();
      await nobody.stop();
      const index = await own(createRedisIndex(`redis://user:s3cret-pass@127.0.0.1:${nobody.port}/0`));
      const error = await index.ping().then(
        () => undefined,
        (caught: unknown) => caught as Error,
      );
      expect(error?.message).toMatch(/cannot connect/);
      expect(String(error?.message)).not.toContain('s3cret-pass');
    });

    it('reconnects by itself once Redis is back', async () => {
      let server = await own(await startRedisServer());
      const index = await own(createRedisIndex(server.url));
      await index.set('ns/1', sampleMeta(1));
      await server.stop();
      await expect(index.get('ns/1')).rejects.toThrow(/redis index/);
      server = await own(await startRedisServer({ port: server.port }));
      const meta = sampleMeta(2);
      await index.set('ns/2', meta);
      expect(await index.get('ns/2')).toEqual(meta);
      await expect(index.ping()).resolves.toBeUndefined();
    });

    it('gives up on a stalled Redis at the deadline instead of hanging requests, then recovers', async () => {
      const server = await own(await startRedisServer());
      const index = await own(createRedisIndex(server.url, { operationTimeoutMs: 300 }));
      const meta = sampleMeta(1);
      await index.set('ns/1', meta);
      process.kill(server.pid, 'SIGSTOP');
      try {
        await expect(index.get('ns/1')).rejects.toThrow(/did not answer within 300 ms/);
        await expect(index.ping()).rejects.toThrow(/did not answer within 300 ms/);
      } finally {
        process.kill(server.pid, 'SIGCONT');
      }
      await vi.waitFor(async () => expect(await index.get('ns/1')).toEqual(meta), { timeout: 5_000, interval: 50 });
    });

    it('checks its options when created', () => {
      expect(() => createRedisIndex(redis.url, { operationTimeoutMs: 0 })).toThrow(/operationTimeoutMs must be a positive number/);
      expect(() => createRedisIndex(redis.url, { connectTimeoutMs: Number.NaN })).toThrow(/connectTimeoutMs/);
    });

    it('closes without a connection ever made, and rejects use after close', async () => {
      const index = createRedisIndex(redis.url);
      await index.close();
      await expect(index.get('ns/1')).rejects.toThrow('redis index: cannot read ns/1: closed');
    });
  });
});
