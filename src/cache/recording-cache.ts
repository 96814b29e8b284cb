import { LRUCache } from 'lru-cache';
import type { FileHandle } from 'node:fs/promises';
import type { Logger } from '../logger.js';
import type { DiskStore } from './disk-store.js';
import type { RecordingIndex } from './recording-index.js';
import { cacheKey, etagFor, type RecordingMeta } from './recording-meta.js';

/** A stored recording with everything a hit needs, computed once when it was stored. */
export interface CachedRecording {
  readonly key: string;
  readonly meta: RecordingMeta;
  readonly etag: string;
  readonly lastModified: Date;
  /** The headers every successful answer for it carries. */
  readonly headers: Readonly<Record<string, string>>;
}

export type CacheHit =
  | { tier: 'memory'; entry: CachedRecording; body: Buffer }
  | { tier: 'disk'; entry: CachedRecording };

export interface RecordingCacheOptions {
  disk: DiskStore;
  index: RecordingIndex;
  maxMemoryBytes: number;
  logger: Logger;
}

export interface CacheStats {
  entries: number;
  bytes: number;
  memoryEntries: number;
  memoryBytes: number;
}

// A recording larger than this share of the memory tier is never held whole in
// memory: it streams from disk, so one long call cannot flush every short one.
const MEMORY_ENTRY_FRACTION = 1 / 8;

function httpDate(value: string | undefined, fallback: number): Date {
  const parsed = value === undefined ? Number.NaN : Date.parse(value);
  return new Date(Number.isNaN(parsed) ? fallback : parsed);
}

function describe(meta: RecordingMeta): CachedRecording {
  const etag = etagFor(meta.sha256);
  const lastModified = httpDate(meta.lastModified, meta.fetchedAt);
  return {
    key: cacheKey(meta.namespace, meta.callId),
    meta,
    etag,
    lastModified,
    headers: {
      'Content-Type': meta.contentType,
      'Accept-Ranges': 'bytes',
      ETag: etag,
      'Last-Modified': lastModified.toUTCString(),
      'Content-Disposition': `inline; filename="call-${meta.callId}.mp3"`,
    },
  };
}

/**
 * The two cache tiers behind one face: recording bodies in a byte-bounded
 * memory LRU, every recording on disk, and the metadata of all of them in
 * memory (mirrored to the index) so that a lookup never waits on I/O.
 */
export class RecordingCache {
  readonly memoryEntryMaxBytes: number;
  readonly #entries = new Map<string, CachedRecording>();
  readonly #memory: LRUCache<string, Buffer>;
  #diskBytes = 0;

  constructor(private readonly options: RecordingCacheOptions) {
    this.memoryEntryMaxBytes = Math.floor(options.maxMemoryBytes * MEMORY_ENTRY_FRACTION);
    this.#memory = new LRUCache<string, Buffer>({
      maxSize: Math.max(1, options.maxMemoryBytes),
      maxEntrySize: Math.max(1, this.memoryEntryMaxBytes),
      sizeCalculation: (body) => Math.max(1, body.length),
    });
  }

  /** Reads the index into memory. */
  async load(): Promise<void> {
    for await (const [key, meta] of this.options.index.entries()) this.#remember(key, meta);
  }

  /** A hit from memory alone, or undefined. */
  lookup(key: string): CacheHit | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    const body = this.#memory.get(key);
    return body ? { tier: 'memory', entry, body } : { tier: 'disk', entry };
  }

  /**
   * With a shared index, another replica may have stored the recording: ask
   * the index on a local miss. A local index has nothing this process lacks.
   */
  async lookupShared(key: string): Promise<CacheHit | undefined> {
    if (this.options.index.kind !== 'redis') return undefined;
    const meta = await this.options.index.get(key).catch((error: unknown) => {
      this.options.logger.warn({ err: error }, 'shared index lookup failed; treating as a miss');
      return undefined;
    });
    if (!meta) return undefined;
    this.#remember(key, meta);
    return this.lookup(key);
  }

  /** Opens the file of a disk hit; a missing file drops the entry and answers undefined. */
  async openFile(entry: CachedRecording): Promise<FileHandle | undefined> {
    const handle = await this.options.disk.openRecording(entry.meta.namespace, entry.meta.callId).catch((error: unknown) => {
      this.options.logger.warn({ err: error, key: entry.key }, 'cannot open a cached recording; refetching it');
      return undefined;
    });
    if (!handle) this.#forget(entry.key);
    return handle;
  }

  /** Keeps a body read from disk in the memory tier if it is small enough. */
  promote(entry: CachedRecording, body: Buffer): void {
    if (body.length <= this.memoryEntryMaxBytes && this.#entries.get(entry.key) === entry) {
      this.#memory.set(entry.key, body);
    }
  }

  /**
   * Stores a verified recording: the temporary file is moved into place, then
   * indexed. A failing disk or index is logged and bypassed; the recording
   * then lives in memory only (if small) until the process ends.
   */
  async store(meta: RecordingMeta, tempPath: string | undefined, body: Buffer | undefined): Promise<CachedRecording | undefined> {
    const key = cacheKey(meta.namespace, meta.callId);
    let onDisk = false;
    if (tempPath) {
      try {
        await this.options.disk.commit(tempPath, meta.namespace, meta.callId);
        await this.options.index.set(key, meta);
        onDisk = true;
      } catch (error) {
        this.options.logger.error({ err: error, key }, 'could not store a recording on disk; serving it from memory only');
        await this.options.disk.discardTemp(tempPath);
        await this.options.disk.remove(meta.namespace, meta.callId).catch(() => {});
      }
    }
    if (!onDisk && !(body && body.length <= this.memoryEntryMaxBytes)) return undefined;
    const entry = this.#remember(key, meta);
    // A memory-only entry whose body falls out of the LRU finds no file on its
    // next hit, and openFile() then drops it: it is fetched again.
    if (body) this.promote(entry, body);
    return entry;
  }

  /** Removes a recording from every tier. */
  async purge(namespace: string, callId: string): Promise<boolean> {
    const key = cacheKey(namespace, callId);
    const existed = this.#entries.has(key);
    this.#forget(key);
    await Promise.all([this.options.disk.remove(namespace, callId), this.options.index.delete(key)]);
    return existed;
  }

  stats(): CacheStats {
    return {
      entries: this.#entries.size,
      bytes: this.#diskBytes,
      memoryEntries: this.#memory.size,
      memoryBytes: this.#memory.calculatedSize,
    };
  }

  #remember(key: string, meta: RecordingMeta): CachedRecording {
    const previous = this.#entries.get(key);
    if (previous) this.#diskBytes -= previous.meta.size;
    const entry = describe(meta);
    this.#entries.set(key, entry);
    this.#diskBytes += meta.size;
    return entry;
  }

  #forget(key: string): void {
    const entry = this.#entries.get(key);
    if (entry) this.#diskBytes -= entry.meta.size;
    this.#entries.delete(key);
    this.#memory.delete(key);
  }
}
