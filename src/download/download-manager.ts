import type { Tenant } from '../auth/tenants.js';
import type { Clock } from '../clock.js';
import { cacheKey, type RecordingMeta } from '../cache/recording-meta.js';
import { StaleCopyError } from '../cache/stale-copy.js';
import type { TempFile } from '../cache/temp-file.js';
import { type GatewayError, NotFoundError, ServiceUnavailableError } from '../errors.js';
import { lastModifiedOrFetchedAt } from '../http/last-modified.js';
import type { Logger } from '../logger.js';
import type { GatewayMetrics, UpstreamOutcome } from '../metrics/gateway-metrics.js';
import { upstreamErrorKind } from '../upstream/errors.js';
import type { FlyflowClient } from '../upstream/flyflow-client.js';
import type { DownloadSlots } from './download-slots.js';
import { RecordingDownload, type CompletedDownload, type DownloadSink, type SourcedRecording } from './recording-download.js';

/** Where a finished download goes (the recording cache). */
export interface DownloadStore {
  /**
   * Keeps the recording; commits `file` if it keeps it on disk, and leaves it
   * alone otherwise. Rejects with StaleCopyError when a purge since
   * `purgesSeen` (what `purgesSoFar` said as the download began) won.
   */
  store(meta: RecordingMeta, file: TempFile | undefined, body: Buffer | undefined, purgesSeen?: number): Promise<unknown>;
  /** How many purges of `key` the store knows of so far, in any process sharing it; undefined when it cannot tell. */
  purgesSoFar?(key: string): Promise<number | undefined>;
}

/** Who a download is for: the namespace it is stored under and the key it is fetched with. */
export type DownloadOwner = Pick<Tenant, 'namespace' | 'upstreamApiKey'>;

/** Opens a recording's bytes: the upstream by default; in a cluster, wherever the cluster says. */
/**
 * Where a download's bytes come from. `goingUpstream` is called as soon as the
 * source has decided to ask the upstream itself (before the request), so that
 * other replicas may stream this download from then on, and not while it is
 * still choosing (it may be about to stream theirs).
 */
export type RecordingSource = (
  owner: DownloadOwner,
  callId: string,
  signal: AbortSignal | undefined,
  goingUpstream?: () => void,
) => Promise<SourcedRecording>;

/**
 * The upstream itself: the owner's key, the owner's account circuit. With
 * `timing.metrics`, each request's outcome and its time to the head are
 * counted here, so that a recording another replica streams is no upstream request.
 */
export function upstreamSource(
  client: Pick<FlyflowClient, 'openRecording'>,
  timing?: { metrics: Pick<GatewayMetrics, 'upstreamAnswered'> | undefined; clock: Clock },
): RecordingSource {
  return async (owner, callId, signal, goingUpstream) => {
    goingUpstream?.();
    const startedAt = timing?.clock.now() ?? 0;
    const answered = (outcome: UpstreamOutcome) => timing?.metrics?.upstreamAnswered(outcome, (timing.clock.now() - startedAt) / 1000);
    try {
      const opened = await client.openRecording(callId, owner.upstreamApiKey, { account: owner.namespace, signal });
      answered('ok');
      return opened;
    } catch (error) {
      answered(upstreamErrorKind(error));
      throw error;
    }
  };
}

export interface DownloadManagerOptions {
  /** With `timeoutMs`, the wait for a download slot counts against it too. */
  client: Pick<FlyflowClient, 'openRecording'> & Partial<Pick<FlyflowClient, 'timeoutMs'>>;
  /** Where bodies are written while they arrive. */
  sink: DownloadSink;
  store: DownloadStore;
  /** Where downloads come from; default: `upstreamSource(client)`, timed into `metrics`. */
  source?: RecordingSource;
  /** The cap on concurrent upstream downloads; callers beyond it queue, fairly between upstream accounts. */
  slots: DownloadSlots;
  /** Told of every upstream 404, so the next requests for it are answered without asking. */
  notFound: { remember(key: string): void | Promise<void> };
  metrics?: Pick<GatewayMetrics, 'joinedDownload' | 'upstreamAnswered' | 'upstreamBodyFailed'>;
  clock: Clock;
  logger: Logger;
  /**
   * In a cluster: a download streaming another replica's download that has
   * sent nothing for longer than this, while bytes are still due, is not
   * joined: its source may be stopped or hung. A new request starts a
   * download of its own, whose source passes over a replica that does not
   * answer. Unset, every download under way is joined.
   */
  stalledRelayMs?: number;
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
 * A download's stop: aborted by `abort` (the download is abandoned at
 * shutdown), or, given `ms`, once `ms` have passed unless `clear` came first.
 * The timer is what `AbortSignal.timeout(ms)` gives, for less: that registers
 * a WeakRef and a FinalizationRegistry entry, about 90 µs on a CPU that has
 * just woken up, on every cold miss before the upstream is asked. This timer
 * is cleared by its holder instead, and does not keep the process alive.
 */
function stopSignal(ms: number | undefined): { signal: AbortSignal; abort(reason: unknown): void; clear(): void } {
  const controller = new AbortController();
  const timer =
    ms === undefined ? undefined : setTimeout(() => controller.abort(new DOMException('The operation timed out.', 'TimeoutError')), ms);
  timer?.unref();
  return { signal: controller.signal, abort: (reason) => controller.abort(reason), clear: () => clearTimeout(timer) };
}

/**
 * One download per recording: concurrent misses for the same namespace and
 * call id share one upstream request. When it completes, the result is stored
 * before the download stops being joinable, so no request falls in between.
 */
export class DownloadManager {
  readonly #inFlight = new Map<string, RecordingDownload>();
  readonly #discarded = new WeakSet<RecordingDownload>();
  /** Downloads a purge overtook (here, or in another process sharing the index): their result was not stored. */
  readonly #overtaken = new WeakSet<RecordingDownload>();
  /** Every download not yet settled, with the promise that settles once it is stored (or failed). */
  readonly #settled = new Map<RecordingDownload, Promise<void>>();
  readonly #storing = new Map<RecordingDownload, Promise<unknown>>();
  /** Set by `abandon`: the error every download failed with, and any started since will. */
  #abandoning: GatewayError | undefined;
  /** Every download not yet settled, with what abandons it. */
  readonly #abandon = new Map<RecordingDownload, (error: GatewayError) => boolean>();

  readonly #source: RecordingSource;

  constructor(private readonly options: DownloadManagerOptions) {
    this.#source = options.source ?? upstreamSource(options.client, { metrics: options.metrics, clock: options.clock });
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** The keys of the downloads under way, for a purge of a whole namespace. */
  keys(): string[] {
    return [...this.#inFlight.keys()];
  }

  /** The download under way for this key, if any. */
  peek(key: string): RecordingDownload | undefined {
    return this.#inFlight.get(key);
  }

  /** True while a download for this key can be joined. */
  isInFlight(key: string): boolean {
    return this.#inFlight.has(key);
  }

  /**
   * The download under way for this recording, or a new one. With
   * `joinUnderWay` false a new one replaces any under way: a replica out of
   * the cluster cannot hear the purge that would have ended it.
   */
  join(owner: DownloadOwner, callId: string, { joinUnderWay = true } = {}): JoinedDownload {
    const key = cacheKey(owner.namespace, callId);
    const existing = this.#inFlight.get(key);
    const stalled = existing !== undefined && this.#stalledRelay(existing);
    if (existing && joinUnderWay && !stalled) {
      this.options.metrics?.joinedDownload();
      return { download: existing, collapsed: true, release: existing.acquire(), stored: this.#settled.get(existing)! };
    }
    if (existing) {
      // Its readers keep reading it; only the download that replaces it in the registry is stored.
      this.#discarded.add(existing);
      if (stalled)
        this.options.logger.warn(
          { key },
          'cluster: the replica a download streams from has sent nothing for a while; downloading it again',
        );
    }
    const download = this.#start(key, owner, callId);
    return { download, collapsed: false, release: download.acquire(), stored: this.#settled.get(download)! };
  }

  #stalledRelay(download: RecordingDownload): boolean {
    const limit = this.options.stalledRelayMs;
    return limit !== undefined && download.origin === 'peer-download' && download.silentFor > limit;
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
    this.#overtaken.add(download);
    this.#inFlight.delete(key);
    await this.#storing.get(download)?.catch(() => {});
  }

  /** True once a purge has won over `download`, so that its result is not (or was not) stored. */
  overtaken(download: RecordingDownload): boolean {
    return this.#overtaken.has(download);
  }

  /** Resolves once every download under way has finished and been stored. */
  async idle(): Promise<void> {
    while (this.#settled.size > 0) await Promise.allSettled([...this.#settled.values()]);
  }

  /**
   * Shutdown, once its grace period is over: every download still receiving
   * (or waiting for a download slot) is stopped, its upstream request aborted
   * and its temporary file removed; nothing of it is stored. One whose bytes
   * are all in is still stored. Returns how many were abandoned; `idle`
   * resolves once they have let go of their files.
   */
  abandon(): number {
    const error = new ServiceUnavailableError('The gateway shut down before the download finished; nothing of it was stored', 5);
    // One a prefetch or a request still starts from now on is abandoned as it starts.
    this.#abandoning = error;
    let abandoned = 0;
    for (const abandon of [...this.#abandon.values()]) if (abandon(error)) abandoned++;
    return abandoned;
  }

  #start(key: string, owner: DownloadOwner, callId: string): RecordingDownload {
    const { client, sink, logger, slots } = this.options;
    // The slot is held from the first attempt until the download settles. The
    // wait for it counts against upstream.timeout_ms together with the first
    // head; a body that broke is fetched again with a budget of its own.
    // Cut short when the head's budget (upstream.timeout_ms) runs out, or when the download is abandoned at shutdown.
    const stop = stopSignal(client.timeoutMs);
    const free = slots.take(owner.namespace);
    const slot = free ? Promise.resolve(free) : slots.acquire(owner.namespace, stop.signal);
    const opened: SourcedRecording[] = [];
    // Noted before the request goes out: a purge after this, in any process sharing the index, keeps the result from being stored.
    const purgesSeen = this.options.store.purgesSoFar?.(key);
    const download = new RecordingDownload(
      // Called once the slot is there (`ready`); with one free, within the constructor, so the request goes out before this caller's code goes on.
      async (goingUpstream) => {
        let recording: SourcedRecording;
        try {
          recording = await this.#source(owner, callId, stop.signal, goingUpstream);
        } catch (error) {
          // Remembered before anyone is answered 404, so the next request (on any replica) sees it.
          if (error instanceof NotFoundError && !this.#discarded.has(download)) await this.options.notFound.remember(key);
          throw error;
        } finally {
          // The budget covered the slot and the first head; a body fetched again
          // has a budget of its own. A download that never got this far clears it when it settles.
          stop.clear();
        }
        // Our clock dates the fetch: the head's arrival is this message's
        // origination (for a peer's stored copy, that copy's own fetch).
        // Without an upstream date that date stands in and is stored with the
        // copy, so a cold answer carries the Last-Modified a warm one will.
        const now = this.options.clock.now();
        recording.lastModified = lastModifiedOrFetchedAt(recording.lastModified, Math.min(recording.fetchedAt ?? now, now));
        opened.push(recording);
        return recording;
      },
      sink,
      {
        ...(free ? {} : { ready: slot }),
        onUpstreamBodyFailed: (error) => this.options.metrics?.upstreamBodyFailed(upstreamErrorKind(error)),
        clock: this.options.clock,
      },
    );
    this.#inFlight.set(key, download);
    this.#abandon.set(download, (error) => {
      if (!download.abandon(error)) return false;
      // Ends a wait for a slot, or a request whose head has not come yet.
      stop.abort(error);
      return true;
    });
    if (this.#abandoning) this.#abandon.get(download)!(this.#abandoning);
    const settled = this.#finish(key, owner.namespace, callId, download, purgesSeen)
      .catch((error: unknown) => logger.error({ err: error, key }, 'storing a finished download failed'))
      .then(async () => {
        stop.clear();
        if (this.#inFlight.get(key) === download) this.#inFlight.delete(key);
        for (const recording of opened) recording.settle?.();
        void slot.then(
          (release) => release(),
          () => {},
        );
        // With nobody reading any more, the file is closed before the download counts as settled.
        await download.retire();
      })
      .finally(() => {
        this.#settled.delete(download);
        this.#abandon.delete(download);
      });
    this.#settled.set(download, settled);
    return download;
  }

  async #finish(
    key: string,
    namespace: string,
    callId: string,
    download: RecordingDownload,
    purgesSeen: Promise<number | undefined> | undefined,
  ): Promise<void> {
    let result: CompletedDownload;
    try {
      result = await download.completed;
    } catch (error) {
      // Abandoned downloads are counted in one line at shutdown.
      if (!(error instanceof NotFoundError || download.abandoned))
        this.options.logger.warn({ err: error, key }, 'download failed; nothing stored');
      return;
    }
    try {
      if (this.#discarded.has(download)) return;
      const seen = await purgesSeen;
      if (this.#discarded.has(download)) return;
      const storing = this.options.store.store(
        {
          namespace,
          callId,
          size: result.size,
          sha256: result.sha256,
          contentType: result.contentType,
          // A peer's stored copy keeps its age: retention counts from the upstream fetch, not from each copy.
          fetchedAt: result.fetchedAt ?? this.options.clock.now(),
          ...(result.lastModified === undefined ? {} : { lastModified: result.lastModified }),
          ...(result.generation === undefined ? {} : { generation: result.generation }),
        },
        // The source's replica stores it on our shared volume itself.
        result.persist ? result.file : undefined,
        result.body,
        seen,
      );
      this.#storing.set(download, storing);
      try {
        await storing;
      } catch (error) {
        if (!(error instanceof StaleCopyError)) throw error;
        this.#overtaken.add(download);
      } finally {
        this.#storing.delete(download);
      }
    } finally {
      // Whatever the store did not commit (a purge won, no room, a failing disk) goes now.
      await result.file?.discard();
    }
  }
}
