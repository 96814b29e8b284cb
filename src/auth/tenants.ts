import type { GatewayConfig, TenantConfig } from '../config/index.js';
import { sha256Hex } from '../sha256.js';

/** A tenant as the request path needs it: everything precomputed, no I/O. */
export interface Tenant {
  readonly id: string;
  /**
   * The cache namespace: a digest of the upstream account (base URL and key),
   * never the key itself. Tenants on one Flyflow account share cached copies;
   * tenants on different accounts never do.
   */
  readonly namespace: string;
  readonly upstreamApiKey: string;
  readonly signingKeys: ReadonlyMap<string, string>;
  readonly allowedOrigins: ReadonlySet<string>;
  readonly rateLimitPerMinute: number | undefined;
  /** Disk bytes this tenant adds to its account's share (README, "Configuration"). */
  readonly diskShare: number | undefined;
  /** Days its account's copies are kept at most; undefined: `cache.retention_days` (README, "Retention"). */
  readonly retentionDays: number | undefined;
  readonly maxSignedUrlTtlSeconds: number;
  readonly webhookToken: string | undefined;
}

/** A presented API key that opened a tenant. */
export interface ApiKeyMatch {
  readonly tenant: Tenant;
  /** The first 12 hex digits of the key's sha256 digest: names the key (in the audit trail) without revealing it. */
  readonly keyId: string;
}

/** Hex digits of a key's digest that name it in the audit trail. */
const KEY_ID_HEX_DIGITS = 12;

export interface TenantRegistry {
  /** The tenant owning this presented API key, found by its sha256 digest. */
  byApiKey(key: string): Tenant | undefined;
  /** The same lookup, with the key's id. */
  matchApiKey(key: string): ApiKeyMatch | undefined;
  byId(id: string): Tenant | undefined;
  readonly all: readonly Tenant[];
  /** Every origin any tenant allows: what a preflight, which carries no credentials, is checked against. */
  readonly anyAllowedOrigin: ReadonlySet<string>;
}

/** The namespace of an upstream account; stable across restarts and replicas. */
export function upstreamNamespace(baseUrl: string, apiKey: string): string {
  // Its own flat string, not a slice of the digest's: memory hits find it in maps by it, comparing it character by character.
  return Buffer.from(sha256Hex(`flyflow-account\n${baseUrl}\n${apiKey}`).slice(0, 32), 'latin1').toString('latin1');
}

function toTenant(config: TenantConfig, upstream: GatewayConfig['upstream']): Tenant {
  const upstreamApiKey = config.upstreamApiKey ?? upstream.apiKey;
  return {
    id: config.id,
    namespace: upstreamNamespace(upstream.baseUrl, upstreamApiKey),
    upstreamApiKey,
    signingKeys: new Map(config.signingKeys.map((key) => [key.kid, key.secret])),
    allowedOrigins: new Set(config.allowedOrigins),
    rateLimitPerMinute: config.rateLimitPerMinute,
    diskShare: config.diskShare,
    retentionDays: config.retentionDays,
    maxSignedUrlTtlSeconds: config.maxSignedUrlTtlSeconds,
    webhookToken: config.webhookToken,
  };
}

const KNOWN_KEYS_MAX = 1024;

/** Builds the lookup tables once, at start-up. */
export function createTenantRegistry(config: Pick<GatewayConfig, 'tenants' | 'upstream'>): TenantRegistry {
  const all = config.tenants.map((tenant) => toTenant(tenant, config.upstream));
  const byId = new Map(all.map((tenant) => [tenant.id, tenant]));
  const byDigest = new Map<string, ApiKeyMatch>();
  config.tenants.forEach((tenantConfig, index) => {
    for (const digest of tenantConfig.apiKeyDigests) {
      byDigest.set(digest, { tenant: all[index]!, keyId: digest.slice(0, KEY_ID_HEX_DIGITS) });
    }
  });
  const anyAllowedOrigin = new Set(all.flatMap((tenant) => [...tenant.allowedOrigins]));
  // Keys that opened a tenant, so a busy client's key is hashed once, not per
  // request. Only valid keys are kept (a flood of wrong ones cannot fill it),
  // and the whole map is dropped when it is full.
  const known = new Map<string, ApiKeyMatch>();
  function matchApiKey(key: string): ApiKeyMatch | undefined {
    const cached = known.get(key);
    if (cached) return cached;
    const match = byDigest.get(sha256Hex(key));
    if (match) {
      if (known.size >= KNOWN_KEYS_MAX) known.clear();
      known.set(key, match);
    }
    return match;
  }
  return {
    byApiKey: (key) => matchApiKey(key)?.tenant,
    matchApiKey,
    byId: (id) => byId.get(id),
    all,
    anyAllowedOrigin,
  };
}
