import { cacheKey } from '../cache/recording-meta.js';
import type { GatewayConfig } from '../config/index.js';
import { createGateway } from '../gateway.js';
import { UsageError, formatBytes, type Print } from './io.js';

const PROGRESS_INTERVAL_MS = 200;

/**
 * `prefetch ID...`: warms the cache through the upstream, one recording after
 * another, with a progress line on a terminal. Resolves with the number of
 * recordings that failed.
 */
export async function prefetchCommand(
  config: GatewayConfig,
  callIds: string[],
  options: { tenant?: string; print: Print; progress?: (line: string) => void },
): Promise<number> {
  const tenantId = options.tenant ?? config.tenants[0]!.id;
  // reconcile: false — a gateway may be serving this cache right now.
  const gateway = await createGateway({ config, reconcile: false });
  let failed = 0;
  try {
    const tenant = gateway.tenants.byId(tenantId);
    if (!tenant) throw new UsageError(`no tenant "${tenantId}" in the config`);
    for (const callId of callIds) {
      const key = cacheKey(tenant.namespace, callId);
      const cached = gateway.cache.lookup(key);
      if (cached) {
        options.print(`call ${callId}: already cached (${formatBytes(cached.entry.meta.size)})`);
        continue;
      }
      const joined = gateway.downloads.join(tenant, callId);
      joined.release();
      const ticker = options.progress
        ? setInterval(() => {
            const { received } = joined.download;
            options.progress!(`call ${callId}: ${formatBytes(received)} received`);
          }, PROGRESS_INTERVAL_MS)
        : undefined;
      try {
        const result = await joined.download.completed;
        await joined.stored;
        options.print(`call ${callId}: cached (${formatBytes(result.size)})`);
      } catch (error) {
        failed++;
        options.print(`call ${callId}: failed: ${error instanceof Error ? error.message : String(error)}`);
      } finally {
        clearInterval(ticker);
        options.progress?.('');
      }
    }
  } finally {
    await gateway.close();
  }
  return failed;
}
