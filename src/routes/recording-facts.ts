import type { Context, Hono } from 'hono';
import type { Authenticator, Caller } from '../auth/authenticate.js';
import type { Clock } from '../clock.js';
import { BadRequestError, PreconditionFailedError } from '../errors.js';
import { otherMethodAnswer } from './other-methods.js';
import { evaluatePreconditions } from '../http/conditional.js';
import { turnOf } from '../http/response-closed.js';
import type { TenantRateLimiter } from '../rate-limit/index.js';
import { parseCallId } from '../recordings/call-id.js';
import type {
  FactsCacheResult,
  FactsRead,
  LocatedRecording,
  RecordingFactsService,
} from '../recordings/analysis/recording-facts-service.js';
import { MIN_FINE_PAIRS, peaksJson } from '../recordings/analysis/waveform-peaks.js';
import { etagFor, type RecordingFacts } from '../cache/recording-meta.js';
import { NO_SIGNED_URL } from '../auth/signed-url.js';
import type { GatewayEnv } from './gateway-env.js';
import {
  CACHE_NAME,
  CACHE_STATUS_COLLAPSED,
  CACHE_STATUS_MISS,
  admitCaller,
  recordingAnswerHeaders,
  recordingCacheControl,
  recordingRequest,
  signedParams,
} from './recordings.js';
import { rawRequestPath } from './request-target.js';

export interface RecordingFactsRoutesDeps {
  authenticator: Authenticator;
  /** Where the facts and peaks come from. */
  facts: RecordingFactsService;
  clock: Clock;
  /** Cache-Control max-age for API-key callers, as for the recording; a signed URL's answer never outlives the URL. */
  maxAgeSeconds: number;
  rateLimiter: TenantRateLimiter;
}

/** The routes, as Hono registers them (the handlers read the id from the raw path). */
const RECORDING_INFO_ROUTE = '/v1/call/recording/:id/info.json';
const RECORDING_PEAKS_ROUTE = '/v1/call/recording/:id/peaks.json';

/** `points` of peaks.json: at most the fine peaks kept per recording. */
export const MAX_PEAK_POINTS = MIN_FINE_PAIRS;
export const DEFAULT_PEAK_POINTS = 1000;
const POINTS = /^[1-9][0-9]{0,4}$/;

type Kind = 'info' | 'peaks';
// Bumped when what an answer holds for the same recording changes, so no
// client keeps an older answer under the same ETag. info 2: the duration of
// a constant-bitrate recording without a frame count comes from its size and
// bitrate (read at store time), no longer from decoding it. info 3, peaks 2:
// a decode stops at junk after the audio (a padded file), no longer counting
// the noise mpg123 finds in it, or refusing the recording for its errors.
const ANSWER_VERSIONS: Record<Kind, number> = { info: 3, peaks: 2 };
const PATHS: Record<Kind, RegExp> = {
  info: /^\/v1\/call\/recording\/([^/?]*)\/info\.json$/,
  peaks: /^\/v1\/call\/recording\/([^/?]*)\/peaks\.json$/,
};
const METHODS = 'GET, HEAD, OPTIONS';

function callIdOf(c: Context<GatewayEnv>, kind: Kind): string {
  const segment = PATHS[kind].exec(rawRequestPath(c))?.[1];
  if (segment === undefined) throw new BadRequestError(`Expected /v1/call/recording/{id}/${kind}.json with a decimal call id`);
  return parseCallId(segment);
}

function pointsOf(c: Context<GatewayEnv>): number {
  const value = c.req.query('points');
  if (value === undefined) return DEFAULT_PEAK_POINTS;
  if (!POINTS.test(value) || Number(value) > MAX_PEAK_POINTS) {
    throw new BadRequestError(`points must be an integer from 1 to ${MAX_PEAK_POINTS}`);
  }
  return Number(value);
}

/** A strong tag of its own for each answer: the recording's digest, what was asked, and the answer's version. */
function answerEtag(sha256: string, kind: Kind, points: number | undefined): string {
  const recording = etagFor(sha256).slice(1, -1);
  return `"${recording}.${kind}${points === undefined ? '' : `.${points}`}.v${ANSWER_VERSIONS[kind]}"`;
}

function cacheStatus(result: FactsCacheResult): string {
  if (result === 'hit') return `${CACHE_NAME}; hit`;
  return result === 'collapsed' ? CACHE_STATUS_COLLAPSED : CACHE_STATUS_MISS;
}

/** info.json: the contract's fields, snake_case. */
function infoBody(callId: string, read: FactsRead<RecordingFacts>): Record<string, unknown> {
  const { durationSeconds, bitrate, sampleRate, channels } = read.value;
  return {
    call_id: Number(callId),
    size: read.size,
    etag: etagFor(read.sha256),
    duration_seconds: durationSeconds,
    bitrate,
    sample_rate: sampleRate,
    channels,
  };
}

/** info.json's body (points undefined) or peaks.json's, and the recording it was read from. */
async function readAnswer(
  facts: RecordingFactsService,
  caller: Caller,
  callId: string,
  located: LocatedRecording,
  points: number | undefined,
): Promise<FactsRead<unknown>> {
  if (points === undefined) {
    const info = await facts.info(caller.tenant, callId, located);
    return { ...info, value: infoBody(callId, info) };
  }
  const peaks = await facts.peaks(caller.tenant, callId, located);
  return { ...peaks, value: peaksJson(peaks.value, points) };
}

/**
 * GET and HEAD of `/v1/call/recording/{id}/info.json` and `.../peaks.json`:
 * authenticated, rate-limited and fetched exactly as the recording is, and
 * answered from the catalogue and the peaks sidecar once it is stored.
 */
export function createRecordingFactsHandlers(deps: RecordingFactsRoutesDeps) {
  const { authenticator, facts, clock, rateLimiter } = deps;
  const answerHeaders = recordingAnswerHeaders(deps);
  const cacheControl = recordingCacheControl(deps);

  return async function recordingFacts(c: Context<GatewayEnv>, kind: Kind): Promise<Response> {
    const callId = callIdOf(c, kind);
    const points = kind === 'peaks' ? pointsOf(c) : undefined;
    const authorization = c.req.header('authorization');
    const caller = authenticator.recordingReader(authorization, authorization ? NO_SIGNED_URL : signedParams(c), callId);
    const limits = await admitCaller(c, rateLimiter, caller, callId);
    // Pipelined behind other answers, it is looked up in its turn, as a recording is (recordings.ts).
    const turn = turnOf(c.env?.outgoing);
    if (turn && !(await turn)) return c.body(null, 204);
    const headers = Object.assign(answerHeaders(caller, c.req.header('origin'), c.get('requestId')), limits);

    const started = clock.now();
    const located = await facts.locate(caller.tenant, callId);
    try {
      // A miss may have waited seconds of a signed URL's life.
      if (located.cache !== 'hit') headers['Cache-Control'] = cacheControl(caller);
      const outcome = { bodyBytes: 0 };
      // The answer's tag is known from the recording's digest: a client holding it needs nothing read or analysed.
      const etag = answerEtag(located.sha256, kind, points);
      const precondition = evaluatePreconditions(recordingRequest(c), { etag });
      if (precondition === 'precondition-failed') throw new PreconditionFailedError();
      if (precondition === 'not-modified') {
        // No tier: the facts are no audio served (recording_gateway_served_bytes_total).
        c.set('answered', { cache: located.cache, outcome });
        headers.ETag = etag;
        headers['Cache-Status'] = cacheStatus(located.cache);
        return new Response(null, { status: 304, headers });
      }

      const read = await readAnswer(facts, caller, callId, located, points);
      const body = Buffer.from(JSON.stringify(read.value));
      if (read.cache !== 'hit') headers['Cache-Control'] = cacheControl(caller);
      headers['Content-Type'] = 'application/json';
      headers.ETag = answerEtag(read.sha256, kind, points);
      headers['Cache-Status'] = cacheStatus(read.cache);
      headers['Content-Length'] = String(body.length);
      c.set('answered', { cache: read.cache, outcome });
      if (c.req.method === 'HEAD') return new Response(null, { status: 200, headers });
      outcome.bodyBytes = body.length;
      return new Response(body, { status: 200, headers });
    } finally {
      located.release();
      if (located.cache !== 'hit') c.set('upstreamMs', clock.now() - started);
    }
  };
}

/**
 * Registers info.json and peaks.json (GET, and HEAD through it), and for
 * their other methods 405 or a plain OPTIONS's 204, on a good id only (a bad
 * one is 400, whatever the method). Before the recording routes: theirs would
 * take these paths for a bad `.mp3` path.
 */
export function registerRecordingFactsRoutes(app: Hono<GatewayEnv>, deps: RecordingFactsRoutesDeps): void {
  const answer = createRecordingFactsHandlers(deps);
  for (const [route, kind] of [
    [RECORDING_INFO_ROUTE, 'info'],
    [RECORDING_PEAKS_ROUTE, 'peaks'],
  ] as const) {
    app.get(route, (c) => answer(c, kind));
    app.all(route, (c) => {
      callIdOf(c, kind);
      return otherMethodAnswer(c, METHODS);
    });
  }
}
