import type { RequestRecord } from '../routes/request-log.js';
import { auditEventFor } from './audit-event.js';
import type { AuditRecorder } from './audit-trail.js';

/**
 * Hands a finished request to the audit trail when it is audited (see
 * `auditEventFor`). Called by the request reporter once the answer is sent;
 * the request's headers are read only for audited requests.
 */
export function auditRequest(audit: AuditRecorder, record: RequestRecord, time: number): void {
  const event = auditEventFor({
    time,
    requestId: record.requestId,
    method: record.method,
    path: record.path,
    status: record.status,
    caller: record.caller,
    callId: record.callId,
    cache: record.cache === 'none' ? undefined : record.cache,
    adminPurge: record.adminPurge,
    clientAddress: record.clientAddress,
    bytesSent: record.bodyBytes,
    header: record.header,
  });
  if (event) audit.record(event);
}
