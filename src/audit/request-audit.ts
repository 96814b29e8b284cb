import type { ResponseEnd } from '../http/response-closed.js';
import type { RequestRecord } from '../routes/request-log.js';
import { auditEventFor } from './audit-event.js';
import type { AuditRecorder } from './audit-trail.js';

/**
 * Hands a finished request to the audit trail when it is audited (see
 * `auditEventFor`). Called by the request reporter once the answer is sent,
 * or its client went away; the request's headers are read only for audited
 * requests. A request whose client left before any answer went out is
 * audited with no status: the one it was about to get never reached it.
 */
export function auditRequest(audit: AuditRecorder, record: RequestRecord, time: number, end: ResponseEnd): void {
  const event = auditEventFor({
    time,
    requestId: record.requestId,
    method: record.method,
    path: record.path,
    status: end === 'unanswered' ? null : record.status,
    caller: record.caller,
    callId: record.callId,
    cache: record.cache === 'none' ? undefined : record.cache,
    adminPurge: record.adminPurge,
    minted: record.minted,
    clientAddress: record.clientAddress,
    bytesSent: record.bodyBytes,
    header: record.header,
  });
  if (event) audit.record(event);
}
