import type Keyv from 'keyv';
import { eachAtMost } from '../each-at-most.js';
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
  /** As `delete` for each key, in a few round trips to the store rather than one per key (start-up's reconciliation, a local purge). */
  deleteMany?(keys: readonly string[]): Promise<void>;
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

/** Keys a store is asked to delete in one operation: a bound on the statement (sqlite) or transaction (Redis). */
const DELETED_AT_ONCE = 500;

// Deletes under way at once in an index without deleteMany: each is a round trip that costs more waiting than work.
const ENTRY_DELETES_AT_ONCE = 16;

/** Deletes every key: with `deleteMany` where the index has it, else entry by entry, a few at once. */
export function deleteEntries(index: RecordingIndex, keys: readonly string[]): Promise<void> {
  return index.deleteMany ? index.deleteMany(keys) : eachAtMost(keys, ENTRY_DELETES_AT_ONCE, (key) => index.delete(key));
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
    async deleteMany(keys) {
      for (let from = 0; from < keys.length; from += DELETED_AT_ONCE) {
        const some = keys.slice(from, from + DELETED_AT_ONCE);
        try {
          await backend.run(() => keyv.deleteMany(some.map((key) => backend.storeKey(key))));
          // Sent together, not one round trip each: Redis's client pipelines them.
          if (backend.announceDelete) await Promise.all(some.map((key) => backend.announceDelete!(key)));
        } catch (error) {
          throw fail(`cannot delete ${some.length} entries from ${some[0]}`, error);
        }
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
