import { randomUUID } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import type { AuditRecorder } from '../audit/audit-trail.js';
import { auditRequest } from '../audit/request-audit.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { GatewayEnv } from './gateway-env.js';
import { rawRequestPath } from './request-target.js';

// A caller's request id is kept only when it cannot smuggle anything into a log line.
const WELL_FORMED_REQUEST_ID = /^[A-Za-z0-9._:-]{8,128}$/;

/** A bounded label for the route, never the raw path (which carries ids). */
function routeLabel(routePath: string, method: string): string {
  if (method === 'OPTIONS') return 'preflight';
  if (routePath.startsWith('/v1/call/recording')) return 'recording';
  if (routePath.startsWith('/v1/webhooks')) return 'webhook';
  if (routePath.startsWith('/internal/')) return 'peer';
  if (routePath === '/healthz' || routePath === '/readyz' || routePath === '/metrics') return routePath.slice(1);
  return 'other';
}

/**
 * One log line and one metrics update per request, written when the response
 * has been sent (or the client went away), with a request id that is also
 * returned as `X-Request-Id`. It logs the path without its query string, so a
 * signature never reaches a log; headers are never logged.
 */
export function requestLog(logger: Logger, clock: Clock, metrics: GatewayMetrics, audit?: AuditRecorder): MiddlewareHandler<GatewayEnv> {
  // The line's fields are named here and hold no header or query value, so the
  // logger's redaction (a walk of every line, about 5 µs) has nothing to do on it.
  const lines = logger.child({}, { redact: [] });
  return async function requestLog(c, next) {
    const startedAt = clock.now();
    const presented = c.req.header('x-request-id');
    const requestId = presented && WELL_FORMED_REQUEST_ID.test(presented) ? presented : randomUUID();
    c.set('requestId', requestId);
    await next();
    const answered = c.get('answered');
    // A recording answer already carries the id; touching its headers here would
    // turn @hono/node-server's fast Buffer write into a stream.
    if (!answered) c.res.headers.set('X-Request-Id', requestId);
    const status = c.res.status;

    const finish = (sent: boolean) => {
      const caller = c.get('caller');
      const bodyBytes = answered ? answered.outcome.bodyBytes : 0;
      const route = routeLabel(c.req.routePath, c.req.method);
      const cache = answered?.cache ?? 'none';
      metrics.requestDone({ route, method: c.req.method, status, tenant: caller?.tenant.id ?? 'none', cache });
      if (answered && status < 300) metrics.bytesServed(answered.tier, bodyBytes);
      const line: Record<string, unknown> = {
        reqId: requestId,
        method: c.req.method,
        path: rawRequestPath(c),
        route,
        tenant: caller?.tenant.id,
        callId: c.get('callId'),
        credential: caller?.credential.kind,
        status,
        cache,
        bytes: bodyBytes,
        durationMs: clock.now() - startedAt,
        upstreamMs: c.get('upstreamMs'),
      };
      if (!sent) line.aborted = true;
      lines.info(line, 'request');
      if (audit) auditRequest(audit, c, requestId, line.path as string, clock.now());
    };

    const outgoing = c.env?.outgoing;
    if (!outgoing) {
      finish(true);
      return;
    }
    outgoing.once('close', () => finish(outgoing.writableFinished));
  };
}
