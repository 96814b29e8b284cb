import { METHODS, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Clock } from './clock.js';
import { whenClosed, type ResponseEnd } from './http/response-closed.js';
import { pathOfTarget } from './http/target-path.js';
import type { RequestRecord, RequestReporter } from './routes/request-log.js';

const KNOWN_METHODS = new Set(METHODS);
// A refused request line's method when Node knows none by its name: a label of ours, never the client's bytes.
const UNKNOWN_METHOD = '-';

/** What is known of a request the parser or the server refused before any route. */
export interface RefusedRequest {
  /** Its method, or its request line's first word (`-` unless Node knows it). */
  method: string;
  target: string;
  requestId: string;
  status: number;
  clientAddress: string | undefined;
}

/**
 * Reports the requests answered before any route (refused by Node's parser
 * or by the server's own checks) as the request log middleware reports the
 * routed ones: one request line and the request metrics, with route
 * `other`, no tenant, and the path shown as an unauthenticated request's.
 * Never audited: no credential was taken.
 */
export interface RefusalReports {
  /** An answer written to Node's `response`; reported once it has closed. */
  response(request: IncomingMessage, response: ServerResponse, requestId: string): void;
  /** An answer written to the connection itself. */
  raw(refused: RefusedRequest): RawRefusal;
}

/** A refusal written to the connection itself: its answer's id and status, and `ended`, to be told how it ended. */
export interface RawRefusal {
  requestId: string;
  status: number;
  ended(end: ResponseEnd): void;
}

/**
 * The method and target of a request as its raw bytes name them: the first
 * two words of its first line, the method as a label (`-` unless Node knows
 * it by that name).
 */
export function requestLineOf(raw: string): Pick<RefusedRequest, 'method' | 'target'> {
  const lineEnd = raw.search(/[\r\n]/);
  const [method = '', target = ''] = (lineEnd === -1 ? raw : raw.slice(0, lineEnd)).split(' ', 2);
  return { method: KNOWN_METHODS.has(method) ? method : UNKNOWN_METHOD, target };
}

function refusedRecord(refused: RefusedRequest, startedAt: number): RequestRecord {
  return {
    requestId: refused.requestId,
    method: refused.method,
    path: pathOfTarget(refused.target),
    route: 'other',
    caller: undefined,
    callId: undefined,
    status: refused.status,
    cache: 'none',
    tier: undefined,
    bodyBytes: 0,
    startedAt,
    upstreamMs: undefined,
    clientAddress: refused.clientAddress,
    header: () => undefined,
  };
}

const NOT_REPORTED: RefusalReports = {
  response: () => {},
  raw: ({ requestId, status }) => ({ requestId, status, ended: () => {} }),
};

/** The reports, or none without a reporter (a bare server). */
export function refusalReports(report: RequestReporter | undefined, clock: Clock): RefusalReports {
  if (report === undefined) return NOT_REPORTED;
  return {
    response(request, response, requestId) {
      const startedAt = clock.now();
      const clientAddress = request.socket.remoteAddress;
      whenClosed(response, (end) => {
        const refused = {
          method: request.method ?? UNKNOWN_METHOD,
          target: request.url ?? '',
          requestId,
          status: response.statusCode,
          clientAddress,
        };
        report(refusedRecord(refused, startedAt), end);
      });
    },
    raw(refused) {
      const record = refusedRecord(refused, clock.now());
      return { requestId: refused.requestId, status: refused.status, ended: (end) => report(record, end) };
    },
  };
}
