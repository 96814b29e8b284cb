import bytes from 'bytes';
import { z } from 'zod';
import { ConfigError, configIssuesFromZod } from './config-error.js';
import {
  DEFAULT_AUDIT_DIR,
  DEFAULT_AUDIT_RETENTION_DAYS,
  DEFAULT_BODY_IDLE_TIMEOUT_MS,
  DEFAULT_CACHE_DIR,
  DEFAULT_CIRCUIT_COOLDOWN_SECONDS,
  DEFAULT_CIRCUIT_FAILURE_THRESHOLD,
  DEFAULT_HEADERS_TIMEOUT_MS,
  DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
  DEFAULT_LISTEN_HOST,
  DEFAULT_LISTEN_PORT,
  DEFAULT_MAX_AGE_SECONDS,
  DEFAULT_MAX_CONCURRENT_DOWNLOADS,
  DEFAULT_MAX_DISK_BYTES,
  DEFAULT_MAX_MEMORY_BYTES,
  DEFAULT_MAX_QUEUED_PREFETCHES,
  DEFAULT_MAX_RECORDING_BYTES,
  DEFAULT_MAX_SIGNED_URL_TTL_SECONDS,
  DEFAULT_NOT_FOUND_TTL_SECONDS,
  DEFAULT_REDIS_TIMEOUT_MS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  DEFAULT_UPSTREAM_BASE_URL,
  DEFAULT_UPSTREAM_TIMEOUT_MS,
  DEFAULT_WEBHOOK_RATE_LIMIT_PER_MINUTE,
  MAX_REDIS_TIMEOUT_MS,
  MIN_REDIS_TIMEOUT_MS,
} from './defaults.js';
import {
  apiKeyDigest,
  type CacheIndexConfig,
  byteSize,
  cacheIndex,
  checkSecretSource,
  envName,
  filePath,
  httpUrl,
  KID,
  NODE_ID,
  nonNegativeDays,
  nonNegativeInt,
  origin,
  positiveDays,
  positiveInt,
  redisUrl,
  sameRedisUrl,
  TENANT_ID,
} from './fields.js';

/*
 * The configuration file's shape (snake_case, as written), validated with zod.
 * Objects are strict so a misspelt key is an error instead of a silently
 * ignored option. Secrets are never values here: the file only names the
 * environment variable (`*_env`) or file (`*_file`) that holds each one;
 * load-config.ts resolves them.
 */

const listenSchema = z
  .strictObject({
    host: z.string().min(1).default(DEFAULT_LISTEN_HOST),
    port: nonNegativeInt.max(65_535).default(DEFAULT_LISTEN_PORT),
    // Unset: derived from the open-file limit at start-up (src/server.ts).
    max_connections: positiveInt.optional(),
    headers_timeout_ms: positiveInt.default(DEFAULT_HEADERS_TIMEOUT_MS),
    request_timeout_ms: positiveInt.default(DEFAULT_REQUEST_TIMEOUT_MS),
    keep_alive_timeout_ms: positiveInt.default(DEFAULT_KEEP_ALIVE_TIMEOUT_MS),
  })
  .superRefine((listen, ctx) => {
    // Node refuses a headers timeout longer than the request timeout, which includes it.
    if (listen.headers_timeout_ms > listen.request_timeout_ms) {
      ctx.issues.push({
        code: 'custom',
        message: `must be at most request_timeout_ms (${listen.request_timeout_ms})`,
        input: listen.headers_timeout_ms,
        path: ['headers_timeout_ms'],
      });
    }
  });

const adminSchema = z
  .strictObject({ token_env: envName.optional(), token_file: filePath.optional() })
  .superRefine((admin, ctx) => checkSecretSource(admin, 'token', true, ctx));

const upstreamSchema = z
  .strictObject({
    base_url: httpUrl('upstream.base_url').default(DEFAULT_UPSTREAM_BASE_URL),
    // No default here: when api_key_file is set, the env name must stay unset.
    api_key_env: envName.optional(),
    api_key_file: filePath.optional(),
    timeout_ms: positiveInt.default(DEFAULT_UPSTREAM_TIMEOUT_MS),
    body_idle_timeout_ms: positiveInt.default(DEFAULT_BODY_IDLE_TIMEOUT_MS),
    max_concurrent_downloads: positiveInt.default(DEFAULT_MAX_CONCURRENT_DOWNLOADS),
    circuit_breaker: z
      .strictObject({
        failure_threshold: positiveInt.default(DEFAULT_CIRCUIT_FAILURE_THRESHOLD),
        cooldown_seconds: positiveInt.default(DEFAULT_CIRCUIT_COOLDOWN_SECONDS),
      })
      .prefault({}),
  })
  .superRefine((upstream, ctx) => checkSecretSource(upstream, 'api_key', false, ctx));

// README, Compliance. Neither key named: the key is read from CACHE_ENCRYPTION_KEY (secrets.ts).
const encryptionSchema = z
  .strictObject({
    key_env: envName.optional(),
    key_file: filePath.optional(),
    previous_keys_env: envName.optional(),
    previous_keys_file: filePath.optional(),
  })
  .superRefine((encryption, ctx) => {
    checkSecretSource(encryption, 'key', false, ctx);
    checkSecretSource(encryption, 'previous_keys', false, ctx);
  });

const cacheSchema = z
  .strictObject({
    dir: z.string().min(1, 'expected a directory path').default(DEFAULT_CACHE_DIR),
    max_disk_bytes: byteSize.default(DEFAULT_MAX_DISK_BYTES),
    max_memory_bytes: byteSize.default(DEFAULT_MAX_MEMORY_BYTES),
    max_recording_bytes: byteSize.default(DEFAULT_MAX_RECORDING_BYTES),
    index: cacheIndex.default({ kind: 'sqlite' }),
    not_found_ttl_seconds: nonNegativeInt.default(DEFAULT_NOT_FOUND_TTL_SECONDS),
    max_age_seconds: nonNegativeInt.default(DEFAULT_MAX_AGE_SECONDS),
    // Absent: a copy stays until evicted.
    retention_days: nonNegativeDays.optional(),
    encryption: encryptionSchema.optional(),
  })
  .superRefine((cache, ctx) => {
    if (cache.max_recording_bytes > cache.max_disk_bytes) {
      ctx.issues.push({
        code: 'custom',
        message: 'is larger than cache.max_disk_bytes, so such a recording could never be cached',
        input: cache,
        path: ['max_recording_bytes'],
      });
    }
  });

const signingKeySchema = z
  .strictObject({
    kid: z.string().regex(KID, 'expected 1-64 letters, digits, ".", "_" or "-"'),
    secret_env: envName.optional(),
    secret_file: filePath.optional(),
  })
  .superRefine((key, ctx) => checkSecretSource(key, 'secret', true, ctx));

const tenantSchema = z
  .strictObject({
    id: z.string().regex(TENANT_ID, 'expected 1-63 lowercase letters, digits, "_" or "-", starting with a letter or digit'),
    api_keys: z.array(apiKeyDigest).default([]),
    signing_keys: z.array(signingKeySchema).default([]),
    allowed_origins: z.array(origin).default([]),
    upstream_api_key_env: envName.optional(),
    upstream_api_key_file: filePath.optional(),
    rate_limit_per_minute: positiveInt.optional(),
    max_signed_url_ttl_seconds: positiveInt.default(DEFAULT_MAX_SIGNED_URL_TTL_SECONDS),
    webhook_token_env: envName.optional(),
    webhook_token_file: filePath.optional(),
    disk_share: byteSize.optional(),
    retention_days: nonNegativeDays.optional(),
  })
  .superRefine((tenant, ctx) => {
    checkSecretSource(tenant, 'upstream_api_key', false, ctx);
    checkSecretSource(tenant, 'webhook_token', false, ctx);
    if (tenant.api_keys.length === 0 && tenant.signing_keys.length === 0) {
      ctx.issues.push({
        code: 'custom',
        message: 'needs at least one entry in api_keys or signing_keys, or no one can use it',
        input: tenant,
      });
    }
    const kids = new Set<string>();
    tenant.signing_keys.forEach((key, i) => {
      if (kids.has(key.kid)) {
        ctx.issues.push({
          code: 'custom',
          message: `kid "${key.kid}" is used twice in this tenant`,
          input: key,
          path: ['signing_keys', i, 'kid'],
        });
      }
      kids.add(key.kid);
    });
  });

const webhooksSchema = z.strictObject({
  rate_limit_per_minute: positiveInt.default(DEFAULT_WEBHOOK_RATE_LIMIT_PER_MINUTE),
  max_queued_prefetches: positiveInt.default(DEFAULT_MAX_QUEUED_PREFETCHES),
});

// README, Cluster. node_id has no default here: the host name is read where the config is assembled.
const clusterSchema = z
  .strictObject({
    redis_url: redisUrl,
    node_id: z.string().regex(NODE_ID, 'expected 1-64 letters, digits, ".", "_" or "-"').optional(),
    advertise_url: httpUrl('cluster.advertise_url', { origin: true }).optional(),
    // No default here: when peer_secret_file is set, the env name must stay unset.
    peer_secret_env: envName.optional(),
    peer_secret_file: filePath.optional(),
    redis_timeout_ms: z.int().min(MIN_REDIS_TIMEOUT_MS).max(MAX_REDIS_TIMEOUT_MS).default(DEFAULT_REDIS_TIMEOUT_MS),
  })
  .superRefine((cluster, ctx) => checkSecretSource(cluster, 'peer_secret', false, ctx));

const auditSchema = z.strictObject({
  dir: z.string().min(1, 'expected a directory path').default(DEFAULT_AUDIT_DIR),
  retention_days: positiveDays.default(DEFAULT_AUDIT_RETENTION_DAYS),
});

const TENANTS_REQUIRED = 'at least one tenant is required';

const configFileShape = z.strictObject({
  listen: listenSchema.prefault({}),
  public_base_url: httpUrl('public_base_url').optional(),
  admin: adminSchema.optional(),
  upstream: upstreamSchema.prefault({}),
  cache: cacheSchema.prefault({}),
  webhooks: webhooksSchema.prefault({}),
  cluster: clusterSchema.optional(),
  audit: auditSchema.optional(),
  tenants: z
    .array(tenantSchema, { error: (issue) => (issue.input === undefined ? TENANTS_REQUIRED : undefined) })
    .min(1, TENANTS_REQUIRED)
    .superRefine((tenants, ctx) => {
      const ids = new Map<string, number>();
      const digests = new Map<string, string>();
      tenants.forEach((tenant, i) => {
        const first = ids.get(tenant.id);
        if (first !== undefined) {
          ctx.issues.push({
            code: 'custom',
            message: `duplicate tenant id "${tenant.id}" (also tenants[${first}])`,
            input: tenant,
            path: [i, 'id'],
          });
        } else {
          ids.set(tenant.id, i);
        }
        // One key must identify exactly one tenant.
        tenant.api_keys.forEach((digest, k) => {
          const owner = digests.get(digest);
          if (owner !== undefined) {
            ctx.issues.push({
              code: 'custom',
              message: `this key digest is already listed for tenant "${owner}"`,
              input: digest,
              path: [i, 'api_keys', k],
            });
          }
          digests.set(digest, tenant.id);
        });
      });
    }),
});

export const configFileSchema = configFileShape.superRefine((file, ctx) => {
  checkDiskShares(file.tenants, file.cache.max_disk_bytes, ctx);
  checkClusterIndex(file.cache.index, file.cluster, ctx);
});

/**
 * A cluster keeps its shared state in cluster.redis_url, so a second Redis in
 * cache.index would split it; the same URL is harmless (load-config.ts then
 * gives the volume its own sqlite index). Neither URL is quoted: both may carry a password.
 */
function checkClusterIndex(index: CacheIndexConfig, cluster: { redis_url: string } | undefined, ctx: z.RefinementCtx): void {
  if (cluster === undefined || index.kind !== 'redis' || sameRedisUrl(index.url, cluster.redis_url)) return;
  ctx.issues.push({
    code: 'custom',
    message:
      'conflicts with cluster.redis_url (another Redis server or database); leave cache.index at its default; the cluster keeps its shared state in cluster.redis_url',
    input: index,
    path: ['cache', 'index'],
  });
}

/** Disk shares are room reserved out of cache.max_disk_bytes, so together they must fit in it. */
function checkDiskShares(tenants: ReadonlyArray<{ disk_share?: number | undefined }>, maxDiskBytes: number, ctx: z.RefinementCtx): void {
  let total = 0;
  tenants.forEach((tenant, i) => {
    if (tenant.disk_share === undefined) return;
    const before = total;
    total += tenant.disk_share;
    if (before <= maxDiskBytes && total > maxDiskBytes) {
      const size = (value: number) => bytes.format(value, { unitSeparator: ' ' }) ?? `${value} B`;
      ctx.issues.push({
        code: 'custom',
        message: `with this one the tenants' disk shares add up to ${size(total)}, more than cache.max_disk_bytes (${size(maxDiskBytes)})`,
        input: tenant.disk_share,
        path: ['tenants', i, 'disk_share'],
      });
    }
  });
}

/** The file after validation: snake_case, defaults applied, values normalised, secrets still unresolved. */
export type ConfigFile = z.output<typeof configFileSchema>;

/**
 * Validates parsed YAML/JSON against the schema. Throws a `ConfigError` listing
 * every problem with its field path; `file` prefixes each line.
 */
export function validateConfigFile(raw: unknown, file?: string): ConfigFile {
  if (raw === null || raw === undefined) {
    throw new ConfigError({ path: '', message: `the file is empty; it needs at least a tenants list` }, fileOption(file));
  }
  const result = configFileSchema.safeParse(raw, { reportInput: true });
  if (result.success) return result.data;
  throw new ConfigError(configIssuesFromZod(result.error.issues, configFileSchema), fileOption(file));
}

function fileOption(file: string | undefined): { file?: string } {
  return file === undefined ? {} : { file };
}
