import type { CacheIndexConfig } from './fields.js';

/** The gateway's configuration, parsed once at start-up: camelCase, defaults applied, secrets resolved. */
export interface GatewayConfig {
  listen: {
    host: string;
    port: number;
    /** Open client connections at most; absent: derived from the open-file limit when the server starts. */
    maxConnections?: number;
    /** Longest wait for a request's headers. */
    headersTimeoutMs: number;
    /** Longest wait for a whole request (headers and body); never limits the response. */
    requestTimeoutMs: number;
    /** How long an idle keep-alive connection stays open. */
    keepAliveTimeoutMs: number;
  };
  /** Absolute http(s) URL without trailing slash; makes signed URLs absolute. */
  publicBaseUrl?: string;
  /** Bearer token for `/metrics`; when absent, `/metrics` is open. */
  adminToken?: string;
  upstream: {
    /** No trailing slash. */
    baseUrl: string;
    /** The Flyflow server key; '' only when loaded with `requireSecrets: false`. */
    apiKey: string;
    /** Budget for the response head, retries included. */
    timeoutMs: number;
    /** Longest silence allowed while a body streams. */
    bodyIdleTimeoutMs: number;
    maxConcurrentDownloads: number;
    /** Consecutive outages that open the circuit, and how long it stays open. */
    circuitBreaker: { failureThreshold: number; cooldownSeconds: number };
  };
  cache: {
    /** Absolute path. */
    dir: string;
    /** How errors name the setting `dir` came from: `cache.dir`, or `cache.dir (CACHE_DIR)` when the environment set it. Default `cache.dir`. */
    dirSetting?: string;
    maxDiskBytes: number;
    maxMemoryBytes: number;
    maxRecordingBytes: number;
    index: CacheIndexConfig;
    notFoundTtlSeconds: number;
    /** `Cache-Control: max-age` for API-key callers. */
    maxAgeSeconds: number;
    /**
     * Days a copy is kept after it was fetched, fractions allowed (0.5 = 12 h);
     * 0: never kept on disk. Absent: kept until evicted. A tenant's `retentionDays` overrides it.
     */
    retentionDays?: number;
    /** Cached files on disk are encrypted (README, Compliance); absent: stored in the clear. */
    encryption?: CacheEncryptionConfig;
  };
  /** Bounds on Flyflow's webhook, each per tenant. */
  webhooks: {
    /** Webhook calls per minute; over it, 429. */
    rateLimitPerMinute: number;
    /** Prefetches queued or running; over it, an event is answered 503 for Flyflow to deliver again later. */
    maxQueuedPrefetches: number;
  };
  tenants: TenantConfig[];
  /** Several replicas acting as one cache (README, Cluster); absent: one gateway on its own. */
  cluster?: ClusterConfig;
  /** Who played which recording, when (README, Compliance); absent: no audit trail. */
  audit?: AuditConfig;
}

export interface CacheEncryptionConfig {
  /** The AES-256 key new files are written with: 32 bytes; empty only when loaded with `requireSecrets: false` and the key could not be read. */
  key: Buffer;
  /** Keys still accepted for reading, never for writing (rotation); each 32 bytes. Empty when none. */
  previousKeys: Buffer[];
  /**
   * Only when loaded with `requireSecrets: false`: the configured keys that could not be
   * read (unset, unreadable or malformed), each by its field and what is wrong, never a
   * value. Absent when every key was read. While it is set, files under a missing key
   * look damaged: nothing may remove or rewrite cache files.
   */
  unreadable?: Array<{ field: string; problem: string }>;
}

export interface AuditConfig {
  /** Absolute path of the directory of daily JSON Lines files. */
  dir: string;
  /** How errors name the setting `dir` came from: `audit.dir`, or `audit.dir (AUDIT_DIR)` when the environment set it. Default `audit.dir`. */
  dirSetting?: string;
  /** Days a daily file is kept, fractions allowed; default 365. */
  retentionDays: number;
}

export interface ClusterConfig {
  /** `redis://[user:pass@]host:port[/db]`: the cluster's shared state. */
  redisUrl: string;
  /** Unique per replica; default the host name. */
  nodeId: string;
  /** Where the other replicas reach this one; absent: `http://<listen host, or the host name when it listens on all>:<bound port>`. */
  advertiseUrl?: string;
  /** The same on every replica, at least 32 bytes: the only credential of the internal routes; '' only when loaded with `requireSecrets: false`. */
  peerSecret: string;
  /** Longest any one Redis call may take before it counts as failed. Default 250. */
  redisTimeoutMs: number;
}

export interface TenantConfig {
  id: string;
  /** SHA-256 digests of the tenant's API keys: lowercase hex, no `sha256:` prefix. */
  apiKeyDigests: string[];
  /** Each secret is at least `MIN_SIGNING_SECRET_BYTES` bytes. */
  signingKeys: { kid: string; secret: string }[];
  /** Exact origins (`scheme://host[:port]`). */
  allowedOrigins: string[];
  /** The tenant's own Flyflow key; when absent it uses the server key. */
  upstreamApiKey?: string;
  rateLimitPerMinute?: number;
  maxSignedUrlTtlSeconds: number;
  webhookToken?: string;
  /** Disk bytes this tenant adds to its upstream account's share of `cache.maxDiskBytes`; absent: an equal part of what is left. */
  diskShare?: number;
  /** Overrides `cache.retentionDays` for the copies this tenant reaches; same meaning. */
  retentionDays?: number;
}
