import type { Tenant } from '../auth/tenants.js';
import type { Clock } from '../clock.js';
import type { DiskHealth } from '../cache/disk-health.js';
import type { DiskStore } from '../cache/disk-store.js';
import type { NotFoundMemory } from '../cache/not-found-memory.js';
import type { RecordingCache } from '../cache/recording-cache.js';
import { cacheKey } from '../cache/recording-meta.js';
import { NotFoundError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import { upstreamErrorKind } from '../upstream/errors.js';
import type { FlyflowClient } from '../upstream/flyflow-client.js';
import type { DownloadSlots } from './download-slots.js';
import { RecordingDownload } from './recording-download.js';

export interface DownloadManagerOptions {
  client: FlyflowClient;
  cache: RecordingCache;
  disk: DiskStore;
  diskHealth: DiskHealth;
  /** The cap on concurrent upstream downloads; callers beyond it queue in order. */
  slots: DownloadSlots;
  metrics?: GatewayMetrics;
  notFound: NotFoundMemory;
  clock: Clock;
  logger: Logger;
}

export interface JoinedDownload {
  download: RecordingDownload;
  /** True when the caller joined a download already under way (Cache-Status `collapsed`). */
  collapsed: boolean;
  /** Call once the caller is done reading; idempotent. */
  release: () => void;
  /** Resolves once the download has ended and its result, if any, is stored. */
  stored: Promise<void>;
}

/**
 * One download per recording: concurrent misses for the same namespace and
 * call id share one upstream request. When it completes, the result is stored
 * before the download stops being joinable, so no request falls in between.
 */
export class DownloadManager {
  readonly #inFlight = new Map<string, RecordingDownload>();
  readonly #discarded = new WeakSet<RecordingDownload>();
  /** Every download not yet settled, with the promise that settles once it is stored (or failed). */
  readonly #settled = new Map<RecordingDownload, Promise<void>>();
  readonly #storing = new Map<RecordingDownload, Promise<unknown>>();

  constructor(private readonly options: DownloadManagerOptions) {}

  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** True while a download for this key can be joined. */
  isInFlight(key: string): boolean {
    return this.#inFlight.has(key);
  }

  join(tenant: Tenant, callId: string): JoinedDownload {
    const key = cacheKey(tenant.namespace, callId);
    const existing = this.#inFlight.get(key);
    if (existing) {
      this.options.metrics?.joinedDownload();
      return { download: existing, collapsed: true, release: existing.acquire(), stored: this.#settled.get(existing)! };
    }
    const download = this.#start(key, tenant, callId);
    return { download, collapsed: false, release: download.acquire(), stored: this.#settled.get(download)! };
  }

  /**
   * A purge wins over a download in progress: its result is not stored. One
   * already being stored is waited for, so the purge that follows removes it.
   */
  async discard(namespace: string, callId: string): Promise<void> {
    const key = cacheKey(namespace, callId);
    const download = this.#inFlight.get(key);
    if (!download) return;
    this.#discarded.add(download);
    this.#inFlight.delete(key);
    await this.#storing.get(download)?.catch(() => {});
  }

  /** Resolves once every download under way has finished and been stored. */
  async idle(): Promise<void> {
    while (this.#settled.size > 0) await Promise.allSettled([...this.#settled.values()]);
  }

  #start(key: string, tenant: Tenant, callId: string): RecordingDownload {
    const { client, cache, disk, diskHealth, logger, slots } = this.options;
    // The slot is held from the first attempt until the download settles.
    const slot = slots.acquire();
    const download = new RecordingDownload(
      async () => {
        await slot;
        return this.#timed(() => client.openRecording(callId, tenant.upstreamApiKey));
      },
      {
        memoryEntryMaxBytes: cache.memoryEntryMaxBytes,
        createTemp: () => disk.createTemp(),
        discardTemp: (tempPath) => disk.discardTemp(tempPath),
        onDiskError: (error) => diskHealth.report(error),
      },
    );
    this.#inFlight.set(key, download);
    const settled = this.#finish(key, tenant, callId, download)
      .catch((error: unknown) => logger.error({ err: error, key }, 'storing a finished download failed'))
      .finally(() => {
        if (this.#inFlight.get(key) === download) this.#inFlight.delete(key);
        download.retire();
        void slot.then((release) => release());
        this.#settled.delete(download);
      });
    this.#settled.set(download, settled);
    return download;
  }

  /** Times the upstream head for the metrics, by outcome. */
  async #timed<T>(open: () => Promise<T>): Promise<T> {
    const startedAt = this.options.clock.now();
    const seconds = () => (this.options.clock.now() - startedAt) / 1000;
    try {
      const opened = await open();
      this.options.metrics?.upstreamAnswered('ok', seconds());
      return opened;
    } catch (error) {
      this.options.metrics?.upstreamAnswered(upstreamErrorKind(error), seconds());
      throw error;
    }
  }

  async #finish(key: string, tenant: Tenant, callId: string, download: RecordingDownload): Promise<void> {
    let result;
    try {
      result = await download.completed;
    } catch (error) {
      if (error instanceof NotFoundError) {
        if (!this.#discarded.has(download)) this.options.notFound.remember(key);
      } else {
        this.options.logger.warn({ err: error, key }, 'download failed; nothing stored');
      }
      return;
    }
    if (this.#discarded.has(download)) {
      if (result.tempPath) await this.options.disk.discardTemp(result.tempPath);
      return;
    }
    const storing = this.options.cache.store(
      {
        namespace: tenant.namespace,
        callId,
        size: result.size,
        sha256: result.sha256,
        contentType: result.contentType,
        fetchedAt: this.options.clock.now(),
        ...(result.lastModified === undefined ? {} : { lastModified: result.lastModified }),
      },
      result.tempPath,
      result.body,
    );
    this.#storing.set(download, storing);
    try {
      await storing;
    } finally {
      this.#storing.delete(download);
    }
  }
}
