import type { Context } from 'hono';
import { constantTimeEqual } from '../auth/constant-time.js';
import type { TenantRegistry } from '../auth/tenants.js';
import type { Prefetch, PrefetchOptions } from '../recordings/prefetch.js';
import { parseCallId } from '../recordings/call-id.js';
import { BadRequestError, UnauthorizedError } from '../errors.js';
import type { GatewayEnv } from './gateway-env.js';
import type { Logger } from '../logger.js';

export interface WebhookDeps {
  tenants: TenantRegistry;
  prefetch: Prefetch;
  prefetchOptions: PrefetchOptions;
  logger: Logger;
  /** Keeps track of background prefetches so shutdown can wait for them. */
  track(task: Promise<unknown>): void;
}

/**
 * POST /v1/webhooks/flyflow/{tenant}?token=… — Flyflow's call events. Flyflow
 * signs nothing, so the URL carries a per-tenant secret token. `call_ended`
 * warms the cache in the background, so the first listener gets a hit; the
 * answer is 202 at once either way, and other events are acknowledged and ignored.
 */
export function createWebhookHandler(deps: WebhookDeps) {
  return async function flyflowWebhook(c: Context<GatewayEnv>): Promise<Response> {
    const tenant = deps.tenants.byId(c.req.param('tenant') ?? '');
    const token = c.req.query('token');
    if (!token) throw new UnauthorizedError('missing');
    if (!tenant?.webhookToken || !constantTimeEqual(token, tenant.webhookToken)) throw new UnauthorizedError('invalid');

    let event: unknown;
    try {
      event = await c.req.json();
    } catch {
      throw new BadRequestError('Body must be a JSON event such as {"event_type": "call_ended", "call_id": 694}');
    }
    const { event_type: type, call_id: rawCallId } = (event ?? {}) as Record<string, unknown>;
    if (type !== 'call_ended') return c.json({ status: 'ignored' }, 202);
    if (typeof rawCallId !== 'number' && typeof rawCallId !== 'string') throw new BadRequestError('call_id must be a call id');
    const callId = parseCallId(String(rawCallId));
    c.set('caller', { tenant, credential: { kind: 'webhook-token' } });
    c.set('callId', callId);
    deps.logger.info({ tenant: tenant.id, callId }, 'call ended; prefetching its recording');
    deps.track(deps.prefetch(tenant, callId, deps.prefetchOptions));
    return c.json({ status: 'accepted' }, 202);
  };
}
