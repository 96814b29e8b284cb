import type { RequestListener } from 'node:http';
import type { Authenticator, Caller } from '../auth/authenticate.js';
import { NO_SIGNED_URL, signedUrlParamsOf } from '../auth/signed-url.js';
import type { Clock } from '../clock.js';
import { errorHeaders, UnauthorizedError } from '../errors.js';
import { corsHeaders } from '../http/cors.js';
import { pathOfTarget } from '../http/target-path.js';
import { isPlainHost } from '../http/request-host.js';
import { headerCount } from '../http/raw-headers.js';
import { requestFieldsOf, type RequestFields } from '../http/request-fields.js';
import { whenClosed, type ResponseEnd } from '../http/response-closed.js';
import type { RateLimitHeaders, TenantRateLimiter } from '../rate-limit/index.js';
import type { RecordingService } from '../recordings/recording-service.js';
import { storedRepresentation } from './recording-headers.js';
import { allHeaders, bodyOf, memoryAnswer, type MemoryAnswer, type RecordingRequest } from './recording-response.js';
import { CACHE_STATUS_MEMORY, recordingAnswerHeaders } from './recordings.js';
import { requestIdFrom, routeLabel, type RequestRecord, type RequestReporter } from './request-log.js';

export interface MemoryHitDeps {
  authenticator: Authenticator;
  /** Every tenant's allowed origins: a refused request's CORS fields, as the app's error handler gives them. */
  anyAllowedOrigin: ReadonlySet<string>;
  recordings: Pick<RecordingService, 'findInMemory'>;
  rateLimiter: TenantRateLimiter;
  clock: Clock;
  maxAgeSeconds: number;
  report: RequestReporter;
}

/**
 * A request answerable from memory, its answer made, its rate-limit token
 * not yet taken; or the 401 of a request for a recording without a valid
 * credential, which takes none.
 */
export interface MemoryHit {
  readonly answer: Omit<MemoryAnswer, 'status'> & { status: number };
  /**
   * Takes the tenant's rate-limit token, at once or after Redis answered:
   * `then(true)` once the answer's headers carry the limits, `then(false)`
   * when the request must go to the app instead (over the limit: a refusal
   * takes no token, so the app's own check refuses it the same way).
   */
  count(then: (admitted: boolean) => void): void;
  /** The log line, metrics and audit line of the answer, once its connection is done with it. */
  report(end: ResponseEnd): void;
}

export interface MemoryHits {
  /**
   * The answer to a GET or HEAD of a recording held whole in memory, its 401
   * when the request has no valid credential, or undefined when the app must
   * answer (a miss, a disk hit, a precondition or range the app refuses, a
   * Host other than a plain lowercase name with an optional port).
   * `fields` as Node gives them, `authorizationRepeated` when the request carried more than one
   * Authorization (Node keeps the first, the app sees them joined and refuses them).
   */
  prepare(
    method: string,
    target: string,
    fields: RequestFields,
    authorizationRepeated: boolean,
    clientAddress: string | undefined,
  ): MemoryHit | undefined;
  /**
   * Reports a request read but never answered, its connection gone (one
   * pipelined behind an answer its client did not take): the line, metrics
   * and audit line the app gives such a request, with `"status": null`.
   */
  unanswered(method: string, target: string, fields: RequestFields, clientAddress: string | undefined): void;
}

// A call id as the contract spells it (no sign, no leading zero); the range check is below.
const MEMORY_HIT_TARGET = /^\/v1\/call\/recording\/([1-9][0-9]{0,15})\.mp3(?:\?|$)/;

function recordingRequestOf(method: string, fields: RequestFields): RecordingRequest {
  return {
    method,
    range: method === 'GET' ? fields.range : undefined,
    ifRange: fields.ifRange,
    ifMatch: fields.ifMatch,
    ifNoneMatch: fields.ifNoneMatch,
    ifModifiedSince: fields.ifModifiedSince,
    ifUnmodifiedSince: fields.ifUnmodifiedSince,
  };
}

/** The one of the two request fields an audit line names. */
function auditedField(fields: RequestFields, name: 'range' | 'user-agent'): string | undefined {
  return name === 'range' ? fields.range : fields.userAgent;
}

/**
 * The most frequent answer, a recording held in memory (the Safari probe, a
 * player's ranges, a replay), made without the app: no Request, Response or
 * context objects, which cost more than the answer itself (issue 11's
 * profile); and the 401 of a request for a recording without a valid
 * credential. It answers exactly as the app's route would, with the same log
 * line, metrics and audit line; everything else is left to the app, before
 * anything was counted.
 */
export function createMemoryHits(deps: MemoryHitDeps): MemoryHits {
  const { authenticator, recordings, rateLimiter, clock, report } = deps;
  const answerHeaders = recordingAnswerHeaders(deps);

  /** The caller a request for `callId` presents, its refusal, or undefined when the app must judge it. */
  function callerOf(target: string, fields: RequestFields, callId: string): Caller | UnauthorizedError | undefined {
    try {
      const authorization = fields.authorization;
      return authenticator.recordingReaderOrRefusal(authorization, authorization ? NO_SIGNED_URL : signedUrlParamsOf(target), callId);
    } catch (error) {
      return error instanceof UnauthorizedError ? error : undefined;
    }
  }

  const hits: MemoryHits = {
    prepare(method, target, fields, authorizationRepeated, clientAddress) {
      const match = method === 'GET' || method === 'HEAD' ? MEMORY_HIT_TARGET.exec(target) : null;
      const callId = match?.[1];
      if (callId === undefined || !Number.isSafeInteger(Number(callId))) return undefined;
      // None, or an empty one, the adapter replaces with the server's own name; any other not plain, the app judges.
      if (fields.host && !isPlainHost(fields.host)) return undefined;
      const startedAt = clock.now();
      if (fields.authorization !== undefined && authorizationRepeated) return undefined;
      const caller = callerOf(target, fields, callId);
      if (caller === undefined) return undefined;
      if (caller instanceof UnauthorizedError) {
        const request = { method, path: pathOfTarget(target), fields, clientAddress, startedAt };
        return refusal(caller, request, deps.anyAllowedOrigin, report);
      }
      const found = recordings.findInMemory(caller.tenant.namespace, callId);
      if (!found) return undefined;
      const requestId = requestIdFrom(fields.requestId);
      let answer: MemoryAnswer;
      try {
        const extra = answerHeaders(caller, fields.origin, requestId);
        extra['Cache-Status'] = CACHE_STATUS_MEMORY;
        answer = memoryAnswer(recordingRequestOf(method, fields), storedRepresentation(found.entry), found.body, extra);
      } catch {
        return undefined;
      }
      const path = pathOfTarget(target);
      return {
        answer,
        count(then) {
          const counted = (limits: RateLimitHeaders | undefined) => {
            if (limits) {
              // Named, not Object.assign: three stores of known names, not a generic copy per hit.
              const headers = answer.headers;
              headers['RateLimit-Limit'] = limits['RateLimit-Limit'];
              headers['RateLimit-Remaining'] = limits['RateLimit-Remaining'];
              headers['RateLimit-Reset'] = limits['RateLimit-Reset'];
            }
            then(true);
          };
          let decision: ReturnType<TenantRateLimiter['check']>;
          try {
            decision = rateLimiter.check(caller.tenant);
          } catch {
            then(false);
            return;
          }
          if (decision instanceof Promise) decision.then(counted, () => then(false));
          else counted(decision);
        },
        report(end) {
          report(
            {
              requestId,
              method,
              path,
              route: 'recording',
              caller,
              callId,
              status: answer.status,
              cache: 'hit',
              tier: 'memory',
              bodyBytes: answer.source === undefined ? 0 : answer.bodyLength,
              startedAt,
              upstreamMs: undefined,
              clientAddress,
              header: (name) => auditedField(fields, name),
            },
            end,
          );
        },
      };
    },

    unanswered(method, target, fields, clientAddress) {
      const hit = hits.prepare(method, target, fields, false, clientAddress);
      if (hit) {
        hit.report('unanswered');
        return;
      }
      const path = pathOfTarget(target);
      const callId = MEMORY_HIT_TARGET.exec(target)?.[1];
      const caller = callId === undefined ? undefined : callerOf(target, fields, callId);
      const vouched = caller instanceof UnauthorizedError ? undefined : caller;
      report(
        {
          requestId: requestIdFrom(fields.requestId),
          method,
          path,
          route: routeLabel(path, method),
          caller: vouched,
          callId: vouched && callId,
          // Not sent: the line and the audit say null.
          status: 0,
          cache: 'none',
          tier: undefined,
          bodyBytes: 0,
          startedAt: clock.now(),
          upstreamMs: undefined,
          clientAddress,
          header: (name) => auditedField(fields, name),
        },
        'unanswered',
      );
    },
  };
  return hits;
}

const NO_FIELDS: Readonly<Record<string, string>> = Object.freeze({});

/**
 * The app's 401 to a request for a recording without a valid credential,
 * made without the app, so that a flood of them costs what memory hits cost:
 * the error handler's fields (errorHeaders) with the Content-Length Node
 * would add, and the same log line, metrics and audit line.
 */
function refusal(
  error: UnauthorizedError,
  request: Pick<RequestRecord, 'method' | 'path' | 'clientAddress' | 'startedAt'> & { fields: RequestFields },
  anyAllowedOrigin: ReadonlySet<string>,
  report: RequestReporter,
): MemoryHit {
  const requestId = requestIdFrom(request.fields.requestId);
  const extra = corsHeaders(request.fields.origin, anyAllowedOrigin);
  extra['X-Request-Id'] = requestId;
  const body = Buffer.from(JSON.stringify(error.toJSON()));
  const headers = errorHeaders(error, extra);
  headers['Content-Length'] = String(body.length);
  const source = request.method === 'HEAD' ? undefined : body;
  const answer = { status: error.status, fields: NO_FIELDS, headers, source, bodyStart: 0, bodyLength: source?.length ?? 0 };
  return {
    answer,
    count: (then) => then(true),
    report(end) {
      report(
        {
          requestId,
          method: request.method,
          path: request.path,
          route: 'recording',
          caller: undefined,
          callId: undefined,
          status: answer.status,
          cache: 'none',
          tier: undefined,
          // As the app's log line counts an error's body.
          bodyBytes: 0,
          startedAt: request.startedAt,
          upstreamMs: undefined,
          clientAddress: request.clientAddress,
          header: (name) => auditedField(request.fields, name),
        },
        end,
      );
    },
  };
}

/** Wraps the app's Node listener so that memory hits are written straight to Node's response. */
export function answeringMemoryHitsFirst(hits: MemoryHits, app: RequestListener): RequestListener {
  return function memoryHitsFirst(request, response) {
    const headers = request.headers;
    const hit = hits.prepare(
      request.method ?? '',
      request.url ?? '',
      requestFieldsOf(headers),
      headers.authorization !== undefined && headerCount(request.rawHeaders, 'authorization') > 1,
      // Read now: once the client has gone, its socket no longer knows its address.
      request.socket.remoteAddress,
    );
    if (!hit) return app(request, response);
    hit.count((admitted) => {
      if (!admitted) return app(request, response);
      // A client gone during an asynchronous rate-limit check (Redis) gets
      // nothing; whenClosed then reports the answer `unanswered`.
      if (!response.destroyed) {
        response.writeHead(hit.answer.status, allHeaders(hit.answer));
        response.end(bodyOf(hit.answer));
      }
      whenClosed(response, (end) => hit.report(end));
    });
  };
}
