import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NotFoundMemory, NotFoundStore } from '../cache/not-found-memory.js';
import type { CachedRecording } from '../cache/recording-catalogue.js';
import type { RecordingMeta } from '../cache/recording-meta.js';
import type { RecordingIndex } from '../cache/recording-index.js';
import type { CacheEncryptionConfig, ClusterConfig } from '../config/index.js';
import type { RecordingSource } from '../download/download-manager.js';
import { ServiceUnavailableError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ClusterPurge, CopiesJudge } from '../recordings/recording-service.js';
import { ClusterDirectory } from './cluster-directory.js';
import { clusterKeys } from './cluster-keys.js';
import { clusterSource } from './cluster-source.js';
import { clusterVolumeIndex } from './cluster-volume-index.js';
import { DownloadLeases } from './download-lease.js';
import { EventSubscription } from './event-subscription.js';
import { Membership, type Peer } from './membership.js';
import { PartitionGuard } from './partition-guard.js';
import { PeerClient } from './peer-client.js';
import { PeerNonces } from './peer-nonces.js';
import { RedisLink } from './redis-link.js';
import { type RememberedPeer, RememberedPeers } from './remembered-peers.js';
import { sharedNotFound } from './shared-not-found.js';
import { readOrCreateVolumeId } from './volume-id.js';
import { type VolumeKeys, volumeKeysConflict, volumeKeysOf } from './volume-keys.js';

export interface ClusterOptions {
  config: ClusterConfig;
  cacheDir: string;
  maxDiskBytes: number;
  diskShares: ReadonlyMap<string, number>;
  notFoundTtlMs: number;
  /** Longest silence in a peer's body (upstream.body_idle_timeout_ms). */
  peerBodyIdleMs: number;
  /** This replica's cache.max_recording_bytes: a recording another replica offers over it is refused, as the upstream's is. */
  maxRecordingBytes: number;
  /** This replica's cache.encryption: its key ids (never a key) are told to the others in its heartbeat. */
  encryption: CacheEncryptionConfig | undefined;
  logger: Logger;
}

/** What /readyz and /metrics say of the cluster. */
export interface ClusterStatus {
  state: 'ok' | 'degraded';
  redis: 'up' | 'unreachable';
  /** Other replicas seen alive. */
  peers: number;
}

/** What the cluster needs of this replica's own cache, bound once the gateway is built. */
export interface LocalReplica {
  /** The volume's own index (what it holds). */
  index: RecordingIndex;
  entries(): CachedRecording[];
  /** Drops a recording from this process and its volume (a purge elsewhere). */
  purge(namespace: string, callId: string): Promise<unknown>;
  /** Forgets an entry another replica on the same volume evicted. */
  forget(key: string): void;
  /** Evicts what the volume holds over its disk budget (the replicas sharing it keep it together). */
  trimVolume(): Promise<void>;
}

const HEARTBEAT_MS = 2_000;
// A live replica sends its response head at once: one that has not within
// this is stopped, hung or not where it says it is.
const PEER_RESPONSE_TIMEOUT_MS = 1_000;
const PEER_PURGE_TIMEOUT_MS = 2_000;
const PARTITION_CHECK_MS = 500;
// A replica stops trusting its copies this much before the others could drop it (it looks every PARTITION_CHECK_MS).
const PARTITION_MARGIN_MS = HEARTBEAT_MS;
const LEASE_TTL_MS = 5_000;
const SYNC_CONCURRENCY = 16;
const GENERATION_BATCH = 500;
const UNCONFIRMED_SAID_EVERY_MS = 60_000;

function splitKey(key: string): { namespace: string; callId: string } | undefined {
  const slash = key.indexOf('/');
  return slash > 0 ? { namespace: key.slice(0, slash), callId: key.slice(slash + 1) } : undefined;
}

/**
 * One replica's part in the cluster (README, Cluster): the shared state in
 * Redis, the heartbeat, the purge fan-out and the sync that makes Redis agree
 * with the volume again after an outage, a lost subscription or lost data.
 */
export class Cluster {
  readonly link: RedisLink;
  readonly directory: ClusterDirectory;
  readonly peers: PeerClient;
  /** The nonces of the peer requests this replica took, so none is taken twice. */
  readonly peerNonces: PeerNonces;
  readonly membership: Membership;
  readonly #guard: PartitionGuard;
  readonly #events: EventSubscription;
  readonly #copies: CopiesJudge;
  readonly #rememberedPeers: RememberedPeers;
  /** The replicas the volume remembered when this one started. */
  #remembered: readonly RememberedPeer[] = [];
  /** When start() began, and whether the first sync since has checked the copies from before. */
  #startedAt: number | undefined;
  #joined = false;
  readonly #leases: DownloadLeases;
  #advertiseUrl: string | undefined;
  #local: LocalReplica | undefined;
  #epoch: string | undefined;
  #syncing: Promise<boolean> | undefined;
  #syncAgain = false;
  #closed = false;
  /** Replicas (and their keys) already said to share this volume with conflicting keys. */
  readonly #keyConflictsSaid = new Set<string>();
  /** When each replica was last named in a warning for not confirming a purge. */
  readonly #unconfirmedSaidAt = new Map<string, number>();
  readonly #volumeKeys: VolumeKeys | undefined;

  private constructor(
    private readonly options: ClusterOptions,
    readonly volume: string,
  ) {
    const { config, logger } = options;
    this.#volumeKeys = volumeKeysOf(options.encryption);
    this.#rememberedPeers = new RememberedPeers(options.cacheDir, logger);
    this.link = new RedisLink({ url: config.redisUrl, timeoutMs: config.redisTimeoutMs, logger });
    this.directory = new ClusterDirectory(this.link);
    this.peerNonces = new PeerNonces(this.link);
    this.#leases = new DownloadLeases({ link: this.link, nodeId: config.nodeId, ttlMs: LEASE_TTL_MS });
    this.peers = new PeerClient({
      peerSecret: config.peerSecret,
      nodeId: config.nodeId,
      logger,
      headTimeoutMs: PEER_RESPONSE_TIMEOUT_MS,
      purgeTimeoutMs: PEER_PURGE_TIMEOUT_MS,
      bodyIdleTimeoutMs: options.peerBodyIdleMs,
    });
    this.membership = new Membership({
      link: this.link,
      self: { node: config.nodeId, url: '', volume, keys: this.#volumeKeys ?? null },
      intervalMs: HEARTBEAT_MS,
      onBeat: () => {
        this.#checkVolumeKeys();
        void this.#rememberedPeers.remember({ node: this.nodeId, url: this.#advertiseUrl ?? '' }, this.membership.peers);
        return this.#checkEpoch();
      },
    });
    this.#events = new EventSubscription({
      link: this.link,
      channel: clusterKeys.events,
      beaconChannel: clusterKeys.beacon(config.nodeId),
      onMessage: (message) => this.#onEvent(message),
      onResubscribed: () => void this.#syncSoon(),
      beaconEveryMs: HEARTBEAT_MS,
      logger,
    });
    this.#guard = new PartitionGuard({
      link: this.link,
      membership: this.membership,
      events: this.#events,
      peers: this.peers,
      remembered: () => this.#remembered,
      checkEveryMs: PARTITION_CHECK_MS,
      marginMs: PARTITION_MARGIN_MS,
      rejoinMs: HEARTBEAT_MS + PARTITION_CHECK_MS,
      catchUp: () => this.#syncSoon(),
      logger,
    });
    this.#copies = this.#judgeCopies();
  }

  /** Copies from before start-up wait for the first sync; the guard judges them all. */
  #judgeCopies(): CopiesJudge {
    const guard = this.#guard;
    const heldBack = (meta: RecordingMeta) => !this.#joined && this.#startedAt !== undefined && meta.fetchedAt < this.#startedAt;
    return {
      get trusted() {
        return guard.trusted;
      },
      heldBack,
    };
  }

  /**
   * Says, once per replica and keys, which replicas on this volume have
   * cache.encryption keys that make this one remove the files they write
   * (README, Encryption at rest: replicas of a volume need the same keys).
   */
  #checkVolumeKeys(): void {
    for (const peer of this.membership.peers) {
      if (peer.volume !== this.volume || peer.keys === undefined) continue;
      const conflict = volumeKeysConflict(this.#volumeKeys, peer.keys ?? undefined);
      const said = `${peer.node} ${JSON.stringify(peer.keys)}`;
      if (!conflict || this.#keyConflictsSaid.has(said)) continue;
      this.#keyConflictsSaid.add(said);
      this.options.logger.error(
        { peer: peer.node, volume: this.volume },
        `cluster: a replica sharing this volume has other cache.encryption keys: ${conflict}; give every replica of a volume the same cache.encryption keys`,
      );
    }
  }

  /** Reads (or writes, on a new volume) the cache directory's volume id. */
  static async open(options: ClusterOptions): Promise<Cluster> {
    return new Cluster(options, await readOrCreateVolumeId(options.cacheDir));
  }

  get nodeId(): string {
    return this.options.config.nodeId;
  }

  /** The volume's index, mirrored into the cluster's directory. */
  wrapIndex(local: RecordingIndex): RecordingIndex {
    return clusterVolumeIndex({
      local,
      directory: this.directory,
      volume: this.volume,
      maxDiskBytes: this.options.maxDiskBytes,
      diskShares: this.options.diskShares,
      logger: this.options.logger,
      onUnsynced: () => {
        // Redis answers again soon: the link's "up" listener syncs then.
      },
    });
  }

  notFound(local: NotFoundMemory): NotFoundStore {
    return sharedNotFound(this.directory, local, this.options.notFoundTtlMs, this.link);
  }

  /**
   * How long a download streaming another replica's may go without a byte
   * before it is no longer joined: as long as a replica that does not answer
   * is given before it is passed over.
   */
  get stalledRelayMs(): number {
    return PEER_RESPONSE_TIMEOUT_MS;
  }

  /** Where downloads come from: one per recording for the whole cluster. */
  source(upstream: RecordingSource, onPeerFetch?: (origin: 'peer-download' | 'peer-copy') => void): RecordingSource {
    return clusterSource({
      directory: this.directory,
      leases: this.#leases,
      membership: this.membership,
      peers: this.peers,
      nodeId: this.nodeId,
      volume: this.volume,
      advertiseUrl: () => this.#advertiseUrl,
      upstream,
      maxRecordingBytes: this.options.maxRecordingBytes,
      logger: this.options.logger,
      ...(onPeerFetch ? { onPeerFetch } : {}),
    });
  }

  get purger(): ClusterPurge {
    return {
      purge: (namespace, callId, local) => this.#purge(namespace, callId, local),
      knownKeys: (namespace) => this.directory.knownKeys(namespace),
      heldCopy: (key) => this.#heldCopy(key),
    };
  }

  /**
   * Whether stored copies may be answered with: none while this replica alone
   * lost Redis past the membership TTL (or stood still, or stopped hearing
   * the cluster's events); those from before it started, until its first sync.
   */
  get copies(): CopiesJudge {
    return this.#copies;
  }

  /** Degraded while Redis is out, until this replica answers from its copies again after it alone lost Redis, and until its first sync. */
  status(): ClusterStatus {
    const up = this.link.up;
    return {
      state: up && this.#guard.trusted && this.#joined ? 'ok' : 'degraded',
      redis: up ? 'up' : 'unreachable',
      peers: this.membership.peers.length,
    };
  }

  /**
   * Joins: heartbeats at `advertiseUrl`, listens for purges and evictions,
   * and publishes the volume's copies. Never waits on Redis longer than one
   * bounded call: a replica starts without it, and syncs once it is back.
   * The copies from before it started are answered once the first sync has
   * checked them against the purges made while it was away (with Redis out,
   * once it is back); those it stores from then on, at once.
   */
  async start(advertiseUrl: string, local: LocalReplica): Promise<void> {
    // From the first request on: a purge made while this replica was away is applied by the sync below.
    this.#startedAt = Date.now();
    this.#advertiseUrl = advertiseUrl;
    this.#local = local;
    this.#remembered = await this.#rememberedPeers.read(this.nodeId);
    this.membership.advertise(advertiseUrl);
    this.link.onUp(() => void this.#syncSoon());
    this.#events.start();
    try {
      await this.membership.start();
      this.#guard.start();
      // A purge from the moment it listens reaches it as a message; the sync applies those made before.
      await Promise.race([this.#events.subscribed.catch(() => {}), sleep(this.options.config.redisTimeoutMs)]);
    } finally {
      void this.#join().finally(() => {
        this.#joined = true;
      });
    }
    // One signed call to itself loads fetch and compiles the peer code on both sides now, not on the
    // first late joiner's path (its first byte took 15-20 ms longer than the next ones').
    void this.peers.redisUp(advertiseUrl).catch(() => {});
    this.options.logger.info({ node: this.nodeId, volume: this.volume, advertise: advertiseUrl, redis: this.link.where }, 'cluster ready');
  }

  /**
   * The first sync after start-up, run to its end: until then the copies from
   * before the start are held back, since a purge may have been made while
   * this replica was away. A sync Redis broke off, or Redis out from the
   * start, waits for Redis to answer: no replica can vouch for those copies
   * meanwhile (one that was up throughout heard only the purges made while it
   * was). What it stores from then on the guard judges, asking the replicas
   * the volume remembers while it has not reached Redis.
   */
  async #join(): Promise<void> {
    if (!this.link.up) void this.#guard.check();
    while (!this.#closed) {
      while (!this.#closed && !this.link.up) await sleep(PARTITION_CHECK_MS);
      if (this.#closed || (await this.#syncSoon())) return;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#guard.stop();
    this.#events.close();
    await this.membership.stop();
    this.link.close();
  }

  async #heldCopy(key: string): Promise<RecordingMeta | undefined> {
    try {
      const { copies } = await this.directory.lookup(key);
      return copies[0]?.meta;
    } catch (error) {
      throw new ServiceUnavailableError('The cluster could not look up the copy to purge (its Redis is unreachable); try again', 1, {
        cause: error,
      });
    }
  }

  async #purge(namespace: string, callId: string, local: () => Promise<boolean>): Promise<boolean> {
    const key = `${namespace}/${callId}`;
    let copies: number;
    try {
      ({ copies } = await this.directory.purge(key));
    } catch (error) {
      throw new ServiceUnavailableError('The cluster could not record the purge (its Redis is unreachable); try again', 1, {
        cause: error,
      });
    }
    const held = await local();
    this.#sayUnconfirmed(key, await this.#confirmPurge(namespace, callId));
    // A copy on any volume counts, not only one this replica held.
    return held || copies > 0;
  }

  /**
   * Names the replicas that did not confirm a purge at first: a replica once
   * per UNCONFIRMED_SAID_EVERY_MS, so a purge of a whole tenant while one
   * hangs says so once, not once per recording.
   */
  #sayUnconfirmed(key: string, replicas: string[]): void {
    if (replicas.length === 0) return;
    const now = Date.now();
    const unsaid = replicas.filter(
      (node) => now - (this.#unconfirmedSaidAt.get(node) ?? Number.NEGATIVE_INFINITY) >= UNCONFIRMED_SAID_EVERY_MS,
    );
    for (const node of unsaid) this.#unconfirmedSaidAt.set(node, now);
    this.options.logger[unsaid.length > 0 ? 'warn' : 'debug'](
      { key, replicas },
      'cluster: replicas did not confirm a purge at first; it was answered once they had confirmed or the cluster had stopped counting them (then they catch up before answering from their copies); said once a minute per replica',
    );
  }

  /**
   * Asks every live replica to drop the recording, so none serves the old copy
   * once the purge is answered. The list is read again first: one that joined
   * since the last heartbeat is on it. One that does not confirm (stopped,
   * hung) is asked again after each heartbeat until it confirms or the others
   * stop counting it (then it answers from no copy until it has rejoined and
   * caught up: PartitionGuard), for at most the membership TTL and a beat (a
   * replica still beating all that time gets Redis's purge message), and a
   * last ask. Answers the node ids that did not confirm at first.
   */
  async #confirmPurge(namespace: string, callId: string): Promise<string[]> {
    const giveUpAt = Date.now() + this.membership.ttlMs + HEARTBEAT_MS;
    const missed = new Set<string>();
    let asked: readonly Peer[] = [];
    for (let round = 0; ; round++) {
      const roundStart = Date.now();
      await this.membership.beat();
      asked = round === 0 ? this.membership.peers : this.membership.peers.filter((peer) => asked.some((it) => it.node === peer.node));
      const answers = await Promise.allSettled(asked.map((peer) => this.peers.purge(peer.url, namespace, callId)));
      asked = asked.filter((_, i) => answers[i]?.status === 'rejected');
      for (const peer of asked) missed.add(peer.node);
      if (asked.length === 0 || Date.now() >= giveUpAt) return [...missed];
      // A round a heartbeat long: a hung replica's unanswered ask (PEER_PURGE_TIMEOUT_MS) takes most of it.
      await sleep(Math.max(0, Math.min(roundStart + HEARTBEAT_MS, giveUpAt) - Date.now()));
    }
  }

  #onEvent(message: string): void {
    const local = this.#local;
    if (!local) return;
    const [type, first, second] = message.split(' ');
    if (type === 'purge' && first) {
      const target = splitKey(first);
      if (target) void local.purge(target.namespace, target.callId).catch(() => {});
    } else if (type === 'evict' && first === this.volume && second) {
      local.forget(second);
    }
  }

  async #checkEpoch(): Promise<void> {
    const epoch = await this.directory.epoch(randomUUID());
    const lost = this.#epoch !== undefined && epoch !== this.#epoch;
    this.#epoch = epoch;
    if (lost) {
      this.options.logger.warn({ redis: this.link.where }, 'cluster: redis lost its data; publishing this volume again');
      void this.#syncSoon();
    }
  }

  /** Syncs now, or once more after the sync under way; resolves whether it ran to the end. */
  #syncSoon(): Promise<boolean> {
    if (this.#closed || !this.#local) return Promise.resolve(false);
    if (this.#syncing) {
      this.#syncAgain = true;
      return this.#syncing;
    }
    this.#syncing = (async () => {
      do {
        this.#syncAgain = false;
        try {
          await this.#sync(this.#local!);
        } catch (error) {
          this.options.logger.debug({ err: error }, 'cluster: sync stopped (redis out); it runs again when redis is back');
          return false;
        }
      } while (this.#syncAgain && !this.#closed);
      return !this.#closed;
    })().finally(() => {
      this.#syncing = undefined;
    });
    return this.#syncing;
  }

  /**
   * Makes Redis agree with this volume: publishes every copy the volume holds
   * (a copy a purge overtook is dropped instead), drops memory copies older
   * than a purge, and withdraws copies Redis lists for this volume that it no
   * longer holds. Then the volume's byte count is right again, and the volume
   * is brought within its budget.
   */
  async #sync(local: LocalReplica): Promise<void> {
    const held = new Set<string>();
    const pending: Array<Promise<void>> = [];
    const publishOne = async (key: string, meta: CachedRecording['meta']) => {
      const result = await this.directory.publish(this.volume, key, meta, meta.fetchedAt);
      if (!result.published) await local.purge(meta.namespace, meta.callId).catch(() => {});
    };
    for await (const [key, meta] of local.index.entries()) {
      held.add(key);
      pending.push(publishOne(key, meta));
      if (pending.length >= SYNC_CONCURRENCY) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);

    const memoryOnly = local.entries().filter((entry) => !entry.onDisk);
    for (let i = 0; i < memoryOnly.length; i += GENERATION_BATCH) {
      const batch = memoryOnly.slice(i, i + GENERATION_BATCH);
      const generations = await this.directory.generations(batch.map((entry) => entry.key));
      for (const [j, entry] of batch.entries()) {
        if ((generations[j] ?? 0) > (entry.meta.generation ?? 0))
          await local.purge(entry.meta.namespace, entry.meta.callId).catch(() => {});
      }
    }

    for (const key of await this.directory.listed(this.volume)) {
      if (held.has(key) || (await local.index.get(key))) continue;
      await this.directory.remove(this.volume, key, false);
    }
    await local.trimVolume();
  }
}
