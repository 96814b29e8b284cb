/**
 * Why a Redis call did not happen: Redis is down, stalled or refusing (the
 * cluster's link, the shared index). The caller degrades. An expected
 * failure, so it carries a code (the log then leaves its stack out, as for a
 * system error).
 */
export class RedisUnavailableError extends Error {
  readonly code = 'ERR_REDIS_UNAVAILABLE';
}
