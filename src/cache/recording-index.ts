import Keyv from 'keyv';
import KeyvSqlite from '@keyv/sqlite';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { closeToOthers, PRIVATE_FILE_MODE } from '../private-files.js';
import type { Logger } from '../logger.js';
import { asDamagedIndex, INDEX_SIDE_FILES } from './damaged-index.js';
import { copyDatabaseTo, identityOf, IndexFileError, indexFileState } from './sqlite-index-file.js';
import { isRecordingMeta, type RecordingMeta } from './recording-meta.js';
import { StaleCopyError } from './stale-copy.js';

/**
 * Where the metadata of stored recordings lives. Each backend passes the same
 * contract suite (test/recording-index.contract.ts).
 */
export interface RecordingIndex {
  /** `sqlite` (one process owns it) or `redis` (replicas share it). */
  readonly kind: 'sqlite' | 'redis';
  get(key: string): Promise<RecordingMeta | undefined>;
  /**
   * Stores `meta` under `key`. Given `purgesSeen` (what `purges.count(key)`
   * said as the download began), refuses with {@link StaleCopyError}, writing
   * nothing, when a purge of the recording came since: checked and written
   * in one step, so a purge from any process sharing the index either comes
   * before (and wins) or after (and removes the copy).
   */
  set(key: string, meta: RecordingMeta, purgesSeen?: number): Promise<void>;
  delete(key: string): Promise<void>;
  /** Every stored entry, each key once; values that are not a {@link RecordingMeta} are skipped. */
  entries(): AsyncIterable<[string, RecordingMeta]>;
  /** As `entries`, only those fetched before `time` (ms since the epoch), chosen by the store without reading the others (sqlite). */
  entriesFetchedBefore?(time: number): AsyncIterable<[string, RecordingMeta]>;
  /** Resolves when the store answers; used by /readyz. */
  ping(): Promise<void>;
  close(): Promise<void>;
  /**
   * A shared index only: calls `onDelete` with each key another process
   * deleted (a purge or an eviction on another replica), so that this one
   * drops its memory copy too.
   */
  watchDeletes?(onDelete: (key: string) => void): Promise<void>;
  /** True when other processes write into this index too (Redis, a cluster's shared volume): start-up leaves their fresh files alone. */
  readonly shared?: boolean;
  /** Notes a hit, for an eviction order kept outside this process; synchronous and cheap. */
  touched?(key: string): void;
  /** Purge marks, kept in the index so every process sharing it sees them (see {@link PurgeMarks}). */
  readonly purges?: PurgeMarks;
  /**
   * The bytes of the recordings the index lists, in all and by namespace, as
   * every process writing into it left them: counted with each write, read in
   * one step (sqlite).
   */
  usage?(): Promise<StoredBytes>;
}

/** Bytes of stored recordings: in all, and by namespace (upstream account). */
export interface StoredBytes {
  total: number;
  byNamespace: Map<string, number>;
}

/**
 * How a purge wins over a download in progress in any process sharing the
 * index (the gateway and the CLI's `prefetch` on one sqlite file, replicas on
 * one Redis): each purge counts itself in the index, against the recording,
 * its namespace or everything, before it removes anything; a download notes
 * the count as it begins, and its store is refused if the count grew (see
 * `RecordingIndex.set`).
 */
export interface PurgeMarks {
  /** How many purges have reached `key` (`namespace/callId`) so far: of it, of its namespace, of everything. */
  count(key: string): Promise<number>;
  /** Counts a purge of one recording (both given), of a namespace (`callId` undefined), or of everything (neither). */
  mark(namespace?: string, callId?: string): Promise<void>;
}

/** Where purge marks live, beside the index's entries (outside `recordings:`, so never listed as one). */
const PURGES_PREFIX = 'purged:';

/** The marks a store of `key` is checked against: the recording's, its namespace's, everything's. */
export function purgeScopes(key: string): string[] {
  const namespace = key.slice(0, key.lastIndexOf('/'));
  return [purgeScope(namespace, key.slice(namespace.length + 1)), purgeScope(namespace), purgeScope()];
}

function purgeScope(namespace?: string, callId?: string): string {
  if (namespace === undefined) return `${PURGES_PREFIX}*`;
  return `${PURGES_PREFIX}${namespace}/${callId ?? ''}`;
}

/** An index whose volume is shared by several replicas, so its disk budget is kept together. */
export interface VolumeOverflow {
  /**
   * The copies to evict (oldest first) so the volume fits its budget with
   * `incoming` bytes more (`newcomer` about to be stored), or as it is (0:
   * `newcomer` was just stored, or none is); none when it fits.
   */
  overflow(newcomer?: RecordingMeta, incoming?: number): Promise<Array<{ key: string; meta: RecordingMeta }>>;
}

export const INDEX_NAMESPACE = 'recordings';
// Rows per query when listing the sqlite index: 100,000 entries in ten queries.
const SQLITE_PAGE_SIZE = 10_000;

/** What differs between the backends behind the one keyv-based index. */
export interface Backend {
  kind: RecordingIndex['kind'];
  /** Keyv without its own key prefix (it would misread keys that begin with the namespace). */
  keyv: Keyv;
  /** The key handed to keyv: the store's layout is `recordings:<key>` (sqlite), `recordings::<key>` (Redis). */
  storeKey(key: string): string;
  /** Runs one operation against the store (Redis: connects on demand, bounds its time). */
  run<T>(operation: () => Promise<T>): Promise<T>;
  /** Every [key without the namespace, raw stored value], each key once. */
  list(): AsyncIterable<[string, unknown]>;
  /** As `list`, only the entries whose `fetchedAt` is before `time`. */
  listFetchedBefore?(time: number): AsyncIterable<[string, unknown]>;
  ping(): Promise<void>;
  close(): Promise<void>;
  /** Tells the other processes sharing the store that a key is gone. */
  announceDelete?(key: string): Promise<void>;
  /** The sum of the purge counts under these scopes (see {@link purgeScopes}). */
  purgeCount(scopes: string[]): Promise<number>;
  /** Adds one to the purge count of a scope. */
  markPurged(scope: string): Promise<void>;
  /** Writes the serialized value under `storeKey` unless the scopes' purge count exceeds `seen`, in one step; answers whether it wrote. */
  setUnlessPurged(storeKey: string, serialized: string, scopes: string[], seen: number): Promise<boolean>;
  watchDeletes?(onDelete: (key: string) => void): Promise<void>;
  /** The bytes of the listed recordings, by namespace, as the store keeps them counted. */
  usage?(): Promise<StoredBytes>;
}

export function keyvIndex(backend: Backend): RecordingIndex {
  const { kind, keyv, usage } = backend;
  // keyv reports store errors as events and (with throwOnErrors) also rejects;
  // the listener only keeps an unhandled 'error' event from crashing us.
  keyv.on('error', () => {});
  const ownPrefix = `${kind} index: `;
  /**
   * `redis index: cannot read k: <why>`, the reason in the message for logs that drop causes,
   * and the cause's code, which marks an expected failure (logged on one line, src/logger.ts).
   */
  const fail = (what: string, cause: unknown) => {
    const why = cause instanceof Error ? cause.message.replace(ownPrefix, '') : undefined;
    const error = new Error(`${ownPrefix}${what}${why ? `: ${why}` : ''}`, { cause });
    const code = (cause as { code?: unknown } | undefined)?.code;
    return typeof code === 'string' ? Object.assign(error, { code }) : error;
  };

  /** What keyv.set would write for `meta` (no expiry), for a write keyv cannot make conditional. */
  async function serialize(meta: RecordingMeta): Promise<string> {
    const raw: unknown = await keyv.serialize?.({ value: meta, expires: undefined });
    if (typeof raw !== 'string') throw new TypeError(`${ownPrefix}keyv did not serialize an entry to a string`);
    return raw;
  }

  /** The listed entries that are recordings' metadata. */
  async function* decoded(listing: AsyncIterable<[string, unknown]>): AsyncIterable<[string, RecordingMeta]> {
    for await (const [key, raw] of listing) {
      const value = await decode(raw);
      if (isRecordingMeta(value)) yield [key, value];
    }
  }

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
    // A Redis server is written by every process that uses it.
    shared: kind === 'redis',
    async get(key) {
      let value: unknown;
      try {
        value = await backend.run(() => keyv.get(backend.storeKey(key)));
      } catch (error) {
        // keyv decodes outside its own error handling: an unreadable value is
        // absent for us, and the next store overwrites it.
        if (error instanceof SyntaxError) return undefined;
        throw fail(`cannot read ${key}`, error);
      }
      return isRecordingMeta(value) ? value : undefined;
    },
    async set(key, meta, purgesSeen) {
      let stored: boolean;
      try {
        stored =
          purgesSeen === undefined
            ? await backend.run(() => keyv.set(backend.storeKey(key), meta))
            : await backend.run(async () =>
                backend.setUnlessPurged(backend.storeKey(key), await serialize(meta), purgeScopes(key), purgesSeen),
              );
      } catch (error) {
        throw fail(`cannot store ${key}`, error);
      }
      if (stored) return;
      if (purgesSeen !== undefined) throw new StaleCopyError(`${key} was purged while it downloaded`);
      throw fail(`cannot store ${key}`, undefined);
    },
    async delete(key) {
      try {
        await backend.run(() => keyv.delete(backend.storeKey(key)));
        await backend.announceDelete?.(key);
      } catch (error) {
        throw fail(`cannot delete ${key}`, error);
      }
    },
    // Not keyv.iterator(): it throws on the first value it cannot decode
    // (or one deleted by another replica mid-listing), which would stop
    // the gateway from starting.
    entries: () => decoded(backend.list()),
    ...(backend.listFetchedBefore ? { entriesFetchedBefore: (time: number) => decoded(backend.listFetchedBefore!(time)) } : {}),
    async ping() {
      await backend.ping();
    },
    async close() {
      await backend.close();
    },
    purges: {
      async count(key) {
        try {
          return await backend.run(() => backend.purgeCount(purgeScopes(key)));
        } catch (error) {
          throw fail(`cannot read the purges of ${key}`, error);
        }
      },
      async mark(namespace, callId) {
        const scope = purgeScope(namespace, callId);
        try {
          await backend.run(() => backend.markPurged(scope));
        } catch (error) {
          throw fail(`cannot record a purge of ${scope.slice(PURGES_PREFIX.length)}`, error);
        }
      },
    },
    ...(backend.watchDeletes ? { watchDeletes: backend.watchDeletes } : {}),
    ...(usage
      ? {
          async usage() {
            try {
              return await backend.run(usage);
            } catch (error) {
              throw fail('cannot read the bytes stored', error);
            }
          },
        }
      : {}),
  };
}

/** Where the bytes of each namespace's recordings are counted, beside the entries (outside `recordings:`, so never listed as one). */
const BYTES_PREFIX = 'bytes:';
const BYTES_ROWS = `key >= '${BYTES_PREFIX}' AND key < 'bytes;'`;

/**
 * Keeps the bytes of the listed recordings counted by namespace in rows
 * `bytes:<namespace>`, by triggers on the entries' rows: every write by any
 * process on the index (a replica sharing the volume, the CLI, an older
 * version) counts in the same statement, so the count is always that of the
 * entries. Installed once, in one transaction with the count of the entries
 * already there (one pass); later opens only look for the triggers.
 */
async function countStoredBytes(query: (sql: string) => Promise<unknown>, table: string): Promise<void> {
  const entries = (row: string) => `${row}.key >= '${INDEX_NAMESPACE}:' AND ${row}.key < '${INDEX_NAMESPACE};'`;
  // A value that is not JSON (not ours) counts nothing rather than failing the write.
  const sizes = (value: string, from = '') => `
    SELECT json_extract(json, '$.value.namespace') AS namespace, json_extract(json, '$.value.size') AS size
    FROM (SELECT CASE WHEN json_valid(${value}) THEN ${value} ELSE '{}' END AS json ${from})
    WHERE typeof(namespace) = 'text' AND typeof(size) = 'integer'`;
  const add = (row: string, sign: string) => `
    INSERT INTO ${table} (key, value) SELECT '${BYTES_PREFIX}' || namespace, ${sign} size FROM (${sizes(`${row}.value`)}) WHERE true
    ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER);`;
  const installed = async () =>
    ((await query(`SELECT name FROM sqlite_master WHERE type = 'trigger' AND name = '${INDEX_NAMESPACE}_bytes_delete'`)) as unknown[])
      .length > 0;
  // Looked for first without the write lock, which every later open would otherwise take.
  if (await installed()) return;
  await query('BEGIN IMMEDIATE');
  try {
    if (!(await installed())) {
      await query(`DELETE FROM ${table} WHERE ${BYTES_ROWS}`);
      await query(
        `INSERT INTO ${table} (key, value) SELECT '${BYTES_PREFIX}' || namespace, SUM(size)
         FROM (${sizes('value', `FROM ${table} WHERE ${entries(table)}`)}) GROUP BY namespace`,
      );
      await query(
        `CREATE TRIGGER ${INDEX_NAMESPACE}_bytes_insert AFTER INSERT ON ${table} WHEN ${entries('new')} BEGIN ${add('new', '')} END`,
      );
      await query(
        `CREATE TRIGGER ${INDEX_NAMESPACE}_bytes_update AFTER UPDATE ON ${table} WHEN ${entries('old')} BEGIN ${add('old', '-')} ${add('new', '')} END`,
      );
      await query(
        `CREATE TRIGGER ${INDEX_NAMESPACE}_bytes_delete AFTER DELETE ON ${table} WHEN ${entries('old')} BEGIN ${add('old', '-')} END`,
      );
    }
    await query('COMMIT');
  } catch (error) {
    await query('ROLLBACK').catch(() => {});
    throw error;
  }
}

const BUSY_TIMEOUT_MS = 5_000;
const BUSY_RETRY_MS = 20;

/**
 * Runs `operation` again while sqlite answers SQLITE_BUSY, for up to
 * `BUSY_TIMEOUT_MS`. sqlite answers it at once, without waiting out the busy
 * timeout, where waiting could deadlock: `PRAGMA journal_mode=WAL` while
 * another connection holds a write lock on a database not yet in WAL (an
 * index another process is opening or writing in the same moment).
 */
async function retriedWhileBusy(operation: () => Promise<void>): Promise<void> {
  const giveUpAt = Date.now() + BUSY_TIMEOUT_MS;
  for (;;) {
    try {
      return await operation();
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'SQLITE_BUSY' || Date.now() >= giveUpAt) throw error;
      await delay(BUSY_RETRY_MS);
    }
  }
}

/** Puts the index in WAL mode and counts its bytes, each a no-op once done. */
function tuneIndex(store: KeyvSqlite): Promise<void> {
  return retriedWhileBusy(async () => {
    await store.query('PRAGMA journal_mode=WAL');
    await countStoredBytes((sql) => store.query(sql), store.opts.table ?? 'keyv');
  });
}

async function tuneIndexAlone(file: string): Promise<void> {
  const store = openSqliteStore(file);
  try {
    await tuneIndex(store);
  } finally {
    await store.disconnect();
  }
}

function openSqliteStore(file: string): KeyvSqlite {
  return new KeyvSqlite({ uri: `sqlite://${file}`, busyTimeout: BUSY_TIMEOUT_MS });
}

/** Where the embedded index lives in a cache directory. */
export function sqliteIndexFile(cacheDir: string): string {
  return path.join(cacheDir, 'index.sqlite');
}

/**
 * sqlite creates a new database 0644 (less the umask), and its -wal and -shm
 * files with the mode of the database: an index created here first, empty
 * and closed to other users, or an older one closed now, keeps all three
 * from them. Errors are left to sqlite, which names the file (SQLITE_CANTOPEN).
 */
function closeIndexToOthers(file: string): void {
  try {
    closeSync(openSync(file, 'wx', PRIVATE_FILE_MODE));
  } catch {
    // There already (closed below), or sqlite will say why it cannot be.
  }
  for (const suffix of ['', ...INDEX_SIDE_FILES]) closeToOthers(file + suffix);
}

export interface SqliteIndexOptions {
  /**
   * For the serving gateway, never a second process (the CLI): an index file
   * deleted under it is put back from the open index when /readyz pings it,
   * and said so to `logger`. Without it, the ping only fails, saying so.
   */
  restoreDeleted?: { logger: Logger };
}

/** The embedded default: a sqlite file inside the cache directory, closed to other users. */
export function createSqliteIndex(cacheDir: string, options: SqliteIndexOptions = {}): RecordingIndex {
  const file = sqliteIndexFile(cacheDir);
  closeIndexToOthers(file);
  let store = openSqliteStore(file);
  let opened = identityOf(file);
  // throwOnErrors: without it keyv.get() turns a broken store into "not found",
  // and ping() would report a dead index as ready.
  const keyv = new Keyv({ store, namespace: INDEX_NAMESPACE, useKeyPrefix: false, throwOnErrors: true });
  // @keyv/sqlite does not prefix keys itself: `recordings:<key>` is the layout
  // keyv's own prefixing gives, without its quirks.
  const prefix = `${INDEX_NAMESPACE}:`;
  let closing: Promise<void> | undefined;
  const table = () => store.opts.table ?? 'keyv';
  let bytesCounted = false;
  // WAL lets the CLI read while the gateway writes, and with synchronous=NORMAL
  // a store costs no fsync of its own: the recording file was fsynced before
  // it was indexed, and an entry lost to a power cut only means a refetch.
  // An index that cannot be tuned still answers: what is wrong with it shows
  // in its operations, and usage() tries the count again.
  let tuningError: unknown;
  const counted = (tuning: Promise<void>) =>
    tuning.then(
      () => {
        bytesCounted = true;
      },
      (error: unknown) => {
        tuningError = error;
      },
    );
  const tuned = counted(store.query('PRAGMA synchronous=NORMAL').then(() => tuneIndex(store)));
  let countingAgain: Promise<void> | undefined;
  // Through a connection of its own: this one's operations go on meanwhile, and none may join its transaction.
  const countAgain = () => {
    countingAgain ??= counted(tuneIndexAlone(file)).finally(() => {
      countingAgain = undefined;
    });
    return countingAgain;
  };
  // Operations under way, so that a restore copies the database once they are done, and those that come meanwhile wait for it.
  let underWay = 0;
  let idle: (() => void) | undefined;
  let restoring: Promise<void> | undefined;
  const run = async <T>(operation: () => Promise<T>): Promise<T> => {
    if (closing) throw new Error('sqlite index: closed');
    await tuned;
    while (restoring) await restoring;
    underWay++;
    try {
      return await operation();
    } catch (error) {
      throw asDamagedIndex(file, error);
    } finally {
      if (--underWay === 0) idle?.();
    }
  };
  /** Puts a deleted index file back: a copy of the open database, which every operation uses from then on. */
  const restore = async (): Promise<void> => {
    if (underWay > 0) await new Promise<void>((resolve) => (idle = resolve));
    idle = undefined;
    await copyDatabaseTo((sql, ...parameters) => store.query(sql, ...parameters), file);
    const restored = openSqliteStore(file);
    await restored.query('PRAGMA synchronous=NORMAL');
    await tuneIndex(restored);
    const deleted = store;
    store = restored;
    keyv.store = restored;
    opened = identityOf(file);
    await deleted.disconnect().catch(() => {});
  };
  /** Rejects with an {@link IndexFileError} while the index file is not the one open. */
  const checkFile = async (): Promise<void> => {
    while (restoring) await restoring;
    const state = await indexFileState(file, opened);
    if (state === 'same') return;
    if (state === 'replaced') throw new IndexFileError('its file was replaced while the gateway ran; restart the gateway');
    const logger = options.restoreDeleted?.logger;
    if (!logger) throw new IndexFileError('its file was deleted while the gateway ran; restart the gateway');
    if (!restoring) logger.warn({ file }, 'the cache index file was deleted while the gateway ran; restoring it from the open index');
    // One restore at a time, however many probes saw the file gone.
    restoring ??= restore()
      .then(
        () => logger.info({ file }, 'the cache index file is restored'),
        (error: unknown) =>
          logger.warn({ err: error, file }, 'restoring the deleted cache index file failed; the next /readyz tries again'),
      )
      .finally(() => {
        restoring = undefined;
      });
    throw new IndexFileError('its file was deleted while the gateway ran; restoring it');
  };
  /** The entries' rows (those `where` also keeps, with its `parameters`), a page of keys at a time. */
  async function* listPages(where: string, parameters: unknown[] = []): AsyncIterable<[string, unknown]> {
    const end = `${INDEX_NAMESPACE};`;
    let after: string | undefined;
    for (;;) {
      const rows = (await run(() =>
        store.query(
          `SELECT key, value FROM ${table()} WHERE key ${after === undefined ? '>=' : '>'} ? AND key < ? ${where} ORDER BY key LIMIT ?`,
          [after ?? prefix, end, ...parameters, SQLITE_PAGE_SIZE],
        ),
      )) as Array<{ key: string; value: unknown }>;
      for (const row of rows) yield [row.key.slice(prefix.length), row.value];
      const last = rows.at(-1);
      if (!last || rows.length < SQLITE_PAGE_SIZE) return;
      after = last.key;
    }
  }
  return keyvIndex({
    kind: 'sqlite',
    keyv,
    storeKey: (key) => prefix + key,
    run,
    /**
     * Not @keyv/sqlite's iterator: it pages with LIMIT/OFFSET, so entries
     * deleted while listing (start-up reconciliation does) make it skip as
     * many live ones, and every page rescans the rows before it. Paging by
     * key seeks the primary key instead. Keys `recordings:…` sort (bytewise,
     * sqlite's default) between the prefix and the prefix with ':' + 1.
     */
    list: () => listPages(''),
    // Read by sqlite: a sweep every 20 s decodes the few old entries, not all of a large cache's.
    listFetchedBefore: (time) =>
      listPages(`AND (CASE WHEN json_valid(value) THEN json_extract(value, '$.value.fetchedAt') END) < ?`, [time]),
    async ping() {
      await run(() => keyv.get(`${prefix}__ping__`));
      await checkFile();
    },
    // Marks are plain integers in rows of their own (`purged:...`), outside the entries' key range.
    async purgeCount(scopes) {
      const rows = (await store.query(
        `SELECT COALESCE(SUM(CAST(value AS INTEGER)), 0) AS n FROM ${table()} WHERE key IN (SELECT value FROM json_each(?))`,
        JSON.stringify(scopes),
      )) as Array<{ n: number }>;
      return Number(rows[0]?.n ?? 0);
    },
    async markPurged(scope) {
      await store.query(
        `INSERT INTO ${table()} (key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1`,
        scope,
      );
    },
    // One statement, so no purge from another process falls between the check and the write.
    async setUnlessPurged(storeKey, serialized, scopes, seen) {
      const rows = (await store.query(
        `INSERT INTO ${table()} (key, value) SELECT ?, ?
         WHERE (SELECT COALESCE(SUM(CAST(value AS INTEGER)), 0) FROM ${table()} WHERE key IN (SELECT value FROM json_each(?))) <= ?
         ON CONFLICT(key) DO UPDATE SET value = excluded.value RETURNING key`,
        storeKey,
        serialized,
        JSON.stringify(scopes),
        seen,
      )) as unknown[];
      return rows.length > 0;
    },
    async usage() {
      if (!bytesCounted) await countAgain();
      if (!bytesCounted) throw tuningError;
      const rows = (await store.query(`SELECT key, CAST(value AS INTEGER) AS bytes FROM ${table()} WHERE ${BYTES_ROWS}`)) as Array<{
        key: string;
        bytes: number;
      }>;
      const byNamespace = new Map<string, number>();
      for (const { key, bytes } of rows) if (bytes > 0) byNamespace.set(key.slice(BYTES_PREFIX.length), bytes);
      return { total: [...byNamespace.values()].reduce((sum, bytes) => sum + bytes, 0), byNamespace };
    },
    close: () => (closing ??= (restoring ?? Promise.resolve()).then(() => keyv.disconnect())),
  });
}
