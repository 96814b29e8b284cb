import type { Tenant } from '../auth/tenants.js';
import { cacheKey } from '../cache/recording-meta.js';
import { StaleCopyError } from '../cache/stale-copy.js';
import { NotFoundError, ServiceUnavailableError } from '../errors.js';
import type { Logger } from '../logger.js';
import { isUpstreamOutage } from '../upstream/errors.js';
import type { RecordingService } from './recording-service.js';

export interface PrefetchOptions {
  /** Attempts in all, for failures that may pass (upstream 5xx, timeouts, connection errors, an open circuit). Default 3. */
  attempts?: number;
  /** Wait before the second attempt; doubled after each. Default 2 s. */
  firstDelayMs?: number;
  /** Ends the waiting between attempts (shutdown). Any number of prefetches may share it. */
  signal?: AbortSignal;
}

export type PrefetchResult = { status: 'cached' | 'fetched'; size: number } | { status: 'failed'; error: unknown };

const DEFAULT_ATTEMPTS = 3;
const DEFAULT_FIRST_DELAY_MS = 2_000;

/**
 * Warms the cache with a recording through the recording service, so the
 * first listener gets a hit. Failures that may pass are retried with
 * exponential backoff; a 404 ends it at once (the download remembered it for
 * `cache.not_found_ttl_seconds`), as do a rejected key or a bad body, which
 * another attempt would only repeat.
 */
export function createPrefetcher(deps: { recordings: RecordingService; logger: Logger }) {
  return async function prefetch(tenant: Tenant, callId: string, options: PrefetchOptions = {}): Promise<PrefetchResult> {
    const attempts = options.attempts ?? DEFAULT_ATTEMPTS;
    const sleep = options.signal ? sleepUntil(options.signal) : plainSleep;
    let delay = options.firstDelayMs ?? DEFAULT_FIRST_DELAY_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        return await deps.recordings.warm(tenant, callId);
      } catch (error) {
        if (!mayPass(error)) {
          // A 404, or a purge that came while it downloaded: nothing wrong here.
          const level = error instanceof NotFoundError || error instanceof StaleCopyError ? 'info' : 'warn';
          deps.logger[level]({ err: error, tenant: tenant.id, callId, attempt }, 'prefetch failed; not retried');
          return { status: 'failed', error };
        }
        if (attempt >= attempts) {
          deps.logger.warn({ err: error, tenant: tenant.id, callId, attempts }, 'prefetch gave up');
          return { status: 'failed', error };
        }
        if (!(await sleep(delay))) return { status: 'failed', error };
        delay *= 2;
      }
    }
  };
}

export type Prefetch = ReturnType<typeof createPrefetcher>;

/** Flyflow failing or overloaded, or the circuit waiting it out: worth another attempt later. */
function mayPass(error: unknown): boolean {
  return isUpstreamOutage(error) || error instanceof ServiceUnavailableError;
}

/** Resolves true once `ms` have passed, or false at once when it was cut short. */
type Sleep = (ms: number) => Promise<boolean>;

const plainSleep: Sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms, true));

const sleepers = new WeakMap<AbortSignal, Sleep>();

/**
 * A sleep that ends early when `signal` aborts. One listener per signal,
 * however many sleep on it: a listener per sleep piles up on the shared
 * shutdown signal (Node warns with MaxListenersExceededWarning past ten).
 */
function sleepUntil(signal: AbortSignal): Sleep {
  const known = sleepers.get(signal);
  if (known) return known;
  const sleeping = new Set<() => void>();
  signal.addEventListener(
    'abort',
    () => {
      for (const wake of sleeping) wake();
    },
    { once: true },
  );
  const sleep: Sleep = (ms) =>
    new Promise((resolve) => {
      if (signal.aborted) return resolve(false);
      const end = (slept: boolean) => {
        clearTimeout(timer);
        sleeping.delete(wake);
        resolve(slept);
      };
      const wake = () => end(false);
      const timer = setTimeout(end, ms, true);
      sleeping.add(wake);
    });
  sleepers.set(signal, sleep);
  return sleep;
}

export interface PrefetchQueueOptions {
  prefetch: Prefetch;
  /** Retry tuning for every prefetch; the queue adds its shutdown signal. */
  prefetchOptions?: Omit<PrefetchOptions, 'signal'>;
  /** Prefetches queued or running for one tenant at most (`webhooks.max_queued_prefetches`). */
  maxPerTenant: number;
  /** Prefetches running at once; the others wait their turn in arrival order. */
  concurrency: number;
  /** Shutdown: queued prefetches are dropped, running ones stop at their next wait. */
  signal: AbortSignal;
  logger: Logger;
}

/** What became of an event: a prefetch `queued`, `joined` to one for the same call, or refused (`full`, `closed`). */
export type EnqueueResult = 'queued' | 'joined' | 'full' | 'closed';

interface Job {
  key: string;
  tenant: Tenant;
  callId: string;
}

/**
 * The webhook's background prefetches, bounded three ways: one prefetch per
 * recording (namespace and call id) at a time, which later events join; at
 * most `maxPerTenant` queued or running per tenant, so one tenant's burst
 * never refuses another's events; and `concurrency` running at once, so a
 * burst of prefetches never takes every download slot from listeners.
 */
export class PrefetchQueue {
  readonly #jobs = new Map<string, Job>();
  readonly #waiting: Job[] = [];
  readonly #perTenant = new Map<string, number>();
  readonly #idle = new Set<() => void>();
  #running = 0;

  constructor(private readonly options: PrefetchQueueOptions) {
    for (const name of ['maxPerTenant', 'concurrency'] as const) {
      const value = options[name];
      if (!Number.isSafeInteger(value) || value < 1)
        throw new RangeError(`prefetch queue: ${name} must be a positive integer, got ${value}`);
    }
    options.signal.addEventListener('abort', () => this.#dropWaiting(), { once: true });
  }

  /** Prefetches waiting for their turn. */
  get queued(): number {
    return this.#waiting.length;
  }

  /** Prefetches under way. */
  get running(): number {
    return this.#running;
  }

  enqueue(tenant: Tenant, callId: string): EnqueueResult {
    if (this.options.signal.aborted) return 'closed';
    const key = cacheKey(tenant.namespace, callId);
    if (this.#jobs.has(key)) return 'joined';
    const held = this.#perTenant.get(tenant.id) ?? 0;
    if (held >= this.options.maxPerTenant) return 'full';
    const job: Job = { key, tenant, callId };
    this.#jobs.set(key, job);
    this.#perTenant.set(tenant.id, held + 1);
    this.#waiting.push(job);
    this.#pump();
    return 'queued';
  }

  /** Resolves once no prefetch is queued or running (after shutdown: once the running ones stopped). */
  idle(): Promise<void> {
    if (this.#jobs.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.add(resolve));
  }

  #pump(): void {
    while (this.#running < this.options.concurrency && this.#waiting.length > 0) {
      const job = this.#waiting.shift()!;
      this.#running++;
      const { prefetch, prefetchOptions, signal, logger } = this.options;
      void prefetch(job.tenant, job.callId, { ...prefetchOptions, signal })
        .catch((error: unknown) => logger.error({ err: error, tenant: job.tenant.id, callId: job.callId }, 'prefetch crashed'))
        .finally(() => {
          this.#running--;
          this.#done(job);
          this.#pump();
        });
    }
  }

  #dropWaiting(): void {
    for (const job of this.#waiting.splice(0)) this.#done(job);
  }

  #done(job: Job): void {
    this.#jobs.delete(job.key);
    const held = (this.#perTenant.get(job.tenant.id) ?? 1) - 1;
    if (held > 0) this.#perTenant.set(job.tenant.id, held);
    else this.#perTenant.delete(job.tenant.id);
    if (this.#jobs.size > 0) return;
    for (const resolve of this.#idle) resolve();
    this.#idle.clear();
  }
}
