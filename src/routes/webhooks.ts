import type { Context } from 'hono';
import { constantTimeEqual } from '../auth/constant-time.js';
import type { TenantRegistry } from '../auth/tenants.js';
import type { PrefetchQueue } from '../recordings/prefetch.js';
import { parseCallId } from '../recordings/call-id.js';
import { BadRequestError, ServiceUnavailableError, TooManyRequestsError, UnauthorizedError } from '../errors.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { TenantRateLimiter } from '../rate-limit/index.js';
import type { GatewayEnv } from './gateway-env.js';
import type { Logger } from '../logger.js';

export interface WebhookDeps {
  tenants: TenantRegistry;
  /** The background prefetches: one per call at a time, a bounded number per tenant. */
  prefetches: Pick<PrefetchQueue, 'enqueue'>;
  /** Counts webhook calls, apart from the tenant's own requests. */
  limiter: TenantRateLimiter;
  /** Webhook calls per minute per tenant (`webhooks.rate_limit_per_minute`). */
  rateLimitPerMinute: number;
  metrics: Pick<GatewayMetrics, 'webhookEventRefused'>;
  logger: Logger;
}

const MISSING_TOKEN = 'Missing credentials: add ?token=<webhook token>';

/** About how long a full queue takes to make room: a few prefetches' retries. */
const QUEUE_FULL_RETRY_AFTER_SECONDS = 10;

/** What an event's JSON object may hold (the rest is ignored). */
interface EventFields {
  event_type?: unknown;
  call_id?: unknown;
}

/**
 * POST /v1/webhooks/flyflow/{tenant}?token=… — Flyflow's call events. Flyflow
 * signs nothing, so the URL carries a per-tenant secret token. `call_ended`
 * warms the cache in the background, so the first listener gets a hit; the
 * answer is 202 at once, and other events are acknowledged and ignored.
 *
 * Bounded, so a flood of events cannot turn into a flood of upstream
 * requests: each call counts against the tenant's webhook rate limit (429)
 * before anything else is done; an event for a call already being
 * prefetched joins that prefetch; and a tenant with too many prefetches
 * queued gets 503 with Retry-After, so Flyflow delivers the event again
 * later instead of it being lost.
 */
export function createWebhookHandler(deps: WebhookDeps) {
  return async function flyflowWebhook(c: Context<GatewayEnv>): Promise<Response> {
    const tenant = deps.tenants.byId(c.req.param('tenant') ?? '');
    const token = c.req.query('token');
    if (!token) throw new UnauthorizedError('missing', MISSING_TOKEN);
    if (!tenant?.webhookToken || !constantTimeEqual(token, tenant.webhookToken)) throw new UnauthorizedError('invalid');
    c.set('caller', { tenant, credential: { kind: 'webhook-token' } });

    let rateLimit: Record<string, string> | undefined;
    try {
      // Tenant ids have no ':', so this key never meets a tenant's own bucket.
      rateLimit = await deps.limiter.check({ id: `webhook:${tenant.id}`, rateLimitPerMinute: deps.rateLimitPerMinute });
    } catch (error) {
      if (error instanceof TooManyRequestsError) deps.metrics.webhookEventRefused('rate_limited');
      throw error;
    }

    let event: unknown;
    try {
      event = await c.req.json();
    } catch {
      event = undefined;
    }
    // An event of another type is acknowledged; one with no type at all is not an event.
    if (typeof event !== 'object' || event === null || Array.isArray(event) || typeof (event as EventFields).event_type !== 'string') {
      throw new BadRequestError('Body must be a JSON event such as {"event_type": "call_ended", "call_id": 694}');
    }
    const { event_type: type, call_id: rawCallId } = event as EventFields;
    if (type !== 'call_ended') return c.json({ status: 'ignored' }, 202, rateLimit);
    if (typeof rawCallId !== 'number' && typeof rawCallId !== 'string') throw new BadRequestError('call_id must be a call id');
    const callId = parseCallId(String(rawCallId));
    c.set('callId', callId);

    const outcome = deps.prefetches.enqueue(tenant, callId);
    if (outcome === 'full' || outcome === 'closed') {
      deps.metrics.webhookEventRefused(outcome === 'full' ? 'queue_full' : 'shutting_down');
      const message =
        outcome === 'full'
          ? 'Too many recordings are waiting to be prefetched for this tenant; deliver the event again later'
          : 'The gateway is shutting down; deliver the event again later';
      throw new ServiceUnavailableError(message, QUEUE_FULL_RETRY_AFTER_SECONDS);
    }
    if (outcome === 'queued') deps.logger.info({ tenant: tenant.id, callId }, 'call ended; prefetching its recording');
    return c.json({ status: 'accepted' }, 202, rateLimit);
  };
}
