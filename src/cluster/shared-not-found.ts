import { MAX_REMEMBERED, type NotFoundMemory, type NotFoundStore } from '../cache/not-found-memory.js';
import type { ClusterDirectory } from './cluster-directory.js';
import { MissedByRedis } from './missed-by-redis.js';
import type { RedisLink } from './redis-link.js';

/**
 * The 404 memory of the whole cluster, in Redis: a 404 one replica saw is
 * remembered by all for the TTL, and a webhook or purge on any replica forgets
 * it for all. While Redis is out, each replica remembers on its own, and a
 * forget Redis missed is sent once it is back, so no replica goes on
 * answering 404 for a recording a webhook announced meanwhile. That queue is
 * in memory; the copy the webhook stored, once published, ends the 404 too
 * (ClusterDirectory.publish), which a restart does not lose.
 */
export function sharedNotFound(
  directory: ClusterDirectory,
  local: NotFoundMemory,
  ttlMs: number,
  link: Pick<RedisLink, 'onUp'>,
): NotFoundStore {
  // Forgets Redis missed: as many as 404s a replica remembers on its own, and
  // none past the TTL, by when Redis has let the 404 go by itself.
  const unsent = new MissedByRedis<true>(link, { max: MAX_REMEMBERED, ttlMs }, (keys) =>
    directory.forgetNotFound(...keys.map(([key]) => key)),
  );

  return {
    async remember(key) {
      if (ttlMs <= 0) return;
      // A 404 seen now outdates a forget still waiting for Redis.
      unsent.delete(key);
      await directory.rememberNotFound(key, ttlMs).catch(() => local.remember(key));
    },
    async has(key) {
      // Forgotten here, and Redis not told yet: its answer is out of date.
      if (unsent.has(key)) return local.has(key);
      try {
        return await directory.isNotFound(key);
      } catch {
        return local.has(key);
      }
    },
    forget(key) {
      local.forget(key);
      void directory.forgetNotFound(key).catch(() => unsent.add(key, true));
    },
    keys: () => local.keys(),
  };
}
