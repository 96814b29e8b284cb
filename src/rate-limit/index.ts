export type { RateLimitDecision, RateLimitStore } from './rate-limit-store.js';
export {
  createMemoryRateLimitStore,
  DEFAULT_RATE_LIMIT_MAX_KEYS,
  type MemoryRateLimitStore,
  type MemoryRateLimitStoreOptions,
} from './memory-store.js';
export {
  createTenantRateLimiter,
  RATE_LIMIT_WINDOW_MS,
  type RateLimitedTenant,
  type RateLimitHeaders,
  type TenantRateLimiter,
  type TenantRateLimiterOptions,
} from './tenant-limiter.js';
export { createRedisRateLimitStore, type RedisRateLimitStoreOptions } from './redis-store.js';
