import { createHash } from 'node:crypto';
import type { Clock } from '../clock.js';
import type { RedisClient, RedisLink } from '../cluster/redis-link.js';
import { createMemoryRateLimitStore } from './memory-store.js';
import type { RateLimitDecision, RateLimitStore } from './rate-limit-store.js';

const NAME = 'redis rate-limit store';

/**
 * A bucket's key outlives the moment it is full again by this much, so clock skew between replicas
 * or a rounded-up ms never drops a bucket just before it refills (a missing bucket is a full one).
 */
const EXPIRY_SLACK_MS = 1_000;

/**
 * The memory store's token bucket (src/rate-limit/memory-store.ts), step for step, on a hash with
 * fields level, updatedAt, capacity, windowMs. Lua numbers are doubles like JavaScript's, so the same
 * operations give the same results; stored numbers are written with 17 significant digits because
 * Lua's default 14 would round a level near 2^53. Answers {allowed, level}; the caller derives the rest.
 */
const TAKE_SCRIPT = `
local now = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local windowMs = tonumber(ARGV[3])
local full = capacity * windowMs
local level = full
local updatedAt = now
local saved = redis.call('HMGET', KEYS[1], 'level', 'updatedAt', 'windowMs')
local savedLevel, savedAt, savedWindow = tonumber(saved[1]), tonumber(saved[2]), tonumber(saved[3])
if savedLevel and savedAt and savedWindow then
  local scaled = savedLevel
  if savedWindow ~= windowMs then scaled = (savedLevel / savedWindow) * windowMs end
  level = math.min(full, scaled + math.max(0, now - savedAt) * capacity)
  updatedAt = math.max(savedAt, now)
end
local allowed = 0
if level >= windowMs then
  level = level - windowMs
  allowed = 1
end
redis.call('HSET', KEYS[1], 'level', string.format('%.17g', level), 'updatedAt', string.format('%.17g', updatedAt),
  'capacity', ARGV[2], 'windowMs', ARGV[3])
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil((full - level) / capacity) + tonumber(ARGV[4])))
return {allowed, string.format('%.17g', level)}
`;

// The digest Redis files the script under, for EVALSHA; not a security use.
const TAKE_SCRIPT_SHA1 = createHash('sha1').update(TAKE_SCRIPT).digest('hex');

export interface RedisRateLimitStoreOptions {
  /** The cluster's bounded Redis connection; every take is one call on it. */
  link: Pick<RedisLink, 'call'>;
  /** Time source, passed to Redis with each take, so replicas agree to within their clock skew. */
  clock: Clock;
  /** Put before every key, e.g. `rg:rl:requests:`, so several limiters share one Redis. */
  prefix: string;
  /**
   * Answers while Redis is out of reach, limiting this replica on its own with the full limit
   * (better to allow a little more than to refuse everyone). Default: a memory store on `clock`.
   */
  insurance?: RateLimitStore;
  /** Called with the Redis error each time a take is answered by `insurance` instead. */
  onFallback?: (error: unknown) => void;
}

/**
 * A token bucket per key in Redis, shared by every replica, so a tenant's limit holds for the
 * cluster. Each take is one Lua script, atomic in Redis, with `now` from the injected clock.
 * When Redis is down, stalled or erroring, the take is answered by the insurance store instead:
 * this store never rejects because of Redis, only for a bad capacity or window.
 *
 * Written here rather than with `rate-limiter-flexible`'s `RateLimiterRedis`: its fixed windows
 * and its own clock would not match the memory store's continuous bucket, nor pass the one
 * contract suite (test/rate-limit-store.contract.ts) with a test clock.
 */
export function createRedisRateLimitStore(options: RedisRateLimitStoreOptions): RateLimitStore {
  const { link, clock, prefix, onFallback } = options;
  if (typeof link?.call !== 'function') throw new TypeError(`${NAME}: options.link must have a call(operation) method`);
  if (typeof clock?.now !== 'function') throw new TypeError(`${NAME}: options.clock must have a now() method`);
  if (typeof prefix !== 'string' || prefix === '') throw new TypeError(`${NAME}: options.prefix must be a non-empty string`);
  if (onFallback !== undefined && typeof onFallback !== 'function') throw new TypeError(`${NAME}: options.onFallback must be a function`);
  const insurance = options.insurance ?? createMemoryRateLimitStore({ clock });
  if (typeof insurance?.take !== 'function')
    throw new TypeError(`${NAME}: options.insurance must have a take(key, capacity, windowMs) method`);

  async function takeShared(key: string, capacity: number, windowMs: number): Promise<RateLimitDecision> {
    const script = { keys: [key], arguments: [String(clock.now()), String(capacity), String(windowMs), String(EXPIRY_SLACK_MS)] };
    try {
      return decide(await link.call((client) => runTakeScript(client, script)), capacity, windowMs);
    } catch (error) {
      onFallback?.(error);
      return await insurance.take(key, capacity, windowMs);
    }
  }

  return {
    take: function takeRedisToken(key, capacity, windowMs) {
      checkArgument('capacity', capacity);
      checkArgument('windowMs', windowMs);
      if (!Number.isSafeInteger(capacity * windowMs)) {
        throw new RangeError(`${NAME}: capacity × windowMs must stay below 2^53, got ${capacity} × ${windowMs}`);
      }
      return takeShared(`${prefix}${key}`, capacity, windowMs);
    },
  };
}

type ScriptCall = { keys: string[]; arguments: string[] };

async function runTakeScript(client: RedisClient, script: ScriptCall): Promise<unknown> {
  try {
    return await client.evalSha(TAKE_SCRIPT_SHA1, script);
  } catch (error) {
    // A restarted or flushed Redis has forgotten the script: send it whole once.
    if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
    return await client.eval(TAKE_SCRIPT, script);
  }
}

/** The decision from the script's {allowed, level}, computed as the memory store computes it. */
function decide(reply: unknown, capacity: number, windowMs: number): RateLimitDecision {
  const [allowed, levelText] = Array.isArray(reply) ? reply : [];
  const level = Number(levelText);
  if ((allowed !== 0 && allowed !== 1) || typeof levelText !== 'string' || !Number.isFinite(level)) {
    throw new Error(`${NAME}: unexpected reply from the take script`);
  }
  return {
    allowed: allowed === 1,
    remaining: Math.floor(level / windowMs),
    retryAfterMs: level >= windowMs ? 0 : Math.ceil((windowMs - level) / capacity),
    resetMs: Math.ceil((capacity * windowMs - level) / capacity),
  };
}

function checkArgument(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${NAME}: ${name} must be a positive integer, got ${String(value)}`);
  }
}
