import Keyv from 'keyv';
import KeyvSqlite from '@keyv/sqlite';
import KeyvRedis from '@keyv/redis';
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
  entries(): AsyncIterable<[string, RecordingMeta]>;
  /** Resolves when the store answers; used by /readyz. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

const INDEX_NAMESPACE = 'recordings';
// @keyv/sqlite pages with LIMIT/OFFSET (10 rows by default): large pages keep a
// start-up listing of 100,000 entries to a few queries.
const SQLITE_PAGE_SIZE = 10_000;

function keyvIndex(kind: RecordingIndex['kind'], keyv: Keyv, closeStore: () => Promise<void>): RecordingIndex {
  // keyv reports store errors as events; the calls below still reject, so the
  // listener exists only to keep an unhandled 'error' event from crashing us.
  keyv.on('error', () => {});
  return {
    kind,
    async get(key) {
      const value: unknown = await keyv.get(key);
      return isRecordingMeta(value) ? value : undefined;
    },
    async set(key, meta) {
      if (!(await keyv.set(key, meta))) throw new Error(`${kind} index: could not store ${key}`);
    },
    async delete(key) {
      await keyv.delete(key);
    },
    async *entries() {
      if (!keyv.iterator) throw new Error(`${kind} index: the store cannot list its entries`);
      for await (const [key, value] of keyv.iterator(undefined) as AsyncIterable<[string, unknown]>) {
        if (isRecordingMeta(value)) yield [key, value];
      }
    },
    async ping() {
      await keyv.get('__ping__');
    },
    async close() {
      await closeStore();
    },
  };
}

/** The embedded default: a sqlite file inside the cache directory. */
export function createSqliteIndex(cacheDir: string): RecordingIndex {
  const store = new KeyvSqlite({ uri: `sqlite://${path.join(cacheDir, 'index.sqlite')}`, busyTimeout: 5_000, iterationLimit: SQLITE_PAGE_SIZE });
  const keyv = new Keyv({ store, namespace: INDEX_NAMESPACE });
  return keyvIndex('sqlite', keyv, () => keyv.disconnect());
}

/** The shared index for several replicas: a Redis server. */
export function createRedisIndex(url: string): RecordingIndex {
  const store = new KeyvRedis(url, { throwOnConnectError: true, throwOnErrors: true });
  const keyv = new Keyv({ store, namespace: INDEX_NAMESPACE });
  return keyvIndex('redis', keyv, () => keyv.disconnect());
}
