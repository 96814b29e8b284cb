import type { Hono } from 'hono';
import type { RequestListener } from 'node:http';
import { createApp } from './app.js';
import { AuditTrail, type AuditTrailOptions } from './audit/audit-trail.js';
import { answeringMemoryHitsFirst, createMemoryHits, type MemoryHits } from './routes/memory-hits.js';
import { createRequestReporter, type RequestReporter } from './routes/request-log.js';
import { createAuthenticator } from './auth/authenticate.js';
import { createTenantRegistry, type TenantRegistry } from './auth/tenants.js';
import { systemClock, type Clock } from './clock.js';
import { DiskHealth } from './cache/disk-health.js';
import { createDiskStore } from './cache/disk-store.js';
import { removeUnreadableFiles } from './cache/encryption/unreadable-sweep.js';
import { NotFoundMemory } from './cache/not-found-memory.js';
import { RecordingCache } from './cache/recording-cache.js';
import { createCopyRetention, RetentionSweeper } from './cache/retention.js';
import { isVolumeFull } from './cache/full-disk-purge.js';
import { accountDiskShares } from './cache/recording-catalogue.js';
import { DamagedIndexError, setAsideDamagedIndex } from './cache/damaged-index.js';
import { openIndex } from './cache/open-index.js';
import type { RecordingIndex } from './cache/recording-index.js';
import type { GatewayConfig } from './config/index.js';
import { errorMessage } from './errors.js';
import { DownloadManager, upstreamSource } from './download/download-manager.js';
import { DownloadSlots } from './download/download-slots.js';
import { PrefetchQueue, createPrefetcher, type Prefetch, type PrefetchOptions } from './recordings/prefetch.js';
import { RecordingService } from './recordings/recording-service.js';
import { RecordingAnalyser } from './recordings/analysis/recording-analyser.js';
import { RecordingFactsService } from './recordings/analysis/recording-facts-service.js';
import { storedRecordingOpener } from './recordings/analysis/stored-recording-source.js';
import type { GatewayEnv } from './routes/gateway-env.js';
import { auditReadiness, cacheDirectoryReadiness, indexReadiness } from './routes/health.js';
import { silentLogger, type Logger } from './logger.js';
import { GatewayMetrics } from './metrics/gateway-metrics.js';
import { createMemoryRateLimitStore, createRedisRateLimitStore, createTenantRateLimiter, type RateLimitStore } from './rate-limit/index.js';
import type { Cluster } from './cluster/cluster.js';
import { PEER_VOLUME_HEADER } from './cluster/peer-client.js';
import { createUpstreamCircuits, type UpstreamCircuits } from './upstream/circuit.js';
import { createFlyflowClient, type FlyflowClientOptions } from './upstream/flyflow-client.js';
import { circuitLogger } from './upstream/circuit-log.js';

export interface GatewayOptions {
  config: GatewayConfig;
  clock?: Clock;
  logger?: Logger;
  /** Retry tuning, for tests that must not wait for real backoff. */
  upstream?: Pick<FlyflowClientOptions, 'maxAttempts' | 'initialBackoffMs'>;
  /** How webhook-triggered prefetches retry an upstream failure. */
  webhookPrefetch?: Omit<PrefetchOptions, 'signal'>;
  /** False for a second process on a cache a gateway may be serving (the CLI): it neither reconciles nor joins a cluster. Default true. */
  reconcile?: boolean;
  /** How often expired copies are deleted (default every 20 s), for tests. */
  retentionSweepIntervalMs?: number;
  /** Audit trail tuning, for tests (batching, the in-memory bound, retry waits). */
  audit?: Pick<AuditTrailOptions, 'flushIntervalMs' | 'maxPendingLines' | 'retryIntervalMs' | 'maxRetryIntervalMs'>;
}

/** The wired gateway: the app plus what the server and the CLI need to run and stop it. */
export interface Gateway {
  app: Hono<GatewayEnv>;
  /** Wraps the app's Node listener so that memory hits are answered without the app (src/routes/memory-hits.ts). */
  answeringMemoryHitsFirst(app: RequestListener): RequestListener;
  /** Memory hits made without the app, for the server's connection-level path (src/memory-hit-door.ts). */
  memoryHits: MemoryHits;
  /** Reports an answered request (its log line, metrics and audit line): what the server calls for those it answers before the app. */
  report: RequestReporter;
  cache: RecordingCache;
  downloads: DownloadManager;
  /** Finds or fetches recordings: what the routes, the webhook prefetcher and the CLI call. */
  recordings: RecordingService;
  index: RecordingIndex;
  tenants: TenantRegistry;
  /** One circuit per upstream account. */
  circuits: UpstreamCircuits;
  diskHealth: DiskHealth;
  metrics: GatewayMetrics;
  prefetch: Prefetch;
  /** Set in cluster mode. */
  cluster: Cluster | undefined;
  /** Analyses stored recordings: their facts (info.json, from the header after each store) and peaks (peaks.json, decoded on demand). */
  analyser: RecordingAnalyser;
  /** Deletes expired copies; set when a retention_days is configured (never in a second process such as the CLI). */
  retention: RetentionSweeper | undefined;
  /** Set when the config has `audit` (never in a second process such as the CLI). */
  audit: AuditTrail | undefined;
  /** Cluster mode: joins the cluster once the server listens at `advertiseUrl`; nothing otherwise. */
  joinCluster(advertiseUrl: string): Promise<void>;
  /**
   * Shutdown, at the end of its grace period: stops every download still
   * under way (nothing of it is stored); a request still waiting for one is
   * answered 503. Logs how many it stopped.
   */
  abandonDownloads(): void;
  /**
   * Waits for downloads under way to be stored, then closes the index and the
   * audit trail. With `graceMs`, downloads (and prefetches) still under way
   * after it are abandoned: their upstream requests are aborted and nothing
   * of them is stored. Without it, they are waited for however long they take.
   */
  close(options?: { graceMs?: number }): Promise<void>;
}

/** `cache.dir (CACHE_DIR): cannot create /x/recordings: not a directory`: the setting to fix, then what the system said. */
function cacheDirError(setting: string, error: unknown): Error {
  const { code, path } = error as NodeJS.ErrnoException;
  // Node's message is `ENOTDIR: not a directory, mkdir '/x/recordings'`: keep the description.
  const why = /^[A-Z0-9]+: ([^,]+),/.exec(errorMessage(error))?.[1] ?? errorMessage(error);
  return new Error(`${setting}: cannot create ${path ?? 'the cache directory'}: ${why}${code ? ` (${code})` : ''}`, { cause: error });
}

/** Builds every dependency from the config and loads the cache index into memory. */
export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const { config } = options;
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? silentLogger();
  // The serving process: the CLI, a second process on the cache, neither reconciles, sweeps, audits nor joins the cluster.
  const primary = options.reconcile ?? true;
  const joinsCluster = config.cluster !== undefined && primary;
  const keepsAudit = config.audit !== undefined && primary;
  // The sources are read at scrape time only, after everything below exists.
  const metrics: GatewayMetrics = new GatewayMetrics({
    cacheStats: () => cache.stats(),
    // Those holding a slot: queued ones are downloadsQueued.
    downloadsInFlight: () => slots.active,
    downloadsQueued: () => slots.queued,
    circuitStates: () => circuits.states(),
    webhookPrefetches: () => ({ queued: prefetches.queued, running: prefetches.running }),
    ...(joinsCluster ? { cluster: () => cluster!.status() } : {}),
    ...(keepsAudit ? { audit: () => audit!.status() } : {}),
  });
  // One chain per replica in cluster mode: its node id is in the file names, so replicas may share the directory.
  const audit =
    keepsAudit && config.audit
      ? await AuditTrail.open({
          dir: config.audit.dir,
          ...(config.audit.dirSetting ? { dirSetting: config.audit.dirSetting } : {}),
          retentionDays: config.audit.retentionDays,
          ...(config.cluster ? { nodeId: config.cluster.nodeId } : {}),
          clock,
          logger,
          ...options.audit,
        })
      : undefined;
  const disk = createDiskStore(config.cache.dir, {
    encryption: config.cache.encryption,
    onUnknownKey: (keyId) =>
      logger.warn({ keyId }, 'cached files are encrypted under a key not configured; they are removed and fetched again'),
  });
  await disk.init().catch((error: unknown) => {
    throw cacheDirError(config.cache.dirSetting ?? 'cache.dir', error);
  });
  const tenants = createTenantRegistry(config);
  const accounts = [...new Set(tenants.all.map((tenant) => tenant.namespace))];
  const diskShares = accountDiskShares(config.cache.maxDiskBytes, tenants.all);
  const cluster =
    config.cluster && joinsCluster
      ? // Loaded only in cluster mode: the Redis client costs a single gateway about 15 MB of resident memory.
        await (await import('./cluster/cluster.js')).Cluster.open({
          config: config.cluster,
          cacheDir: config.cache.dir,
          maxDiskBytes: config.cache.maxDiskBytes,
          diskShares,
          notFoundTtlMs: config.cache.notFoundTtlSeconds * 1000,
          peerBodyIdleMs: config.upstream.bodyIdleTimeoutMs,
          maxRecordingBytes: config.cache.maxRecordingBytes,
          encryption: config.cache.encryption,
          logger,
        })
      : undefined;
  const diskHealth = new DiskHealth(logger, clock, { dir: config.cache.dir });
  const retention = createCopyRetention({ defaultDays: config.cache.retentionDays, tenants: tenants.all }, clock);
  /** Opens the index and reads it into a new cache (reconciled with the files in the serving process). */
  async function openCache(): Promise<{ volumeIndex: RecordingIndex; index: RecordingIndex; cache: RecordingCache }> {
    const volumeIndex = await openIndex(config, primary ? { restoreDeleted: { logger } } : { refuseMissing: true });
    const index = cluster ? cluster.wrapIndex(volumeIndex) : volumeIndex;
    const cache = new RecordingCache({
      disk,
      index,
      diskHealth,
      maxMemoryBytes: config.cache.maxMemoryBytes,
      maxDiskBytes: config.cache.maxDiskBytes,
      diskShares,
      logger,
      onEvict: (count) => metrics.evicted(count),
      retention,
      // Called only once requests flow, after `analyser` exists.
      onStored: (entry) => analyser.schedule(entry),
    });
    try {
      await cache.load({ reconcile: primary });
    } catch (error) {
      await index.close().catch(() => {});
      throw error;
    }
    return { volumeIndex, index, cache };
  }
  let opened: Awaited<ReturnType<typeof openCache>>;
  try {
    opened = await openCache().catch(async (error: unknown) => {
      // The index only describes the files: the serving process starts afresh, as with a deleted one.
      // A second process (the CLI) must not rename it under a gateway that may be running.
      if (!(primary && error instanceof DamagedIndexError)) throw error;
      const aside = await setAsideDamagedIndex(error.file, new Date(clock.now()));
      logger.warn(
        { err: error, setAsideAs: aside },
        `the cache index ${error.file} is damaged: set it aside as ${aside} and started a fresh one (start-up reconciliation removes the files it no longer lists; they are fetched again)`,
      );
      return openCache();
    });
  } catch (error) {
    await cluster?.close();
    await audit?.close();
    await disk.removeOwnTemp().catch(() => {});
    // sqlite says only "disk I/O error" when it cannot make its journal files on a full volume.
    if (config.cache.index.kind === 'sqlite' && (await isVolumeFull(config.cache.dir))) {
      throw new Error(
        `cache.dir (CACHE_DIR): ${config.cache.dir} has no free space, so its sqlite index cannot be opened (${errorMessage(error)}); free some space on that volume (files of recordings may go by hand: start-up drops their entries) and start again`,
        { cause: error },
      );
    }
    throw error;
  }
  const { volumeIndex, index, cache } = opened;
  const localNotFound = new NotFoundMemory(config.cache.notFoundTtlSeconds * 1000, clock);
  const notFound = cluster ? cluster.notFound(localNotFound) : localNotFound;
  const circuits = createUpstreamCircuits({
    failureThreshold: config.upstream.circuitBreaker.failureThreshold,
    cooldownMs: config.upstream.circuitBreaker.cooldownSeconds * 1000,
    clock,
    accounts,
    onStateChange: circuitLogger(logger, config.upstream.circuitBreaker.cooldownSeconds),
  });
  const client = createFlyflowClient({
    baseUrl: config.upstream.baseUrl,
    timeoutMs: config.upstream.timeoutMs,
    bodyIdleTimeoutMs: config.upstream.bodyIdleTimeoutMs,
    maxRecordingBytes: config.cache.maxRecordingBytes,
    circuits,
    ...options.upstream,
  });
  const slots = new DownloadSlots(config.upstream.maxConcurrentDownloads, accounts);
  const upstream = upstreamSource(client, { metrics, clock });
  const downloads: DownloadManager = new DownloadManager({
    client,
    sink: {
      createTemp: () => disk.createTemp(),
      memoryEntryMaxBytes: cache.memoryEntryMaxBytes,
      onDiskError: (error) => diskHealth.report(error),
    },
    store: cache,
    source: cluster ? cluster.source(upstream, (origin) => metrics.peerFetched(origin)) : upstream,
    ...(cluster ? { stalledRelayMs: cluster.stalledRelayMs } : {}),
    notFound,
    clock,
    logger,
    slots,
    metrics,
  });
  const recordings = new RecordingService({
    cache,
    downloads,
    notFound,
    ...(cluster ? { cluster: cluster.purger, copies: cluster.copies } : {}),
  });
  const analyser: RecordingAnalyser = new RecordingAnalyser({ cache, disk, open: storedRecordingOpener(cache), logger });
  const prefetch = createPrefetcher({ recordings, logger });
  const closing = new AbortController();
  const retentionSweeper =
    retention && primary
      ? new RetentionSweeper({
          cache,
          retention,
          index,
          busy: (key) => downloads.isInFlight(key),
          logger,
          onExpired: (count) => metrics.retentionExpired(count),
          ...(options.retentionSweepIntervalMs === undefined ? {} : { intervalMs: options.retentionSweepIntervalMs }),
        })
      : undefined;
  retentionSweeper?.start();
  // With encryption, files the keys cannot read (stored in the clear, or under a retired key) go now, in the background.
  const sweeping =
    config.cache.encryption && primary
      ? removeUnreadableFiles({ disk, purge: (namespace, callId) => cache.purge(namespace, callId), logger, signal: closing.signal }).catch(
          (error: unknown) => logger.warn({ err: error }, 'checking the cached files against the encryption keys failed'),
        )
      : undefined;
  const prefetches = new PrefetchQueue({
    prefetch,
    prefetchOptions: options.webhookPrefetch,
    maxPerTenant: config.webhooks.maxQueuedPrefetches,
    // Half the download slots at most, so listeners' misses never wait behind a burst of prefetches.
    concurrency: Math.max(1, Math.floor(config.upstream.maxConcurrentDownloads / 2)),
    signal: closing.signal,
    logger,
  });
  /** Per tenant for the whole cluster in cluster mode (each replica on its own while Redis is out). */
  function rateLimitStore(use: 'requests' | 'webhooks'): RateLimitStore {
    if (!cluster) return createMemoryRateLimitStore({ clock });
    return createRedisRateLimitStore({
      link: cluster.link,
      clock,
      prefix: `rg:rl:${use}:`,
      onFallback: () => metrics.redisFallback('rate_limit'),
    });
  }
  const authenticator = createAuthenticator(tenants, clock);
  const rateLimiter = createTenantRateLimiter({ store: rateLimitStore('requests') });
  const report = createRequestReporter(logger, clock, metrics, audit);
  const app = createApp({
    tenants,
    authenticator,
    recordings,
    facts: new RecordingFactsService({ cache, recordings, analyser }),
    clock,
    logger,
    report,
    maxAgeSeconds: config.cache.maxAgeSeconds,
    publicBaseUrl: config.publicBaseUrl,
    rateLimiter,
    metrics,
    adminToken: config.adminToken,
    admin: {
      cacheDir: config.cache.dir,
      stored: () => index.entries(),
      unlisted: (namespace) => recordings.purgeCandidates(namespace),
      // What DELETE does: a download under way is not stored, a remembered 404 is forgotten.
      purge: (namespace, callId) => recordings.purge(namespace, callId),
      markPurged: (namespace) => recordings.markPurged(namespace),
    },
    webhooks: {
      prefetches,
      limiter: createTenantRateLimiter({ store: rateLimitStore('webhooks') }),
      rateLimitPerMinute: config.webhooks.rateLimitPerMinute,
    },
    readiness: [cacheDirectoryReadiness(diskHealth), indexReadiness(index), ...(audit ? [auditReadiness(audit)] : [])],
    ...(cluster
      ? {
          readinessDetails: () => ({ cluster: cluster.status() }),
          peer: {
            peerSecret: config.cluster!.peerSecret,
            volume: cluster.volume,
            recordings,
            downloads,
            volumeHeader: PEER_VOLUME_HEADER,
            redisUp: () => cluster.link.up,
            nonces: cluster.peerNonces,
          },
        }
      : {}),
  });
  const memoryHits = createMemoryHits({
    authenticator,
    anyAllowedOrigin: tenants.anyAllowedOrigin,
    recordings,
    rateLimiter,
    clock,
    maxAgeSeconds: config.cache.maxAgeSeconds,
    report,
  });
  const abandonDownloads = (): void => {
    const abandoned = downloads.abandon();
    if (abandoned === 0) return;
    logger.warn(
      { abandoned },
      `grace period over; abandoned ${abandoned} download${abandoned === 1 ? '' : 's'} still in progress (nothing of ${abandoned === 1 ? 'it' : 'them'} stored)`,
    );
  };
  return {
    app,
    answeringMemoryHitsFirst: (listener) => answeringMemoryHitsFirst(memoryHits, listener),
    memoryHits,
    report,
    cache,
    downloads,
    recordings,
    index,
    tenants,
    circuits,
    diskHealth,
    metrics,
    prefetch,
    cluster,
    analyser,
    retention: retentionSweeper,
    audit,
    async joinCluster(advertiseUrl) {
      await cluster?.start(advertiseUrl, {
        index: volumeIndex,
        entries: () => cache.entries(),
        purge: (namespace, callId) => recordings.purgeLocal(namespace, callId),
        forget: (key) => cache.forget(key),
        trimVolume: () => cache.trimVolume(),
      });
    },
    abandonDownloads,
    async close(options = {}) {
      closing.abort();
      await retentionSweeper?.stop();
      await sweeping;
      diskHealth.close();
      const finished = Promise.all([prefetches.idle(), downloads.idle()]);
      const graceOver = (ms: number) => new Promise<'over'>((resolve) => setTimeout(resolve, ms, 'over').unref());
      if (options.graceMs !== undefined && (await Promise.race([finished, graceOver(options.graceMs)])) === 'over') {
        abandonDownloads();
      }
      await finished;
      // Every download is stored or discarded by now: a stopped process leaves no empty folder of its own in tmp/.
      await disk.removeOwnTemp().catch((error: unknown) => logger.warn({ err: error }, "could not remove this process's tmp/ folder"));
      await analyser.close();
      await cluster?.close();
      await index.close();
      // Last: every answered request has been handed to the trail by now.
      await audit?.close();
    },
  };
}
