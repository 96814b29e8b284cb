/** Defaults and limits of the configuration, named once (README, "Configuration"). */

export const DEFAULT_CONFIG_PATH = 'config/gateway.yaml';
export const DEFAULT_LISTEN_HOST = '127.0.0.1';
export const DEFAULT_LISTEN_PORT = 8080;
/** listen.max_connections when unset: half the process's open-file limit, at most this. */
export const DEFAULT_MAX_CONNECTIONS = 4096;
export const DEFAULT_HEADERS_TIMEOUT_MS = 10_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
export const DEFAULT_KEEP_ALIVE_TIMEOUT_MS = 5_000;
export const DEFAULT_UPSTREAM_BASE_URL = 'https://api.flyflow.dev/v1';
export const DEFAULT_UPSTREAM_API_KEY_ENV = 'FLYFLOW_API_KEY';
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 30_000;
export const DEFAULT_BODY_IDLE_TIMEOUT_MS = 15_000;
export const DEFAULT_MAX_CONCURRENT_DOWNLOADS = 16;
export const DEFAULT_CIRCUIT_FAILURE_THRESHOLD = 5;
export const DEFAULT_CIRCUIT_COOLDOWN_SECONDS = 30;
export const DEFAULT_CACHE_DIR = './data/cache';
export const DEFAULT_MAX_DISK_BYTES = 10 * 1024 ** 3;
export const DEFAULT_MAX_MEMORY_BYTES = 256 * 1024 ** 2;
export const DEFAULT_MAX_RECORDING_BYTES = 512 * 1024 ** 2;
export const DEFAULT_NOT_FOUND_TTL_SECONDS = 30;
export const DEFAULT_MAX_AGE_SECONDS = 86_400;
export const DEFAULT_MAX_SIGNED_URL_TTL_SECONDS = 3600;
/** Webhook calls per minute per tenant: about two calls ending a second, with a minute's burst. */
export const DEFAULT_WEBHOOK_RATE_LIMIT_PER_MINUTE = 120;
/** Webhook prefetches queued or running per tenant. */
export const DEFAULT_MAX_QUEUED_PREFETCHES = 100;
/** Where the cluster's peer secret is read from when the `cluster` block names neither a variable nor a file. */
export const DEFAULT_PEER_SECRET_ENV = 'GATEWAY_PEER_SECRET';
/** Longest any one Redis call of the cluster may take (README, Cluster: Redis trouble degrades, never stops). */
export const DEFAULT_REDIS_TIMEOUT_MS = 250;
/** Bounds of cluster.redis_timeout_ms: below 10 ms a healthy Redis over a network times out; above a minute requests hang. */
export const MIN_REDIS_TIMEOUT_MS = 10;
export const MAX_REDIS_TIMEOUT_MS = 60_000;
/**
 * The shortest secret the operator may choose (admin and webhook tokens,
 * signing keys): shorter ones can be guessed. RFC 2104 section 3 recommends
 * HMAC keys of at least the hash output length; 16 bytes is the floor.
 */
export const MIN_SECRET_BYTES = 16;
/** Signing keys are HMAC-SHA256 keys: {@link MIN_SECRET_BYTES}. */
export const MIN_SIGNING_SECRET_BYTES = MIN_SECRET_BYTES;
/** The shortest peer secret or encryption key (README, Configuration): keys that protect everything at once. */
export const MIN_KEY_SECRET_BYTES = 32;
/** Ends every "too short" message, so the operator knows how to make a good one. */
export const GENERATE_SECRET_HINT = 'generate one with `openssl rand -base64 32` or `recording-gateway new-key`';
/** Where the cache encryption key is read from when `cache.encryption` names neither a variable nor a file. */
export const DEFAULT_ENCRYPTION_KEY_ENV = 'CACHE_ENCRYPTION_KEY';
/** An AES-256 key: exactly this many bytes once decoded from base64. */
export const ENCRYPTION_KEY_BYTES = 32;
/**
 * Ends every bad-encryption-key message. Not `new-key`: its keys carry a
 * prefix, so they are not plain base64 of 32 bytes.
 */
export const GENERATE_ENCRYPTION_KEY_HINT = 'generate one with `openssl rand -base64 32`';
export const DEFAULT_AUDIT_DIR = './data/audit';
export const DEFAULT_AUDIT_RETENTION_DAYS = 365;
