import { createTenantRegistry, type Tenant } from '../auth/tenants.js';
import { createDiskStore } from '../cache/disk-store.js';
import { openIndex } from '../cache/open-index.js';
import type { RecordingIndex } from '../cache/recording-index.js';
import { verifyCache } from '../cache/verify.js';
import { callIdJson } from '../recordings/call-id.js';
import type { GatewayConfig } from '../config/index.js';
import { CommandFailure, UsageError, directoryExists, formatBytes, printJson, type Print } from './io.js';
import { liveHitRatio } from './running-gateway.js';

/** How a command prints: lines for people, or one JSON document with `--json`. */
export interface OutputOptions {
  print: Print;
  json?: boolean;
}

/**
 * False when the cache has never been written: the sqlite index lives in the
 * cache directory, and opening it there would fail (SQLITE_CANTOPEN) or
 * create the directory as a side effect of a command that only looks.
 */
export function cacheExists(config: GatewayConfig): boolean {
  if (config.cache.index.kind === 'redis') return true;
  return directoryExists(config.cache.dir, config.cache.dirSetting ?? 'cache.dir');
}

export async function withIndex<T>(config: GatewayConfig, use: (index: RecordingIndex) => Promise<T>): Promise<T> {
  const index = await openIndex(config, { refuseMissing: true });
  try {
    return await use(index);
  } finally {
    await index.close().catch(() => {});
  }
}

/**
 * The config's tenants as the gateway sees them, with their cache namespaces,
 * for those whose Flyflow key is known here (the namespace derives from it).
 */
export function tenantsWithNamespace(config: GatewayConfig): Tenant[] {
  return createTenantRegistry(config).all.filter((tenant) => tenant.upstreamApiKey !== '');
}

/** The namespace `--tenant` names. */
export function namespaceOf(config: GatewayConfig, tenantId: string): string {
  const tenant = createTenantRegistry(config).byId(tenantId);
  if (!tenant) throw new UsageError(`no tenant "${tenantId}" in the config`);
  if (tenant.upstreamApiKey === '') {
    throw new CommandFailure(
      `tenant "${tenantId}": its Flyflow key is not set here, so its cache namespace is unknown; set it as the gateway has it`,
    );
  }
  return tenant.namespace;
}

/** `cache stats`: entries and bytes, per namespace, and the live hit ratio when the gateway runs. */
export async function cacheStats(config: GatewayConfig, output: OutputOptions): Promise<void> {
  const perNamespace = new Map<string, { entries: number; bytes: number }>();
  const exists = cacheExists(config);
  if (exists) {
    await withIndex(config, async (index) => {
      for await (const [, meta] of index.entries()) {
        const totals = perNamespace.get(meta.namespace) ?? { entries: 0, bytes: 0 };
        totals.entries++;
        totals.bytes += meta.size;
        perNamespace.set(meta.namespace, totals);
      }
    });
  }
  const owners = new Map<string, string[]>();
  for (const tenant of tenantsWithNamespace(config)) owners.set(tenant.namespace, [...(owners.get(tenant.namespace) ?? []), tenant.id]);
  const namespaces = [...perNamespace].map(([namespace, totals]) => ({ namespace, tenants: owners.get(namespace) ?? [], ...totals }));
  const entries = namespaces.reduce((sum, each) => sum + each.entries, 0);
  const total = namespaces.reduce((sum, each) => sum + each.bytes, 0);
  const live = await liveHitRatio(config);
  const { print } = output;

  if (output.json) {
    printJson(print, {
      cache_dir: config.cache.dir,
      index: config.cache.index.kind,
      exists,
      recordings: entries,
      bytes: total,
      max_disk_bytes: config.cache.maxDiskBytes,
      namespaces: namespaces.map(({ namespace, tenants, entries: recordings, bytes }) => ({ namespace, tenants, recordings, bytes })),
      gateway:
        live.state === 'answered'
          ? { url: live.url, state: 'running', hits: live.value.hits, requests: live.value.total }
          : { url: live.url, state: live.state, ...(live.state === 'not-running' ? {} : { message: live.message }) },
    });
    return;
  }
  print(`cache:      ${config.cache.dir} (index: ${config.cache.index.kind})${exists ? '' : ', does not exist yet'}`);
  print(`recordings: ${entries}, ${formatBytes(total)} of ${formatBytes(config.cache.maxDiskBytes)}`);
  for (const { namespace, tenants, entries: count, bytes } of namespaces) {
    print(
      `  ${namespace}${tenants.length > 0 ? ` (${tenants.join(', ')})` : ''}: ${count} recording${count === 1 ? '' : 's'}, ${formatBytes(bytes)}`,
    );
  }
  if (live.state === 'not-running') {
    print(`hit ratio:  no running gateway answered at ${live.url}`);
  } else if (live.state !== 'answered') {
    print(`hit ratio:  unknown: ${live.message}`);
  } else if (live.value.total === 0) {
    print(`hit ratio:  no recording requests yet (${live.url})`);
  } else {
    const { hits, total: requests } = live.value;
    print(`hit ratio:  ${((100 * hits) / requests).toFixed(1)}% since start (${hits} hits of ${requests} recording requests)`);
  }
}

/**
 * Refuses a command that removes or rewrites cache files when `cache.encryption`
 * is set but one of its keys could not be read (the CLI loads the config without
 * requiring secrets): a file under a missing key cannot be told from a damaged
 * one, and `cache verify` would remove every such file. Names the fields and
 * where their keys were looked for, never a value.
 */
function requireEncryptionKeys(config: GatewayConfig, command: string): void {
  const { encryption } = config.cache;
  if (!encryption) return;
  const isCurrent = ({ field }: { field: string }) => field.startsWith('cache.encryption.key');
  const unreadable = [...(encryption.unreadable ?? [])];
  // A config built in code rather than loaded has no list; an empty key is just as unusable.
  if (encryption.key.length === 0 && !unreadable.some(isCurrent))
    unreadable.unshift({ field: 'cache.encryption.key', problem: 'is empty' });
  if (unreadable.length === 0) return;
  const current = unreadable.some(isCurrent);
  const previous = unreadable.some((each) => !isCurrent(each));
  const which = current && previous ? 'its key and its previous keys' : current ? 'its key' : 'its previous keys';
  const where = unreadable.map(({ field, problem }) => `${field}: ${problem}`).join(' and ');
  const them = unreadable.length === 1 ? 'it' : 'them';
  throw new CommandFailure(
    `${command} did nothing: cache.encryption is set but ${which} could not be read, and files under a missing key cannot be told from damaged ones: ${where}; set ${them} as the gateway has ${them} and run it again`,
  );
}

const PROBLEMS = {
  checksum: 'sha256 mismatch',
  size: 'wrong size',
  missing: 'file missing',
  damaged: 'failed decryption (edited, cut short, stored in the clear, or under a key not configured)',
} as const;

/**
 * `cache verify`: rehashes every file, removes the corrupt ones.
 * @returns the number removed: the command exits 1 when it found any.
 */
export async function cacheVerify(config: GatewayConfig, output: OutputOptions): Promise<number> {
  const { print } = output;
  // Every file under an unread key would look damaged and be removed: refuse rather than empty the cache.
  requireEncryptionKeys(config, 'cache verify');
  if (!cacheExists(config)) {
    if (output.json) printJson(print, { cache_dir: config.cache.dir, exists: false, checked: 0, intact: 0, removed: [] });
    else print(`nothing to check: the cache directory ${config.cache.dir} does not exist yet`);
    return 0;
  }
  const disk = createDiskStore(config.cache.dir, { encryption: config.cache.encryption });
  const removed: Array<{ namespace: string; call_id: number | string; problem: string }> = [];
  const report = await withIndex(config, (index) =>
    verifyCache(index, disk, (key, meta, verdict) => {
      if (verdict === 'ok') return;
      removed.push({ namespace: meta.namespace, call_id: callIdJson(meta.callId), problem: PROBLEMS[verdict] });
      if (!output.json) print(`removed ${key}: ${PROBLEMS[verdict]}`);
    }),
  );
  const intact = report.checked - report.removed.length;
  if (output.json) printJson(print, { cache_dir: config.cache.dir, exists: true, checked: report.checked, intact, removed });
  else print(`verified ${report.checked} recording${report.checked === 1 ? '' : 's'}: ${intact} intact, ${report.removed.length} removed`);
  return report.removed.length;
}
