import type { NotFoundStore } from '../cache/not-found-memory.js';
import type { CachedRecording, RecordingCache } from '../cache/recording-cache.js';
import { cacheKey, type RecordingMeta } from '../cache/recording-meta.js';
import { StaleCopyError } from '../cache/stale-copy.js';
import type { StoredFile } from '../cache/stored-file.js';
import type { DownloadManager, DownloadOwner, JoinedDownload } from '../download/download-manager.js';
import type { CompletedDownload, DownloadHead, DownloadOrigin } from '../download/recording-download.js';
import { NotFoundError, ServiceUnavailableError } from '../errors.js';
import { RetryableUpstreamError } from '../upstream/errors.js';

/** A recording's bytes, readable at any offset (waiting for bytes still arriving) until released. */
export interface RecordingReader {
  /**
   * Up to `maxBytes` at `offset`; null past the end. Bytes read from a file
   * land in `scratch` when given (at least `maxBytes` long) and come back as
   * part of it, so the caller must not pass it again while it still sends them.
   */
  readAt(offset: number, maxBytes: number, scratch?: Buffer): Promise<Uint8Array | null>;
  /** Frees what the reader holds (a file, a pin, a download); call it once done. Idempotent. */
  release(): void;
}

/**
 * A stored recording, ready to answer with: whole in memory (a memory hit,
 * or a small disk hit read and verified), or a file open for reading and
 * pinned against eviction until its reader is released (a large one, or a
 * small encrypted one the answer needs only part of: see `readsWhole`).
 */
export type FoundRecording =
  | { tier: 'memory' | 'disk'; entry: CachedRecording; body: Buffer; reader?: undefined }
  | { tier: 'disk'; entry: CachedRecording; body?: undefined; reader: RecordingReader };

/** A recording coming from upstream: its head, and a reader of the body as it lands. */
export interface FetchedRecording {
  head: DownloadHead;
  /** True when it joined a download already under way. */
  collapsed: boolean;
  reader: RecordingReader;
  /** The body's sha256 when every byte was in as the caller joined (the download still being stored), so the answer can carry its ETag. */
  sha256?: string | undefined;
  /** Where the bytes come from: the upstream, or another replica (cluster). */
  origin: DownloadOrigin;
  /**
   * Whether `error`, which a read failed with before the caller had a byte,
   * makes a new `fetch` worth it: the body broke once other callers had bytes
   * of it, so it was not fetched again. Resolves once the broken download has
   * left the registry, so that the next `fetch` joins a new one.
   */
  worthFetchingAgain(error: unknown): Promise<boolean>;
}

/** A recording fetched whole: stored (`found`), or, when it could not be, read from its finished download. */
export type WholeRecording =
  | { collapsed: boolean; found: FoundRecording; fetched?: undefined; origin: DownloadOrigin }
  | { collapsed: boolean; found?: undefined; fetched: FetchedRecording; sha256: string };

export interface WarmResult {
  status: 'cached' | 'fetched';
  size: number;
}

/** How a purge reaches the rest of a cluster. */
export interface ClusterPurge {
  /** Purges everywhere: the cluster's copies and downloads, this process (`local`), then every other replica. */
  purge(namespace: string, callId: string, local: () => Promise<boolean>): Promise<boolean>;
  /** Every key in `namespace` (all, without one) the cluster knows of: copies on any volume, downloads, remembered 404s. */
  knownKeys(namespace: string | undefined): AsyncIterable<string>;
  /** A copy of `key` on any volume (its metadata), or undefined. */
  heldCopy(key: string): Promise<RecordingMeta | undefined>;
}

// Downloads a caller that waits for the whole recording joins, when one breaks after others had bytes of it.
const WHOLE_FETCH_ATTEMPTS = 2;

export interface RecordingServiceOptions {
  cache: RecordingCache;
  downloads: DownloadManager;
  notFound: NotFoundStore;
  /** Set in cluster mode. */
  cluster?: ClusterPurge;
  /** Set in cluster mode: which stored copies may be answered with. */
  copies?: CopiesJudge;
}

/** Whether stored copies may be answered with, in cluster mode. */
export interface CopiesJudge {
  /** False while a purge elsewhere may not have reached this replica's copies (it lost Redis alone); every request is then a miss. */
  readonly trusted: boolean;
  /** True for a copy from before this process started, until its first sync has checked them all against purges made meanwhile. */
  heldBack(meta: RecordingMeta): boolean;
}

/**
 * Whether the answer to a request sends the recording's whole body (a GET
 * without a Range, or whose Range covers it all or is ignored); false when it
 * sends part of it or none (HEAD, 304, 412, 416). Asked of a disk hit only,
 * once its entry is known (see routes/recording-response.ts `sendsWholeBody`).
 */
export type WholeBodyHint = (entry: CachedRecording) => boolean;

/**
 * Whether a small disk hit (one memory can hold) is read whole, checked
 * against its sha256 and promoted to memory, rather than read from its file
 * as the answer goes. In the clear, always: a small recording asked for once
 * is soon asked for again (a player's ranges), and memory serves it best. An
 * encrypted copy only when the answer needs the whole body anyway
 * (`wholeBody`, whole when not told): a range decrypts only the chunks it
 * covers (contract section 9), so Safari's first `bytes=0-1` after a restart
 * does not decrypt the whole recording.
 */
function readsWhole(entry: CachedRecording, encrypted: boolean, wholeBody: WholeBodyHint | undefined): boolean {
  return !encrypted || wholeBody === undefined || wholeBody(entry);
}

/** Reads a cached file chunk by chunk; releasing it closes the file and unpins the entry. */
function fileReader(file: StoredFile, unpin: () => void): RecordingReader {
  let released = false;
  return {
    async readAt(offset, maxBytes, scratch) {
      const buffer = scratch ? scratch.subarray(0, maxBytes) : Buffer.allocUnsafe(maxBytes);
      const bytesRead = await file.read(buffer, offset);
      return bytesRead === 0 ? null : buffer.subarray(0, bytesRead);
    },
    release() {
      if (released) return;
      released = true;
      void file.close();
      unpin();
    },
  };
}

/**
 * Finds a recording or fetches it: the one place that knows the tiers and
 * their order (memory, the index, the disk; then one shared download from
 * the upstream). The HTTP routes, the webhook prefetcher and the CLI all go
 * through it.
 */
export class RecordingService {
  constructor(private readonly options: RecordingServiceOptions) {}

  /** A recording held whole in memory, or undefined; never any I/O (the memory-hit path's lookup). */
  findInMemory(namespace: string, callId: string): (FoundRecording & { body: Buffer }) | undefined {
    const { cache, copies } = this.options;
    if (copies?.trusted === false) return undefined;
    // The cache's own key string: its maps then find it by identity.
    const key = cache.memoryKey(namespace, callId);
    const hit = key === undefined ? undefined : cache.lookup(key);
    return hit?.tier === 'memory' && !copies?.heldBack(hit.entry.meta) ? hit : undefined;
  }

  /**
   * A stored recording, or undefined on a miss (then `fetch` it). A memory hit
   * is answered synchronously, without a promise, and so is a miss the index
   * cannot hold (`RecordingCache.knownAbsent`). Otherwise the index is asked
   * on a real miss only (not for a remembered 404, nor while a download to
   * join is under way); a disk hit is pinned and opened, and a small one read
   * whole, checked against its sha256 and promoted to memory, unless it is
   * encrypted and `wholeBody` says the answer needs only part of it, or none
   * (see `readsWhole`): then it is read from its file like a large one. A
   * file gone or damaged is a miss.
   * @throws NotFoundError (rejects) when the upstream said 404 within `cache.not_found_ttl_seconds`.
   */
  find(namespace: string, callId: string, wholeBody?: WholeBodyHint): FoundRecording | undefined | Promise<FoundRecording | undefined> {
    const { cache, downloads, notFound, copies } = this.options;
    // Unverified copies, and a remembered 404 a purge may have forgotten elsewhere: ask the upstream.
    if (copies?.trusted === false) return undefined;
    const key = cacheKey(namespace, callId);
    const hit = cache.lookup(key);
    if (hit && copies?.heldBack(hit.entry.meta)) return undefined;
    if (hit?.tier === 'memory') return hit;
    if (hit || downloads.isInFlight(key)) return this.#readStoredOrMiss(key, hit?.entry, wholeBody);
    const remembered404 = notFound.has(key);
    // The usual real miss, nothing stored and no 404 remembered, is known at once: a cold miss's first byte waits for no promise here.
    if (remembered404 === false && cache.knownAbsent(key)) return undefined;
    return this.#askIndex(key, remembered404, wholeBody);
  }

  async #askIndex(
    key: string,
    remembered404: boolean | Promise<boolean>,
    wholeBody: WholeBodyHint | undefined,
  ): Promise<FoundRecording | undefined> {
    if (await remembered404) throw new NotFoundError();
    const hit = await this.options.cache.lookupIndex(key);
    if (hit && this.options.copies?.heldBack(hit.entry.meta)) return undefined;
    return hit?.tier === 'memory' ? hit : this.#readStoredOrMiss(key, hit?.entry, wholeBody);
  }

  async #readStoredOrMiss(
    key: string,
    entry: CachedRecording | undefined,
    wholeBody: WholeBodyHint | undefined,
  ): Promise<FoundRecording | undefined> {
    const found = entry && (await this.#readStored(entry, wholeBody));
    if (found) return found;
    if (entry && (await this.options.notFound.has(key))) throw new NotFoundError();
    return undefined;
  }

  async #readStored(entry: CachedRecording, wholeBody: WholeBodyHint | undefined): Promise<FoundRecording | undefined> {
    const { cache } = this.options;
    const streamed = entry.meta.size > cache.memoryEntryMaxBytes || !readsWhole(entry, cache.encrypted, wholeBody);
    const unpin = cache.pin(entry.key);
    const file = await cache.openFile(entry, streamed);
    if (!file) {
      unpin();
      return undefined;
    }
    if (streamed) return { tier: 'disk', entry, reader: fileReader(file, unpin) };
    let body: Buffer | undefined;
    try {
      body = await cache.readVerified(entry, file);
    } finally {
      await file.close();
      unpin();
    }
    return body && { tier: 'disk', entry, body };
  }

  /**
   * The download under way, or a new one; never one under way while stored
   * copies are not trusted (a purge that could have ended it may have missed
   * this replica): every request is then fetched anew, as the README says.
   */
  #join(owner: DownloadOwner, callId: string): JoinedDownload {
    return this.options.downloads.join(owner, callId, { joinUnderWay: this.options.copies?.trusted ?? true });
  }

  /**
   * Fetches a recording from the upstream, joining the download under way if
   * there is one, and resolves once its head is known: the body is read as it
   * lands. The download is stored when complete.
   */
  async fetch(owner: DownloadOwner, callId: string): Promise<FetchedRecording> {
    const { download, collapsed, release, stored } = this.#join(owner, callId);
    // Taken as the caller joins: one that joins once every byte is in waits
    // the moments the digest takes, so it gets the ETag; the caller that
    // starts the download (or joins while bytes are still arriving) does not.
    const digest = download.digestOnceReceived();
    let head: DownloadHead;
    try {
      head = await download.head;
    } catch (error) {
      release();
      throw error;
    }
    return {
      head,
      collapsed,
      reader: { readAt: (offset, maxBytes, scratch) => download.readAt(offset, maxBytes, scratch), release },
      sha256: digest instanceof Promise ? await digest : download.sha256,
      // Known once the head is.
      origin: download.origin ?? 'upstream',
      async worthFetchingAgain(error) {
        if (!(error instanceof RetryableUpstreamError && download.brokeWhileRead)) return false;
        await stored;
        return true;
      },
    };
  }

  /**
   * Like `fetch`, but resolves once the whole recording is in and stored, so
   * its validators are known: a conditional request must get the same answer
   * cold as warm (RFC 9110 13.1). Resolves with the stored recording, or,
   * when it could not be stored (a full disk, a purge meanwhile), with the
   * finished download and its sha256.
   */
  async fetchWhole(owner: DownloadOwner, callId: string): Promise<WholeRecording> {
    let joined = this.#join(owner, callId);
    let completed!: CompletedDownload;
    for (let attempt = 1; ; attempt++) {
      try {
        completed = await joined.download.completed;
        await joined.stored;
        break;
      } catch (error) {
        joined.release();
        // This caller has had no byte: a body that broke once others had some
        // (a client streaming it, another replica) is worth a new download to it.
        if (attempt >= WHOLE_FETCH_ATTEMPTS || !joined.download.brokeWhileRead) throw error;
        await joined.stored; // the broken download has left the registry
        joined = this.#join(owner, callId);
      }
    }
    const { download, collapsed, release } = joined;
    const found = await this.find(owner.namespace, callId);
    if (found) {
      release();
      return { collapsed, found, origin: completed.origin };
    }
    const reader: RecordingReader = { readAt: (offset, maxBytes, scratch) => download.readAt(offset, maxBytes, scratch), release };
    // Complete: its body cannot break any more.
    const fetched = { head: completed, collapsed, reader, origin: completed.origin, worthFetchingAgain: async () => false };
    return { collapsed, fetched, sha256: completed.sha256 };
  }

  /**
   * Makes sure a recording is stored, fetching it whole if it is not, so the
   * first listener gets a hit. Asks on purpose: a 404 remembered a moment ago
   * does not stop it. `onDownload` sees the download, for progress displays.
   * @throws what the download failed with; StaleCopyError when a purge (in
   * this process or another sharing the index) came while it downloaded, so
   * that it was not stored.
   */
  async warm(owner: DownloadOwner, callId: string, onDownload?: (download: { readonly received: number }) => void): Promise<WarmResult> {
    const { cache, downloads, notFound } = this.options;
    const key = cacheKey(owner.namespace, callId);
    const entry = cache.lookup(key)?.entry ?? (await cache.lookupIndex(key))?.entry;
    if (entry) return { status: 'cached', size: entry.meta.size };
    notFound.forget(key);
    const joined = downloads.join(owner, callId);
    joined.release();
    onDownload?.(joined.download);
    const result = await joined.download.completed;
    await joined.stored;
    if (downloads.overtaken(joined.download)) throw new StaleCopyError('purged while it downloaded, so not stored');
    return { status: 'fetched', size: result.size };
  }

  /**
   * The keys a purge of `namespace` (of everything, without one) must reach
   * besides those the index lists: copies in memory, downloads under way,
   * remembered 404s, and in a cluster every key its Redis knows of, on any
   * volume or replica. A key may come more than once.
   * @throws ServiceUnavailableError when the cluster's Redis cannot be read.
   */
  async *purgeCandidates(namespace: string | undefined): AsyncIterable<string> {
    const { cache, downloads, notFound, cluster } = this.options;
    const prefix = namespace === undefined ? '' : `${namespace}/`;
    const local = [...cache.entries().map((entry) => entry.key), ...downloads.keys(), ...notFound.keys()];
    for (const key of local) if (key.startsWith(prefix)) yield key;
    if (!cluster) return;
    try {
      yield* cluster.knownKeys(namespace);
    } catch (error) {
      throw new ServiceUnavailableError('The cluster could not list what to purge (its Redis is unreachable); try again', 1, {
        cause: error,
      });
    }
  }

  /**
   * Removes a recording from every tier (in a cluster, on every replica); a
   * download of it under way is not stored, and a remembered 404 is
   * forgotten. Resolves with whether a copy was held: by this process, or in
   * a cluster on any volume.
   * @throws ServiceUnavailableError when the disk, the index or the cluster failed.
   */
  purge(namespace: string, callId: string): Promise<boolean> {
    const { cluster } = this.options;
    return cluster ? cluster.purge(namespace, callId, () => this.purgeLocal(namespace, callId)) : this.purgeLocal(namespace, callId);
  }

  /**
   * The copy a purge would remove (its metadata), without reading it: this
   * process's, the index's, or in a cluster one on any volume; undefined when
   * none is held. What a conditional DELETE is judged against.
   * @throws ServiceUnavailableError when the cluster could not be asked.
   */
  async heldCopy(namespace: string, callId: string): Promise<RecordingMeta | undefined> {
    const { cache, cluster } = this.options;
    const key = cacheKey(namespace, callId);
    const local = cache.lookup(key) ?? (await cache.lookupIndex(key));
    return local?.entry.meta ?? (await cluster?.heldCopy(key));
  }

  /**
   * Records a purge of a whole namespace (of everything, without one) in the
   * index, before its recordings are purged one by one: a download in another
   * process sharing the index, of a recording this one never heard of, is not
   * stored either.
   * @throws ServiceUnavailableError when the index failed.
   */
  async markPurged(namespace: string | undefined): Promise<void> {
    try {
      await this.options.cache.markPurged(namespace);
    } catch (error) {
      throw new ServiceUnavailableError('The cache could not record the purge; try again', 1, { cause: error });
    }
  }

  /** `purge` in this process only: what a replica does when the cluster tells it of a purge. */
  async purgeLocal(namespace: string, callId: string): Promise<boolean> {
    const { cache, downloads, notFound } = this.options;
    await downloads.discard(namespace, callId);
    notFound.forget(cacheKey(namespace, callId));
    try {
      return await cache.purge(namespace, callId);
    } catch (error) {
      throw new ServiceUnavailableError('The cache could not remove the recording; try again', 1, { cause: error });
    }
  }
}
