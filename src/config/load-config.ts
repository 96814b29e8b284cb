import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { extname, resolve } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { ConfigError, formatPath, type ConfigIssue } from './config-error.js';
import { decodeEncryptionKey, decodeEncryptionKeyList } from './encryption-keys.js';
import { type DuplicateKey, jsonDuplicateKey, yamlDuplicateKey } from './duplicate-keys.js';
import { jsonSyntaxError } from './json-syntax.js';
import { DEFAULT_CONFIG_PATH } from './defaults.js';
import { httpUrl, NODE_ID } from './fields.js';
import { type ConfigFile, validateConfigFile } from './schema.js';
import {
  ADMIN_TOKEN_OVERRIDE,
  FLYFLOW_API_KEY_OVERRIDE,
  type SecretFileRead,
  type SecretRef,
  nonEmpty,
  resolveSecret,
  secretIssue,
  secretRefs,
} from './secrets.js';
import type { CacheEncryptionConfig, ClusterConfig, GatewayConfig, TenantConfig } from './types.js';

export type { AuditConfig, CacheEncryptionConfig, ClusterConfig, GatewayConfig, TenantConfig } from './types.js';

export interface ParseConfigOptions {
  /** The environment (pass `process.env` in production): overrides and secrets are read from here only. */
  env: Record<string, string | undefined>;
  /** Relative paths (`cache.dir`, `*_file` secrets, the config file) resolve against this. */
  cwd: string;
  /**
   * Default true. When false (CLI commands that never call upstream), a
   * missing or unusable secret does not fail: the server key is left '', the
   * affected signing keys are skipped, a tenant's own upstream key and the
   * cluster's peer secret are left '' and the admin and webhook tokens are left
   * unset; an unreadable encryption key is left empty, unreadable previous keys
   * are skipped, and `cache.encryption.unreadable` names them all. Structure is
   * still validated.
   */
  requireSecrets?: boolean;
  /** The machine's host name, the default `cluster.node_id`; default `os.hostname()`. */
  hostname?: string;
}

export interface LoadConfigOptions extends ParseConfigOptions {
  /** The config file; default from `configPathFrom(undefined, env)`. */
  path?: string;
}

/** Which config file to read: `--config PATH`, else `GATEWAY_CONFIG`, else `config/gateway.yaml`. */
export function configPathFrom(argvPath: string | undefined, env: Record<string, string | undefined>): string {
  return nonEmpty(argvPath) ?? nonEmpty(env.GATEWAY_CONFIG) ?? DEFAULT_CONFIG_PATH;
}

/**
 * Reads, validates and resolves the configuration file (YAML for `.yaml`/`.yml`,
 * JSON for `.json`). Returns the config and the file's absolute path. Throws
 * `ConfigError` naming the file and field of every problem; secret values never
 * appear in its message.
 */
export async function loadConfig(options: LoadConfigOptions): Promise<{ config: GatewayConfig; path: string }> {
  const file = options.path ?? configPathFrom(undefined, options.env);
  const absolute = resolve(options.cwd, file);
  const format = formatOf(file);
  let text: string;
  try {
    text = await readFile(absolute, 'utf8');
  } catch (error) {
    throw readError(file, absolute, error);
  }
  const parsed = validateConfigFile(parseText(text, format, file), file);
  const refs = secretRefs(parsed, options.env);
  // Read every *_file secret up front, asynchronously, so resolution itself stays synchronous.
  const files = new Map<string, SecretFileRead>();
  await Promise.all(
    refs
      .flatMap((ref) => (ref.file === undefined ? [] : [resolve(options.cwd, ref.file)]))
      .map(async (path) => {
        try {
          files.set(path, { value: await readFile(path, 'utf8') });
        } catch (error) {
          files.set(path, { code: errorCode(error) });
        }
      }),
  );
  const read = (path: string): SecretFileRead => files.get(path) ?? { code: 'ENOENT' };
  return { config: assemble(parsed, refs, options, read, file), path: absolute };
}

/**
 * Validates an already parsed file (for tests and embedding). No file I/O
 * except `*_file` secrets, which are read synchronously: this runs once, at start-up.
 */
export function parseConfig(raw: unknown, options: ParseConfigOptions): GatewayConfig {
  const parsed = validateConfigFile(raw);
  const read = (path: string): SecretFileRead => {
    try {
      return { value: readFileSync(path, 'utf8') };
    } catch (error) {
      return { code: errorCode(error) };
    }
  };
  return assemble(parsed, secretRefs(parsed, options.env), options, read);
}

type Format = 'yaml' | 'json';

function formatOf(file: string): Format {
  const extension = extname(file).toLowerCase();
  if (extension === '.yaml' || extension === '.yml') return 'yaml';
  if (extension === '.json') return 'json';
  throw new ConfigError({ path: '', message: `config file must end in .yaml, .yml or .json: ${file}` });
}

function readError(file: string, absolute: string, error: unknown): ConfigError {
  const code = errorCode(error);
  const where = file === absolute ? file : `${file} (${absolute})`;
  const message =
    code === 'ENOENT'
      ? `config file not found: ${where}; pass --config PATH or set GATEWAY_CONFIG`
      : `cannot read config file ${where}: ${code}`;
  return new ConfigError({ path: '', message }, { cause: error });
}

function parseText(text: string, format: Format, file: string): unknown {
  if (format === 'json') {
    const json = text.replace(/^\uFEFF/, '');
    // Like an empty YAML file: "the file is empty" says more than "unexpected end of file".
    if (json.trim() === '') return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(json);
    } catch (error) {
      // JSON.parse's own message may quote the file; say where and what without it.
      const problem = jsonSyntaxError(json);
      const where = problem === undefined ? '' : ` at ${lineAndColumn(json, problem.offset)}`;
      throw new ConfigError(
        { path: '', message: `JSON syntax error${where}: ${problem?.message ?? 'the file is not valid JSON'}` },
        { file, cause: error },
      );
    }
    const duplicate = jsonDuplicateKey(json);
    if (duplicate !== undefined) {
      throw duplicateKeyError(duplicate, lineAndColumn(json, duplicate.offset), 'JSON would keep only the last value', file);
    }
    return parsed;
  }
  const lineCounter = new LineCounter();
  // Duplicate keys are found below, to name the field as for JSON, not as a syntax error.
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: false });
  const [first] = document.errors;
  if (first !== undefined) {
    const { line, col } = lineCounter.linePos(first.pos[0]);
    throw new ConfigError(
      { path: '', message: `YAML syntax error at line ${line}, column ${col}: ${first.message.split('\n')[0]}` },
      { file, cause: first },
    );
  }
  const duplicate = yamlDuplicateKey(document);
  if (duplicate !== undefined) {
    const { line, col } = lineCounter.linePos(duplicate.offset);
    throw duplicateKeyError(duplicate, `line ${line}, column ${col}`, 'a YAML mapping takes each key once', file);
  }
  return document.toJS();
}

function duplicateKeyError(duplicate: DuplicateKey, where: string, why: string, file: string): ConfigError {
  return new ConfigError(
    { path: formatPath(duplicate.path), message: `the key is given twice (again at ${where}); ${why}: give it once` },
    { file },
  );
}

function lineAndColumn(text: string, offset: number): string {
  const before = text.slice(0, offset).split('\n');
  return `line ${before.length}, column ${(before.at(-1)?.length ?? 0) + 1}`;
}

function assemble(
  file: ConfigFile,
  refs: SecretRef[],
  options: ParseConfigOptions,
  read: (absolutePath: string) => SecretFileRead,
  fileName?: string,
): GatewayConfig {
  const { env, cwd } = options;
  const requireSecrets = options.requireSecrets ?? true;
  const issues: ConfigIssue[] = [];
  const secrets = new Map<string, string | undefined>();
  const unresolved: Unresolved[] = [];
  for (const secretRef of refs) {
    const outcome = resolveSecret(secretRef, env, cwd, read);
    if (typeof outcome === 'string') secrets.set(secretRef.field, outcome);
    else if (requireSecrets) issues.push(secretIssue(secretRef, outcome));
    else unresolved.push({ field: secretRef.field, problem: outcome.problem });
  }
  const secret = (at: string, base: string): string | undefined => secrets.get(`${at}.${base}_file`) ?? secrets.get(`${at}.${base}_env`);

  const overrides = environmentOverrides(env, cwd, issues);
  const cluster = file.cluster === undefined ? undefined : clusterConfig(file.cluster, secret('cluster', 'peer_secret'), options, issues);
  if (issues.length > 0) throw new ConfigError(issues, fileName === undefined ? {} : { file: fileName });

  const config: GatewayConfig = {
    listen: {
      host: overrides.host ?? file.listen.host,
      port: overrides.port ?? file.listen.port,
      maxConnections: file.listen.max_connections,
      headersTimeoutMs: file.listen.headers_timeout_ms,
      requestTimeoutMs: file.listen.request_timeout_ms,
      keepAliveTimeoutMs: file.listen.keep_alive_timeout_ms,
    },
    upstream: {
      baseUrl: overrides.baseUrl ?? file.upstream.base_url,
      apiKey: secrets.get(FLYFLOW_API_KEY_OVERRIDE) ?? secret('upstream', 'api_key') ?? '',
      timeoutMs: file.upstream.timeout_ms,
      bodyIdleTimeoutMs: file.upstream.body_idle_timeout_ms,
      maxConcurrentDownloads: file.upstream.max_concurrent_downloads,
      circuitBreaker: {
        failureThreshold: file.upstream.circuit_breaker.failure_threshold,
        cooldownSeconds: file.upstream.circuit_breaker.cooldown_seconds,
      },
    },
    cache: {
      dir: overrides.cacheDir ?? resolve(cwd, file.cache.dir),
      ...(overrides.cacheDir === undefined ? {} : { dirSetting: 'cache.dir (CACHE_DIR)' }),
      maxDiskBytes: file.cache.max_disk_bytes,
      maxMemoryBytes: file.cache.max_memory_bytes,
      maxRecordingBytes: file.cache.max_recording_bytes,
      // A cluster's shared state lives in cluster.redis_url, and each volume keeps
      // its own sqlite index (the schema refuses a cache.index naming another Redis).
      index: file.cluster === undefined ? file.cache.index : { kind: 'sqlite' },
      notFoundTtlSeconds: file.cache.not_found_ttl_seconds,
      maxAgeSeconds: file.cache.max_age_seconds,
      ...(file.cache.retention_days === undefined ? {} : { retentionDays: file.cache.retention_days }),
      ...(file.cache.encryption === undefined
        ? {}
        : {
            encryption: encryptionConfig(
              secret('cache.encryption', 'key'),
              secret('cache.encryption', 'previous_keys'),
              unresolved.filter(({ field }) => field.startsWith('cache.encryption.')),
            ),
          }),
    },
    webhooks: {
      rateLimitPerMinute: file.webhooks.rate_limit_per_minute,
      maxQueuedPrefetches: file.webhooks.max_queued_prefetches,
    },
    tenants: file.tenants.map((tenant, i): TenantConfig => {
      const at = `tenants[${i}]`;
      const signingKeys = tenant.signing_keys.flatMap((key, k) => {
        const value = secret(`${at}.signing_keys[${k}]`, 'secret');
        return value === undefined ? [] : [{ kid: key.kid, secret: value }];
      });
      const hasOwnUpstreamKey = tenant.upstream_api_key_env !== undefined || tenant.upstream_api_key_file !== undefined;
      const upstreamApiKey = hasOwnUpstreamKey ? (secret(at, 'upstream_api_key') ?? '') : undefined;
      const webhookToken = secret(at, 'webhook_token');
      return {
        id: tenant.id,
        apiKeyDigests: tenant.api_keys,
        signingKeys,
        allowedOrigins: tenant.allowed_origins,
        ...(upstreamApiKey === undefined ? {} : { upstreamApiKey }),
        ...(tenant.rate_limit_per_minute === undefined ? {} : { rateLimitPerMinute: tenant.rate_limit_per_minute }),
        maxSignedUrlTtlSeconds: tenant.max_signed_url_ttl_seconds,
        ...(webhookToken === undefined ? {} : { webhookToken }),
        ...(tenant.disk_share === undefined ? {} : { diskShare: tenant.disk_share }),
        ...(tenant.retention_days === undefined ? {} : { retentionDays: tenant.retention_days }),
      };
    }),
  };
  if (file.public_base_url !== undefined) config.publicBaseUrl = file.public_base_url;
  const adminToken = secrets.get(ADMIN_TOKEN_OVERRIDE) ?? secret('admin', 'token');
  if (adminToken !== undefined) config.adminToken = adminToken;
  if (cluster !== undefined) config.cluster = cluster;
  // AUDIT_DIR moves an audit trail the file turns on; it turns none on by itself.
  if (file.audit !== undefined) {
    config.audit = {
      dir: overrides.auditDir ?? resolve(cwd, file.audit.dir),
      retentionDays: file.audit.retention_days,
      ...(overrides.auditDir === undefined ? {} : { dirSetting: 'audit.dir (AUDIT_DIR)' }),
    };
  }
  return config;
}

/** A secret that `requireSecrets: false` let pass unread: its field and what is wrong, never its value. */
interface Unresolved {
  field: string;
  problem: string;
}

/**
 * The keys as bytes; resolution already refused malformed ones, so a miss here
 * means an unread secret (`requireSecrets: false`), listed in `unreadable`.
 */
function encryptionConfig(key: string | undefined, previousKeys: string | undefined, unreadable: Unresolved[]): CacheEncryptionConfig {
  const current = key === undefined ? undefined : decodeEncryptionKey(key);
  const previous = previousKeys === undefined ? undefined : decodeEncryptionKeyList(previousKeys);
  const keyBytes = Buffer.isBuffer(current) ? current : Buffer.alloc(0);
  return {
    key: keyBytes,
    // The current key is tried first anyway; listing it again as a previous one changes nothing.
    previousKeys: Array.isArray(previous) ? previous.filter((old) => !old.equals(keyBytes)) : [],
    ...(unreadable.length === 0 ? {} : { unreadable }),
  };
}

/** The `cluster` block; node_id defaults to the host name, which must then make a valid id. */
function clusterConfig(
  cluster: NonNullable<ConfigFile['cluster']>,
  peerSecret: string | undefined,
  options: ParseConfigOptions,
  issues: ConfigIssue[],
): ClusterConfig {
  let nodeId = cluster.node_id;
  if (nodeId === undefined) {
    nodeId = options.hostname ?? hostname();
    if (!NODE_ID.test(nodeId)) {
      const message = `not set, and the host name ${JSON.stringify(nodeId)} is not a valid node id (1-64 letters, digits, ".", "_" or "-"); set cluster.node_id`;
      issues.push({ path: 'cluster.node_id', message });
    }
  }
  return {
    redisUrl: cluster.redis_url,
    nodeId,
    ...(cluster.advertise_url === undefined ? {} : { advertiseUrl: cluster.advertise_url }),
    peerSecret: peerSecret ?? '',
    redisTimeoutMs: cluster.redis_timeout_ms,
  };
}

interface Overrides {
  host?: string;
  port?: number;
  baseUrl?: string;
  cacheDir?: string;
  auditDir?: string;
}

/** PORT, HOST, FLYFLOW_BASE_URL, CACHE_DIR and AUDIT_DIR (README, "Configuration"); FLYFLOW_API_KEY and ADMIN_TOKEN are secrets, handled above. */
function environmentOverrides(env: Record<string, string | undefined>, cwd: string, issues: ConfigIssue[]): Overrides {
  const overrides: Overrides = {};
  const problem = (name: string, message: string) => issues.push({ path: `environment variable ${name}`, message, source: 'environment' });

  const port = nonEmpty(env.PORT);
  if (port !== undefined) {
    const value = Number(port);
    if (/^\d+$/.test(port) && value <= 65_535) overrides.port = value;
    else problem('PORT', `${JSON.stringify(port)} is not a port number (0-65535); it overrides listen.port`);
  }
  const host = nonEmpty(env.HOST);
  if (host !== undefined) overrides.host = host;
  const baseUrl = nonEmpty(env.FLYFLOW_BASE_URL);
  if (baseUrl !== undefined) {
    const result = httpUrl('FLYFLOW_BASE_URL', { fromEnvironment: true }).safeParse(baseUrl);
    if (result.success) overrides.baseUrl = result.data;
    else problem('FLYFLOW_BASE_URL', `${result.error.issues[0]?.message ?? 'not a URL'}; it overrides upstream.base_url`);
  }
  const cacheDir = nonEmpty(env.CACHE_DIR);
  if (cacheDir !== undefined) overrides.cacheDir = resolve(cwd, cacheDir);
  const auditDir = nonEmpty(env.AUDIT_DIR);
  if (auditDir !== undefined) overrides.auditDir = resolve(cwd, auditDir);
  return overrides;
}

function errorCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'unknown error';
}
