export { ConfigError, type ConfigIssue } from './config-error.js';
export {
  configPathFrom,
  loadConfig,
  parseConfig,
  type GatewayConfig,
  type LoadConfigOptions,
  type ParseConfigOptions,
  type TenantConfig,
} from './load-config.js';
export type { CacheIndexConfig } from './fields.js';
export { type ConfigFile, configFileSchema } from './schema.js';
export {
  DEFAULT_BODY_IDLE_TIMEOUT_MS,
  DEFAULT_CACHE_DIR,
  DEFAULT_CONFIG_PATH,
  DEFAULT_HEADERS_TIMEOUT_MS,
  DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
  DEFAULT_LISTEN_HOST,
  DEFAULT_LISTEN_PORT,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  DEFAULT_MAX_AGE_SECONDS,
  DEFAULT_MAX_CONCURRENT_DOWNLOADS,
  DEFAULT_MAX_DISK_BYTES,
  DEFAULT_MAX_MEMORY_BYTES,
  DEFAULT_MAX_RECORDING_BYTES,
  DEFAULT_MAX_SIGNED_URL_TTL_SECONDS,
  DEFAULT_NOT_FOUND_TTL_SECONDS,
  DEFAULT_UPSTREAM_API_KEY_ENV,
  DEFAULT_UPSTREAM_BASE_URL,
  DEFAULT_UPSTREAM_TIMEOUT_MS,
  GENERATE_SECRET_HINT,
  MIN_KEY_SECRET_BYTES,
  MIN_SECRET_BYTES,
  MIN_SIGNING_SECRET_BYTES,
} from './defaults.js';
