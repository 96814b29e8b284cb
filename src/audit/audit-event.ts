import type { Caller } from '../auth/authenticate.js';
import { ADMIN_PURGE_PATH } from '../admin-api.js';
import { isCanonicalCallId } from '../recordings/call-id.js';
import { RECORDING_PREFIX } from '../routes/request-target.js';

/** What an audit line is about (README, Compliance). */
export type AuditEventKind = 'recording' | 'info' | 'peaks' | 'signed-url' | 'purge';

/**
 * Who asked, named without anything that would let a reader use it: the
 * first 12 hex digits of an API key's sha256 digest (as in `api_keys`), a
 * signed URL's kid, how an admin purge was authorized, or the system user
 * that ran a CLI purge no gateway did.
 */
export type AuditCredential =
  | { kind: 'api-key'; key: string }
  | { kind: 'signed-url'; kid: string }
  | { kind: 'admin-token' }
  | { kind: 'local-grant' }
  | { kind: 'cli'; user: string | null };

/** The signed URL a `signed-url` event handed out: the key it is signed with and its `exp`, never its signature. */
export interface MintedUrl {
  kid: string;
  /** The URL's `exp`: seconds since the epoch. */
  exp: number;
}

/** One audited request; `AuditTrail.record` turns it into one JSON line. */
export interface AuditEvent {
  /** When the answer was finished, milliseconds since the epoch. */
  time: number;
  requestId: string;
  event: AuditEventKind;
  /** Whose recordings: the caller's tenant, or the tenant an admin purge named (null: every tenant). */
  tenant: string | null;
  credential: AuditCredential;
  /** null: an admin purge of a whole tenant or of everything. */
  callId: string | null;
  method: string;
  /** The status answered; null when none was: the client went away before the answer's head was sent. */
  status: number | null;
  /** Audio bytes of a recording answer handed to the connection; 0 for the other events' small JSON answers. */
  bytesSent: number;
  /** The Range header as sent, cut to {@link MAX_RANGE_CHARS}. */
  range: string | null;
  /** `hit`, `miss`, `collapsed`; null where no cache lookup answered. */
  cache: string | null;
  client: string | null;
  /** Cut to {@link MAX_USER_AGENT_CHARS}. */
  userAgent: string | null;
  /** Only on a `signed-url` event that made its URL: a refused mint made none. */
  minted?: MintedUrl | undefined;
}

/** What the admin purge route leaves on the request for the audit line. */
export interface AdminPurgeAudit {
  credential: 'admin-token' | 'local-grant';
  /** The tenant and call the purge named, once its body was read. */
  tenant?: string;
  callId?: string;
}

/** Everything a finished request knows that an audit line may need. `header` is called only for audited requests. */
export interface AuditedRequest {
  time: number;
  requestId: string;
  method: string;
  /** The path as sent, without the query string (which may hold a signature). */
  path: string;
  /** null: no answer was sent (see {@link AuditEvent.status}). */
  status: number | null;
  caller: Caller | undefined;
  callId: string | undefined;
  cache: string | undefined;
  adminPurge: AdminPurgeAudit | undefined;
  /** Set by the signed-URL route once it signed the URL. */
  minted: MintedUrl | undefined;
  clientAddress: string | undefined;
  /** Audio bytes of a recording answer handed to the connection (the request log's `bytes`); 0 for other answers. */
  bytesSent: number;
  header(name: 'range' | 'user-agent'): string | undefined;
}

// Bounds, so a client cannot make its lines (and the trail) grow with its headers.
const MAX_RANGE_CHARS = 100;
const MAX_USER_AGENT_CHARS = 200;

const RECORDING_ROUTE = /^\/v1\/call\/recording\/[0-9]+(\.mp3|\/info\.json|\/peaks\.json|\/signed-url)$/;

function bounded(value: string | undefined, max: number): string | null {
  if (value === undefined) return null;
  return value.length > max ? value.slice(0, max) : value;
}

/** Which event a request to a recording route is, by its path's ending and method. */
function recordingRouteEvent(method: string, path: string): AuditEventKind | undefined {
  const ending = RECORDING_ROUTE.exec(path)?.[1];
  if (ending === '.mp3') {
    if (method === 'GET' || method === 'HEAD') return 'recording';
    if (method === 'DELETE') return 'purge';
    return undefined;
  }
  if (ending === '/signed-url') return method === 'POST' ? 'signed-url' : undefined;
  if (method !== 'GET' && method !== 'HEAD') return undefined;
  if (ending === '/info.json') return 'info';
  if (ending === '/peaks.json') return 'peaks';
  return undefined;
}

function callerCredential(caller: Caller): AuditCredential | undefined {
  const { credential } = caller;
  if (credential.kind === 'api-key') return { kind: 'api-key', key: credential.keyId };
  if (credential.kind === 'signed-url') return { kind: 'signed-url', kid: credential.kid };
  return undefined;
}

/**
 * The audit event of a finished request, or undefined when it is not audited.
 * Audited: every request to a recording, its info.json or peaks.json (GET,
 * HEAD), a DELETE of it, a signed-URL POST, and an admin purge, once its
 * caller was authenticated, whatever the answer (200, 206, 304, 404, 429,
 * 502...). Requests whose credentials failed are not: they name no tenant,
 * anyone can send them, and the request log and metrics count them.
 */
export function auditEventFor(request: AuditedRequest): AuditEvent | undefined {
  const { method, path } = request;
  let event: AuditEventKind | undefined;
  let tenant: string | null = null;
  let credential: AuditCredential | undefined;
  let callId: string | null = null;
  if (path.startsWith(RECORDING_PREFIX)) {
    const { caller } = request;
    if (caller === undefined || request.callId === undefined) return undefined;
    event = recordingRouteEvent(method, path);
    credential = callerCredential(caller);
    tenant = caller.tenant.id;
    callId = request.callId;
  } else if (path === ADMIN_PURGE_PATH && request.adminPurge !== undefined) {
    event = 'purge';
    credential = { kind: request.adminPurge.credential };
    tenant = request.adminPurge.tenant ?? null;
    callId = request.adminPurge.callId ?? null;
  }
  if (event === undefined || credential === undefined) return undefined;
  return {
    time: request.time,
    requestId: request.requestId,
    event,
    tenant,
    credential,
    callId,
    method,
    status: request.status,
    bytesSent: request.bytesSent,
    range: bounded(request.header('range'), MAX_RANGE_CHARS),
    cache: request.cache ?? null,
    client: request.clientAddress ?? null,
    userAgent: bounded(request.header('user-agent'), MAX_USER_AGENT_CHARS),
    // A property always there, not spread in: every event keeps one shape.
    minted: event === 'signed-url' ? request.minted : undefined,
  };
}

const quote = JSON.stringify;

function nullable(value: string | null): string {
  return value === null ? 'null' : quote(value);
}

function credentialJson(credential: AuditCredential): string {
  if (credential.kind === 'api-key') return `{"kind":"api-key","key":${quote(credential.key)}}`;
  if (credential.kind === 'signed-url') return `{"kind":"signed-url","kid":${quote(credential.kid)}}`;
  if (credential.kind === 'cli') return `{"kind":"cli","user":${nullable(credential.user)}}`;
  return `{"kind":"${credential.kind}"}`;
}

/**
 * The event's JSON line without its closing brace: the writer appends
 * `,"prev":"<sha256 of the line before>"}` once it knows the line before.
 * Keys in snake_case like the HTTP API's, always in this order; `minted`,
 * after `user_agent`, only on a line that minted a URL, as `dropped_lines`
 * is only on a `dropped` line: every other line stays as it was. Built by
 * hand, every string through JSON.stringify: a third cheaper than
 * stringifying an object, and the key order is fixed here.
 */
export function auditLineStart(event: AuditEvent): string {
  const { callId } = event;
  // Call ids are at most 2^53-1 (contract, section 2): exact as JSON numbers.
  const call = callId === null ? 'null' : isCanonicalCallId(callId) ? callId : quote(callId);
  return (
    `{"time":"${new Date(event.time).toISOString()}","request_id":${quote(event.requestId)},"event":"${event.event}",` +
    `"tenant":${nullable(event.tenant)},"credential":${credentialJson(event.credential)},"call_id":${call},` +
    `"method":${quote(event.method)},"status":${event.status ?? 'null'},"bytes_sent":${event.bytesSent},"range":${nullable(event.range)},` +
    `"cache":${nullable(event.cache)},"client":${nullable(event.client)},"user_agent":${nullable(event.userAgent)}` +
    (event.minted ? `,"minted":{"kid":${quote(event.minted.kid)},"exp":${event.minted.exp}}` : '')
  );
}
