import type { Context } from 'hono';
import { bearerToken, refusedCredential } from '../auth/bearer.js';
import { constantTimeEqual } from '../auth/constant-time.js';
import { UnauthorizedError } from '../errors.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';

/** GET /metrics in Prometheus text format, behind `Authorization: Bearer $ADMIN_TOKEN` when one is set. */
export function createMetricsHandler(metrics: GatewayMetrics, adminToken: string | undefined) {
  return async function metricsHandler(c: Context): Promise<Response> {
    if (adminToken !== undefined) {
      const authorization = c.req.header('authorization');
      if (!authorization) throw new UnauthorizedError('missing', 'Missing credentials: send Authorization: Bearer <admin token>');
      const token = bearerToken(authorization);
      if (token === undefined) throw new UnauthorizedError(refusedCredential(authorization));
      if (!constantTimeEqual(token, adminToken)) throw new UnauthorizedError('invalid');
    }
    return new Response(await metrics.registry.metrics(), {
      headers: { 'Content-Type': metrics.registry.contentType, 'Cache-Control': 'no-store' },
    });
  };
}
