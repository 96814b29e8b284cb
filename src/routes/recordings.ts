import type { Context } from 'hono';
import type { Authenticator, Caller } from '../auth/authenticate.js';
import { NO_SIGNED_URL, signedUrlParamsOf, type SignedUrlParams } from '../auth/signed-url.js';
import type { Clock } from '../clock.js';
import { signRecordingUrl } from '@recording-gateway/client';
import { parseCallId } from '../recordings/call-id.js';
import type { FetchedRecording, FoundRecording, RecordingService } from '../recordings/recording-service.js';
import { addCorsHeaders, corsHeaders } from '../http/cors.js';
import { DamagedFileError } from '../cache/stored-file.js';
import { BadRequestError, MethodNotAllowedError, PreconditionFailedError } from '../errors.js';
import { evaluatePreconditions } from '../http/conditional.js';
import { turnOf } from '../http/response-closed.js';
import {
  completedRepresentation,
  downloadRepresentation,
  storedRepresentation,
  storedValidators,
  type Representation,
} from './recording-headers.js';
import {
  memoryResponse,
  sendsWholeBody,
  streamedResponse,
  type RecordingRequest,
  type ResponseHeaders,
  type ResponseOutcome,
} from './recording-response.js';
import type { Logger } from '../logger.js';
import type { ServedTier } from '../metrics/gateway-metrics.js';
import type { TenantRateLimiter } from '../rate-limit/index.js';
import type { GatewayEnv } from './gateway-env.js';
import { rawRequestPath } from './request-target.js';
import { chooseSigningKey, readSignedUrlRequest } from './signed-url-request.js';

export interface RecordingRoutesDeps {
  authenticator: Authenticator;
  /** Finds or fetches recordings; these handlers only turn requests into its calls and its results into answers. */
  recordings: RecordingService;
  clock: Clock;
  logger: Logger;
  /** Cache-Control max-age for API-key callers; a signed URL's answer never outlives the URL. */
  maxAgeSeconds: number;
  /** Makes minted signed URLs absolute. */
  publicBaseUrl: string | undefined;
  /** Per-tenant limits, checked after authentication and before any cache work. */
  rateLimiter: TenantRateLimiter;
}

/** The name this cache reports in Cache-Status (RFC 9211). */
export const CACHE_NAME = 'recording-gateway';
export const CACHE_STATUS_MEMORY = `${CACHE_NAME}; hit; detail=memory`;
const CACHE_STATUS_DISK = `${CACHE_NAME}; hit; detail=disk`;
export const CACHE_STATUS_MISS = `${CACHE_NAME}; fwd=uri-miss`;
export const CACHE_STATUS_COLLAPSED = `${CACHE_NAME}; fwd=uri-miss; collapsed`;
/** Cluster: joined another replica's download, or read another volume's copy through its replica. */
const CACHE_STATUS_PEER_DOWNLOAD = `${CACHE_NAME}; fwd=uri-miss; collapsed; detail=peer`;
const CACHE_STATUS_PEER_COPY = `${CACHE_NAME}; fwd=uri-miss; detail=peer`;

/** A miss's bytes come from the upstream, or (cluster) from another replica's download or copy. */
function missTier(origin: FetchedRecording['origin']): ServedTier {
  return origin === 'upstream' ? 'upstream' : 'peer';
}

function missCacheStatus(fetched: Pick<FetchedRecording, 'collapsed' | 'origin'>): string {
  if (fetched.origin === 'peer-download') return CACHE_STATUS_PEER_DOWNLOAD;
  if (fetched.origin === 'peer-copy') return CACHE_STATUS_PEER_COPY;
  return fetched.collapsed ? CACHE_STATUS_COLLAPSED : CACHE_STATUS_MISS;
}
const VARY_FOR_API_KEY = 'Origin, Authorization';

const RECORDING_PATH = /^\/v1\/call\/recording\/([^/?]*)\.mp3$/;
const SIGNED_URL_PATH = /^\/v1\/call\/recording\/([^/?]*)\/signed-url$/;

const RECORDING_METHODS = 'GET, HEAD, DELETE, OPTIONS';
const SIGNED_URL_METHODS = 'POST, OPTIONS';

const ROUTES: ReadonlyArray<[RegExp, string]> = [
  [RECORDING_PATH, RECORDING_METHODS],
  [SIGNED_URL_PATH, SIGNED_URL_METHODS],
];

/**
 * The methods a recording route's path takes (for a 405's or a plain
 * OPTIONS's `Allow`), or undefined when the path is neither route's.
 * @throws BadRequestError when it has a route's shape but a bad id: no route's path, whatever the method.
 */
export function recordingRouteMethods(c: Context<GatewayEnv>): string | undefined {
  const path = rawRequestPath(c);
  for (const [pattern, methods] of ROUTES) {
    const segment = pattern.exec(path)?.[1];
    if (segment === undefined) continue;
    parseCallId(segment);
    return methods;
  }
  return undefined;
}

/**
 * The call id of a recording-route path; 405 when the path is the other
 * recording route's (a POST to an .mp3), 400 for anything else.
 */
export function callIdFromPath(c: Context<GatewayEnv>, pattern: RegExp = RECORDING_PATH): string {
  const segment = pattern.exec(rawRequestPath(c))?.[1];
  if (segment === undefined) {
    const methods = recordingRouteMethods(c);
    if (methods !== undefined) throw new MethodNotAllowedError(methods);
    throw new BadRequestError('Expected /v1/call/recording/{id}.mp3 with a decimal call id');
  }
  return parseCallId(segment);
}

/** A signed URL's query parameters, as the recording routes read them: from the target as sent, as memory hits do. */
export function signedParams(c: Context<GatewayEnv>): SignedUrlParams {
  return signedUrlParamsOf(c.env?.incoming?.url ?? c.req.url);
}

/** A request whose answer depends on the recording's validators (RFC 9110 13.1). */
function isConditional(request: RecordingRequest): boolean {
  return (
    request.ifMatch !== undefined ||
    request.ifNoneMatch !== undefined ||
    request.ifModifiedSince !== undefined ||
    request.ifUnmodifiedSince !== undefined ||
    (request.ifRange !== undefined && request.range !== undefined)
  );
}

/**
 * Notes who asks for which call (for the error handler, the log and the
 * audit line), then counts the request against its tenant's limit: the
 * RateLimit-* headers (a promise of them from a Redis limiter), also noted
 * for the error handler (a 404 or 416 spent its token too), or a 429 thrown.
 */
export function admitCaller(
  c: Context<GatewayEnv>,
  rateLimiter: TenantRateLimiter,
  caller: Caller,
  callId: string,
): ReturnType<TenantRateLimiter['check']> {
  c.set('caller', caller);
  c.set('callId', callId);
  const limits = rateLimiter.check(caller.tenant);
  if (!(limits instanceof Promise)) {
    c.set('rateLimits', limits);
    return limits;
  }
  return limits.then((counted) => {
    c.set('rateLimits', counted);
    return counted;
  });
}

export function recordingRequest(c: Context): RecordingRequest {
  return {
    method: c.req.method,
    range: c.req.method === 'GET' ? c.req.header('range') : undefined,
    ifRange: c.req.header('if-range'),
    ifMatch: c.req.header('if-match'),
    ifNoneMatch: c.req.header('if-none-match'),
    ifModifiedSince: c.req.header('if-modified-since'),
    ifUnmodifiedSince: c.req.header('if-unmodified-since'),
  };
}

/**
 * A recording answer's `Cache-Control` as of now: a signed URL's max-age is
 * the whole seconds it has left, rounded down, so the answer never outlives
 * the URL (ask again as the head is sent: see `headersAsSent`).
 */
export function recordingCacheControl(deps: Pick<RecordingRoutesDeps, 'clock' | 'maxAgeSeconds'>): (caller: Caller) => string {
  const apiKeyCacheControl = `private, max-age=${deps.maxAgeSeconds}, immutable`;
  return (caller) => {
    if (caller.credential.kind !== 'signed-url') return apiKeyCacheControl;
    const remaining = Math.floor((caller.credential.expiresAt * 1000 - deps.clock.now()) / 1000);
    return `private, max-age=${Math.max(0, Math.min(deps.maxAgeSeconds, remaining))}, immutable`;
  };
}

/**
 * The per-request headers of a recording answer: Cache-Control (a signed
 * URL's answer never outlives the URL), CORS and X-Request-Id; the caller
 * adds the RateLimit headers and Cache-Status.
 */
export function recordingAnswerHeaders(
  deps: Pick<RecordingRoutesDeps, 'clock' | 'maxAgeSeconds'>,
): (caller: Caller, origin: string | undefined, requestId: string) => ResponseHeaders {
  const cacheControl = recordingCacheControl(deps);
  return (caller, origin, requestId) => {
    // Added in place: no object made and copied per answer.
    const headers: ResponseHeaders = { 'Cache-Control': cacheControl(caller) };
    addCorsHeaders(headers, origin, caller.tenant.allowedOrigins);
    headers['X-Request-Id'] = requestId;
    // A browser keeps an API-key answer for max-age: keyed by the key too, a request with another key (a revoked one) is asked of the gateway.
    if (caller.credential.kind === 'api-key') headers.Vary = VARY_FOR_API_KEY;
    return headers;
  };
}

export function createRecordingHandlers(deps: RecordingRoutesDeps) {
  const { authenticator, recordings, clock, rateLimiter } = deps;
  const cacheControl = recordingCacheControl(deps);

  const admit = (c: Context<GatewayEnv>, caller: Caller, callId: string) => admitCaller(c, rateLimiter, caller, callId);
  const answerHeaders = recordingAnswerHeaders(deps);

  /**
   * `extra` with Cache-Control as of when it is called: as the head is
   * committed, after any wait for the upstream or for the body's first
   * bytes, during which a signed URL's max-age counts down.
   */
  const headersAsSent = (caller: Caller, extra: ResponseHeaders) => (): ResponseHeaders => {
    extra['Cache-Control'] = cacheControl(caller);
    return extra;
  };

  /** The answer for a stored recording. */
  function hitResponse(
    c: Context<GatewayEnv>,
    request: RecordingRequest,
    found: FoundRecording,
    caller: Caller,
    extra: ResponseHeaders,
  ): Response | Promise<Response> {
    const outcome = { bodyBytes: 0 };
    c.set('answered', { cache: 'hit', tier: found.tier, outcome });
    // `extra` is this request's own object: set Cache-Status on it rather than copy it.
    extra['Cache-Status'] = found.tier === 'memory' ? CACHE_STATUS_MEMORY : CACHE_STATUS_DISK;
    return storedResponse(c, request, found, caller, extra, outcome);
  }

  /** The answer from a stored recording, whole in memory or read from its file. */
  function storedResponse(
    c: Context<GatewayEnv>,
    request: RecordingRequest,
    found: FoundRecording,
    caller: Caller,
    extra: ResponseHeaders,
    outcome: ResponseOutcome,
  ): Response | Promise<Response> {
    const representation = storedRepresentation(found.entry);
    const headers = headersAsSent(caller, extra);
    if (found.body) return memoryResponse(request, representation, found.body, headers(), outcome);
    return streamedResponse(request, representation, found.entry.meta.size, found.reader, headers, c.env?.outgoing, outcome);
  }

  /**
   * A miss answered while the download is under way. RFC 9211: `stored` is
   * left out, since whether it will be stored is not known yet.
   */
  function missResponse(
    c: Context<GatewayEnv>,
    request: RecordingRequest,
    fetched: FetchedRecording,
    representation: Representation,
    caller: Caller,
    extra: ResponseHeaders,
  ): Promise<Response> {
    extra['Cache-Status'] = missCacheStatus(fetched);
    const outcome = { bodyBytes: 0 };
    c.set('answered', { cache: fetched.collapsed ? 'collapsed' : 'miss', tier: missTier(fetched.origin), outcome });
    const headers = headersAsSent(caller, extra);
    return streamedResponse(request, representation, fetched.head.size, fetched.reader, headers, c.env?.outgoing, outcome);
  }

  /**
   * A conditional request on a miss waits for the whole recording, whose
   * ETag is the digest of all its bytes, so it gets the answer a warm cache
   * would give (RFC 9110 13.1), never a 412 or a full body for want of it.
   */
  async function conditionalMiss(
    c: Context<GatewayEnv>,
    request: RecordingRequest,
    caller: Caller,
    callId: string,
    extra: ResponseHeaders,
  ): Promise<Response> {
    const whole = await recordings.fetchWhole(caller.tenant, callId);
    if (!whole.found)
      return missResponse(c, request, whole.fetched, completedRepresentation(callId, whole.fetched.head, whole.sha256), caller, extra);
    extra['Cache-Status'] = whole.collapsed ? CACHE_STATUS_COLLAPSED : `${CACHE_STATUS_MISS}; stored`;
    const outcome = { bodyBytes: 0 };
    c.set('answered', { cache: whole.collapsed ? 'collapsed' : 'miss', tier: missTier(whole.origin), outcome });
    return storedResponse(c, request, whole.found, caller, extra, outcome);
  }

  /**
   * The answer for a recording not held in memory: a disk hit, or a miss
   * fetched from the upstream. `mayFetchAgain`: a miss whose body broke
   * before this client had a byte is answered from a new fetch (once).
   */
  async function diskOrMissResponse(
    c: Context<GatewayEnv>,
    request: RecordingRequest,
    caller: Caller,
    callId: string,
    found: FoundRecording | undefined,
    extra: ResponseHeaders,
    mayFetchAgain: boolean,
  ): Promise<Response> {
    if (found) {
      try {
        return await hitResponse(c, request, found, caller, extra);
      } catch (error) {
        // A copy that fails its checks before its head went out (removed by
        // then, see RecordingCache.openFile) is a miss, as it is when read whole.
        if (!(error instanceof DamagedFileError)) throw error;
      }
    }

    const waitStarted = clock.now();
    try {
      if (isConditional(request)) return await conditionalMiss(c, request, caller, callId, extra);
      const fetched = await recordings.fetch(caller.tenant, callId);
      const representation =
        fetched.sha256 === undefined
          ? downloadRepresentation(callId, fetched.head)
          : completedRepresentation(callId, fetched.head, fetched.sha256);
      try {
        return await missResponse(c, request, fetched, representation, caller, extra);
      } catch (error) {
        if (!(mayFetchAgain && (await fetched.worthFetchingAgain(error)))) throw error;
      }
    } finally {
      // A fetch again adds its wait to the first one's.
      c.set('upstreamMs', (c.get('upstreamMs') ?? 0) + clock.now() - waitStarted);
    }
    // The body broke once other clients had bytes of it, before this one had
    // any (a range waiting for bytes further on): it joins the new download,
    // or reads its copy once stored, as a client arriving now would.
    const refound = await recordings.find(caller.tenant.namespace, callId, (entry) => sendsWholeBody(request, entry));
    return diskOrMissResponse(c, request, caller, callId, refound, extra, false);
  }

  return {
    /** GET and HEAD /v1/call/recording/{id}.mp3 */
    async getRecording(c: Context<GatewayEnv>): Promise<Response> {
      const callId = callIdFromPath(c);
      const authorization = c.req.header('authorization');
      // The query is parsed only when it may hold the credential.
      const caller = authenticator.recordingReader(authorization, authorization ? NO_SIGNED_URL : signedParams(c), callId);
      const admitted = admit(c, caller, callId);
      // The memory limiter answers synchronously: a cold miss waits for no promise here.
      const limits = admitted instanceof Promise ? await admitted : admitted;
      // Pipelined behind other answers, it is looked up in its turn: a client that pipelines thousands of disk
      // hits or misses and reads nothing holds one open file or download, not thousands (Node parses ~3,000 ahead).
      const turn = turnOf(c.env?.outgoing);
      // Gone before its turn: no one to answer, nothing to read or fetch.
      if (turn && !(await turn)) return c.body(null, 204);
      const request = recordingRequest(c);
      const extra = Object.assign(answerHeaders(caller, c.req.header('origin'), c.get('requestId')), limits);
      // A small encrypted disk hit is read whole only when the answer sends all of it.
      const finding = recordings.find(caller.tenant.namespace, callId, (entry) => sendsWholeBody(request, entry));
      // A memory hit comes back synchronously: nothing is awaited on the fast path.
      const found = finding instanceof Promise ? await finding : finding;
      if (found?.body) return hitResponse(c, request, found, caller, extra);
      return diskOrMissResponse(c, request, caller, callId, found, extra, true);
    },

    /** DELETE /v1/call/recording/{id}.mp3: gone from every tier of the caller's namespace, unless a precondition on the copy held fails (412). */
    async deleteRecording(c: Context<GatewayEnv>): Promise<Response> {
      const callId = callIdFromPath(c);
      const caller = authenticator.apiKey(c.req.header('authorization'));
      const limits = await admit(c, caller, callId);
      const request = recordingRequest(c);
      if (isConditional(request)) {
        const held = await recordings.heldCopy(caller.tenant.namespace, callId);
        if (evaluatePreconditions(request, held && storedValidators(held)) === 'precondition-failed') throw new PreconditionFailedError();
      }
      await recordings.purge(caller.tenant.namespace, callId);
      return new Response(null, {
        status: 204,
        headers: { ...corsHeaders(c.req.header('origin'), caller.tenant.allowedOrigins), ...limits },
      });
    },

    /** POST /v1/call/recording/{id}/signed-url with optional {"ttl_seconds": n, "kid": "k"} */
    async createSignedUrl(c: Context<GatewayEnv>): Promise<Response> {
      const callId = callIdFromPath(c, SIGNED_URL_PATH);
      const caller = authenticator.apiKey(c.req.header('authorization'));
      const limits = await admit(c, caller, callId);
      const { tenant } = caller;
      const asked = await readSignedUrlRequest(c, tenant.maxSignedUrlTtlSeconds);
      const [kid, secret] = chooseSigningKey(tenant.signingKeys, asked.kid);
      const { ttlSeconds } = asked;
      const expiresAt = Math.floor(clock.now() / 1000) + ttlSeconds;
      const url = signRecordingUrl({ baseUrl: deps.publicBaseUrl, tenant: tenant.id, callId, expiresAt, kid, secret });
      c.set('minted', { kid, exp: expiresAt });
      return c.json({ url, expires_at: expiresAt }, 200, {
        'Cache-Control': 'no-store',
        ...corsHeaders(c.req.header('origin'), tenant.allowedOrigins),
        ...limits,
      });
    },
  };
}
