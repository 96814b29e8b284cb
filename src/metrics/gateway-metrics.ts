import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { UpstreamErrorKind } from '../upstream/errors.js';
import type { AuditTrailStatus } from '../audit/audit-trail.js';
import { RequestCounts, type RequestLabels } from './request-counts.js';

/** What the metrics read at scrape time, so nothing on the request path has to keep gauges current. */
export interface MetricsSources {
  cacheStats(): { diskEntries: number; diskBytes: number; memoryEntries: number; memoryBytes: number };
  /** Downloads holding one of upstream.max_concurrent_downloads slots. */
  downloadsInFlight(): number;
  /** Downloads waiting for a slot. */
  downloadsQueued(): number;
  /** Each upstream account's circuit, the account named by a short prefix of its namespace (never a key). */
  circuitStates(): Array<{ account: string; state: 'closed' | 'open' | 'half-open' }>;
  /** The webhook's background prefetches: waiting for their turn, and under way. */
  webhookPrefetches(): { queued: number; running: number };
  /** Cluster mode only: whether Redis answers, and how many other replicas are alive. */
  cluster?(): { redis: 'up' | 'unreachable'; peers: number };
  /** The audit trail's counts, when this process keeps one. */
  audit?(): AuditTrailStatus;
}

/** Where a replica got a recording it did not hold from another replica. */
export type PeerFetchOrigin = 'peer-download' | 'peer-copy';

/** Why a webhook event was refused: over the tenant's webhook rate limit (429), its prefetch queue full or shutdown (503). */
export type WebhookRefusal = 'rate_limited' | 'queue_full' | 'shutting_down';

export type UpstreamOutcome = 'ok' | UpstreamErrorKind;

const PREFIX = 'recording_gateway_';
const CIRCUIT_STATES = ['closed', 'half-open', 'open'] as const;

/** Where an answer's bytes came from: a tier of this replica, the upstream, or (cluster) another replica. */
export type ServedTier = 'memory' | 'disk' | 'upstream' | 'peer';

/**
 * The gateway's Prometheus metrics, in a registry of its own (several
 * gateways in one process, as in tests, never share counters). Names follow
 * Prometheus conventions: base units, `_total` on counters.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  /** Bytes by tier, summed here and handed to prom-client at scrape time, as the request counts are. */
  readonly #servedBytes: Record<ServedTier, number> = { memory: 0, disk: 0, upstream: 0, peer: 0 };
  readonly #upstreamDuration: Histogram<'outcome'>;
  readonly #upstreamErrors: Counter<'kind'>;
  readonly #joiners: Counter;
  readonly #evictions: Counter;
  readonly #retentionExpired: Counter;
  readonly #webhookRefusals: Counter<'reason'>;
  readonly #peerFetches: Counter<'origin'>;
  /** Requests by label set, counted here and handed to prom-client at scrape time: hashing labels per request costs more. */
  readonly #requestCounts = new RequestCounts();
  readonly #redisFallbacks: Counter<'use'>;

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    const requestCounts = this.#requestCounts;
    new Counter({
      name: `${PREFIX}requests_total`,
      help: 'Requests answered, by route, method, status, tenant and cache result (hit, miss, collapsed, none).',
      labelNames: ['route', 'method', 'status', 'tenant', 'cache'],
      registers,
      collect() {
        this.reset();
        for (const { labels, count } of requestCounts.all()) this.inc(labels, count);
      },
    });
    const servedBytes = this.#servedBytes;
    new Counter({
      name: `${PREFIX}served_bytes_total`,
      help: 'Recording bytes sent to clients, by the tier that served them (memory, disk, upstream, peer: another replica).',
      labelNames: ['tier'],
      registers,
      collect() {
        this.reset();
        for (const [tier, bytes] of Object.entries(servedBytes)) if (bytes > 0) this.inc({ tier }, bytes);
      },
    });
    this.#upstreamDuration = new Histogram({
      name: `${PREFIX}upstream_request_duration_seconds`,
      help: 'Time until the upstream answered with a usable head (retries included), by outcome.',
      labelNames: ['outcome'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.#upstreamErrors = new Counter({
      name: `${PREFIX}upstream_errors_total`,
      help: 'Failed upstream requests, by kind.',
      labelNames: ['kind'],
      registers,
    });
    this.#joiners = new Counter({
      name: `${PREFIX}download_joiners_total`,
      help: 'Requests that joined a download already under way instead of starting one.',
      registers,
    });
    this.#evictions = new Counter({
      name: `${PREFIX}cache_evictions_total`,
      help: 'Recordings evicted from disk to stay within cache.max_disk_bytes.',
      registers,
    });
    this.#retentionExpired = new Counter({
      name: `${PREFIX}retention_expired_total`,
      help: 'Recordings deleted from the cache because they were older than their retention_days.',
      registers,
    });
    this.#webhookRefusals = new Counter({
      name: `${PREFIX}webhook_events_refused_total`,
      help: 'Webhook events refused, by reason (rate_limited, queue_full, shutting_down).',
      labelNames: ['reason'],
      registers,
    });
    this.#peerFetches = new Counter({
      name: `${PREFIX}cluster_peer_fetches_total`,
      help: "Recordings streamed from another replica instead of the upstream, by origin (peer-download: its download under way; peer-copy: its volume's copy).",
      labelNames: ['origin'],
      registers,
    });
    this.#redisFallbacks = new Counter({
      name: `${PREFIX}cluster_redis_fallbacks_total`,
      help: 'Decisions this replica took on its own because Redis did not answer in time, by use (rate_limit).',
      labelNames: ['use'],
      registers,
    });
    if (sources.cluster) {
      const cluster = sources.cluster;
      new Gauge({
        name: `${PREFIX}cluster_redis_up`,
        help: "1 while the cluster's Redis answers; 0 while this replica runs degraded, on its own.",
        registers,
        collect() {
          this.set(cluster().redis === 'up' ? 1 : 0);
        },
      });
      new Gauge({
        name: `${PREFIX}cluster_peers`,
        help: 'Other replicas seen alive at the last heartbeat.',
        registers,
        collect() {
          this.set(cluster().peers);
        },
      });
    }
    if (sources.audit) this.#auditMetrics(sources.audit, registers);
    new Gauge({
      name: `${PREFIX}webhook_prefetches`,
      help: 'Webhook-triggered prefetches, by state (queued, running).',
      labelNames: ['state'],
      registers,
      collect() {
        const { queued, running } = sources.webhookPrefetches();
        this.set({ state: 'queued' }, queued);
        this.set({ state: 'running' }, running);
      },
    });
    new Gauge({
      name: `${PREFIX}cache_entries`,
      help: 'Recordings cached, by tier.',
      labelNames: ['tier'],
      registers,
      collect() {
        const stats = sources.cacheStats();
        this.set({ tier: 'disk' }, stats.diskEntries);
        this.set({ tier: 'memory' }, stats.memoryEntries);
      },
    });
    new Gauge({
      name: `${PREFIX}cache_bytes`,
      help: 'Bytes cached, by tier.',
      labelNames: ['tier'],
      registers,
      collect() {
        const stats = sources.cacheStats();
        this.set({ tier: 'disk' }, stats.diskBytes);
        this.set({ tier: 'memory' }, stats.memoryBytes);
      },
    });
    new Gauge({
      name: `${PREFIX}downloads_in_flight`,
      help: 'Downloads under way, each holding a slot (at most upstream.max_concurrent_downloads); those waiting for one are downloads_queued.',
      registers,
      collect() {
        this.set(sources.downloadsInFlight());
      },
    });
    new Gauge({
      name: `${PREFIX}downloads_queued`,
      help: 'Downloads waiting for a slot under upstream.max_concurrent_downloads.',
      registers,
      collect() {
        this.set(sources.downloadsQueued());
      },
    });
    // One circuit per upstream account: the totals say at a glance whether any
    // is open, the per-account series say which.
    new Gauge({
      name: `${PREFIX}upstream_circuit_state`,
      help: 'Upstream circuit breakers (one per upstream account) in each state.',
      labelNames: ['state'],
      registers,
      collect() {
        const circuits = sources.circuitStates();
        for (const state of CIRCUIT_STATES) this.set({ state }, circuits.filter((circuit) => circuit.state === state).length);
      },
    });
    new Gauge({
      name: `${PREFIX}upstream_account_circuit_state`,
      help: "Each upstream account's circuit breaker, by a short prefix of its cache namespace: 1 for the current state, 0 for the others.",
      labelNames: ['account', 'state'],
      registers,
      collect() {
        this.reset();
        for (const { account, state: current } of sources.circuitStates()) {
          for (const state of CIRCUIT_STATES) this.set({ account, state }, state === current ? 1 : 0);
        }
      },
    });
  }

  /** Read from the trail at scrape time: `record` stays free of metric updates. */
  #auditMetrics(audit: NonNullable<MetricsSources['audit']>, registers: Registry[]): void {
    const count = (key: 'writeErrors' | 'droppedLines') => audit()[key];
    new Counter({
      name: `${PREFIX}audit_write_errors_total`,
      help: 'Writes of the audit trail that failed (each retry counts); while they fail, lines wait in memory.',
      registers,
      collect() {
        this.reset();
        this.inc(count('writeErrors'));
      },
    });
    new Counter({
      name: `${PREFIX}audit_dropped_lines_total`,
      help: 'Audit lines lost: over the in-memory bound while the audit disk failed, or unwritten at shutdown.',
      registers,
      collect() {
        this.reset();
        this.inc(count('droppedLines'));
      },
    });
    new Gauge({
      name: `${PREFIX}audit_pending_lines`,
      help: 'Audit lines recorded and not yet written.',
      registers,
      collect() {
        this.set(audit().pendingLines);
      },
    });
  }

  requestDone(labels: RequestLabels): void {
    this.#requestCounts.add(labels);
  }

  bytesServed(tier: ServedTier, bytes: number): void {
    this.#servedBytes[tier] += bytes;
  }

  upstreamAnswered(outcome: UpstreamOutcome, seconds: number): void {
    this.#upstreamDuration.observe({ outcome }, seconds);
    if (outcome !== 'ok' && outcome !== 'not_found') this.#upstreamErrors.inc({ kind: outcome });
  }

  /** An upstream answer whose head was `ok` and whose body then failed (not MP3, cut short, stalled). */
  upstreamBodyFailed(kind: UpstreamOutcome): void {
    this.#upstreamErrors.inc({ kind });
  }

  joinedDownload(): void {
    this.#joiners.inc();
  }

  evicted(count: number): void {
    this.#evictions.inc(count);
  }

  retentionExpired(count: number): void {
    this.#retentionExpired.inc(count);
  }

  webhookEventRefused(reason: WebhookRefusal): void {
    this.#webhookRefusals.inc({ reason });
  }

  peerFetched(origin: PeerFetchOrigin): void {
    this.#peerFetches.inc({ origin });
  }

  redisFallback(use: 'rate_limit'): void {
    this.#redisFallbacks.inc({ use });
  }
}
