import { createTenantRegistry } from '../auth/tenants.js';
import { createDiskStore, FILE_REMOVALS_AT_ONCE, listStoredFiles, type DiskStore } from '../cache/disk-store.js';
import { deleteEntries } from '../cache/recording-index.js';
import type { RecordingMeta } from '../cache/recording-meta.js';
import { eachAtMost } from '../each-at-most.js';
import type { GatewayConfig } from '../config/index.js';
import type { PurgeFilter } from '../admin-api.js';
import { cacheExists, namespaceOf, tenantsWithNamespace, withIndex, type OutputOptions } from './cache-commands.js';
import { CommandFailure, UsageError, printJson } from './io.js';
import { purgeThroughGateway } from './running-gateway.js';
import { auditCliCommand } from '../audit/cli-audit.js';
import { errorMessage } from '../errors.js';
import { DamagedIndexError } from '../cache/damaged-index.js';
import { isDiskFull, isVolumeFull, markFreeingRoom } from '../cache/full-disk-purge.js';

// Recordings whose files are removed before their index entries go, in one index operation. One at
// a time (two unlinks, then two sqlite queries), 5,000 recordings took 4.5 s.
const PURGED_AT_ONCE = 500;

/** Refuses a purge that does not say what it removes: everything takes `--all`. */
export function checkPurgeFilter(filter: PurgeFilter): void {
  const narrowed = filter.callId !== undefined || filter.tenant !== undefined;
  if (filter.all && narrowed) throw new UsageError('--all purges everything: leave out --call and --tenant, or --all');
  if (!filter.all && !narrowed) throw new UsageError('name what to purge: --call ID, --tenant T, or both; --all purges everything');
}

/**
 * `cache purge`: removes the matching recordings. With the sqlite index, a
 * gateway serving this cache is asked to do it, so its memory tier forgets
 * them at once; when none runs, the CLI removes them from disk and index
 * itself, except in a cluster, where only a running replica reaches every
 * volume. A Redis index announces every deletion to every gateway, so there
 * the CLI always does it itself.
 */
export async function cachePurge(config: GatewayConfig, filter: PurgeFilter, output: OutputOptions): Promise<void> {
  checkPurgeFilter(filter);
  if (filter.tenant !== undefined && !createTenantRegistry(config).byId(filter.tenant)) {
    throw new UsageError(`no tenant "${filter.tenant}" in the config`);
  }
  const report = (purged: number, by: 'gateway' | 'cli', url?: string) => {
    if (output.json) {
      printJson(output.print, { purged, by, ...(url === undefined ? {} : { gateway_url: url }) });
    } else {
      const where = by === 'gateway' ? ` by the running gateway at ${url}, from every tier` : '';
      output.print(`purged ${purged} recording${purged === 1 ? '' : 's'}${where}`);
    }
  };
  if (!cacheExists(config)) {
    if (output.json) printJson(output.print, { purged: 0, by: 'cli', exists: false });
    else output.print(`nothing to purge: the cache directory ${config.cache.dir} does not exist yet`);
    return;
  }
  if (config.cache.index.kind === 'sqlite') {
    const answer = await purgeThroughGateway(config, filter);
    if (answer.state === 'answered') return report(answer.value.purged, 'gateway', answer.url);
    if (answer.state === 'refused') throw new CommandFailure(`${answer.message}; nothing was purged`);
    // 404/405: something else listens there, or a gateway too old for the admin route.
    if (answer.state === 'failed' && answer.status !== 404 && answer.status !== 405) {
      // A gateway that failed part way (a full disk, say) may have removed some of it.
      throw new CommandFailure(`${answer.message}; the purge may not have finished: run it again`);
    }
    if (config.cluster) {
      // Alone, the CLI reaches this volume only: the other replicas would go on serving their copies.
      const why = answer.state === 'not-running' ? `no gateway answers at ${answer.url}` : answer.message;
      throw new CommandFailure(
        `${why}; in a cluster a purge goes through a running replica, which reaches every volume: start this one, or run it with a running replica's config (or DELETE through any replica); nothing was purged`,
      );
    }
    const purged = await purgeLocally(config, filter);
    report(purged, 'cli');
    if (answer.state === 'failed' && purged > 0 && !output.json) {
      output.print(`note: ${answer.message}, so a gateway running there may still serve its memory copy until it restarts`);
    }
    return;
  }
  report(await purgeLocally(config, filter), 'cli');
}

/**
 * Removes the matching recordings from the index and the disk; resolves with
 * how many. With `audit` configured, the purge is audited (no gateway did it).
 */
async function purgeLocally(config: GatewayConfig, filter: PurgeFilter): Promise<number> {
  if (!config.audit) return removeLocally(config, filter);
  const { audit } = config;
  let purged: number | undefined;
  try {
    purged = await removeLocally(config, filter);
    return purged;
  } finally {
    const entry = {
      event: 'purge',
      tenant: filter.tenant ?? null,
      callId: filter.callId ?? null,
      status: purged === undefined ? 500 : 200,
      command: 'cache purge',
    } as const;
    await auditCliCommand(audit, entry).catch((error: unknown) => {
      const done = purged === undefined ? 'the purge stopped' : `purged ${purged} recording${purged === 1 ? '' : 's'}`;
      throw new CommandFailure(`${done}, but its audit line could not be written: ${errorMessage(error)}`, {
        cause: error,
      });
    });
  }
}

async function removeLocally(config: GatewayConfig, filter: PurgeFilter): Promise<number> {
  const namespace = filter.tenant === undefined ? undefined : namespaceOf(config, filter.tenant);
  const disk = createDiskStore(config.cache.dir);
  const matches = purgeMatcher(namespace, filter.callId);
  return removeIndexed(config, filter, namespace, disk)
    .catch(async (error: unknown) => {
      // On a full disk sqlite may not even open its journal: the matching files, found by their paths, go first.
      if (!(await isVolumeFull(config.cache.dir))) throw error;
      let removed = 0;
      for (const file of await listStoredFiles(config.cache.dir)) {
        if (!matches(file)) continue;
        await disk.remove(file.namespace, file.callId);
        removed++;
      }
      return removeIndexed(config, filter, namespace, disk).catch(async (again: unknown) => {
        // sqlite needs its -shm (32 KiB) and room for its log: more than a short recording's file gives back.
        if (!isDiskFull(again) && !(await isVolumeFull(config.cache.dir))) throw again;
        throw new CommandFailure(indexFullMessage(config.cache.dir, removed, again), { cause: again });
      });
    })
    .catch((error: unknown) => {
      if (error instanceof UsageError || error instanceof CommandFailure || error instanceof DamagedIndexError) throw error;
      throw new CommandFailure(`the purge stopped: ${errorMessage(error)}`, { cause: error });
    });
}

/** What a purge on a full volume did, and what not, when the index could not be written even after the files went. */
function indexFullMessage(dir: string, removed: number, error: unknown): string {
  const why = `${dir} is on a full volume and the sqlite index has no room to write (${errorMessage(error)})`;
  const next = 'free some space on that volume and run the purge again';
  if (removed === 0) return `nothing was purged: ${why}; ${next}`;
  const files = removed === 1 ? 'the file of 1 recording' : `the files of ${removed} recordings`;
  const entries = removed === 1 ? 'its index entry' : 'their index entries';
  return `removed ${files}, but not ${entries}: ${why}; an entry without its file is never served, and the gateway's next start drops it; ${next}`;
}

/** Whether a recording is one the purge names. */
function purgeMatcher(namespace: string | undefined, callId: string | undefined) {
  return (meta: { namespace: string; callId: string }): boolean =>
    (namespace === undefined || meta.namespace === namespace) && (callId === undefined || meta.callId === callId);
}

async function removeIndexed(config: GatewayConfig, filter: PurgeFilter, namespace: string | undefined, disk: DiskStore): Promise<number> {
  const matches = purgeMatcher(namespace, filter.callId);
  return withIndex(config, async (index) => {
    const matching: Array<[string, RecordingMeta]> = [];
    for await (const [key, meta] of index.entries()) if (matches(meta)) matching.push([key, meta]);
    // Recorded before anything is removed, so a download under way in a gateway or
    // `prefetch` on this cache is not stored after the purge: a recording not stored yet included.
    // On a full disk the matching files go first, to make room for the marks.
    const marks = index.purges;
    const markAll = async (): Promise<void> => {
      if (!marks) return;
      if (filter.callId === undefined) return marks.mark(namespace);
      const callId = filter.callId;
      const namespaces = namespace === undefined ? tenantsWithNamespace(config).map((tenant) => tenant.namespace) : [namespace];
      for (const ns of new Set([...namespaces, ...matching.map(([, meta]) => meta.namespace)])) await marks.mark(ns, callId);
    };
    const removeFiles = (some: Array<[string, RecordingMeta]>) =>
      eachAtMost(some, FILE_REMOVALS_AT_ONCE, ([, meta]) => disk.remove(meta.namespace, meta.callId));
    await markFreeingRoom(markAll, () => removeFiles(matching));
    // The files first: their removal makes the room a full disk needs for the index's write.
    for (let from = 0; from < matching.length; from += PURGED_AT_ONCE) {
      const some = matching.slice(from, from + PURGED_AT_ONCE);
      await removeFiles(some);
      await deleteEntries(
        index,
        some.map(([key]) => key),
      );
    }
    return matching.length;
  });
}
