import { LRUCache } from 'lru-cache';
import { RedisUnavailableError } from '../redis-unavailable.js';
import { sha256Hex } from '../sha256.js';
import { clusterKeys } from './cluster-keys.js';
import { PEER_CLOCK_SKEW_SECONDS } from './peer-auth.js';
import type { RedisLink } from './redis-link.js';

// A request's time may be off by the skew either way on every replica, so it can be accepted for twice that.
const NONCE_WINDOW_MS = 2 * PEER_CLOCK_SKEW_SECONDS * 1_000;
// Bounds this replica's memory; far above the peer requests a replica takes in one window.
const MAX_LOCAL_NONCES = 100_000;

/**
 * Makes each signed peer request single-use: its nonce is claimed in Redis
 * for the whole cluster and in this replica's memory. While Redis is out
 * (its calls fail at once or within the link's timeout), only this
 * replica's memory refuses a replay.
 */
export class PeerNonces {
  readonly #seen = new LRUCache<string, true>({ max: MAX_LOCAL_NONCES, ttl: NONCE_WINDOW_MS });

  constructor(private readonly link: RedisLink) {}

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
      if (error instanceof RedisUnavailableError) return true;
      throw error;
    }
  }
}
