import KeyvSqlite from '@keyv/sqlite';
import { setTimeout as delay } from 'node:timers/promises';
import { INDEX_NAMESPACE } from './recording-index.js';

/*
 * How the sqlite index is opened and set up: WAL, and the byte counts kept
 * beside the entries by triggers. Each step is a no-op once done.
 */

/** Where the bytes of each namespace's recordings are counted, beside the entries (outside `recordings:`, so never listed as one). */
export const BYTES_PREFIX = 'bytes:';
export const BYTES_ROWS = `key >= '${BYTES_PREFIX}' AND key < 'bytes;'`;

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
export function tuneIndex(store: KeyvSqlite): Promise<void> {
  return retriedWhileBusy(async () => {
    await store.query('PRAGMA journal_mode=WAL');
    await countStoredBytes((sql) => store.query(sql), store.opts.table ?? 'keyv');
  });
}

export async function tuneIndexAlone(file: string): Promise<void> {
  const store = openSqliteStore(file);
  try {
    await tuneIndex(store);
  } finally {
    await store.disconnect();
  }
}

export function openSqliteStore(file: string): KeyvSqlite {
  return new KeyvSqlite({ uri: `sqlite://${file}`, busyTimeout: BUSY_TIMEOUT_MS });
}
