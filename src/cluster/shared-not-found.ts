import type { NotFoundMemory, NotFoundStore } from '../cache/not-found-memory.js';
import type { ClusterDirectory } from './cluster-directory.js';

/**
 * The 404 memory of the whole cluster, in Redis: a 404 one replica saw is
 * remembered by all for the TTL, and a webhook or purge on any replica forgets
 * it for all. While Redis is out, each replica remembers on its own.
 */
export function sharedNotFound(directory: ClusterDirectory, local: NotFoundMemory, ttlMs: number): NotFoundStore {
  return {
    async remember(key) {
      if (ttlMs <= 0) return;
      await directory.rememberNotFound(key, ttlMs).catch(() => local.remember(key));
    },
    async has(key) {
      try {
        return await directory.isNotFound(key);
      } catch {
        return local.has(key);
      }
    },
    forget(key) {
      local.forget(key);
      void directory.forgetNotFound(key).catch(() => {});
    },
    keys: () => local.keys(),
  };
}
