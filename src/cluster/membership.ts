import { setTimeout as sleep } from 'node:timers/promises';
import { clusterKeys } from './cluster-keys.js';
import type { RedisLink } from './redis-link.js';
import { parseVolumeKeys, type VolumeKeys } from './volume-keys.js';

/** Another live replica: where to reach it, and the volume it serves copies from. */
export interface Peer {
  node: string;
  url: string;
  volume: string;
  /** Its cache.encryption key ids (null: none); undefined when its heartbeat does not say (a replica before 0.5.7). */
  keys?: VolumeKeys | null;
}

export interface MembershipOptions {
  link: RedisLink;
  self: Peer;
  /** How often this replica says it is alive, and reads who else is. */
  intervalMs: number;
  /** Each beat, after the peers are read (the cluster checks the data epoch there). */
  onBeat?: () => Promise<void>;
}

// A replica missing this many beats counts as gone.
const MISSED_BEATS = 5;
const DUPLICATE_CHECK_SLACK_MS = 250;

// Heartbeats are stamped and judged by Redis's clock (TIME, in ms), never a
// replica's: replicas whose clocks differ still agree on who is alive.
const REDIS_NOW_MS = `local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)`;

// Writes this replica's beat; answers Redis's time and every replica's beat.
const BEAT = `${REDIS_NOW_MS}
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({url = ARGV[2], volume = ARGV[3], seenAt = now, keys = cjson.decode(ARGV[4])}))
return {now, redis.call('HGETALL', KEYS[1])}
`;

// Answers Redis's time and the beat written for one node id (if any).
const READ_BEAT = `${REDIS_NOW_MS}
return {now, redis.call('HGET', KEYS[1], ARGV[1])}
`;

/** A replica's heartbeat: the replica, and when Redis last saw it. */
function parseBeat(node: string, raw: string): { peer: Peer; seenAt: number } | undefined {
  try {
    const value = JSON.parse(raw) as Partial<Omit<Peer, 'keys'> & { seenAt: number; keys: unknown }>;
    if (typeof value.url !== 'string' || typeof value.volume !== 'string' || typeof value.seenAt !== 'number') return undefined;
    const keys = parseVolumeKeys(value.keys);
    return { peer: { node, url: value.url, volume: value.volume, ...(keys === undefined ? {} : { keys }) }, seenAt: value.seenAt };
  } catch {
    return undefined;
  }
}

/**
 * Who is in the cluster: each replica writes a heartbeat to Redis and reads
 * the others'. The last list read stays in use while Redis is out, so a purge
 * still reaches the replicas known a moment ago.
 */
export class Membership {
  #peers: Peer[] = [];
  #renewedAt = Number.NEGATIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;
  #beating: Promise<void> | undefined;

  constructor(private readonly options: MembershipOptions) {}

  /** The other replicas seen alive at the last beat. */
  get peers(): readonly Peer[] {
    return this.#peers;
  }

  /** How long a heartbeat counts: the others take a replica silent this long for gone. */
  get ttlMs(): number {
    return this.options.intervalMs * MISSED_BEATS;
  }

  /** When this replica's heartbeat last reached Redis, by this replica's clock (Date.now() as the beat was sent). */
  get renewedAt(): number {
    return this.#renewedAt;
  }

  /** Sets where the other replicas reach this one (known once the server listens). */
  advertise(url: string): void {
    this.options.self.url = url;
  }

  /**
   * Beats now, then every interval. A beat without Redis waits for the next.
   * @throws Error when another live replica already uses this node id.
   */
  async start(): Promise<void> {
    await this.#refuseDuplicate();
    await this.beat();
    this.#timer ??= setInterval(() => void this.beat(), this.options.intervalMs);
    this.#timer.unref();
  }

  /** One heartbeat; concurrent calls share it. */
  beat(): Promise<void> {
    this.#beating ??= this.#beat().finally(() => {
      this.#beating = undefined;
    });
    return this.#beating;
  }

  /** Leaves the cluster: the others stop counting on this replica at once. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.options.link.call((client) => client.hDel(clusterKeys.nodes, this.options.self.node)).catch(() => {});
  }

  /**
   * Two replicas with one node id would take each other's leases for their
   * own and hide each other from purges. An entry for our id written by
   * somebody else is told from our own from before a restart by whether it is
   * still being written: it is read again after a heartbeat interval.
   */
  async #refuseDuplicate(): Promise<void> {
    const { link, self, intervalMs } = this.options;
    const read = () =>
      link
        .call(async (client) => {
          const reply = await client.eval(READ_BEAT, { keys: [clusterKeys.nodes], arguments: [self.node] });
          const [redisNow, raw] = reply as [number, string?];
          const entry = raw ? parseBeat(self.node, raw) : undefined;
          return entry && entry.seenAt > redisNow - this.ttlMs ? entry : undefined;
        })
        .catch(() => undefined);
    const first = await read();
    if (!first) return;
    if (first.peer.url === self.url && first.peer.volume === self.volume) return;
    await sleep(intervalMs + DUPLICATE_CHECK_SLACK_MS);
    const second = await read();
    if (second && second.seenAt !== first.seenAt) {
      throw new Error(
        `cluster.node_id "${self.node}" is already used by a live replica (at ${second.peer.url}); give every replica its own cluster.node_id (the default is the host name)`,
      );
    }
  }

  async #beat(): Promise<void> {
    const { link, self } = this.options;
    try {
      const sentAt = Date.now();
      const [redisNow, all] = (await link.call((client) =>
        client.eval(BEAT, { keys: [clusterKeys.nodes], arguments: [self.node, self.url, self.volume, JSON.stringify(self.keys ?? null)] }),
      )) as [number, string[]];
      this.#renewedAt = sentAt;
      const stale: string[] = [];
      const peers: Peer[] = [];
      for (let i = 0; i < all.length; i += 2) {
        const node = all[i]!;
        if (node === self.node) continue;
        const beat = parseBeat(node, all[i + 1]!);
        if (beat && beat.seenAt > redisNow - this.ttlMs) peers.push(beat.peer);
        else if (!beat || beat.seenAt < redisNow - this.ttlMs * 20) stale.push(node);
      }
      this.#peers = peers;
      if (stale.length > 0) await link.call((client) => client.hDel(clusterKeys.nodes, stale)).catch(() => {});
      await this.options.onBeat?.();
    } catch {
      // Redis out: keep the last list; the link logs the outage once.
    }
  }
}
