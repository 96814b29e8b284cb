import Keyv from 'keyv';
import KeyvSqlite from '@keyv/sqlite';
import KeyvRedis, { createClient } from '@keyv/redis';
import path from 'node:path';
import { isRecordingMeta, type RecordingMeta } from './recording-meta.js';

/**
 * Where the metadata of stored recordings lives. Each backend passes the same
 * contract suite (test/recording-index.contract.ts).
 */
export interface RecordingIndex {
  /** `sqlite` (one process owns it) or `redis` (replicas share it). */
  readonly kind: 'sqlite' | 'redis';
  get(key: string): Promise<RecordingMeta | undefined>;
  set(key: string, meta: RecordingMeta): Promise<void>;
  delete(key: string): Promise<void>;
  /** Every stored entry, each key once; values that are not a {@link RecordingMeta} are skipped. */
  entries(): AsyncIterable<[string, RecordingMeta]>;
  /** Resolves when the store answers; used by /readyz. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

const INDEX_NAMESPACE = 'recordings';
// @keyv/sqlite pages with LIMIT/OFFSET (10 rows by default): large pages keep a
// start-up listing of 100,000 entries to a few queries.
const SQLITE_PAGE_SIZE = 10_000;
// SCAN's default COUNT is 10, which makes listing 100,000 keys 20,000 round trips.
const REDIS_SCAN_COUNT = 1_000;
const REDIS_CONNECT_TIMEOUT_MS = 5_000;
const REDIS_COMMAND_TIMEOUT_MS = 5_000;

/** What differs between the backends behind the one keyv-based index. */
interface Backend {
  kind: RecordingIndex['kind'];
  keyv: Keyv;
  /** Runs before every operation: the Redis connection is opened on demand. */
  ready(): Promise<void>;
  /** Every [key without the namespace, raw stored value]; may repeat a key. */
  list(): AsyncIterable<[string, unknown]>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

function keyvIndex(backend: Backend): RecordingIndex {
  const { kind, keyv } = backend;
  // keyv reports store errors as events and (with throwOnErrors) also rejects;
  // the listener only keeps an unhandled 'error' event from crashing us.
  keyv.on('error', () => {});
  const fail = (what: string, cause: unknown) => new Error(`${kind} index: ${what}`, { cause });

  /** keyv's stored form is JSON `{value, expires}`; anything unreadable is not ours. */
  async function decode(raw: unknown): Promise<unknown> {
    if (typeof raw !== 'string') return undefined;
    try {
      const data = await keyv.deserialize?.<unknown>(raw);
      if (typeof data !== 'object' || data === null) return undefined;
      if (typeof data.expires === 'number' && data.expires < Date.now()) return undefined;
      return data.value;
    } catch {
      return undefined;
    }
  }

  return {
    kind,
    async get(key) {
      await backend.ready();
      let value: unknown;
      try {
        value = await keyv.get(key);
      } catch (error) {
        // keyv decodes outside its own error handling: an unreadable value is
        // absent for us, and the next store overwrites it.
        if (error instanceof SyntaxError) return undefined;
        throw fail(`cannot read ${key}`, error);
      }
      return isRecordingMeta(value) ? value : undefined;
    },
    async set(key, meta) {
      await backend.ready();
      let stored: boolean;
      try {
        stored = await keyv.set(key, meta);
      } catch (error) {
        throw fail(`cannot store ${key}`, error);
      }
      if (!stored) throw fail(`cannot store ${key}`, undefined);
    },
    async delete(key) {
      await backend.ready();
      try {
        await keyv.delete(key);
      } catch (error) {
        throw fail(`cannot delete ${key}`, error);
      }
    },
    async *entries() {
      await backend.ready();
      // Not keyv.iterator(): it throws on the first value it cannot decode
      // (or one deleted by another replica mid-listing), which would stop
      // the gateway from starting.
      for await (const [key, raw] of backend.list()) {
        const value = await decode(raw);
        if (isRecordingMeta(value)) yield [key, value];
      }
    },
    async ping() {
      await backend.ready();
      await backend.ping();
    },
    async close() {
      await backend.close();
    },
  };
}

/** The embedded default: a sqlite file inside the cache directory. */
export function createSqliteIndex(cacheDir: string): RecordingIndex {
  const store = new KeyvSqlite({ uri: `sqlite://${path.join(cacheDir, 'index.sqlite')}`, busyTimeout: 5_000, iterationLimit: SQLITE_PAGE_SIZE });
  // throwOnErrors: without it keyv.get() turns a broken store into "not found",
  // and ping() would report a dead index as ready.
  const keyv = new Keyv({ store, namespace: INDEX_NAMESPACE, throwOnErrors: true });
  // keyv stores `recordings:<key>` and @keyv/sqlite lists `LIKE 'recordings:%'`.
  const prefix = `${INDEX_NAMESPACE}:`;
  let closing: Promise<void> | undefined;
  return keyvIndex({
    kind: 'sqlite',
    keyv,
    ready: async () => {
      if (closing) throw new Error('sqlite index: closed');
    },
    async *list() {
      for await (const [key, raw] of store.iterator(INDEX_NAMESPACE) as AsyncIterable<[string, unknown]>) {
        if (key.startsWith(prefix)) yield [key.slice(prefix.length), raw];
      }
    },
    ping: async () => {
      await keyv.get('__ping__');
    },
    close: () => (closing ??= keyv.disconnect()),
  });
}

/** `redis://host:port/db` without credentials, for error messages. */
function describeRedisUrl(url: string): string {
  try {
    const { protocol, host, pathname } = new URL(url);
    return `${protocol}//${host}${pathname === '/' ? '' : pathname}`;
  } catch {
    return 'the configured Redis URL';
  }
}

/** The shared index for several replicas: a Redis server. */
export function createRedisIndex(url: string): RecordingIndex {
  const where = describeRedisUrl(url);
  // @keyv/redis's own client retries a failed connect forever and queues
  // commands meanwhile, so start-up, /readyz and close() hang while Redis is
  // down. This one fails fast instead: no background reconnects (the next
  // operation reconnects), no offline queue, bounded connect and command times.
  const client = createClient({
    url,
    disableOfflineQueue: true,
    commandOptions: { timeout: REDIS_COMMAND_TIMEOUT_MS },
    socket: { connectTimeout: REDIS_CONNECT_TIMEOUT_MS, reconnectStrategy: false },
  });
  const store = new KeyvRedis(client, { throwOnConnectError: true, throwOnErrors: true });
  // @keyv/redis prefixes `recordings::` itself; keyv's own prefix would double it.
  const keyv = new Keyv({ store, namespace: INDEX_NAMESPACE, useKeyPrefix: false, throwOnErrors: true });
  const prefix = `${INDEX_NAMESPACE}${store.keyPrefixSeparator}`;
  let connecting: Promise<void> | undefined;
  let closed = false;

  async function connect(): Promise<void> {
    // Open but not ready only while @keyv/redis itself reconnects after a drop
    // that raced an operation; that operation fails like any other.
    if (client.isOpen) throw new Error(`redis index: not connected to ${where}`);
    try {
      await client.connect();
    } catch (error) {
      throw new Error(`redis index: cannot connect to ${where}`, { cause: error });
    }
  }

  return keyvIndex({
    kind: 'redis',
    keyv,
    ready() {
      if (closed) return Promise.reject(new Error('redis index: closed'));
      if (client.isReady) return Promise.resolve();
      connecting ??= connect().finally(() => {
        connecting = undefined;
      });
      return connecting;
    },
    async *list() {
      // SCAN may return a key more than once (while Redis rehashes).
      const seen = new Set<string>();
      for await (const batch of client.scanIterator({ MATCH: `${prefix}*`, COUNT: REDIS_SCAN_COUNT, TYPE: 'string' })) {
        const keys = batch.filter((key) => !seen.has(key));
        if (keys.length === 0) continue;
        for (const key of keys) seen.add(key);
        const values = await client.mGet(keys);
        for (const [i, key] of keys.entries()) yield [key.slice(prefix.length), values[i] ?? undefined];
      }
    },
    ping: async () => {
      await client.ping();
    },
    async close() {
      if (closed) return;
      closed = true;
      await connecting?.catch(() => {});
      // destroy(), not close(): close() waits for replies a dead server never sends.
      if (client.isOpen) client.destroy();
    },
  });
}
