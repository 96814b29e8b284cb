import Keyv from 'keyv';
import KeyvRedis, { createClient } from '@keyv/redis';
import { errorMessage } from '../errors.js';
import { describeRedisUrl } from '../redis-url.js';
import { RedisUnavailableError } from '../redis-unavailable.js';
import { REDIS_SCAN_COUNT, scanPages } from '../redis-scan.js';
import { INDEX_NAMESPACE, keyvIndex, type RecordingIndex } from './recording-index.js';

/*
 * The shared index of `cache.index: redis://...`, in a module of its own so
 * that a gateway on the default sqlite index never loads a Redis client
 * (about 6 MB of resident memory).
 */

const REDIS_CONNECT_TIMEOUT_MS = 5_000;
// Longest an index operation may take before Redis counts as unreachable; the
// index is on the request path of every shared lookup.
const REDIS_OPERATION_TIMEOUT_MS = 5_000;
const DELETIONS_CHANNEL = `${INDEX_NAMESPACE}:deleted`;
// Purge marks are counters beside the entries (`recordings:purged:...`, never matched by `recordings::*`).
const SET_UNLESS_PURGED = `
local purges = 0
for i = 2, #KEYS do purges = purges + tonumber(redis.call('GET', KEYS[i]) or '0') end
if purges > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
`;

export interface RedisIndexOptions {
  /** Longest wait for a TCP connection to Redis. Default 5000 ms. */
  connectTimeoutMs?: number;
  /** Longest an operation may take, connecting included, before Redis counts as unreachable. Default 5000 ms. */
  operationTimeoutMs?: number;
}

// Mistakes in code, never Redis's doing: they keep their type (and their stack in logs).
const PROGRAMMING_ERRORS = [SyntaxError, TypeError, RangeError, ReferenceError];

function positiveMs(name: keyof RedisIndexOptions, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0)
    throw new RangeError(`redis index: ${name} must be a positive number of milliseconds, got ${value}`);
  return value;
}

/** The shared index for several replicas: a Redis server. */
export function createRedisIndex(url: string, options: RedisIndexOptions = {}): RecordingIndex {
  const connectTimeoutMs = positiveMs('connectTimeoutMs', options.connectTimeoutMs, REDIS_CONNECT_TIMEOUT_MS);
  const operationTimeoutMs = positiveMs('operationTimeoutMs', options.operationTimeoutMs, REDIS_OPERATION_TIMEOUT_MS);
  const where = describeRedisUrl(url);
  // @keyv/redis's own client retries a failed connect forever and queues
  // commands meanwhile, so start-up, /readyz and close() hang while Redis is
  // down. This one fails fast instead: no background reconnects (the next
  // operation reconnects), no offline queue, a bounded connect.
  const client = createClient({
    url,
    disableOfflineQueue: true,
    socket: { connectTimeout: connectTimeoutMs, reconnectStrategy: false },
  });
  const store = new KeyvRedis(client, { throwOnConnectError: true, throwOnErrors: true });
  // @keyv/redis prefixes `recordings::` itself; keyv's own prefix would double it.
  const keyv = new Keyv({ store, namespace: INDEX_NAMESPACE, useKeyPrefix: false, throwOnErrors: true });
  const prefix = `${INDEX_NAMESPACE}${store.keyPrefixSeparator}`;
  const markKey = (scope: string) => `${INDEX_NAMESPACE}:${scope}`;
  let connecting: Promise<void> | undefined;
  let closed = false;
  // Pub/sub needs a connection of its own, and one that reconnects (and
  // resubscribes) by itself: a replica that missed deletions keeps stale copies.
  let subscriber: ReturnType<typeof client.duplicate> | undefined;

  async function connect(): Promise<void> {
    // Open but not ready only while @keyv/redis itself reconnects after a drop
    // that raced an operation; that operation fails like any other.
    if (client.isOpen) throw new RedisUnavailableError(`redis index: not connected to ${where}`);
    try {
      await client.connect();
    } catch (error) {
      throw new RedisUnavailableError(`redis index: cannot connect to ${where}`, { cause: error });
    }
  }

  function ready(): Promise<void> {
    if (client.isReady) return Promise.resolve();
    connecting ??= connect().finally(() => {
      connecting = undefined;
    });
    return connecting;
  }

  /**
   * node-redis times commands out only while they wait to be written, never
   * while they wait for a reply, so a stalled server would hang every request
   * that asks the index. Past the deadline the connection is dropped, which
   * fails whatever else waits on it; the next operation reconnects.
   */
  async function run<T>(operation: () => Promise<T>): Promise<T> {
    if (closed) throw new RedisUnavailableError('redis index: closed');
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        if (client.isOpen) client.destroy();
        reject(new RedisUnavailableError(`redis index: ${where} did not answer within ${operationTimeoutMs} ms`));
      }, operationTimeoutMs);
      timer.unref();
    });
    try {
      return await Promise.race([ready().then(operation), deadline]);
    } catch (error) {
      // The client's own errors (a connection dropped at the deadline, an error reply) are Redis trouble too.
      if (error instanceof RedisUnavailableError || PROGRAMMING_ERRORS.some((type) => error instanceof type)) throw error;
      throw new RedisUnavailableError(`redis index: ${where}: ${errorMessage(error)}`, { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  return keyvIndex({
    kind: 'redis',
    keyv,
    storeKey: (key) => key,
    run,
    async *list() {
      const pages = scanPages((cursor) => run(() => client.scan(cursor, { MATCH: `${prefix}*`, COUNT: REDIS_SCAN_COUNT, TYPE: 'string' })));
      for await (const keys of pages) {
        const values = await run(() => client.mGet(keys));
        for (const [i, key] of keys.entries()) yield [key.slice(prefix.length), values[i] ?? undefined];
      }
    },
    async ping() {
      await run(() => client.ping());
    },
    async purgeCount(scopes) {
      const counts = await run(() => client.mGet(scopes.map(markKey)));
      return counts.reduce((sum, count) => sum + Number(count ?? 0), 0);
    },
    async markPurged(scope) {
      await run(() => client.incr(markKey(scope)));
    },
    async setUnlessPurged(storeKey, serialized, scopes, seen) {
      const written = await run(() =>
        client.eval(SET_UNLESS_PURGED, { keys: [prefix + storeKey, ...scopes.map(markKey)], arguments: [serialized, String(seen)] }),
      );
      return written === 1;
    },
    async announceDelete(key) {
      await run(() => client.publish(DELETIONS_CHANNEL, key));
    },
    async watchDeletes(onDelete) {
      subscriber = client.duplicate({
        disableOfflineQueue: false,
        socket: { connectTimeout: connectTimeoutMs, reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 5_000) },
      });
      // Without a listener an 'error' event would crash the process; reconnects handle it.
      subscriber.on('error', () => {});
      await subscriber.connect();
      await subscriber.subscribe(DELETIONS_CHANNEL, (key: string) => onDelete(key));
    },
    async close() {
      if (closed) return;
      closed = true;
      await connecting?.catch(() => {});
      // destroy(), not close(): close() waits for replies a stalled server never sends.
      if (client.isOpen) client.destroy();
      if (subscriber?.isOpen) subscriber.destroy();
    },
  });
}
