import bytes from 'bytes';
import { z } from 'zod';
import { ConfigError, configIssuesFromZod } from './config-error.js';

/*
 * The configuration file's shape (snake_case, as written), validated with zod.
 * Objects are strict so a misspelt key is an error instead of a silently
 * ignored option. Secrets are never values here: the file only names the
 * environment variable (`*_env`) or file (`*_file`) that holds each one;
 * load-config.ts resolves them.
 */

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

const TENANT_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const KID = /^[A-Za-z0-9._-]{1,64}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const API_KEY_DIGEST = /^sha256:([0-9a-fA-F]{64})$/;
// `bytes` alone would read "12 parsecs" as 12 (it falls back to parseInt) and
// knows no KiB/MiB/GiB, so the syntax is checked here and the arithmetic left to it.
const BYTE_SIZE = /^(\d+(?:\.\d+)?)\s*(?:([kmgtp])i?b|b)?$/i;

function fail(ctx: z.RefinementCtx, value: unknown, message: string): never {
  ctx.issues.push({ code: 'custom', message, input: value });
  return z.NEVER;
}

const positiveInt = z.int().min(1);
const nonNegativeInt = z.int().min(0);
const envName = z.string().regex(ENV_NAME, {
  // Someone who pastes the secret itself here must not see it echoed into logs.
  message: 'expected the name of an environment variable (letters, digits and _), not the secret itself',
});
const filePath = z.string().min(1, 'expected a file path');

/** A byte count: a positive integer, or a string like `512MiB`, `10GiB`, `1.5GB` (1024-based either way). */
const byteSize = z.unknown().transform((value, ctx): number => {
  const hint = 'use an integer or a string like 512MiB, 10GiB or 1.5GB';
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value > 0) return value;
    return fail(ctx, value, `${value} is not a positive whole number of bytes`);
  }
  if (typeof value !== 'string') return fail(ctx, value, `expected a byte size (${hint})`);
  const [, amount = '', prefix] = BYTE_SIZE.exec(value.trim()) ?? [];
  // Without a multiple the count is whole bytes, so "1.5" or "1.5B" is a typo.
  const parsed =
    amount === '' || (prefix === undefined && amount.includes('.'))
      ? null
      : bytes.parse(prefix === undefined ? amount : `${amount}${prefix}b`);
  if (parsed === null || !Number.isSafeInteger(parsed) || parsed <= 0) {
    return fail(ctx, value, `${JSON.stringify(value)} is not a byte size (${hint})`);
  }
  return parsed;
});

/** An absolute http(s) URL without credentials, query or fragment; the trailing slash is dropped. */
export function httpUrl(what: string) {
  // The value is never echoed: a URL may carry a password.
  return z.string().transform((value, ctx): string => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      return fail(ctx, value, `expected an absolute http:// or https:// URL for ${what}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      return fail(ctx, value, `expected an http:// or https:// URL for ${what}, got ${url.protocol}//`);
    }
    if (url.username !== '' || url.password !== '') {
      return fail(ctx, value, 'credentials do not belong in a URL in this file');
    }
    if (url.search !== '' || url.hash !== '') {
      return fail(ctx, value, `the URL for ${what} must not have a query or fragment`);
    }
    return url.href.replace(/\/+$/, '');
  });
}

/** An exact browser origin as sent in the `Origin` header. */
const origin = z.string().transform((value, ctx): string => {
  if (value === '*') return fail(ctx, value, "'*' is not allowed: list each origin that may play recordings");
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '') {
    return fail(ctx, value, `${JSON.stringify(value)} is not an origin (expected scheme://host[:port], e.g. https://app.example.com)`);
  }
  // Browsers send the serialized origin exactly, so anything else would never match.
  if (url.origin !== value) {
    return fail(
      ctx,
      value,
      `${JSON.stringify(value)} is not an exact origin (no path, lowercase host); write ${JSON.stringify(url.origin)}`,
    );
  }
  return value;
});

const apiKeyDigest = z.string().transform((value, ctx): string => {
  const match = API_KEY_DIGEST.exec(value);
  if (match?.[1] !== undefined) return match[1].toLowerCase();
  // Never echo it: it may be a real key pasted in by mistake.
  const hint = value.startsWith('sha256:') ? '' : ' (the file holds digests only; `recording-gateway hash-key KEY` prints one)';
  return fail(ctx, value, `expected "sha256:" followed by 64 hex digits${hint}`);
});

export type CacheIndexConfig = { kind: 'sqlite' } | { kind: 'redis'; url: string };

const cacheIndex = z.string().transform((value, ctx): CacheIndexConfig => {
  if (value === 'sqlite') return { kind: 'sqlite' };
  const expected = 'expected "sqlite" or a redis:// or rediss:// URL';
  if (!/^rediss?:\/\//i.test(value)) return fail(ctx, value, expected);
  try {
    if (new URL(value).hostname === '') return fail(ctx, value, `${expected} with a host`);
  } catch {
    return fail(ctx, value, `${expected}; this one does not parse`);
  }
  return { kind: 'redis', url: value };
});

type SecretFields = Record<string, unknown>;

/** Checks that a secret is named by `<base>_env` or `<base>_file` (one of them when `required`), never both. */
function checkSecretSource(obj: SecretFields, base: string, required: boolean, ctx: z.RefinementCtx): void {
  const hasEnv = obj[`${base}_env`] !== undefined;
  const hasFile = obj[`${base}_file`] !== undefined;
  if (hasEnv && hasFile) {
    ctx.issues.push({ code: 'custom', message: `set ${base}_env or ${base}_file, not both`, input: obj, path: [`${base}_file`] });
  } else if (required && !hasEnv && !hasFile) {
    ctx.issues.push({
      code: 'custom',
      message: `set ${base}_env (an environment variable) or ${base}_file (a file) holding the secret`,
      input: obj,
    });
  }
}

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

const cacheSchema = z
  .strictObject({
    dir: z.string().min(1, 'expected a directory path').default(DEFAULT_CACHE_DIR),
    max_disk_bytes: byteSize.default(DEFAULT_MAX_DISK_BYTES),
    max_memory_bytes: byteSize.default(DEFAULT_MAX_MEMORY_BYTES),
    max_recording_bytes: byteSize.default(DEFAULT_MAX_RECORDING_BYTES),
    index: cacheIndex.default({ kind: 'sqlite' }),
    not_found_ttl_seconds: nonNegativeInt.default(DEFAULT_NOT_FOUND_TTL_SECONDS),
    max_age_seconds: nonNegativeInt.default(DEFAULT_MAX_AGE_SECONDS),
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

const TENANTS_REQUIRED = 'at least one tenant is required';

const configFileShape = z.strictObject({
  listen: listenSchema.prefault({}),
  public_base_url: httpUrl('public_base_url').optional(),
  admin: adminSchema.optional(),
  upstream: upstreamSchema.prefault({}),
  cache: cacheSchema.prefault({}),
  webhooks: webhooksSchema.prefault({}),
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

export const configFileSchema = configFileShape.superRefine((file, ctx) => checkDiskShares(file.tenants, file.cache.max_disk_bytes, ctx));

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
