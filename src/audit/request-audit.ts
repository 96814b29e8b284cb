import type { Context } from 'hono';
import type { GatewayEnv } from '../routes/gateway-env.js';
import { auditEventFor } from './audit-event.js';
import type { AuditRecorder } from './audit-trail.js';

/**
 * Hands a finished request to the audit trail when it is audited (see
 * `auditEventFor`). Called from the request log once the answer is sent; the
 * request's headers are read only for audited requests.
 */
export function auditRequest(audit: AuditRecorder, c: Context<GatewayEnv>, requestId: string, path: string, time: number): void {
  const answered = c.get('answered');
  const incoming = c.env?.incoming;
  const event = auditEventFor({
    time,
    requestId,
    method: c.req.method,
    path,
    status: c.res.status,
    caller: c.get('caller'),
    callId: c.get('callId'),
    cache: answered?.cache,
    adminPurge: c.get('adminPurge'),
    clientAddress: incoming?.socket?.remoteAddress,
    bytesSent: answered ? answered.outcome.bodyBytes : 0,
    // Node's parsed headers when served over HTTP: reading them costs less than building a Headers object.
    header: (name) => {
      const value = incoming ? incoming.headers[name] : c.req.header(name);
      return typeof value === 'string' ? value : undefined;
    },
  });
  if (event) audit.record(event);
}
