import { setTimeout as sleep } from 'node:timers/promises';
import type { Tenant } from '../auth/tenants.js';
import type { Logger } from '../logger.js';
import type { RecordingService } from './recording-service.js';

export interface PrefetchOptions {
  /** Attempts in all; a recording may take a while to appear after a call ends. Default 6. */
  attempts?: number;
  /** Wait before the second attempt; doubled after each. Default 2 s. */
  firstDelayMs?: number;
  /** Stops the waiting between attempts (shutdown). */
  signal?: AbortSignal;
}

export type PrefetchResult = { status: 'cached' | 'fetched'; size: number } | { status: 'failed'; error: unknown };

const DEFAULT_ATTEMPTS = 6;
const DEFAULT_FIRST_DELAY_MS = 2_000;

/**
 * Warms the cache with a recording through the recording service, so the
 * first listener gets a hit. Retries 404s too (Flyflow may not have the
 * recording yet when a call has just ended), with exponential backoff.
 */
export function createPrefetcher(deps: { recordings: RecordingService; logger: Logger }) {
  return async function prefetch(tenant: Tenant, callId: string, options: PrefetchOptions = {}): Promise<PrefetchResult> {
    const attempts = options.attempts ?? DEFAULT_ATTEMPTS;
    let delay = options.firstDelayMs ?? DEFAULT_FIRST_DELAY_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        return await deps.recordings.warm(tenant, callId);
      } catch (error) {
        if (attempt >= attempts) {
          deps.logger.warn({ err: error, tenant: tenant.id, callId, attempts }, 'prefetch gave up');
          return { status: 'failed', error };
        }
        try {
          await sleep(delay, undefined, { signal: options.signal });
        } catch {
          return { status: 'failed', error };
        }
        delay *= 2;
      }
    }
  };
}

export type Prefetch = ReturnType<typeof createPrefetcher>;
