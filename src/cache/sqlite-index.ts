import Keyv from 'keyv';
import type KeyvSqlite from '@keyv/sqlite';
import { closeSync, existsSync, openSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../logger.js';
import { closeToOthers, PRIVATE_FILE_MODE } from '../private-files.js';
import { asDamagedIndex, INDEX_SIDE_FILES } from './damaged-index.js';
import { INDEX_NAMESPACE, keyvIndex, type RecordingIndex } from './recording-index.js';
import {
  asDeletedLog,
  changedSideFile,
  checkpointLog,
  copyDatabaseTo,
  identityOf,
  IndexFileError,
  indexFileState,
  sideFileIdentities,
  type FileIdentity,
} from './sqlite-index-file.js';
import { BYTES_PREFIX, BYTES_ROWS, openSqliteStore, tuneIndex, tuneIndexAlone } from './sqlite-tuning.js';

// Rows per query when listing the sqlite index: 100,000 entries in ten queries.
const SQLITE_PAGE_SIZE = 10_000;

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
  /**
   * For a process beside the gateway (the CLI, `prefetch`): an index missing
   * from a cache directory that holds recordings is refused, not created
   * empty, since the serving gateway may have it open and put it back, and
   * would take an empty one for another's (and the next start would remove
   * every recording as unindexed).
   */
  refuseMissing?: boolean;
}

/** Whether `cacheDir/recordings` holds a recording's file: a cache in use, whose index is not to be made anew. */
function holdsRecordings(cacheDir: string): boolean {
  const root = path.join(cacheDir, 'recordings');
  try {
    return readdirSync(root).some((namespace) => {
      try {
        return readdirSync(path.join(root, namespace)).some((name) => name.endsWith('.mp3'));
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

/** The embedded default: a sqlite file inside the cache directory, closed to other users. */
export function createSqliteIndex(cacheDir: string, options: SqliteIndexOptions = {}): RecordingIndex {
  const file = sqliteIndexFile(cacheDir);
  if (options.refuseMissing && !existsSync(file) && holdsRecordings(cacheDir)) {
    throw new MissingIndexError(
      `${file} is missing while the cache holds recordings: a running gateway puts it back at its next /readyz (probe it, then run this again); this command does not make a new one in its place`,
    );
  }
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
  let openedSideFiles = new Map<string, FileIdentity>();
  // Once sqlite has made them; a failed start is reported by the operations that wait on `tuned`.
  tuned.then(
    () => {
      openedSideFiles = sideFileIdentities(file);
    },
    () => {},
  );
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
      throw await asDeletedLog(file, asDamagedIndex(file, error));
    } finally {
      if (--underWay === 0) idle?.();
    }
  };
  const operationsDone = async (): Promise<void> => {
    if (underWay > 0) await new Promise<void>((resolve) => (idle = resolve));
    idle = undefined;
  };
  const openTuned = async (): Promise<KeyvSqlite> => {
    const opening = openSqliteStore(file);
    await opening.query('PRAGMA synchronous=NORMAL');
    await tuneIndex(opening);
    return opening;
  };
  const use = (next: KeyvSqlite): void => {
    store = next;
    keyv.store = next;
    opened = identityOf(file);
    openedSideFiles = sideFileIdentities(file);
  };
  /** Puts a deleted index file back: a copy of the open database, which every operation uses from then on. */
  const restore = async (): Promise<void> => {
    await operationsDone();
    await copyDatabaseTo((sql, ...parameters) => store.query(sql, ...parameters), file);
    const deleted = store;
    use(await openTuned());
    await deleted.disconnect().catch(() => {});
  };
  // A side file found deleted or replaced, until the reopen it calls for succeeds.
  let changedSide: { suffix: string; state: 'deleted' | 'replaced' } | undefined;
  // Set once the connection is closed for a reopen that has not opened the next one yet.
  let closedForReopen = false;
  /**
   * Writes the write-ahead log the connection still has open into the index
   * file, closes it, and opens the index again: sqlite then makes a new -wal
   * and -shm where they belong. Closed before the next is opened, since
   * connections of one process share the -shm the first one opened.
   */
  const reopen = async (): Promise<void> => {
    await operationsDone();
    if (!closedForReopen) {
      await checkpointLog((sql) => store.query(sql));
      await store.disconnect();
      closedForReopen = true;
    }
    use(await openTuned());
    closedForReopen = false;
  };
  /** Starts `repair` unless one is under way (however many probes saw the trouble), and logs how it went; operations wait for it. */
  const repairOnce = (logger: Logger, repair: () => Promise<void>, done: string, failed: string): void => {
    restoring ??= repair()
      .then(
        () => logger.info({ file }, done),
        (error: unknown) => logger.warn({ err: error, file }, failed),
      )
      .finally(() => {
        restoring = undefined;
      });
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
    repairOnce(
      logger,
      restore,
      'the cache index file is restored',
      'restoring the deleted cache index file failed; the next /readyz tries again',
    );
    throw new IndexFileError('its file was deleted while the gateway ran; restoring it');
  };
  /** Rejects with an {@link IndexFileError} while the -wal or -shm the connection uses is not the one at its place. */
  const checkSideFiles = async (): Promise<void> => {
    while (restoring) await restoring;
    changedSide ??= await changedSideFile(file, openedSideFiles);
    if (!changedSide) return;
    const what = `its ${changedSide.suffix} file was ${changedSide.state} while the gateway ran`;
    const logger = options.restoreDeleted?.logger;
    if (!logger) throw new IndexFileError(`${what}; restart the gateway`);
    if (!restoring) {
      logger.warn(
        { file: file + changedSide.suffix },
        `the cache index's ${changedSide.suffix} file was ${changedSide.state} while the gateway ran; writing its log into the index file and opening the index again`,
      );
    }
    repairOnce(
      logger,
      async () => {
        await reopen();
        changedSide = undefined;
      },
      'the cache index is open again, with its -wal and -shm in place; no entry was lost',
      'opening the cache index again failed; the next /readyz tries again',
    );
    throw new IndexFileError(`${what}; opening the index again`);
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
      await checkSideFiles();
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
    close: () => (closing ??= (restoring ?? Promise.resolve()).then(() => (closedForReopen ? undefined : keyv.disconnect()))),
  });
}

/** A second process found the index missing from a cache in use (see `SqliteIndexOptions.refuseMissing`). */
export class MissingIndexError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MissingIndexError';
  }
}
