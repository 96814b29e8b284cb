import { setTimeout as sleep } from 'node:timers/promises';
import { clusterKeys } from './cluster-keys.js';
import type { RedisLink } from './redis-link.js';

/** Another live replica: where to reach it, and the volume it serves copies from. */
export interface Peer {
  node: string;
  url: string;
  volume: string;
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

function parsePeer(node: string, raw: string): (Peer & { seenAt: number }) | undefined {
  try {
    const value = JSON.parse(raw) as Partial<Peer & { seenAt: number }>;
    if (typeof value.url !== 'string' || typeof value.volume !== 'string' || typeof value.seenAt !== 'number') return undefined;
    return { node, url: value.url, volume: value.volume, seenAt: value.seenAt };
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

  /** When this replica's heartbeat last reached Redis (Date.now() of that beat). */
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
        .call((client) => client.hGet(clusterKeys.nodes, self.node))
        .then((raw) => (raw ? parsePeer(self.node, raw) : undefined))
        .catch(() => undefined);
    const first = await read();
    if (!first || first.seenAt < Date.now() - intervalMs * MISSED_BEATS) return;
    if (first.url === self.url && first.volume === self.volume) return;
    await sleep(intervalMs + DUPLICATE_CHECK_SLACK_MS);
    const second = await read();
    if (second && second.seenAt !== first.seenAt) {
      throw new Error(
        `cluster.node_id "${self.node}" is already used by a live replica (at ${second.url}); give every replica its own cluster.node_id (the default is the host name)`,
      );
    }
  }

  async #beat(): Promise<void> {
    const { link, self, intervalMs } = this.options;
    try {
      const now = Date.now();
      const all = await link.call(async (client) => {
        await client.hSet(clusterKeys.nodes, self.node, JSON.stringify({ url: self.url, volume: self.volume, seenAt: now }));
        return client.hGetAll(clusterKeys.nodes);
      });
      this.#renewedAt = now;
      const stale: string[] = [];
      const peers: Peer[] = [];
      for (const [node, raw] of Object.entries(all)) {
        if (node === self.node) continue;
        const peer = parsePeer(node, raw);
        if (peer && peer.seenAt > now - intervalMs * MISSED_BEATS) peers.push({ node, url: peer.url, volume: peer.volume });
        else if (!peer || peer.seenAt < now - intervalMs * MISSED_BEATS * 20) stale.push(node);
      }
      this.#peers = peers;
      if (stale.length > 0) await link.call((client) => client.hDel(clusterKeys.nodes, stale)).catch(() => {});
      await this.options.onBeat?.();
    } catch {
      // Redis out: keep the last list; the link logs the outage once.
    }
  }
}
