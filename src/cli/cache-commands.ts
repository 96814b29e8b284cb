import { upstreamNamespace } from '../auth/tenants.js';
import { createDiskStore } from '../cache/disk-store.js';
import type { RecordingIndex } from '../cache/recording-index.js';
import type { RecordingMeta } from '../cache/recording-meta.js';
import { verifyCache } from '../cache/verify.js';
import type { GatewayConfig } from '../config/index.js';
import { openIndex } from '../cache/open-index.js';
import { UsageError, formatBytes, type Print } from './io.js';

const METRICS_TIMEOUT_MS = 2_000;

async function withIndex<T>(config: GatewayConfig, use: (index: RecordingIndex) => Promise<T>): Promise<T> {
  const index = openIndex(config);
  try {
    return await use(index);
  } finally {
    await index.close().catch(() => {});
  }
}

/** Tenant ids by cache namespace, for the tenants whose upstream key is known. */
function tenantsByNamespace(config: GatewayConfig): Map<string, string[]> {
  const names = new Map<string, string[]>();
  for (const tenant of config.tenants) {
    const key = tenant.upstreamApiKey ?? config.upstream.apiKey;
    if (!key) continue;
    const namespace = upstreamNamespace(config.upstream.baseUrl, key);
    names.set(namespace, [...(names.get(namespace) ?? []), tenant.id]);
  }
  return names;
}

function namespaceOf(config: GatewayConfig, tenantId: string): string {
  const tenant = config.tenants.find((candidate) => candidate.id === tenantId);
  if (!tenant) throw new UsageError(`no tenant "${tenantId}" in the config`);
  const key = tenant.upstreamApiKey ?? config.upstream.apiKey;
  if (!key) throw new UsageError(`tenant "${tenantId}": its Flyflow key is not set, so its cache namespace cannot be derived`);
  return upstreamNamespace(config.upstream.baseUrl, key);
}

/** The hit ratio of a running gateway, from its own /metrics; undefined when none answers. */
async function liveHitRatio(config: GatewayConfig): Promise<{ url: string; hits: number; total: number } | undefined> {
  const host = config.listen.host === '0.0.0.0' || config.listen.host === '::' ? '127.0.0.1' : config.listen.host;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${config.listen.port}/metrics`;
  try {
    const response = await fetch(url, {
      headers: config.adminToken ? { Authorization: `Bearer ${config.adminToken}` } : {},
      signal: AbortSignal.timeout(METRICS_TIMEOUT_MS),
    });
    if (!response.ok) return undefined;
    let hits = 0;
    let total = 0;
    for (const line of (await response.text()).split('\n')) {
      if (!line.startsWith('recording_gateway_requests_total{') || !line.includes('route="recording"')) continue;
      const cache = /cache="([a-z]+)"/.exec(line)?.[1];
      if (cache === 'none') continue;
      const count = Number(line.split(' ').pop());
      total += count;
      if (cache === 'hit') hits += count;
    }
    return { url, hits, total };
  } catch {
    return undefined;
  }
}

/** `cache stats`: entries and bytes, per namespace, and the live hit ratio when the gateway runs. */
export async function cacheStats(config: GatewayConfig, print: Print): Promise<void> {
  const perNamespace = new Map<string, { entries: number; bytes: number }>();
  await withIndex(config, async (index) => {
    for await (const [, meta] of index.entries()) {
      const totals = perNamespace.get(meta.namespace) ?? { entries: 0, bytes: 0 };
      totals.entries++;
      totals.bytes += meta.size;
      perNamespace.set(meta.namespace, totals);
    }
  });
  const entries = [...perNamespace.values()].reduce((sum, totals) => sum + totals.entries, 0);
  const total = [...perNamespace.values()].reduce((sum, totals) => sum + totals.bytes, 0);
  print(`cache:      ${config.cache.dir} (index: ${config.cache.index.kind})`);
  print(`recordings: ${entries}, ${formatBytes(total)} of ${formatBytes(config.cache.maxDiskBytes)}`);
  const tenants = tenantsByNamespace(config);
  for (const [namespace, totals] of perNamespace) {
    const owners = tenants.get(namespace);
    print(`  ${namespace}${owners ? ` (${owners.join(', ')})` : ''}: ${totals.entries} recordings, ${formatBytes(totals.bytes)}`);
  }
  const live = await liveHitRatio(config);
  if (!live) {
    print('hit ratio:  no running gateway answered on the configured listen address');
  } else if (live.total === 0) {
    print(`hit ratio:  no recording requests yet (${live.url})`);
  } else {
    print(`hit ratio:  ${((100 * live.hits) / live.total).toFixed(1)}% since start (${live.hits} hits of ${live.total} recording requests)`);
  }
}

/** `cache verify`: rehashes every file, removes the corrupt ones. */
export async function cacheVerify(config: GatewayConfig, print: Print): Promise<number> {
  const disk = createDiskStore(config.cache.dir);
  const report = await withIndex(config, (index) =>
    verifyCache(index, disk, (key, _meta, verdict) => {
      if (verdict !== 'ok') print(`removed ${key}: ${verdict === 'checksum' ? 'sha256 mismatch' : verdict === 'size' ? 'wrong size' : 'file missing'}`);
    }),
  );
  print(`verified ${report.checked} recordings: ${report.checked - report.removed.length} intact, ${report.removed.length} removed`);
  return report.removed.length;
}

/** `cache purge [--call ID] [--tenant T]`: removes matching recordings from disk and index. */
export async function cachePurge(config: GatewayConfig, filter: { callId?: string; tenant?: string }, print: Print): Promise<void> {
  const namespace = filter.tenant === undefined ? undefined : namespaceOf(config, filter.tenant);
  const disk = createDiskStore(config.cache.dir);
  const removed = await withIndex(config, async (index) => {
    const matching: Array<[string, RecordingMeta]> = [];
    for await (const [key, meta] of index.entries()) {
      if ((namespace === undefined || meta.namespace === namespace) && (filter.callId === undefined || meta.callId === filter.callId)) {
        matching.push([key, meta]);
      }
    }
    for (const [key, meta] of matching) {
      await index.delete(key);
      await disk.remove(meta.namespace, meta.callId);
    }
    return matching;
  });
  print(`purged ${removed.length} recording${removed.length === 1 ? '' : 's'}`);
  if (removed.length > 0) {
    print('A running gateway may still answer from its memory copy until restarted; DELETE over HTTP purges every tier.');
  }
}
