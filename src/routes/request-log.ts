import type { MiddlewareHandler } from 'hono';
import type { AdminPurgeAudit, MintedUrl } from '../audit/audit-event.js';
import type { AuditRecorder } from '../audit/audit-trail.js';
import { auditRequest } from '../audit/request-audit.js';
import type { Caller } from '../auth/authenticate.js';
import type { Clock } from '../clock.js';
import { whenClosed, type ResponseEnd } from '../http/response-closed.js';
import { infoLineWriter, REQUEST_LINE, type Logger } from '../logger.js';
import type { GatewayMetrics, ServedTier } from '../metrics/gateway-metrics.js';
import { randomUuid } from '../random-uuid.js';
import type { GatewayEnv } from './gateway-env.js';
import { rawRequestPath } from './request-target.js';

// A caller's request id is kept only when it cannot smuggle anything into a log line.
const WELL_FORMED_REQUEST_ID = /^[A-Za-z0-9._:-]{8,128}$/;

/** The caller's X-Request-Id when it is safe to log, else a new one. */
export function requestIdFrom(presented: string | undefined): string {
  return presented && WELL_FORMED_REQUEST_ID.test(presented) ? presented : randomUuid();
}

/** A bounded label for the route, never the raw path (which carries ids). */
export function routeLabel(routePath: string, method: string): string {
  if (method === 'OPTIONS') return 'preflight';
  if (routePath.startsWith('/v1/call/recording')) return 'recording';
  if (routePath.startsWith('/v1/webhooks')) return 'webhook';
  if (routePath.startsWith('/internal/')) return 'peer';
  if (routePath === '/healthz' || routePath === '/readyz' || routePath === '/metrics') return routePath.slice(1);
  return 'other';
}

// Every route's path is made of these (ids, tenant ids, namespaces, `.mp3`, `signed-url`).
const NOT_IN_ANY_ROUTE = /[^A-Za-z0-9/._-]/;
// Paths made only of our own words and ids of a fixed shape: logged whoever sent them.
const PLAIN_PATH =
  /^\/(?:healthz|readyz|metrics|openapi\.json|admin\/cache\/purge|v1\/call\/recording\/\d{1,20}(?:\.mp3|\/signed-url|\/info\.json|\/peaks\.json)|internal\/v1\/redis|internal\/v1\/(?:recordings|purge)\/[0-9a-f]{16,64}\/\d{1,20})$/;
// What a cut path ends with: the only character of a request line that is not ASCII.
const ELLIPSIS = '…'.charCodeAt(0);
// What is shown of any other path no credential vouched for: the route it was meant for, at most.
const ROUTE_PREFIXES = ['/v1/call/recording/', '/v1/webhooks/flyflow/', '/internal/v1/', '/admin/'];

/**
 * The path as the log shows it. A path no route has, or one whose caller no
 * credential vouched for, may carry a secret in a segment of its own (a
 * webhook token in place of the tenant id, a signing secret after `.mp3`):
 * unless it is made only of our words and ids, only the route it was meant
 * for is shown, then `…`. Any path is cut, with `…`, at its first character no
 * route has (`%`, `&`, `;`, `=`, ...), as a real query is cut, since a client
 * that encodes a query into the path (`%3F`, twice as `%253F`, after a `%23`)
 * or writes it there (`acme&token=...`, `4.mp3;sig=...`) would otherwise put
 * a valid signature or webhook token into the log. What it returns is made
 * only of `A-Za-z0-9/._-` and `…`, which JSON writes as they are.
 */
function loggedPath(path: string, vouched: boolean): string {
  if (PLAIN_PATH.test(path)) return path;
  if (!vouched) return `${ROUTE_PREFIXES.find((prefix) => path.startsWith(prefix)) ?? '/'}…`;
  const cut = path.search(NOT_IN_ANY_ROUTE);
  return cut === -1 ? path : `${path.slice(0, cut)}…`;
}

/** The method as a JSON string: the two of nearly every request without JSON.stringify. */
function jsonMethod(method: string): string {
  return method === 'GET' ? '"GET"' : method === 'HEAD' ? '"HEAD"' : JSON.stringify(method);
}

// Requests a route took whose rest Node's parser then refused (a malformed or late body), with the server's answer to them.
const answeredBeforeRoute = new WeakMap<object, { requestId: string; status: number }>();

/**
 * Says that the server answered `request` itself, with a refusal made before
 * its route could answer (the route's answer then never goes out): its line
 * says the refusal's id and status, those the client got.
 */
export function answeredBeforeItsRoute(request: object, refusal: { requestId: string; status: number }): void {
  answeredBeforeRoute.set(request, refusal);
}

/** What one answered request was: everything the log line and the metrics say of it. */
export interface RequestRecord {
  requestId: string;
  method: string;
  /** Without the query string: a signature never reaches a log. */
  path: string;
  route: string;
  caller: Caller | undefined;
  callId: string | undefined;
  status: number;
  cache: 'hit' | 'miss' | 'collapsed' | 'none';
  /** Where the audio came from, for an answer with audio (not for info.json or peaks.json). */
  tier: ServedTier | undefined;
  bodyBytes: number;
  startedAt: number;
  upstreamMs: number | undefined;
  /** The TCP peer, for the audit trail: read when the request arrived, since a closed socket no longer knows it. */
  clientAddress: string | undefined;
  /** A request header, read only for an audited request. */
  header(name: 'range' | 'user-agent'): string | undefined;
  /** What an admin purge named, for its audit line. */
  adminPurge?: AdminPurgeAudit | undefined;
  /** The kid and exp of the URL a signed-URL request minted, for its audit line. */
  minted?: MintedUrl | undefined;
}

/**
 * Writes what a request was, once its response has ended (sent, or its client
 * went away): one log line, one metrics update and, for an audited request,
 * one audit line. An answer that never started (`unanswered`) is reported
 * with 0 bytes, whatever it counted. Shared by the app's middleware and the
 * memory-hit path that answers without the app.
 */
export type RequestReporter = (record: RequestRecord, end: ResponseEnd) => void;

export function createRequestReporter(logger: Logger, clock: Clock, metrics: GatewayMetrics, audit?: AuditRecorder): RequestReporter {
  const writeLine = infoLineWriter(logger);
  return (answered, end) => {
    const record = end === 'unanswered' && answered.bodyBytes !== 0 ? { ...answered, bodyBytes: 0 } : answered;
    const { caller, status, cache } = record;
    const now = clock.now();
    // A status never sent is no status: the audit line says null too.
    const unanswered = end === 'unanswered';
    metrics.requestDone({
      route: record.route,
      method: record.method,
      status: unanswered ? 'none' : status,
      tenant: caller?.tenant.id ?? 'none',
      cache,
    });
    if (record.tier && status < 300) metrics.bytesServed(record.tier, record.bodyBytes);
    // Written by hand: every value is a validated id, a label of ours or a
    // number, except the method and path, which are quoted by JSON.stringify.
    // No header or query value is in it, so nothing needs redacting.
    // loggedPath keeps only characters JSON leaves as they are (and `…`): no quoting needed.
    const path = loggedPath(record.path, caller !== undefined);
    let line = `"reqId":"${record.requestId}","method":${jsonMethod(record.method)},"path":"${path}","route":"${record.route}"`;
    if (caller) line += `,"tenant":"${caller.tenant.id}"`;
    if (record.callId !== undefined) line += `,"callId":"${record.callId}"`;
    if (caller) line += `,"credential":"${caller.credential.kind}"`;
    line += `,"status":${unanswered ? 'null' : status},"cache":"${cache}","bytes":${record.bodyBytes},"durationMs":${now - record.startedAt}`;
    if (record.upstreamMs !== undefined) line += `,"upstreamMs":${record.upstreamMs}`;
    if (end !== 'sent') line += ',"aborted":true';
    // Every value is ASCII but the `…` of a cut path (a method is a token, a tenant id and a request id are checked).
    writeLine(line, REQUEST_LINE, path.charCodeAt(path.length - 1) !== ELLIPSIS, now);
    if (audit) auditRequest(audit, record, now, end);
  };
}

/**
 * The app's middleware: a request id (also returned as `X-Request-Id`) and,
 * when the response has been sent, the {@link RequestReporter}'s line. The
 * path is logged without its query string; headers are never logged.
 */
export function requestLog(clock: Clock, report: RequestReporter): MiddlewareHandler<GatewayEnv> {
  return async function requestLog(c, next) {
    const startedAt = clock.now();
    const clientAddress = c.env?.incoming?.socket?.remoteAddress;
    const requestId = requestIdFrom(c.req.header('x-request-id'));
    c.set('requestId', requestId);
    await next();
    const outgoing = c.env?.outgoing;
    const answered = c.get('answered');
    // A recording answer already carries the id, and so does an error's (the
    // app's error handler, which Hono's c.error says ran, put it in); touching
    // its headers here would turn @hono/node-server's fast write into undici's
    // Response and Headers.
    if (!answered && c.error === undefined) c.res.headers.set('X-Request-Id', requestId);

    // `refused`: what the server answered in the route's place (answeredBeforeItsRoute), no body of the route's.
    const finish = (end: ResponseEnd, status: number, refused?: { requestId: string }) =>
      report(
        {
          requestId: refused?.requestId ?? requestId,
          method: c.req.method,
          path: rawRequestPath(c),
          route: routeLabel(c.req.routePath, c.req.method),
          caller: c.get('caller'),
          callId: c.get('callId'),
          status,
          cache: answered?.cache ?? 'none',
          tier: answered?.tier,
          bodyBytes: answered && !refused ? answered.outcome.bodyBytes : 0,
          startedAt,
          upstreamMs: c.get('upstreamMs'),
          clientAddress,
          // Node's parsed headers when served over HTTP: reading them costs less than building a Headers object.
          header: (name) => {
            const value = c.env?.incoming ? c.env.incoming.headers[name] : c.req.header(name);
            return typeof value === 'string' ? value : undefined;
          },
          adminPurge: c.get('adminPurge'),
          minted: c.get('minted'),
        },
        end,
      );

    if (!outgoing) {
      finish('sent', c.res.status);
      return;
    }
    // A streamed recording is written to Node's response by its handler (RESPONSE_ALREADY_SENT): its status is there.
    whenClosed(outgoing, (end) => {
      const refused = end === 'sent' || !c.env.incoming ? undefined : answeredBeforeRoute.get(c.env.incoming);
      if (refused) finish('sent', refused.status, refused);
      else finish(end, outgoing.headersSent ? outgoing.statusCode : c.res.status);
    });
  };
}
