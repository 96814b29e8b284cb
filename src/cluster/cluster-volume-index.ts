import type { RecordingIndex, VolumeOverflow } from '../cache/recording-index.js';
import type { RecordingMeta } from '../cache/recording-meta.js';
import { StaleCopyError } from '../cache/stale-copy.js';
import type { Logger } from '../logger.js';
import type { ClusterCopy, ClusterDirectory, VolumeUsage } from './cluster-directory.js';

export interface ClusterVolumeIndexOptions {
  /** The volume's own index (sqlite on the volume): the truth about what the volume holds. */
  local: RecordingIndex;
  directory: ClusterDirectory;
  volume: string;
  maxDiskBytes: number;
  /** Each namespace's disk share, as the catalogue applies it. */
  diskShares: ReadonlyMap<string, number>;
  logger: Logger;
  /** Keys whose copy could not be published or removed while Redis was out; the next sync settles them. */
  onUnsynced: () => void;
}

// Recency updates from hits go to Redis in one command per interval, not one per hit.
const TOUCH_FLUSH_MS = 1_000;
// The shared budget looks at this many of the volume's oldest copies per store.
const EVICTION_CANDIDATES = 64;

/**
 * Least recently used first among namespaces over their share, then the
 * newcomer's own namespace, as the catalogue does (README, Durability): a
 * namespace within its share is never evicted for another's traffic.
 */
export function chooseVictims(
  candidates: readonly ClusterCopy[],
  usage: VolumeUsage,
  shares: ReadonlyMap<string, number>,
  newcomer: { key: string; namespace: string },
  overBy: number,
  maxVictims = candidates.length,
): ClusterCopy[] {
  const byNamespace = new Map(usage.byNamespace);
  const victims = new Set<ClusterCopy>();
  let freed = 0;
  const choose = (wanted: (copy: ClusterCopy) => boolean) => {
    for (const copy of candidates) {
      if (freed >= overBy || victims.size >= maxVictims) return;
      const key = `${copy.meta.namespace}/${copy.meta.callId}`;
      if (key === newcomer.key || victims.has(copy) || !wanted(copy)) continue;
      victims.add(copy);
      freed += copy.meta.size;
      byNamespace.set(copy.meta.namespace, (byNamespace.get(copy.meta.namespace) ?? 0) - copy.meta.size);
    }
  };
  choose((copy) => (byNamespace.get(copy.meta.namespace) ?? 0) > (shares.get(copy.meta.namespace) ?? 0));
  choose((copy) => copy.meta.namespace === newcomer.namespace);
  return [...victims];
}

/**
 * The volume's copies oldest fetched first, from its own index (written by
 * every replica on it), for the shared budget while Redis is out (the shared
 * recency order is in Redis): one pass over the index.
 */
async function oldestOnVolume(local: RecordingIndex, volume: string): Promise<ClusterCopy[]> {
  const copies: ClusterCopy[] = [];
  for await (const [, meta] of local.entries()) copies.push({ volume, meta });
  return copies.sort((a, b) => a.meta.fetchedAt - b.meta.fetchedAt);
}

/**
 * Those of Redis's copies the volume still holds: one a replica cut off from
 * Redis removed is listed there until that replica syncs.
 */
async function stillOnVolume(local: RecordingIndex, copies: ClusterCopy[]): Promise<ClusterCopy[]> {
  const held = await Promise.all(copies.map((copy) => local.get(`${copy.meta.namespace}/${copy.meta.callId}`).catch(() => undefined)));
  return copies.filter((_, i) => held[i] !== undefined);
}

/**
 * The volume's own index, mirrored into the cluster's directory: every store
 * publishes the copy (refused when a purge overtook its download), every
 * removal withdraws it and tells the replicas sharing the volume. While Redis
 * is out the volume's index goes on alone; the next sync publishes what it
 * missed. The shared budget is kept from the volume's own count of its bytes,
 * whatever Redis was told.
 */
export function clusterVolumeIndex(options: ClusterVolumeIndexOptions): RecordingIndex & VolumeOverflow {
  const { local, directory, volume, logger } = options;
  const touched = new Set<string>();
  const flush = setInterval(() => {
    if (touched.size === 0) return;
    const keys = [...touched];
    touched.clear();
    void directory.touch(volume, keys, Date.now()).catch(() => {});
  }, TOUCH_FLUSH_MS);
  flush.unref();

  return {
    kind: local.kind,
    shared: true,
    // A copy stored outside the cluster (the CLI's prefetch: no purge
    // generation) is listed for the other replicas when a replica first finds
    // it here, unless a purge came after it; then it is no copy at all. Copies
    // a replica stored were listed by that replica (and listing them again
    // could bring back one its replica evicted meanwhile).
    async get(key) {
      const meta = await local.get(key);
      if (meta?.generation !== undefined || !meta) return meta;
      let published: Awaited<ReturnType<ClusterDirectory['publish']>>;
      try {
        published = await directory.publish(volume, key, meta, Date.now());
      } catch {
        options.onUnsynced();
        return meta;
      }
      if (published.published) return meta;
      await local.delete(key).catch(() => {});
      return undefined;
    },
    entries: () => local.entries(),
    ...(local.purges ? { purges: local.purges } : {}),
    ping: () => local.ping(),
    async set(key, meta, purgesSeen) {
      // The volume's own purge marks first (a CLI purge or a replica's, on this volume), then the cluster's generation.
      await local.set(key, meta, purgesSeen);
      let published: Awaited<ReturnType<ClusterDirectory['publish']>>;
      try {
        published = await directory.publish(volume, key, meta, Date.now());
      } catch (error) {
        logger.debug({ err: error, key }, 'cluster: copy not published yet (redis out)');
        options.onUnsynced();
        return;
      }
      if (!published.published) {
        await local.delete(key).catch(() => {});
        throw new StaleCopyError(`${key} was purged while it downloaded`);
      }
    },
    async delete(key) {
      await local.delete(key);
      await directory.remove(volume, key, true).catch(() => options.onUnsynced());
    },
    touched(key) {
      touched.add(key);
    },
    async overflow(newcomer?: RecordingMeta, incoming = 0) {
      // The volume's index counts every replica's stores, those of a replica
      // cut off from Redis too, which Redis's count for the volume lacks.
      const usage = await local.usage?.().catch(() => undefined);
      if (!usage) return [];
      if (usage.total + incoming <= options.maxDiskBytes) return [];
      const namespace = newcomer?.namespace ?? '';
      usage.byNamespace.set(namespace, (usage.byNamespace.get(namespace) ?? 0) + incoming);
      const key = newcomer ? `${newcomer.namespace}/${newcomer.callId}` : '';
      const candidates = await directory.oldest(volume, EVICTION_CANDIDATES).then(
        (listed) => stillOnVolume(local, listed),
        () => oldestOnVolume(local, volume).catch(() => []),
      );
      return chooseVictims(candidates, usage, options.diskShares, { key, namespace }, usage.total + incoming - options.maxDiskBytes).map(
        (copy) => ({ key: `${copy.meta.namespace}/${copy.meta.callId}`, meta: copy.meta }),
      );
    },
    async close() {
      clearInterval(flush);
      await local.close();
    },
  };
}
