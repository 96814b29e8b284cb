import { clusterKeys } from './cluster-keys.js';
import type { RedisLink } from './redis-link.js';

/** Who downloads a recording from upstream for the whole cluster. */
export interface LeaseHolder {
  /** `token|node|url`, unique per lease: the token fences a dead holder's late renewals and releases. */
  value: string;
  node: string;
  url: string;
}

export type LeaseAttempt =
  | { acquired: true; lease: HeldLease; generation: number }
  | { acquired: false; holder: LeaseHolder; generation: number };

/** A lease this replica holds; renewed in the background until released. */
export interface HeldLease {
  readonly value: string;
  /** False once a renewal found the lease gone or taken (this replica was too slow, or presumed dead). */
  readonly held: boolean;
  release(): void;
}

// SET NX with a fencing token from a counter; answers the current holder
// otherwise. The purge generation comes along, read in the same step.
const ACQUIRE = `
local holder = redis.call('GET', KEYS[1])
local generation = redis.call('GET', KEYS[3]) or '0'
if holder then return {0, holder, generation} end
local token = redis.call('INCR', KEYS[2])
local value = token .. '|' .. ARGV[1] .. '|' .. ARGV[2]
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return {1, value, generation}
`;

const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

export function parseLeaseHolder(value: string): LeaseHolder {
  const [, node = '', ...url] = value.split('|');
  return { value, node, url: url.join('|') };
}

export interface DownloadLeasesOptions {
  link: RedisLink;
  nodeId: string;
  /** How long a lease lives without renewal: how soon a dead holder's recording can be taken over. */
  ttlMs: number;
}

/**
 * One upstream download per recording for the cluster: a lease in Redis with
 * a fencing token, renewed while the download runs, so that when its holder
 * dies the lease expires (or is taken over at once by a replica that finds
 * the holder gone) and another replica downloads instead.
 */
export class DownloadLeases {
  constructor(private readonly options: DownloadLeasesOptions) {}

  /** Takes the lease for `key`, or answers who holds it. @throws RedisUnavailableError */
  async acquire(key: string, advertiseUrl: string): Promise<LeaseAttempt> {
    const { link, nodeId, ttlMs } = this.options;
    const [acquired, value, generation] = (await link.call((client) =>
      client.eval(ACQUIRE, {
        keys: [clusterKeys.lease(key), clusterKeys.fence, clusterKeys.generation(key)],
        arguments: [nodeId, advertiseUrl, String(ttlMs)],
      }),
    )) as [number, string, string];
    if (acquired !== 1) return { acquired: false, holder: parseLeaseHolder(value), generation: Number(generation) };
    return { acquired: true, lease: this.#hold(key, value), generation: Number(generation) };
  }

  /** Removes `holder`'s lease if it is still the current one: its replica is gone. */
  async takeOver(key: string, holder: LeaseHolder): Promise<void> {
    await this.options.link.call((client) => client.eval(RELEASE, { keys: [clusterKeys.lease(key)], arguments: [holder.value] }));
  }

  #hold(key: string, value: string): HeldLease {
    const { link, ttlMs } = this.options;
    let held = true;
    const renewal = setInterval(() => {
      link
        .call((client) => client.eval(RENEW, { keys: [clusterKeys.lease(key)], arguments: [value, String(ttlMs)] }))
        .then(
          (renewed) => {
            if (Number(renewed) !== 1) held = false;
          },
          // Redis out: the lease may lapse meanwhile; the download goes on, its store is fenced by generation.
          () => {},
        );
    }, ttlMs / 3);
    renewal.unref();
    let released = false;
    return {
      value,
      get held() {
        return held;
      },
      release() {
        if (released) return;
        released = true;
        clearInterval(renewal);
        void link.call((client) => client.eval(RELEASE, { keys: [clusterKeys.lease(key)], arguments: [value] })).catch(() => {});
      },
    };
  }
}
