import { LRUCache } from 'lru-cache';
import { RedisUnavailableError } from '../redis-unavailable.js';
import { sha256Hex } from '../sha256.js';
import { clusterKeys } from './cluster-keys.js';
import { MissedByRedis } from './missed-by-redis.js';
import { PEER_CLOCK_SKEW_SECONDS } from './peer-auth.js';
import type { RedisLink } from './redis-link.js';

// A request's time may be off by the skew either way on every replica, so it can be accepted for twice that.
const NONCE_WINDOW_MS = 2 * PEER_CLOCK_SKEW_SECONDS * 1_000;
// Bounds this replica's memory; far above the peer requests a replica takes in one window.
const MAX_LOCAL_NONCES = 100_000;
// Claims sent to Redis per call once it is back, so each call stays well within the link's timeout.
const UNSENT_BATCH = 1_000;

/**
 * Makes each signed peer request single-use: its nonce is claimed in Redis
 * for the whole cluster and in this replica's memory. While Redis is out
 * (its calls fail at once or within the link's timeout), only this
 * replica's memory refuses a replay; the nonces it took meanwhile are
 * claimed in Redis as soon as it answers again, for what is left of their
 * window, so a replay to another replica is refused from then on.
 */
export class PeerNonces {
  readonly #seen = new LRUCache<string, true>({ max: MAX_LOCAL_NONCES, ttl: NONCE_WINDOW_MS });
  // Nonce digests Redis missed → when their window ends.
  readonly #unsent: MissedByRedis<number>;

  constructor(private readonly link: Pick<RedisLink, 'call' | 'onUp'>) {
    this.#unsent = new MissedByRedis(link, { max: MAX_LOCAL_NONCES, ttlMs: NONCE_WINDOW_MS, batch: UNSENT_BATCH }, (claims) =>
      link.call(async (client) => {
        const now = Date.now();
        const multi = client.multi();
        for (const [digest, windowEnds] of claims) {
          if (windowEnds > now)
            multi.set(clusterKeys.peerNonce(digest), '1', { condition: 'NX', expiration: { type: 'PX', value: windowEnds - now } });
        }
        await multi.exec();
      }),
    );
  }

  /** True the first time a node's nonce is seen; false for a replay, here or (while Redis answers) on any replica. */
  async claim(node: string, nonce: string): Promise<boolean> {
    const digest = sha256Hex(`${node}\n${nonce}`);
    if (this.#seen.has(digest)) return false;
    this.#seen.set(digest, true);
    try {
      const set = await this.link.call((client) =>
        client.set(clusterKeys.peerNonce(digest), '1', { condition: 'NX', expiration: { type: 'PX', value: NONCE_WINDOW_MS } }),
      );
      return set !== null;
    } catch (error) {
      if (!(error instanceof RedisUnavailableError)) throw error;
      this.#unsent.add(digest, Date.now() + NONCE_WINDOW_MS);
      return true;
    }
  }
}
