import { isRecordingMeta, type RecordingMeta } from '../cache/recording-meta.js';
import { clusterKeys } from './cluster-keys.js';
import { REDIS_SCAN_COUNT, scanPages } from '../redis-scan.js';
import type { RedisLink } from './redis-link.js';

/** A stored copy somewhere in the cluster: the volume that holds it, and its metadata. */
export interface ClusterCopy {
  volume: string;
  meta: RecordingMeta;
}

/** What a volume holds, in bytes: in all, and by namespace (upstream account). */
export interface VolumeUsage {
  total: number;
  byNamespace: Map<string, number>;
}

/** The outcome of publishing a copy: refused when a purge came after the copy's download started. */
export type PublishResult = { published: false } | { published: true; volumeBytes: number };

// Copy bookkeeping that must not interleave with a purge runs as one script:
// the purge generation check and the volume's byte counts change together. A
// copy held anywhere means the recording exists, so a published copy also
// ends the shared 404 (a webhook's forget Redis missed, lost with a restart).
const PUBLISH = `
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[5]) < current then return {0, 0} end
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local previous = cjson.decode(old)
  redis.call('HINCRBY', KEYS[3], 'total', -previous.size)
  redis.call('HINCRBY', KEYS[3], 'ns:' .. previous.namespace, -previous.size)
end
redis.call('HINCRBY', KEYS[3], 'total', ARGV[3])
redis.call('HINCRBY', KEYS[3], 'ns:' .. ARGV[4], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], 'GT', ARGV[6], ARGV[7])
redis.call('DEL', KEYS[5])
return {1, tonumber(redis.call('HGET', KEYS[3], 'total'))}
`;

const REMOVE = `
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local meta = cjson.decode(raw)
redis.call('HINCRBY', KEYS[2], 'total', -meta.size)
redis.call('HINCRBY', KEYS[2], 'ns:' .. meta.namespace, -meta.size)
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
if ARGV[3] == '1' then redis.call('PUBLISH', KEYS[4], 'evict ' .. ARGV[1] .. ' ' .. ARGV[2]) end
return 1
`;

const PURGE = `
local generation = redis.call('INCR', KEYS[2])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local meta = cjson.decode(all[i + 1])
  local usage = ARGV[2] .. all[i] .. ':usage'
  redis.call('HINCRBY', usage, 'total', -meta.size)
  redis.call('HINCRBY', usage, 'ns:' .. meta.namespace, -meta.size)
  redis.call('ZREM', ARGV[2] .. all[i] .. ':lru', ARGV[1])
end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('PUBLISH', KEYS[4], 'purge ' .. ARGV[1])
return {generation, #all / 2}
`;

const VOLUME_KEY_PREFIX = clusterKeys.volumeUsage('').replace(/:usage$/, '');

function parseCopy(volume: string, raw: string | undefined | null): ClusterCopy | undefined {
  if (!raw) return undefined;
  try {
    const meta: unknown = JSON.parse(raw);
    return isRecordingMeta(meta) ? { volume, meta } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The cluster's shared index: which volumes hold a copy of each recording,
 * each volume's byte count and recency order (the disk budget shared by the
 * replicas on it), purge generations, and the shared 404 memory. Every call
 * goes through the link, so it is bounded and rejects while Redis is out.
 */
export class ClusterDirectory {
  constructor(private readonly link: RedisLink) {}

  /** Every copy of a recording, on any volume, and its purge generation. */
  async lookup(key: string): Promise<{ copies: ClusterCopy[]; generation: number }> {
    const [all, generation] = await this.link.call(async (client) => {
      const batch = client.multi().hGetAll(clusterKeys.copies(key)).get(clusterKeys.generation(key));
      return (await batch.exec()) as unknown as [Record<string, string>, string | null];
    });
    const copies = Object.entries(all ?? {}).flatMap(([volume, raw]) => parseCopy(volume, raw) ?? []);
    return { copies, generation: Number(generation ?? 0) };
  }

  /** The purge generation of each key (0 for a key never purged). */
  async generations(keys: readonly string[]): Promise<number[]> {
    if (keys.length === 0) return [];
    const values = await this.link.call((client) => client.mGet(keys.map(clusterKeys.generation)));
    return values.map((value) => Number(value ?? 0));
  }

  /**
   * Records a copy on `volume` and forgets the recording's remembered 404,
   * unless a purge of it came after the download it came from began (its
   * `generation`); then nothing changes.
   */
  async publish(volume: string, key: string, meta: RecordingMeta, now: number): Promise<PublishResult> {
    const reply = (await this.link.call((client) =>
      client.eval(PUBLISH, {
        keys: [
          clusterKeys.copies(key),
          clusterKeys.generation(key),
          clusterKeys.volumeUsage(volume),
          clusterKeys.volumeRecency(volume),
          clusterKeys.notFound(key),
        ],
        arguments: [volume, JSON.stringify(meta), String(meta.size), meta.namespace, String(meta.generation ?? 0), String(now), key],
      }),
    )) as [number, number];
    return reply[0] === 1 ? { published: true, volumeBytes: Number(reply[1]) } : { published: false };
  }

  /** Forgets `volume`'s copy; `announce` tells the replicas sharing that volume to forget it too (an eviction). */
  async remove(volume: string, key: string, announce: boolean): Promise<void> {
    await this.link.call((client) =>
      client.eval(REMOVE, {
        keys: [clusterKeys.copies(key), clusterKeys.volumeUsage(volume), clusterKeys.volumeRecency(volume), clusterKeys.events],
        arguments: [volume, key, announce ? '1' : '0'],
      }),
    );
  }

  /**
   * A purge for the whole cluster: bumps the generation (so no download begun
   * before it is stored), forgets every volume's copy and the remembered 404,
   * and tells every replica. Resolves with the new generation and how many
   * volumes held a copy.
   */
  async purge(key: string): Promise<{ generation: number; copies: number }> {
    const reply = (await this.link.call((client) =>
      client.eval(PURGE, {
        keys: [clusterKeys.copies(key), clusterKeys.generation(key), clusterKeys.notFound(key), clusterKeys.events],
        arguments: [key, `${VOLUME_KEY_PREFIX}`],
      }),
    )) as [number, number];
    return { generation: Number(reply[0]), copies: Number(reply[1]) };
  }

  /**
   * Every recording key in `namespace` (all, without one) the cluster knows
   * of: a copy on some volume, a download under way (its lease), a remembered
   * 404. For a purge of a whole namespace, which must reach them all. A key
   * may come more than once (a copy and a lease, say). Each page of the scan
   * is one bounded call.
   */
  async *knownKeys(namespace: string | undefined): AsyncIterable<string> {
    const pattern = namespace === undefined ? '*' : `${namespace}/*`;
    for (const keyOf of [clusterKeys.copies, clusterKeys.lease, clusterKeys.notFound]) {
      const prefix = keyOf('');
      const match = `${prefix}${pattern}`;
      for await (const keys of scanPages((cursor) =>
        this.link.call((client) => client.scan(cursor, { MATCH: match, COUNT: REDIS_SCAN_COUNT })),
      )) {
        for (const redisKey of keys) yield redisKey.slice(prefix.length);
      }
    }
  }

  /**
   * The volume's byte count as Redis keeps it. Since 0.5.2 the shared budget
   * goes by the volume's own index (RecordingIndex.usage), which counts a
   * replica cut off from Redis too; Redis's count is still kept, as 0.5.1
   * replicas of a cluster being upgraded read it.
   */
  async usage(volume: string): Promise<VolumeUsage> {
    const fields = await this.link.call((client) => client.hGetAll(clusterKeys.volumeUsage(volume)));
    const byNamespace = new Map<string, number>();
    for (const [field, value] of Object.entries(fields)) {
      if (field.startsWith('ns:') && Number(value) > 0) byNamespace.set(field.slice(3), Number(value));
    }
    return { total: Number(fields.total ?? 0), byNamespace };
  }

  /** The `count` least recently used copies on `volume`, oldest first. */
  async oldest(volume: string, count: number): Promise<ClusterCopy[]> {
    const keys = await this.link.call((client) => client.zRange(clusterKeys.volumeRecency(volume), 0, count - 1));
    if (keys.length === 0) return [];
    const raws = await this.link.call(async (client) => {
      const batch = client.multi();
      for (const key of keys) batch.hGet(clusterKeys.copies(key), volume);
      return (await batch.exec()) as unknown as Array<string | null>;
    });
    return keys.flatMap((key, i) => {
      const copy = parseCopy(volume, raws[i]);
      // A key in the recency order without its copy is a leftover: drop it from the order.
      if (!copy) void this.link.call((client) => client.zRem(clusterKeys.volumeRecency(volume), key)).catch(() => {});
      return copy ?? [];
    });
  }

  /** Every key `volume`'s recency order lists (for the start-up comparison with the volume's own index). */
  async listed(volume: string): Promise<string[]> {
    return this.link.call((client) => client.zRange(clusterKeys.volumeRecency(volume), 0, -1));
  }

  /** Marks keys as used now on `volume`, for the shared least-recently-used order; keys no longer there stay out. */
  async touch(volume: string, keys: readonly string[], now: number): Promise<void> {
    if (keys.length === 0) return;
    const args = keys.flatMap((key) => [String(now), key]);
    await this.link.call((client) => client.sendCommand(['ZADD', clusterKeys.volumeRecency(volume), 'XX', ...args]));
  }

  async rememberNotFound(key: string, ttlMs: number): Promise<void> {
    await this.link.call((client) => client.set(clusterKeys.notFound(key), '1', { expiration: { type: 'PX', value: ttlMs } }));
  }

  async isNotFound(key: string): Promise<boolean> {
    return (await this.link.call((client) => client.exists(clusterKeys.notFound(key)))) > 0;
  }

  async forgetNotFound(...keys: string[]): Promise<void> {
    await this.link.call((client) => client.del(keys.map(clusterKeys.notFound)));
  }

  /** The data epoch: set once by the first replica; a different answer later means Redis lost its data. */
  async epoch(candidate: string): Promise<string> {
    return this.link.call(async (client) => {
      await client.set(clusterKeys.epoch, candidate, { condition: 'NX' });
      return (await client.get(clusterKeys.epoch)) ?? candidate;
    });
  }
}
