import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../logger.js';
import type { DiskHealth } from './disk-health.js';
import type { DiskStore } from './disk-store.js';
import { reconcileCache, type ReconcileReport } from './reconcile.js';
import type { RecordingIndex } from './recording-index.js';
import { cacheKey, etagFor, type RecordingMeta } from './recording-meta.js';

/**
 * A stored recording. What a hit needs (ETag, Last-Modified, the headers) is
 * computed on its first hit and kept, so a cache of 100,000 entries costs
 * little more than their metadata until they are asked for.
 */
export class CachedRecording {
  #headers: Readonly<Record<string, string>> | undefined;
  #lastModified: Date | undefined;

  constructor(
    readonly key: string,
    readonly meta: RecordingMeta,
    /** False when the disk could not take it: it lives in memory only, until evicted there. */
    readonly onDisk: boolean,
  ) {}

  get etag(): string {
    return this.headers.ETag!;
  }

  get lastModified(): Date {
    this.#lastModified ??= httpDate(this.meta.lastModified, this.meta.fetchedAt);
    return this.#lastModified;
  }

  /** The headers every successful answer for it carries. */
  get headers(): Readonly<Record<string, string>> {
    this.#headers ??= {
      'Content-Type': this.meta.contentType,
      'Accept-Ranges': 'bytes',
      ETag: etagFor(this.meta.sha256),
      'Last-Modified': this.lastModified.toUTCString(),
      'Content-Disposition': `inline; filename="call-${this.meta.callId}.mp3"`,
    };
    return this.#headers;
  }
}

export type CacheHit =
  | { tier: 'memory'; entry: CachedRecording; body: Buffer }
  | { tier: 'disk'; entry: CachedRecording };

export interface RecordingCacheOptions {
  disk: DiskStore;
  index: RecordingIndex;
  diskHealth: DiskHealth;
  maxMemoryBytes: number;
  maxDiskBytes: number;
  logger: Logger;
  /** Told how many recordings each eviction removed (for the metrics). */
  onEvict?: (count: number) => void;
}

export interface CacheStats {
  entries: number;
  diskBytes: number;
  memoryEntries: number;
  memoryBytes: number;
  evictions: number;
}

// A recording larger than this share of the memory tier is never held whole in
// memory: it streams from disk, so one long call cannot flush every short one.
const MEMORY_ENTRY_FRACTION = 1 / 8;

function httpDate(value: string | undefined, fallback: number): Date {
  const parsed = value === undefined ? Number.NaN : Date.parse(value);
  return new Date(Number.isNaN(parsed) ? fallback : parsed);
}

/**
 * The two cache tiers behind one face: recording bodies in a byte-bounded
 * memory LRU, every recording on disk within `maxDiskBytes`, and the metadata
 * of all of them in memory (mirrored to the index) so that a lookup never
 * waits on I/O. `#entries` is kept in recency order (a hit moves its entry to
 * the end), so disk eviction takes the least recently used first.
 */
export class RecordingCache {
  readonly memoryEntryMaxBytes: number;
  readonly #entries = new Map<string, CachedRecording>();
  readonly #memory: LRUCache<string, Buffer>;
  /** Readers of a file; a pinned entry is never evicted under them. */
  readonly #pins = new Map<string, number>();
  /** Keys whose file and index entry are being deleted: the index must not bring them back meanwhile. */
  readonly #removing = new Set<string>();
  readonly #strings = new Map<string, string>();
  #diskBytes = 0;
  #evictions = 0;

  constructor(private readonly options: RecordingCacheOptions) {
    this.memoryEntryMaxBytes = Math.floor(options.maxMemoryBytes * MEMORY_ENTRY_FRACTION);
    this.#memory = new LRUCache<string, Buffer>({
      maxSize: Math.max(1, options.maxMemoryBytes),
      maxEntrySize: Math.max(1, this.memoryEntryMaxBytes),
      sizeCalculation: (body) => Math.max(1, body.length),
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
    for (const [key, meta] of entries) this.#remember(key, meta, true);
    // Another replica's purge or eviction: drop our copy (its file is already gone).
    await this.options.index.watchDeletes?.((key) => this.#forget(key));
    return report;
  }

  /** For a second process on the same cache (the CLI): reads the index, touches no file. */
  async #listOnly(): Promise<{ entries: Array<[string, RecordingMeta]>; report: ReconcileReport }> {
    const entries: Array<[string, RecordingMeta]> = [];
    for await (const entry of this.options.index.entries()) entries.push(entry);
    return { entries, report: { kept: entries.length, droppedEntries: 0, removedFiles: 0 } };
  }

  /** A hit from memory alone, or undefined. A hit counts as a use for eviction. */
  lookup(key: string): CacheHit | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    const body = this.#memory.get(key);
    return body ? { tier: 'memory', entry, body } : { tier: 'disk', entry };
  }

  /**
   * On a local miss, asks the index: another replica sharing it, or the CLI's
   * `prefetch`, may have stored the recording since start-up. Misses only.
   */
  async lookupIndex(key: string): Promise<CacheHit | undefined> {
    if (this.#removing.has(key)) return undefined;
    const meta = await this.options.index.get(key).catch((error: unknown) => {
      this.options.logger.warn({ err: error }, 'index lookup failed; treating as a miss');
      return undefined;
    });
    if (!meta || this.#removing.has(key)) return undefined;
    this.#remember(key, meta, true);
    return this.lookup(key);
  }

  /**
   * Pins an entry while its file is read, so eviction leaves it alone.
   * @returns the unpin function; call it once, when the reader is done.
   */
  pin(key: string): () => void {
    this.#pins.set(key, (this.#pins.get(key) ?? 0) + 1);
    let unpinned = false;
    return () => {
      if (unpinned) return;
      unpinned = true;
      const count = (this.#pins.get(key) ?? 1) - 1;
      if (count > 0) this.#pins.set(key, count);
      else this.#pins.delete(key);
    };
  }

  /** Opens the file of a disk hit; a missing file drops the entry and answers undefined. */
  async openFile(entry: CachedRecording): Promise<FileHandle | undefined> {
    const handle = entry.onDisk
      ? await this.options.disk.openRecording(entry.meta.namespace, entry.meta.callId).catch((error: unknown) => {
          this.options.logger.warn({ err: error, key: entry.key }, 'cannot open a cached recording; refetching it');
          return undefined;
        })
      : undefined;
    if (!handle) this.#forget(entry.key);
    return handle;
  }

  /**
   * Reads a small disk hit whole and checks it against its sha256 before it
   * is served or promoted to memory; a damaged file is removed and undefined
   * answered, so the recording is fetched again rather than served broken.
   */
  async readVerified(entry: CachedRecording, handle: FileHandle): Promise<Buffer | undefined> {
    const body = await handle.readFile();
    const intact = body.length === entry.meta.size && createHash('sha256').update(body).digest('hex') === entry.meta.sha256;
    if (!intact) {
      this.options.logger.warn({ key: entry.key }, 'cached recording failed its checksum; refetching it');
      await this.purge(entry.meta.namespace, entry.meta.callId).catch(() => {});
      return undefined;
    }
    if (this.#entries.get(entry.key) === entry) this.#memory.set(entry.key, body);
    return body;
  }

  /**
   * Stores a verified recording: room is made on disk (least recently used
   * first, never a pinned entry), the temporary file is moved into place,
   * then indexed. A failing disk or index is logged and bypassed; the
   * recording then lives in memory only (if small) until evicted there.
   */
  async store(meta: RecordingMeta, tempPath: string | undefined, body: Buffer | undefined): Promise<CachedRecording | undefined> {
    const key = cacheKey(meta.namespace, meta.callId);
    const onDisk = tempPath !== undefined && (await this.#storeOnDisk(key, meta, tempPath));
    if (!onDisk && !(body && body.length <= this.memoryEntryMaxBytes)) return undefined;
    const entry = this.#remember(key, meta, onDisk);
    if (body && body.length <= this.memoryEntryMaxBytes) this.#memory.set(key, body);
    return entry;
  }

  /** Removes a recording from every tier. */
  async purge(namespace: string, callId: string): Promise<boolean> {
    const key = cacheKey(namespace, callId);
    const existed = this.#entries.has(key);
    this.#forget(key);
    await this.#removeStored(key, namespace, callId);
    return existed;
  }

  async #removeStored(key: string, namespace: string, callId: string): Promise<void> {
    this.#removing.add(key);
    try {
      await Promise.all([this.options.disk.remove(namespace, callId), this.options.index.delete(key)]);
    } finally {
      this.#removing.delete(key);
    }
  }

  stats(): CacheStats {
    return {
      entries: this.#entries.size,
      diskBytes: this.#diskBytes,
      memoryEntries: this.#memory.size,
      memoryBytes: this.#memory.calculatedSize,
      evictions: this.#evictions,
    };
  }

  async #storeOnDisk(key: string, meta: RecordingMeta, tempPath: string): Promise<boolean> {
    const { disk, index, diskHealth, logger } = this.options;
    if (!(await this.#makeRoom(key, meta.size))) {
      logger.warn({ key, size: meta.size }, 'no room in cache.max_disk_bytes that is not in use; not storing on disk');
      await disk.discardTemp(tempPath);
      return false;
    }
    try {
      await disk.commit(tempPath, meta.namespace, meta.callId);
      await index.set(key, meta);
      diskHealth.recovered();
      return true;
    } catch (error) {
      diskHealth.report(error);
      await disk.discardTemp(tempPath);
      await disk.remove(meta.namespace, meta.callId).catch(() => {});
      return false;
    }
  }

  /** Evicts least recently used, unpinned entries until `size` more bytes fit. */
  async #makeRoom(key: string, size: number): Promise<boolean> {
    const replaced = this.#entries.get(key);
    const budget = this.options.maxDiskBytes - size + (replaced?.onDisk ? replaced.meta.size : 0);
    if (budget < 0) return false;
    const victims: CachedRecording[] = [];
    let projected = this.#diskBytes;
    for (const entry of this.#entries.values()) {
      if (projected <= budget) break;
      if (!entry.onDisk || entry.key === key || this.#pins.has(entry.key)) continue;
      victims.push(entry);
      projected -= entry.meta.size;
    }
    if (projected > budget) return false;
    // Forget them at once, so a concurrent store counts the room as taken.
    for (const victim of victims) this.#forget(victim.key);
    this.#evictions += victims.length;
    if (victims.length > 0) this.options.onEvict?.(victims.length);
    await Promise.all(
      victims.map(({ key: victimKey, meta }) =>
        this.#removeStored(victimKey, meta.namespace, meta.callId).catch((error: unknown) =>
          this.options.logger.warn({ err: error, key: victimKey }, 'evicting a recording failed'),
        ),
      ),
    );
    return true;
  }

  #remember(key: string, meta: RecordingMeta, onDisk: boolean): CachedRecording {
    this.#forget(key);
    // Thousands of entries share a few namespaces and one content type: keep one copy of each string.
    meta.namespace = this.#intern(meta.namespace);
    meta.contentType = this.#intern(meta.contentType);
    const entry = new CachedRecording(key, meta, onDisk);
    this.#entries.set(key, entry);
    if (onDisk) this.#diskBytes += meta.size;
    return entry;
  }

  #intern(value: string): string {
    const known = this.#strings.get(value);
    if (known !== undefined) return known;
    this.#strings.set(value, value);
    return value;
  }

  #forget(key: string): void {
    const entry = this.#entries.get(key);
    if (entry?.onDisk) this.#diskBytes -= entry.meta.size;
    this.#entries.delete(key);
    this.#memory.delete(key);
  }
}
