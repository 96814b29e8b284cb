import type { GatewayConfig } from '../config/index.js';
import { createGateway } from '../gateway.js';
import { UsageError, formatBytes, type Print } from './io.js';
import { errorMessage } from '../errors.js';

const PROGRESS_INTERVAL_MS = 200;

/** One recording's outcome, for `prefetch --json`: already `cached`, `fetched` now, or `failed`. */
export interface PrefetchResult {
  callId: string;
  status: 'cached' | 'fetched' | 'failed';
  size?: number;
  error?: string;
}

/**
 * `prefetch ID...`: warms the cache through the upstream, one recording after
 * another, with a progress line on a terminal. Resolves with the number of
 * recordings that failed.
 */
export async function prefetchCommand(
  config: GatewayConfig,
  callIds: string[],
  options: { tenant?: string; print: Print; progress?: (line: string) => void; onResult?: (result: PrefetchResult) => void },
): Promise<number> {
  const tenantId = options.tenant ?? config.tenants[0]!.id;
  // reconcile: false — a gateway may be serving this cache right now.
  const gateway = await createGateway({ config, reconcile: false });
  let failed = 0;
  try {
    const tenant = gateway.tenants.byId(tenantId);
    if (!tenant) throw new UsageError(`no tenant "${tenantId}" in the config`);
    for (const callId of callIds) {
      let ticker: NodeJS.Timeout | undefined;
      try {
        const result = await gateway.recordings.warm(tenant, callId, (download) => {
          if (options.progress) {
            ticker = setInterval(
              () => options.progress!(`call ${callId}: ${formatBytes(download.received)} received`),
              PROGRESS_INTERVAL_MS,
            );
          }
        });
        options.print(`call ${callId}: ${result.status === 'cached' ? 'already cached' : 'cached'} (${formatBytes(result.size)})`);
        options.onResult?.({ callId, status: result.status, size: result.size });
      } catch (error) {
        failed++;
        options.print(`call ${callId}: failed: ${errorMessage(error)}`);
        options.onResult?.({ callId, status: 'failed', error: errorMessage(error) });
      } finally {
        if (ticker) {
          clearInterval(ticker);
          options.progress?.('');
        }
      }
    }
  } finally {
    await gateway.close();
  }
  return failed;
}
