import { DAY_MS, type Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import type { CachedRecording } from './recording-catalogue.js';
import type { RecordingIndex } from './recording-index.js';
import type { RecordingMeta } from './recording-meta.js';

/*
 * Retention (README, Compliance): a copy older than its retention, counted
 * from when it was fetched from Flyflow, is never served again and is deleted
 * from memory, disk and index by a periodic sweep, asked for or not.
 */

/** How often the sweep runs: an expired copy is gone from disk within this (plus the sweep's own time), well inside a minute. */
export const RETENTION_SWEEP_INTERVAL_MS = 20_000;
// Deletions under way at once in a sweep: a large batch expiring together must not queue every other disk operation behind it.
const SWEEP_CONCURRENCY = 8;

/** Whether a copy is past its retention; a clock and the config bound in. */
export interface CopyRetention {
  /** True when this copy may no longer be served: a lookup treats it as a miss and the sweep deletes it. */
  expired(meta: RecordingMeta, onDisk: boolean): boolean;
  /** False when the namespace's retention is 0: its recordings are served (and kept in memory) but never written to disk. */
  keepsOnDisk(namespace: string): boolean;
  /** Every copy fetched from this time on is still kept, on disk or not (the shortest retention): a sweep need only read the index entries older. */
  keptFrom(): number;
}

/** What decides retention: `cache.retention_days`, and each tenant's own with the namespace (upstream account) it reaches. */
export interface RetentionSettings {
  /** `cache.retention_days`; undefined: copies stay until evicted. */
  defaultDays: number | undefined;
  tenants: ReadonlyArray<{ namespace: string; retentionDays: number | undefined }>;
}

/**
 * Each namespace's retention in milliseconds. Tenants on one upstream
 * account share its copies, so the shortest retention among them wins: no
 * tenant keeps a copy longer than it asked for. A tenant without its own
 * counts with `cache.retention_days`; a namespace no tenant reaches (a tenant
 * since removed) gets `cache.retention_days`.
 */
export function retentionByNamespace(settings: RetentionSettings): { byNamespace: Map<string, number>; defaultMs: number | undefined } {
  const toMs = (days: number | undefined) => (days === undefined ? undefined : days * DAY_MS);
  const defaultMs = toMs(settings.defaultDays);
  const byNamespace = new Map<string, number>();
  for (const tenant of settings.tenants) {
    const ms = toMs(tenant.retentionDays) ?? defaultMs;
    if (ms === undefined) continue;
    byNamespace.set(tenant.namespace, Math.min(ms, byNamespace.get(tenant.namespace) ?? Number.POSITIVE_INFINITY));
  }
  return { byNamespace, defaultMs };
}

/** The retention rules, or undefined when nothing sets a retention (then no copy ever expires and nothing is checked). */
export function createCopyRetention(settings: RetentionSettings, clock: Clock): CopyRetention | undefined {
  const { byNamespace, defaultMs } = retentionByNamespace(settings);
  if (defaultMs === undefined && byNamespace.size === 0) return undefined;
  const keepMs = (namespace: string) => byNamespace.get(namespace) ?? defaultMs;
  const shortestMs = Math.min(...byNamespace.values(), defaultMs ?? Number.POSITIVE_INFINITY);
  return {
    expired(meta, onDisk) {
      const ms = keepMs(meta.namespace);
      if (ms === undefined) return false;
      // 0 keeps nothing on disk; a memory-only copy lives until the memory tier evicts it.
      if (ms === 0) return onDisk;
      return clock.now() - meta.fetchedAt > ms;
    },
    keepsOnDisk: (namespace) => keepMs(namespace) !== 0,
    // Expired is `now - fetchedAt > ms`; a copy fetched at `now - ms` exactly is still kept, and with 0 every copy on disk is not.
    keptFrom: () => clock.now() - shortestMs + (shortestMs === 0 ? 1 : 0),
  };
}

export interface RetentionSweeperOptions {
  /** What the sweep deletes from: the cache's entries, and its `expire` (memory, file and index, if still the same copy). */
  cache: { entries(): CachedRecording[]; expire(key: string, meta: RecordingMeta): Promise<boolean> };
  retention: CopyRetention;
  /**
   * Listed on every sweep: other processes store into it (the CLI's
   * `prefetch` beside the gateway on sqlite, other replicas on Redis or a
   * shared volume), so copies this process never looked up go too. Through
   * `entriesFetchedBefore` when it has it, so only the old entries are read.
   */
  index?: Pick<RecordingIndex, 'entries' | 'entriesFetchedBefore'>;
  /** True while a download of this key is under way: its copy is about to be replaced, so it is left to the next sweep. */
  busy?: (key: string) => boolean;
  logger: Logger;
  /** Told how many copies each sweep deleted (for the metrics). */
  onExpired?: (count: number) => void;
  /** Default {@link RETENTION_SWEEP_INTERVAL_MS}. */
  intervalMs?: number;
}

/**
 * Deletes expired copies on a timer (unref'd, so it never keeps the process
 * alive), once at start and then every `intervalMs`. One sweep at a time.
 */
export class RetentionSweeper {
  readonly #options: RetentionSweeperOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<number> | undefined;
  #stopped = false;

  constructor(options: RetentionSweeperOptions) {
    const intervalMs = options.intervalMs ?? RETENTION_SWEEP_INTERVAL_MS;
    if (!Number.isFinite(intervalMs) || intervalMs <= 0) {
      throw new RangeError(`retention sweeper: intervalMs must be a positive number of milliseconds, got ${intervalMs}`);
    }
    this.#options = { ...options, intervalMs };
  }

  /** Sweeps now (in the background: start-up does not wait for it), then every `intervalMs` until `stop`. */
  start(): void {
    if (this.#timer || this.#stopped) return;
    void this.sweep();
    this.#timer = setInterval(() => void this.sweep(), this.#options.intervalMs);
    this.#timer.unref();
  }

  /** Stops the timer and waits for a sweep under way. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  /**
   * Deletes every expired copy now; resolves with how many. Joins a sweep
   * already under way. Never rejects: a copy that cannot be deleted is logged
   * and tried again by the next sweep (it is not served meanwhile).
   */
  sweep(): Promise<number> {
    this.#running ??= this.#sweep()
      .catch((error: unknown) => {
        this.#options.logger.warn({ err: error }, 'retention sweep failed; the next one tries again');
        return 0;
      })
      .finally(() => {
        this.#running = undefined;
      });
    return this.#running;
  }

  async #sweep(): Promise<number> {
    const { cache, retention, index, busy, logger } = this.#options;
    const expired = new Map<string, RecordingMeta>();
    for (const entry of cache.entries()) {
      if (retention.expired(entry.meta, entry.onDisk)) expired.set(entry.key, entry.meta);
    }
    if (index) {
      try {
        const listed = index.entriesFetchedBefore?.(retention.keptFrom()) ?? index.entries();
        for await (const [key, meta] of listed) {
          if (this.#stopped) break;
          if (!expired.has(key) && retention.expired(meta, true)) expired.set(key, meta);
        }
      } catch (error) {
        // What this process holds expires all the same; what only the index lists waits for the next sweep.
        logger.warn({ err: error }, 'retention sweep could not list the index; the next one tries again');
      }
    }
    let removed = 0;
    const pending = [...expired].filter(([key]) => !busy?.(key));
    for (let i = 0; i < pending.length && !this.#stopped; i += SWEEP_CONCURRENCY) {
      const outcomes = await Promise.allSettled(pending.slice(i, i + SWEEP_CONCURRENCY).map(([key, meta]) => cache.expire(key, meta)));
      for (const [j, outcome] of outcomes.entries()) {
        if (outcome.status === 'fulfilled') {
          if (outcome.value) removed++;
        } else {
          logger.warn(
            { err: outcome.reason, key: pending[i + j]?.[0] },
            'deleting an expired recording failed; the next sweep tries again',
          );
        }
      }
    }
    if (removed > 0) {
      this.#options.onExpired?.(removed);
      logger.info({ count: removed }, 'retention: deleted expired recordings');
    }
    return removed;
  }
}
