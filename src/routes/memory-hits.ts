import type { IncomingHttpHeaders, IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Authenticator, Caller } from '../auth/authenticate.js';
import type { SignedUrlParams } from '../auth/signed-url.js';
import type { Clock } from '../clock.js';
import { headerCount } from '../http/raw-headers.js';
import { whenClosed, type ResponseEnd } from '../http/response-closed.js';
import type { RateLimitHeaders, TenantRateLimiter } from '../rate-limit/index.js';
import type { RecordingService } from '../recordings/recording-service.js';
import { storedRepresentation } from './recording-headers.js';
import { memoryAnswer, type MemoryAnswer, type RecordingRequest } from './recording-response.js';
import { CACHE_STATUS_MEMORY, NO_SIGNED_URL, recordingAnswerHeaders } from './recordings.js';
import { requestIdFrom, type RequestReporter } from './request-log.js';

export interface MemoryHitDeps {
  authenticator: Authenticator;
  recordings: Pick<RecordingService, 'findInMemory'>;
  rateLimiter: TenantRateLimiter;
  clock: Clock;
  maxAgeSeconds: number;
  report: RequestReporter;
}

// A call id as the contract spells it (no sign, no leading zero); the range check is below.
const MEMORY_HIT_TARGET = /^\/v1\/call\/recording\/([1-9][0-9]{0,15})\.mp3(?:\?|$)/;

function signedParamsOf(target: string): SignedUrlParams {
  const queryStart = target.indexOf('?');
  if (queryStart === -1) return NO_SIGNED_URL;
  const query = new URLSearchParams(target.slice(queryStart + 1));
  const value = (name: string) => query.get(name) ?? undefined;
  return { tenant: value('tenant'), exp: value('exp'), kid: value('kid'), sig: value('sig') };
}

function recordingRequestOf(method: string, headers: IncomingHttpHeaders): RecordingRequest {
  // Node joins repeated headers into one string; only Set-Cookie would be an array.
  return {
    method,
    range: method === 'GET' ? headers.range : undefined,
    ifRange: headers['if-range'] as string | undefined,
    ifMatch: headers['if-match'] as string | undefined,
    ifNoneMatch: headers['if-none-match'],
    ifModifiedSince: headers['if-modified-since'],
    ifUnmodifiedSince: headers['if-unmodified-since'],
  };
}

/**
 * The most frequent answer, a recording held in memory (the Safari probe, a
 * player's ranges, a replay), written straight to Node's response without
 * the app: no Request, Response or context objects, which cost more than the
 * answer itself (issue 11's profile). It answers exactly as the app's route
 * would, with the same log line, metrics and audit line; everything else (a
 * miss, a disk hit, a credential, precondition or range the app must refuse,
 * a rate limit's 429) is handed to `app` untouched, before anything was
 * counted.
 */
export function answeringMemoryHitsFirst(deps: MemoryHitDeps, app: RequestListener): RequestListener {
  const { authenticator, recordings, rateLimiter, clock, report } = deps;
  const answerHeaders = recordingAnswerHeaders(deps);

  function send(
    request: IncomingMessage,
    response: ServerResponse,
    answer: MemoryAnswer,
    record: { requestId: string; caller: Caller; callId: string; startedAt: number; path: string; clientAddress: string | undefined },
  ): void {
    // A client gone during an asynchronous rate-limit check (Redis) gets
    // nothing; whenClosed then reports the answer `unanswered`.
    if (!response.destroyed) {
      response.writeHead(answer.status, answer.headers);
      response.end(answer.body);
    }
    const closed = (end: ResponseEnd) =>
      report(
        {
          requestId: record.requestId,
          method: request.method!,
          path: record.path,
          route: 'recording',
          caller: record.caller,
          callId: record.callId,
          status: answer.status,
          cache: 'hit',
          tier: 'memory',
          bodyBytes: answer.body?.length ?? 0,
          startedAt: record.startedAt,
          upstreamMs: undefined,
          clientAddress: record.clientAddress,
          header: (name) => request.headers[name],
        },
        end,
      );
    whenClosed(response, closed);
  }

  return function memoryHitsFirst(request, response) {
    const method = request.method;
    const target = request.url ?? '';
    const match = method === 'GET' || method === 'HEAD' ? MEMORY_HIT_TARGET.exec(target) : null;
    const callId = match?.[1];
    if (callId === undefined || !Number.isSafeInteger(Number(callId))) return app(request, response);
    const startedAt = clock.now();
    const headers = request.headers;
    // Node keeps the first of two Authorization headers, the app sees them joined (and refuses them): the app decides.
    if (headers.authorization !== undefined && headerCount(request.rawHeaders, 'authorization') > 1) return app(request, response);
    let caller: Caller;
    try {
      const authorization = headers.authorization;
      caller = authenticator.recordingReader(authorization, authorization ? NO_SIGNED_URL : signedParamsOf(target), callId);
    } catch {
      return app(request, response);
    }
    const found = recordings.findInMemory(caller.tenant.namespace, callId);
    if (!found) return app(request, response);
    const requestId = requestIdFrom(headers['x-request-id'] as string | undefined);
    let answer: MemoryAnswer;
    try {
      const extra = answerHeaders(caller, headers.origin, requestId);
      extra['Cache-Status'] = CACHE_STATUS_MEMORY;
      answer = memoryAnswer(recordingRequestOf(method!, headers), storedRepresentation(found.entry), found.body, extra);
    } catch {
      return app(request, response);
    }
    // Read now: once the client has gone, its socket no longer knows its address.
    const clientAddress = request.socket.remoteAddress;
    const record = { requestId, caller, callId, startedAt, path: target.split('?', 1)[0]!, clientAddress };
    const counted = (limits: RateLimitHeaders | undefined) => {
      if (limits) Object.assign(answer.headers, limits);
      send(request, response, answer, record);
    };
    let decision: ReturnType<TenantRateLimiter['check']>;
    try {
      decision = rateLimiter.check(caller.tenant);
    } catch {
      // Over the limit: a refusal takes no token, so the app's own check refuses it the same way.
      return app(request, response);
    }
    if (decision instanceof Promise) decision.then(counted, () => app(request, response));
    else counted(decision);
  };
}
