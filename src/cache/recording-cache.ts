import type { Logger } from '../logger.js';
import type { DiskHealth } from './disk-health.js';
import type { DiskStore } from './disk-store.js';
import { markFreeingRoom } from './full-disk-purge.js';
import { reconcileCache, type ReconcileReport } from './reconcile.js';
import type { CopyRetention } from './retention.js';
import { RecordingCatalogue, type CacheHit, type CacheStats, type CachedRecording } from './recording-catalogue.js';
import type { RecordingIndex, VolumeOverflow } from './recording-index.js';
import { StaleCopyError } from './stale-copy.js';
import { StoredRemovals } from './stored-removals.js';
import { DamagedFileError, reportingDamage, type StoredFile } from './stored-file.js';
import { cacheKey, type RecordingFacts, type RecordingMeta } from './recording-meta.js';
import type { TempFile } from './temp-file.js';
import { isIntact } from './verify.js';
import { verifyingReadThrough } from './verifying-file.js';

export type { CacheHit, CacheStats, CachedRecording } from './recording-catalogue.js';

export interface RecordingCacheOptions {
  disk: DiskStore;
  index: RecordingIndex;
  diskHealth: DiskHealth;
  maxMemoryBytes: number;
  maxDiskBytes: number;
  /** Each upstream account's disk share in bytes, by namespace (see `accountDiskShares`). */
  diskShares?: ReadonlyMap<string, number>;
  logger: Logger;
  /** Told how many recordings each eviction removed (for the metrics). */
  onEvict?: (count: number) => void;
  /** Retention (cache.retention_days): an expired copy is a miss, and one with retention 0 never goes to disk. */
  retention?: CopyRetention | undefined;
  /** Told of each recording once stored (to analyse it in the background); must not block. */
  onStored?: (entry: CachedRecording) => void;
}

function isVolumeShared(index: RecordingIndex): index is RecordingIndex & VolumeOverflow {
  return typeof (index as Partial<VolumeOverflow>).overflow === 'function';
}

/**
 * The cache's I/O around its {@link RecordingCatalogue}: the files (through
 * the disk store), the index, and the checks that keep a damaged file from
 * being served. A failing disk or index is logged and bypassed. The catalogue
 * holds the metadata of every recording in memory (mirrored to the index), so
 * a lookup never waits on I/O.
 */
export class RecordingCache {
  readonly memoryEntryMaxBytes: number;
  readonly #catalogue: RecordingCatalogue;
  readonly #removals: StoredRemovals;
  /** Large recordings read through whole and found intact, with their file's ctime then. */
  readonly #intactAt = new WeakMap<CachedRecording, number>();

  constructor(private readonly options: RecordingCacheOptions) {
    this.#catalogue = new RecordingCatalogue(options);
    this.memoryEntryMaxBytes = this.#catalogue.memoryEntryMaxBytes;
    this.#removals = new StoredRemovals({
      disk: options.disk,
      index: options.index,
      onUndeleted: (key, meta) => {
        if (meta && !this.#catalogue.peek(key)) this.#catalogue.add(key, meta, true);
      },
    });
  }

  /**
   * Reconciles the index with the files (a crash at any moment leaves a
   * consistent cache) and reads what is left into memory, oldest first. A
   * second process on a live cache (the CLI) passes `reconcile: false`.
   */
  async load(options: { reconcile?: boolean } = {}): Promise<ReconcileReport> {
    const { entries, report } =
      options.reconcile === false
        ? await this.#listOnly()
        : await reconcileCache(this.options.index, this.options.disk, this.options.logger);
    entries.sort((a, b) => a[1].fetchedAt - b[1].fetchedAt);
    for (const [key, meta] of entries) this.#catalogue.add(key, meta, true);
    if (options.reconcile !== false && !this.options.index.shared) await this.#trimToBudget();
    // Another replica's purge or eviction: drop our copy (its file is already gone).
    await this.options.index.watchDeletes?.((key) => this.#catalogue.remove(key));
    return report;
  }

  /** A cache over `max_disk_bytes` at start-up (its budget was lowered since) is brought back within it. */
  async #trimToBudget(): Promise<void> {
    const before = this.#catalogue.stats().diskBytes;
    const victims = this.#catalogue.trimToBudget();
    if (victims.length === 0) return;
    this.options.logger.info(
      { evicted: victims.length, diskBytes: before, maxDiskBytes: this.options.maxDiskBytes },
      'the cache was over cache.max_disk_bytes at start-up; evicted the least recently used recordings',
    );
    await this.#evict(victims);
  }

  /**
   * A volume shared with other replicas, brought back within `max_disk_bytes`
   * as it is, without waiting for a store: the cluster calls it once Redis
   * agrees with the volume again (copies stored while it was out, a budget
   * lowered since) by the shared budget's rule.
   */
  async trimVolume(): Promise<void> {
    const { index, logger, maxDiskBytes } = this.options;
    if (!isVolumeShared(index)) return;
    const victims = await index.overflow();
    if (victims.length === 0) return;
    logger.info(
      { evicted: victims.length, maxDiskBytes },
      'the shared volume was over cache.max_disk_bytes; evicted the least recently used recordings',
    );
    await this.#evict(victims);
  }

  /** For a second process on the same cache (the CLI): reads the index, touches no file. */
  async #listOnly(): Promise<{ entries: Array<[string, RecordingMeta]>; report: ReconcileReport }> {
    const entries: Array<[string, RecordingMeta]> = [];
    for await (const entry of this.options.index.entries()) entries.push(entry);
    return { entries, report: { kept: entries.length, droppedEntries: 0, removedFiles: 0 } };
  }

  /** A hit from memory alone, or undefined. A hit counts as a use for eviction. */
  lookup(key: string): CacheHit | undefined {
    if (this.#removals.undeleted(key)) return undefined;
    const hit = this.#catalogue.lookup(key);
    // Past its retention: never served again; the retention sweep deletes it.
    if (hit && this.options.retention?.expired(hit.entry.meta, hit.entry.onDisk)) return undefined;
    if (hit) this.options.index.touched?.(key);
    return hit;
  }

  /** The key of the recording `callId` of `namespace` while memory holds its body (see `lookup`), else undefined. */
  memoryKey(namespace: string, callId: string): string | undefined {
    return this.#catalogue.memoryKey(namespace, callId);
  }

  /** Forgets a recording in this process only: another replica on the same volume removed it. */
  forget(key: string): void {
    this.#catalogue.remove(key);
  }

  /** Every recording this process knows of (a snapshot), for the cluster's sync. */
  entries(): CachedRecording[] {
    return this.#catalogue.all();
  }

  /**
   * True when the index cannot hold `key`, known without asking it: the
   * recording is being removed, or the index is of this cache directory alone
   * and the file is not there (a store commits the file before its entry).
   * On a cold miss that saves a sqlite round trip of a few hundred
   * microseconds before the first byte.
   */
  knownAbsent(key: string): boolean {
    if (this.#removals.withheld(key)) return true;
    if (this.options.index.shared) return false;
    const slash = key.lastIndexOf('/');
    return !this.options.disk.hasRecording(key.slice(0, slash), key.slice(slash + 1));
  }

  /**
   * On a local miss, asks the index: another replica sharing it, or the CLI's
   * `prefetch`, may have stored the recording since start-up. Misses only.
   */
  async lookupIndex(key: string): Promise<CacheHit | undefined> {
    if (this.knownAbsent(key)) return undefined;
    const meta = await this.options.index.get(key).catch((error: unknown) => {
      this.options.logger.warn({ err: error }, 'index lookup failed; treating as a miss');
      return undefined;
    });
    if (!meta || this.#removals.withheld(key) || this.options.retention?.expired(meta, true)) return undefined;
    this.#catalogue.add(key, meta, true);
    return this.#catalogue.lookup(key);
  }

  /** True with `cache.encryption`: the files are decrypted as they are read, chunk by chunk. */
  get encrypted(): boolean {
    return this.options.disk.encrypted;
  }

  /** Pins an entry while its file is read, so eviction leaves it alone; returns the unpin function. */
  pin(key: string): () => void {
    return this.#catalogue.pin(key);
  }

  /**
   * Opens the file of a disk hit. A missing file drops the entry and answers
   * undefined; so does a file to be streamed whose size is not the
   * recording's (start-up does not stat every file, so this is where a
   * damaged one is caught; one read whole is checked by `readVerified`),
   * and that file is removed. So is an encrypted file that fails its checks,
   * at open or at any read, and a file to be streamed whose bytes, read
   * through from first to last, do not have the recording's sha256 (the read
   * of its last bytes fails: a stream is cut short, never whole). Once one
   * read-through matched, the file is streamed unchecked until it changes.
   * A large recording is always streamed; a small one only when `streamed`
   * says so (a range of an encrypted copy: see RecordingService.find).
   */
  async openFile(entry: CachedRecording, streamed = entry.meta.size > this.memoryEntryMaxBytes): Promise<StoredFile | undefined> {
    let damaged: DamagedFileError | undefined;
    const file = entry.onDisk
      ? await this.options.disk.openRecording(entry.meta.namespace, entry.meta.callId).catch((error: unknown) => {
          if (error instanceof DamagedFileError) damaged = error;
          else this.options.logger.warn({ err: error, key: entry.key }, 'cannot open a cached recording; refetching it');
          return undefined;
        })
      : undefined;
    if (damaged) {
      await this.#removeDamaged(entry, damaged);
      return undefined;
    }
    if (!file) {
      this.#catalogue.remove(entry.key);
      return undefined;
    }
    if (!streamed) return reportingDamage(file, (error) => this.#removeDamaged(entry, error));
    if (file.size !== entry.meta.size) {
      await file.close();
      this.options.logger.warn({ key: entry.key }, 'cached recording has the wrong size; refetching it');
      await this.purge(entry.meta.namespace, entry.meta.callId).catch(() => {});
      return undefined;
    }
    // Checked as it streams until one read-through matched, and again once the file changes.
    const checked =
      this.#intactAt.get(entry) === file.changedAtMs
        ? file
        : verifyingReadThrough(file, entry.meta.sha256, () => this.#intactAt.set(entry, file.changedAtMs));
    return reportingDamage(checked, (error) => this.#removeDamaged(entry, error));
  }

  /**
   * Reads a small disk hit whole and checks it against its sha256 before it
   * is served or promoted to memory; a damaged file is removed and undefined
   * answered, so the recording is fetched again rather than served broken.
   * @param promote false for background work: the body is not kept in memory, which would count as a use.
   */
  async readVerified(entry: CachedRecording, file: StoredFile, promote = true): Promise<Buffer | undefined> {
    const body = await file.readAll().catch((error: unknown) => {
      // openFile's wrapper has already removed a damaged file.
      if (error instanceof DamagedFileError) return undefined;
      throw error;
    });
    if (!body) return undefined;
    if (!isIntact(body, entry.meta)) {
      this.options.logger.warn({ key: entry.key }, 'cached recording failed its checksum; refetching it');
      await this.purge(entry.meta.namespace, entry.meta.callId).catch(() => {});
      return undefined;
    }
    if (promote) this.#catalogue.keepBody(entry, body);
    return body;
  }

  /**
   * Stores a verified recording: room is made on disk (least recently used
   * first, never a pinned entry nor another account's within its disk
   * share), the temporary file is committed into place, then indexed. A
   * failing disk or index is logged and bypassed; the recording then lives in
   * memory only (if small) until evicted there. A file this does not commit
   * stays its owner's to discard.
   *
   * `purgesSeen` is what {@link purgesSoFar} said as the download began: a
   * purge since then, by any process sharing the index, wins, and the store
   * rejects with {@link StaleCopyError}, keeping nothing anywhere.
   */
  async store(
    meta: RecordingMeta,
    file: TempFile | undefined,
    body: Buffer | undefined,
    purgesSeen?: number,
  ): Promise<CachedRecording | undefined> {
    const key = cacheKey(meta.namespace, meta.callId);
    let onDisk: boolean;
    try {
      const keepsOnDisk = this.options.retention?.keepsOnDisk(meta.namespace) ?? true;
      onDisk = file !== undefined && keepsOnDisk && (await this.#storeOnDisk(key, meta, file, purgesSeen));
    } catch (error) {
      if (error instanceof StaleCopyError) this.options.logger.info({ key }, 'not storing a recording purged while it downloaded');
      throw error;
    }
    // A new file in place of one that could not be deleted replaced it; a copy in memory only would leave it uncounted.
    if (onDisk) this.#removals.replaced(key);
    else if (this.#removals.undeleted(key)) return undefined;
    const inMemory = body !== undefined && body.length <= this.memoryEntryMaxBytes;
    if (!onDisk && !inMemory) return undefined;
    const entry = this.#catalogue.add(key, meta, onDisk);
    if (inMemory) this.#catalogue.keepBody(entry, body);
    this.options.onStored?.(entry);
    return entry;
  }

  /** True while `entry` is the recording stored under its key (not purged, evicted or replaced). */
  holds(entry: CachedRecording): boolean {
    return this.#catalogue.peek(entry.key) === entry;
  }

  /** The body memory holds for `entry`, without counting a use (background work such as analysis). */
  peekBody(entry: CachedRecording): Buffer | undefined {
    return this.#catalogue.peekBody(entry);
  }

  /**
   * Adds a stored recording's audio facts to its entry and its index entry,
   * so they are answered without reading the audio. Nothing happens when the
   * entry is no longer the current one; a purge or a new copy that overtook
   * the index write leaves the index as it says.
   */
  async recordFacts(entry: CachedRecording, facts: RecordingFacts): Promise<void> {
    if (!this.holds(entry)) return;
    entry.meta.facts = facts;
    if (!entry.onDisk || this.#removals.removing(entry.key)) return;
    const { index } = this.options;
    await index.set(entry.key, entry.meta).catch((error: unknown) => {
      if (!(error instanceof StaleCopyError)) throw error;
    });
    const current = this.#catalogue.peek(entry.key);
    if (current === entry) return;
    if (current?.onDisk) await index.set(current.key, current.meta);
    else await index.delete(entry.key);
  }

  /**
   * How many purges have reached `key` so far, in any process sharing the
   * index: taken as a download begins, and handed to `store` with its result.
   * Undefined when the index keeps no marks or cannot be read (the store is
   * then not checked).
   */
  async purgesSoFar(key: string): Promise<number | undefined> {
    return this.options.index.purges?.count(key).catch((error: unknown) => {
      this.options.logger.warn({ err: error, key }, 'cannot read the purges of a recording; its download is stored unchecked');
      return undefined;
    });
  }

  /**
   * Records a purge of a whole namespace (of everything, without one) before
   * it removes anything, so that no download begun before it, in any process
   * sharing the index, is stored: the recordings it has not heard of included.
   * On a full disk the files of the namespace go first, to make room for the mark.
   */
  async markPurged(namespace: string | undefined): Promise<void> {
    const marks = this.options.index.purges;
    if (!marks) return;
    await markFreeingRoom(
      () => marks.mark(namespace),
      () => this.#removeFilesOf(namespace),
    );
  }

  /** The files of a namespace (of everything, without one), their entries kept: a full disk's room for a purge's mark. */
  async #removeFilesOf(namespace: string | undefined): Promise<void> {
    for (const { meta, onDisk } of this.#catalogue.all()) {
      if (onDisk && (namespace === undefined || meta.namespace === namespace)) await this.options.disk.remove(meta.namespace, meta.callId);
    }
  }

  /**
   * Removes a recording from every tier. The purge is recorded in the index
   * first, so a download of it under way in another process sharing the index
   * (the CLI's `prefetch`) is not stored either; on a full disk the file goes
   * first, to make room for that mark.
   */
  async purge(namespace: string, callId: string): Promise<boolean> {
    const key = cacheKey(namespace, callId);
    const marks = this.options.index.purges;
    if (marks) {
      await markFreeingRoom(
        () => marks.mark(namespace, callId),
        () => this.options.disk.remove(namespace, callId),
      );
    }
    const removed = this.#catalogue.remove(key);
    try {
      await this.#removals.remove(key, namespace, callId, removed?.onDisk ? removed.meta : undefined);
    } catch (error) {
      // The caller answers 503 without the cause: the operator learns it here.
      this.options.logger.warn(
        { err: error, key },
        "a purge could not delete the recording's file; it is withheld until a purge, sweep or eviction deletes it",
      );
      throw error;
    }
    return removed !== undefined;
  }

  /**
   * Retention: deletes an expired copy from every tier, unless another copy
   * (fetched later) has replaced it meanwhile, here or in the index. The
   * entry is forgotten only once its file and index entry are gone, so a
   * failed deletion is tried again by the next sweep. Answers whether it deleted it.
   */
  async expire(key: string, meta: RecordingMeta): Promise<boolean> {
    const current = this.#catalogue.peek(key);
    if (current) {
      if (current.meta.fetchedAt !== meta.fetchedAt) return false;
      if (current.onDisk) await this.#removals.remove(key, meta.namespace, meta.callId);
      if (this.#catalogue.peek(key)?.meta.fetchedAt === meta.fetchedAt) this.#catalogue.remove(key);
      return true;
    }
    // Listed by a shared index only (another process stored it): deleted if the index still holds this very copy.
    const stored = await this.options.index.get(key);
    if (stored?.fetchedAt !== meta.fetchedAt) return false;
    await this.#removals.remove(key, meta.namespace, meta.callId);
    return true;
  }

  stats(): CacheStats {
    return this.#catalogue.stats();
  }

  /** An encrypted file that failed its checks: never served, removed so the next request fetches it again. */
  async #removeDamaged(entry: CachedRecording, error: DamagedFileError): Promise<void> {
    // A file under an unknown key is reported once per key id (DiskStoreOptions.onUnknownKey), not once per file.
    if (error.reason !== 'unknown-key') {
      this.options.logger.warn({ key: entry.key, reason: error.reason }, `cached recording is damaged (${error.message}); refetching it`);
    }
    await this.purge(entry.meta.namespace, entry.meta.callId).catch(() => {});
  }

  async #storeOnDisk(key: string, meta: RecordingMeta, file: TempFile, purgesSeen: number | undefined): Promise<boolean> {
    const { index, logger } = this.options;
    const victims = this.#catalogue.makeRoom(key, meta.namespace, meta.size);
    if (!victims) {
      logger.warn(
        { key, size: meta.size },
        "no room in cache.max_disk_bytes that is not in use or in another account's disk share; not storing on disk",
      );
      return false;
    }
    // The room counted on includes files other stores or purges are deleting: they go before this one lands.
    const freeing = this.#removals.underWay();
    // The room stays taken until `store` adds the entry, or is given back here on failure.
    let stored = false;
    try {
      if (!(await this.#evict(victims))) {
        logger.warn({ key, size: meta.size }, 'no room made in cache.max_disk_bytes (an eviction failed); not storing on disk');
        return false;
      }
      await Promise.all(freeing);
      // A volume other replicas store on too: room is made before the file lands,
      // and looked at again after (another replica may have stored meanwhile).
      const shared = isVolumeShared(index);
      if (shared) await this.#evict(await index.overflow(meta, meta.size));
      if (!(await this.#commit(key, meta, file, purgesSeen))) return false;
      if (shared) await this.#evict(await index.overflow(meta));
      stored = true;
      return true;
    } finally {
      if (!stored) this.#catalogue.giveBackRoom(key);
    }
  }

  /**
   * Puts the file in place, then indexes it; false, the file gone, when either
   * failed. A purge since `purgesSeen` stops it (StaleCopyError): before the
   * file is put in place when it is already known, and at the latest when the
   * index refuses the entry, checked in the same step as its write.
   */
  async #commit(key: string, meta: RecordingMeta, file: TempFile, purgesSeen: number | undefined): Promise<boolean> {
    const { disk, index, diskHealth, logger } = this.options;
    if (purgesSeen !== undefined && ((await this.purgesSoFar(key)) ?? purgesSeen) > purgesSeen) {
      throw new StaleCopyError(`${key} was purged while it downloaded`);
    }
    try {
      await file.commit(disk.pathFor(meta.namespace, meta.callId));
    } catch (error) {
      await disk.remove(meta.namespace, meta.callId).catch(() => {});
      // A file that could not be deleted cannot be replaced either: that file's trouble, not the directory's.
      if (this.#removals.undeleted(key))
        logger.warn({ err: error, key }, "the recording's old file cannot be replaced; not storing on disk");
      else diskHealth.report(error);
      return false;
    }
    diskHealth.recovered();
    try {
      await index.set(key, meta, purgesSeen);
    } catch (error) {
      await disk.remove(meta.namespace, meta.callId).catch(() => {});
      if (error instanceof StaleCopyError) throw error;
      // The sqlite index is a file on the cache disk; a shared index (Redis) is not: its
      // trouble is the index's (its /readyz check says so), never the disk's.
      if (index.kind === 'sqlite') diskHealth.report(error);
      else logger.warn({ err: error, key }, 'storing in the index failed; the recording is served but not kept');
      return false;
    }
    return true;
  }

  /** Evicts `victims`; resolves whether every one's file went (one that cannot be deleted stays counted). */
  async #evict(victims: ReadonlyArray<{ key: string; meta: RecordingMeta }>): Promise<boolean> {
    if (victims.length === 0) return true;
    for (const { key } of victims) this.#catalogue.remove(key);
    const removed = await Promise.all(
      victims.map(({ key, meta }) =>
        this.#removals.remove(key, meta.namespace, meta.callId, meta).then(
          () => true,
          (error: unknown) => {
            this.options.logger.warn({ err: error, key }, 'evicting a recording failed');
            return false;
          },
        ),
      ),
    );
    const evicted = removed.filter(Boolean).length;
    if (evicted > 0) this.options.onEvict?.(evicted);
    return evicted === victims.length;
  }
}
