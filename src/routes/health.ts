import type { Context } from 'hono';
import type { DiskHealth } from '../cache/disk-health.js';
import type { RecordingIndex } from '../cache/recording-index.js';
import { IndexFileError } from '../cache/sqlite-index-file.js';
import { errorMessage } from '../errors.js';

/**
 * One thing /readyz checks. It rejects with a reason anyone may read: what is
 * wrong, never a path, a host name, a pid or a secret.
 */
export interface ReadinessCheck {
  name: string;
  check(): Promise<void>;
}

// A probe must see the state of now, never a copy kept by a proxy or a browser.
const NO_STORE = { 'Cache-Control': 'no-store' };

/** The cache directory is writable; probed actively while it fails (see DiskHealth). */
export function cacheDirectoryReadiness(diskHealth: DiskHealth): ReadinessCheck {
  return { name: 'cache directory', check: () => diskHealth.check() };
}

/**
 * The audit trail is being written. While its writes fail, lines wait in
 * memory and are retried in the background, so this turns ready again once
 * the disk is repaired, without traffic.
 */
export function auditReadiness(trail: { readonly problem: string | undefined }): ReadinessCheck {
  return {
    name: 'audit trail',
    check: async () => {
      if (trail.problem !== undefined) throw new Error(trail.problem);
    },
  };
}

// A load balancer's probe gives up after a second or two; an index operation may wait 5 s.
const INDEX_READINESS_TIMEOUT_MS = 1_000;

/**
 * The index store answers, within `timeoutMs` (default 1 s): a stalled store
 * is reported at once rather than after its own operation timeout. One ping at
 * a time: while a stalled store keeps one waiting, later probes wait on it too.
 * An index whose file was deleted or replaced under it says so (IndexFileError).
 */
export function indexReadiness(index: Pick<RecordingIndex, 'kind' | 'ping'>, timeoutMs = INDEX_READINESS_TIMEOUT_MS): ReadinessCheck {
  let pinging: Promise<void> | undefined;
  return {
    name: `${index.kind} index`,
    async check() {
      pinging ??= index.ping().finally(() => {
        pinging = undefined;
      });
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => {
        timer = setTimeout(() => resolve('late'), timeoutMs);
      });
      const answered = pinging.then(
        () => 'answered' as const,
        // Only an IndexFileError's message is safe to show: others may name a path or a host.
        (error: unknown) => (error instanceof IndexFileError ? error : ('failed' as const)),
      );
      const outcome = await Promise.race([answered, late]);
      clearTimeout(timer);
      if (outcome === 'late') throw new Error(`the index store did not answer within ${formatSeconds(timeoutMs)}`);
      if (outcome === 'failed') throw new Error('the index store did not answer');
      if (outcome instanceof IndexFileError) throw new Error(outcome.message);
    },
  };
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

/**
 * @param details more to say in the /readyz body, never a reason for 503:
 *   in a cluster, Redis trouble is reported here (README, Cluster).
 */
export function createHealthHandlers(checks: ReadinessCheck[], details?: () => Record<string, unknown>) {
  return {
    /** 200 while the process serves. */
    healthz(c: Context): Response {
      return c.json({ status: 'ok' }, 200, NO_STORE);
    },

    /** 200 when every dependency answers, else 503 naming what failed. */
    async readyz(c: Context): Promise<Response> {
      const results = await Promise.all(
        checks.map(async ({ name, check }) => {
          try {
            await check();
            return undefined;
          } catch (error) {
            return `${name}: ${errorMessage(error)}`;
          }
        }),
      );
      const failures = results.filter((result): result is string => result !== undefined);
      const more = details?.() ?? {};
      if (failures.length === 0) return c.json({ status: 'ready', ...more }, 200, NO_STORE);
      return c.json({ error: 'Service Unavailable', message: failures.join('; '), ...more }, 503, NO_STORE);
    },
  };
}
