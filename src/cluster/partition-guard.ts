import { performance } from 'node:perf_hooks';
import type { Logger } from '../logger.js';
import type { EventSubscription } from './event-subscription.js';
import type { Membership } from './membership.js';
import type { PeerClient } from './peer-client.js';
import type { RedisLink } from './redis-link.js';
import type { RememberedPeer } from './remembered-peers.js';

export interface PartitionGuardOptions {
  link: Pick<RedisLink, 'up'>;
  membership: Pick<Membership, 'renewedAt' | 'ttlMs' | 'peers' | 'beat'>;
  events: Pick<EventSubscription, 'heardUpTo'>;
  peers: Pick<PeerClient, 'redisUp'>;
  /** The replicas the volume remembers from before this start (`RememberedPeers`), asked while this replica has not beaten yet. */
  remembered: () => readonly RememberedPeer[];
  /** How often it looks, while Redis is out or copies are unverified. */
  checkEveryMs: number;
  /** Taken off the membership TTL, so this replica stops trusting its copies before the others could drop it. */
  marginMs: number;
  /** How long the others take to count this replica again once it beats (a heartbeat interval). */
  rejoinMs: number;
  /** Applies the purges this replica missed (the sync); resolves whether it ran to the end. */
  catchUp: () => Promise<boolean>;
  logger: Logger;
}

const HEARTBEAT_LAPSED = 'its heartbeat lapsed: this process stood still, or redis was back before its next beat';
const EVENTS_UNHEARD = "it has not heard the cluster's events: its subscription to redis stalled";

/**
 * Whether this replica may answer from its stored copies. A replica silent in
 * Redis for the membership TTL is no longer a member: a purge elsewhere is
 * answered without it, so its copies may be stale. Unless every replica it
 * knew says Redis is out for them too (then no purge can succeed anywhere,
 * and the copies stay good), it stops trusting them until Redis is back and
 * the purges it missed are applied. So does a replica whose process stood
 * still (stopped, starved) past its heartbeat: it learns so on its first
 * request after, before that request is answered from a copy. And so does a
 * replica that reaches Redis but has not heard the cluster's events for as
 * long: a purge whose ask over HTTP it never answered is answered anyway
 * after the TTL, counting on the event reaching it.
 */
export class PartitionGuard {
  #trusted = true;
  #timer: NodeJS.Timeout | undefined;
  #checking: Promise<void> | undefined;
  #lookedAt = 0;
  #distrustedAt = 0;
  /** The same moment on the monotonic clock, for the events heard since (`EventSubscription.heardUpTo`). */
  #distrustedAtMonotonic = 0;
  #rejoinedAt: number | undefined;

  constructor(private readonly options: PartitionGuardOptions) {}

  /** False while stored copies may have been purged elsewhere: read on every hit, so a few comparisons in the usual case. */
  get trusted(): boolean {
    if (!this.#trusted) return false;
    if (this.#timer === undefined) return true;
    const lapse = this.#lapse(Date.now());
    if (lapse === undefined) return true;
    this.#distrust(lapse);
    void this.check();
    return false;
  }

  /** Why purges may have been answered without this replica through no fault of Redis's, if they may. */
  #lapse(now: number): string | undefined {
    const { link, events, marginMs } = this.options;
    if (this.#beatLapsed(now) && (link.up || now - this.#lookedAt > marginMs)) return HEARTBEAT_LAPSED;
    if (performance.now() - events.heardUpTo >= this.#limitMs && link.up) return EVENTS_UNHEARD;
    return undefined;
  }

  /** How long this replica may go unheard, or unhearing, before the others could have answered a purge without it. */
  get #limitMs(): number {
    return this.options.membership.ttlMs - this.options.marginMs;
  }

  #beatLapsed(now: number): boolean {
    return now - this.options.membership.renewedAt >= this.#limitMs;
  }

  #distrust(why: string): void {
    this.#trusted = false;
    this.#distrustedAt = Date.now();
    this.#distrustedAtMonotonic = performance.now();
    this.#rejoinedAt = undefined;
    this.options.logger.warn(
      { silentMs: this.#distrustedAt - this.options.membership.renewedAt },
      `cluster: out of the cluster (${why}); answering from the upstream, not from stored copies, until it has rejoined`,
    );
  }

  start(): void {
    this.#lookedAt = Date.now();
    this.#timer ??= setInterval(() => void this.check(), this.options.checkEveryMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One look; a call while one is under way waits for that one. */
  check(): Promise<void> {
    this.#lookedAt = Date.now();
    this.#checking ??= (this.#trusted ? this.#lookForPartition() : this.#catchUp()).finally(() => {
      this.#checking = undefined;
    });
    return this.#checking;
  }

  async #lookForPartition(): Promise<void> {
    const { link, membership, peers } = this.options;
    const now = Date.now();
    const lapse = this.#lapse(now);
    if (lapse !== undefined) {
      this.#distrust(lapse);
      return;
    }
    if (link.up || !this.#beatLapsed(now)) return;
    const known = membership.peers;
    if (known.length === 0) {
      await this.#askRemembered();
      return;
    }
    const answers = await Promise.allSettled(known.map((peer) => peers.redisUp(peer.url)));
    const everyoneOut = answers.every((answer) => answer.status === 'fulfilled' && !answer.value);
    if (everyoneOut || link.up) return;
    this.#distrust('another replica reaches redis and this one does not');
  }

  /**
   * A replica that has not reached Redis since it started knows no live
   * replica; it asks those its volume remembers. One that says it reaches
   * Redis may have purged a copy meanwhile. One that does not answer is taken
   * for gone (a remembered replica may have been stopped for good long ago),
   * so a replica none answers, or that remembers none, is alone: nobody could
   * have purged without it.
   */
  async #askRemembered(): Promise<void> {
    const { link, membership, peers, remembered } = this.options;
    if (Number.isFinite(membership.renewedAt)) return;
    const answers = await Promise.allSettled(remembered().map((peer) => peers.redisUp(peer.url)));
    const someoneUp = answers.some((answer) => answer.status === 'fulfilled' && answer.value);
    if (!someoneUp || link.up) return;
    this.#distrust('a replica it remembers reaches redis and this one has not since it started');
  }

  /**
   * Back once the others count this replica again and it hears the cluster's
   * events again (so a purge from now on reaches it), and the sync that
   * follows has applied every purge before that (their generations are in
   * Redis).
   */
  async #catchUp(): Promise<void> {
    const { link, membership, events, rejoinMs, catchUp, logger } = this.options;
    if (!link.up) return;
    if (membership.renewedAt <= this.#distrustedAt) {
      await membership.beat();
      return;
    }
    if (events.heardUpTo <= this.#distrustedAtMonotonic) return;
    this.#rejoinedAt ??= membership.renewedAt;
    if (Date.now() - this.#rejoinedAt < rejoinMs) return;
    if (!(await catchUp())) return;
    this.#trusted = true;
    logger.info({}, 'cluster: back in the cluster; purges missed meanwhile applied, answering from stored copies again');
  }
}
