import { createRequire } from 'node:module';
import { ADMIN_PURGE_PATH } from '../admin-api.js';
import { PEER_PURGE_PATH, PEER_RECORDING_PATH, PEER_REDIS_PATH } from '../cluster/peer-client.js';
import { PEER_STREAM_TYPE } from '../cluster/peer-stream.js';
import { KID } from '../config/fields.js';
import { DEFAULT_PEAK_POINTS, MAX_PEAK_POINTS } from '../routes/recording-facts.js';

/*
 * The OpenAPI 3.1 document of every route in app.ts, built in code. It cannot
 * drift unnoticed: test/openapi.test.ts checks it against the app's registered
 * routes, validates it, and checks real answers against it.
 */

/** A JSON Schema or any other part of the document: plain JSON. */
type Json = { [key: string]: unknown };

/** An OpenAPI 3.1 document; only the top level is typed, the rest is plain JSON. */
export interface OpenApiDocument {
  openapi: '3.1.0';
  info: { title: string; version: string; description: string; license: { name: string; identifier: string } };
  servers: Array<{ url: string }>;
  tags: Array<{ name: string; description: string }>;
  paths: Record<string, Record<string, Json>>;
  components: {
    schemas: Record<string, Json>;
    parameters: Record<string, Json>;
    headers: Record<string, Json>;
    responses: Record<string, Json>;
    securitySchemes: Record<string, Json>;
  };
}

const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };

/**
 * A regular expression for the decimal numbers 1 to `max`, no sign, no
 * leading zero: shorter numbers, then for each digit of `max` the numbers
 * that share its digits so far and are smaller there, then `max` itself.
 */
export function decimalsUpTo(max: string): string {
  const digits = (count: number) => (count === 0 ? '' : count === 1 ? '[0-9]' : `[0-9]{${count}}`);
  const range = (low: number, high: number) => (low === high ? String(low) : `[${low}-${high}]`);
  const shorter = max.length === 1 ? [] : [max.length === 2 ? '[1-9]' : `[1-9][0-9]{0,${max.length - 2}}`];
  const sameLength: string[] = [];
  for (let i = 0; i < max.length; i++) {
    const low = i === 0 ? 1 : 0;
    const high = Number(max[i]) - 1;
    if (high >= low) sameLength.push(`${max.slice(0, i)}${range(low, high)}${digits(max.length - i - 1)}`);
  }
  return `^(?:${[...shorter, ...sameLength, max].join('|')})$`;
}

/** The contract's call id: 1 to 9007199254740991, decimal, no sign, no leading zero. */
export const CALL_ID_PATTERN = decimalsUpTo(String(Number.MAX_SAFE_INTEGER));

/** The documented path of each recording route (Hono registers them as one wildcard). */
export const RECORDING_FILE_PATH = '/v1/call/recording/{id}.mp3';
export const SIGNED_URL_ROUTE_PATH = '/v1/call/recording/{id}/signed-url';
export const RECORDING_INFO_PATH = '/v1/call/recording/{id}/info.json';
export const RECORDING_PEAKS_PATH = '/v1/call/recording/{id}/peaks.json';
export const WEBHOOK_PATH = '/v1/webhooks/flyflow/{tenant}';
export const PEER_RECORDING_ROUTE_PATH = `${PEER_RECORDING_PATH}/{namespace}/{id}`;
export const PEER_PURGE_ROUTE_PATH = `${PEER_PURGE_PATH}/{namespace}/{id}`;

const ref = (kind: string, name: string): Json => ({ $ref: `#/components/${kind}/${name}` });
const schemaRef = (name: string) => ref('schemas', name);
const headerRef = (name: string) => ref('headers', name);
const JSON_TYPE = 'application/json';
const MP3_TYPE = 'audio/mpeg';

const RATE_LIMIT_HEADERS = {
  'RateLimit-Limit': headerRef('RateLimitLimit'),
  'RateLimit-Remaining': headerRef('RateLimitRemaining'),
  'RateLimit-Reset': headerRef('RateLimitReset'),
};
const REQUEST_ID = { 'X-Request-Id': headerRef('XRequestId') };
const PEER_PROOF: Json = {
  description:
    'hex(HMAC_SHA256(peer secret, "recording-gateway peer answer v1\\n" + nonce + "\\n" + kind + "\\n" + content)): kind `purge` with content `204`, or `redis` with the value',
  required: true,
  schema: { type: 'string', pattern: '^[0-9a-f]{64}$' },
};

/** A response with a JSON body of `schema`. */
function jsonResponse(description: string, schema: Json, headers: Record<string, Json> = {}): Json {
  return { description, headers: { ...REQUEST_ID, ...headers }, content: { [JSON_TYPE]: { schema } } };
}

/** The statuses of the shared error responses (components.responses.Error<status>). */
type ErrorStatus = '400' | '401' | '404' | '412' | '413' | '416' | '429' | '502' | '503' | '504';

function errorResponses(...statuses: ErrorStatus[]): Record<string, Json> {
  return Object.fromEntries(statuses.map((status) => [status, ref('responses', `Error${status}`)]));
}

const idParameter = ref('parameters', 'CallId');

/** The headers every successful recording answer carries. */
function recordingHeaders(extra: Record<string, Json> = {}): Record<string, Json> {
  return {
    ...REQUEST_ID,
    'Accept-Ranges': headerRef('AcceptRanges'),
    'Cache-Control': headerRef('RecordingCacheControl'),
    'Cache-Status': headerRef('CacheStatus'),
    'Content-Disposition': headerRef('ContentDisposition'),
    'Content-Length': headerRef('ContentLength'),
    ETag: headerRef('ETag'),
    'Last-Modified': headerRef('LastModified'),
    ...RATE_LIMIT_HEADERS,
    ...extra,
  };
}

const MP3_BODY = { [MP3_TYPE]: { schema: { type: 'string', contentMediaType: MP3_TYPE } } };

/** GET and HEAD of a recording share everything but the body. */
function recordingRead(method: 'GET' | 'HEAD'): Json {
  const content = method === 'GET' ? { content: MP3_BODY } : {};
  return {
    tags: ['recordings'],
    operationId: method === 'GET' ? 'getRecording' : 'headRecording',
    summary: method === 'GET' ? 'Download a call recording' : "A call recording's headers, without its body",
    description:
      'Served from the cache, or fetched from Flyflow once and cached. Single byte ranges answer 206; ' +
      'If-None-Match answers 304, If-Range and If-Match work as RFC 9110 says. Authenticate with a tenant API key, ' +
      'or with a signed URL: the query parameters tenant, exp, kid and sig (see the signedUrlSig scheme).',
    security: [{ tenantKey: [] }, { signedUrlSig: [] }],
    parameters: [
      idParameter,
      ref('parameters', 'SignedUrlTenant'),
      ref('parameters', 'SignedUrlExp'),
      ref('parameters', 'SignedUrlKid'),
      // HEAD ignores Range, and so If-Range.
      ...(method === 'GET' ? [ref('parameters', 'Range'), ref('parameters', 'IfRange')] : []),
      ref('parameters', 'IfNoneMatch'),
      ref('parameters', 'IfMatch'),
      ref('parameters', 'IfModifiedSince'),
      ref('parameters', 'IfUnmodifiedSince'),
    ],
    responses: {
      '200': { description: 'The whole recording', headers: recordingHeaders(), ...content },
      ...(method === 'GET'
        ? {
            '206': {
              description: 'One byte range of the recording',
              headers: recordingHeaders({ 'Content-Range': headerRef('ContentRange') }),
              content: MP3_BODY,
            },
          }
        : {}),
      '304': {
        description: 'Not modified: the If-None-Match tag is current',
        headers: {
          ...REQUEST_ID,
          ETag: headerRef('ETag'),
          'Cache-Control': headerRef('RecordingCacheControl'),
          'Cache-Status': headerRef('CacheStatus'),
          ...RATE_LIMIT_HEADERS,
        },
      },
      // HEAD ignores Range: never 416.
      ...errorResponses(
        ...(['400', '401', '404', '412', '416', '429', '502', '503', '504'] as const).filter(
          (status) => method === 'GET' || status !== '416',
        ),
      ),
    },
  };
}

/** GET and HEAD of info.json and peaks.json: read like the recording, answered with JSON about it. */
function recordingFactsRead(kind: 'info' | 'peaks', method: 'GET' | 'HEAD'): Json {
  const schema = schemaRef(kind === 'info' ? 'RecordingInfo' : 'WaveformPeaks');
  const name = kind === 'info' ? 'RecordingInfo' : 'RecordingPeaks';
  const headers = {
    ...REQUEST_ID,
    'Cache-Control': headerRef('RecordingCacheControl'),
    'Cache-Status': headerRef('CacheStatus'),
    ETag: headerRef('AnswerETag'),
    ...RATE_LIMIT_HEADERS,
  };
  return {
    tags: ['recordings'],
    operationId: `${method === 'GET' ? 'get' : 'head'}${name}`,
    summary:
      kind === 'info'
        ? "A recording's duration, bitrate, sample rate and channels"
        : "A recording's waveform peaks, in audiowaveform's JSON format (version 2)",
    description:
      (kind === 'info'
        ? 'Read from the MP3 once, when it is stored, and answered from the cache index without reading the audio again. '
        : 'Computed once by decoding the MP3 and kept beside it; `points` min,max pairs (int8), all channels merged into one. ' +
          'Fewer points when the recording has fewer samples than asked for. ') +
      'Authenticated, rate-limited and fetched exactly like the recording (a signed URL for the .mp3 opens this too); ' +
      'a miss downloads the recording first.',
    security: [{ tenantKey: [] }, { signedUrlSig: [] }],
    parameters: [
      idParameter,
      ...(kind === 'peaks' ? [ref('parameters', 'Points')] : []),
      ref('parameters', 'SignedUrlTenant'),
      ref('parameters', 'SignedUrlExp'),
      ref('parameters', 'SignedUrlKid'),
      ref('parameters', 'IfNoneMatch'),
      ref('parameters', 'IfMatch'),
    ],
    responses: {
      '200': {
        description: kind === 'info' ? "The recording's facts" : 'The waveform peaks',
        headers: { ...headers, 'Content-Length': headerRef('ContentLength') },
        ...(method === 'GET' ? { content: { [JSON_TYPE]: { schema } } } : {}),
      },
      '304': { description: 'Not modified: the If-None-Match tag is current', headers },
      ...errorResponses('400', '401', '404', '412', '429', '502', '503', '504'),
    },
  };
}

const paths: OpenApiDocument['paths'] = {
  [RECORDING_FILE_PATH]: {
    get: recordingRead('GET'),
    head: recordingRead('HEAD'),
    delete: {
      tags: ['recordings'],
      operationId: 'deleteRecording',
      summary: "Drop the cached copy from every tier of the caller's namespace",
      description:
        'If-Match, If-None-Match and If-Unmodified-Since are judged against the copy held, as RFC 9110 says: ' +
        'when one fails the answer is 412 and the copy is kept (If-Match, even *, fails when no copy is held).',
      security: [{ tenantKey: [] }],
      parameters: [
        idParameter,
        ref('parameters', 'IfMatch'),
        ref('parameters', 'IfNoneMatchOnDelete'),
        ref('parameters', 'IfUnmodifiedSince'),
      ],
      responses: {
        '204': { description: 'Gone (or never cached)', headers: { ...REQUEST_ID, ...RATE_LIMIT_HEADERS } },
        ...errorResponses('400', '401', '412', '429'),
      },
    },
  },
  [RECORDING_INFO_PATH]: { get: recordingFactsRead('info', 'GET'), head: recordingFactsRead('info', 'HEAD') },
  [RECORDING_PEAKS_PATH]: { get: recordingFactsRead('peaks', 'GET'), head: recordingFactsRead('peaks', 'HEAD') },
  [SIGNED_URL_ROUTE_PATH]: {
    post: {
      tags: ['recordings'],
      operationId: 'createSignedUrl',
      summary: 'Mint a signed URL for <audio src>',
      security: [{ tenantKey: [] }],
      parameters: [idParameter],
      requestBody: {
        required: false,
        description: "Empty for the default lifetime (300 s, or the tenant's maximum if lower) and the tenant's first signing key",
        content: { [JSON_TYPE]: { schema: schemaRef('SignedUrlRequest') } },
      },
      responses: {
        '200': jsonResponse('The signed URL', schemaRef('SignedUrl'), {
          'Cache-Control': headerRef('NoStore'),
          ...RATE_LIMIT_HEADERS,
        }),
        ...errorResponses('400', '401', '413', '429'),
      },
    },
  },
  '/healthz': {
    get: {
      tags: ['operations'],
      operationId: 'healthz',
      summary: 'Liveness: 200 while the process serves',
      security: [],
      responses: { '200': jsonResponse('Serving', schemaRef('Health'), { 'Cache-Control': headerRef('NoStore') }) },
    },
  },
  '/readyz': {
    get: {
      tags: ['operations'],
      operationId: 'readyz',
      summary: 'Readiness: the cache directory is writable and the index answers',
      description: 'In cluster mode, Redis trouble is reported in `cluster`, never as 503.',
      security: [],
      responses: {
        '200': jsonResponse('Ready', schemaRef('Ready'), { 'Cache-Control': headerRef('NoStore') }),
        '503': jsonResponse('Not ready; the message names what failed', schemaRef('NotReady'), {
          'Cache-Control': headerRef('NoStore'),
        }),
      },
    },
  },
  '/openapi.json': {
    get: {
      tags: ['operations'],
      operationId: 'openApiDocument',
      summary: 'This document',
      security: [],
      responses: {
        '200': jsonResponse('The OpenAPI 3.1 document', { type: 'object' }, { 'Cache-Control': headerRef('PublicCache') }),
      },
    },
  },
  '/metrics': {
    get: {
      tags: ['operations'],
      operationId: 'metrics',
      summary: 'Prometheus metrics',
      description: 'Needs the admin token when one is configured; open otherwise.',
      security: [{ adminToken: [] }, {}],
      responses: {
        '200': {
          description: 'Prometheus text format',
          headers: { ...REQUEST_ID, 'Cache-Control': headerRef('NoStore') },
          content: { 'text/plain': { schema: { type: 'string' } } },
        },
        ...errorResponses('401'),
      },
    },
  },
  [ADMIN_PURGE_PATH]: {
    post: {
      tags: ['operations'],
      operationId: 'purgeCache',
      summary: 'Purge cached recordings from every tier',
      description: 'The admin token, or a one-time grant left in the cache directory (what `recording-gateway cache purge` uses).',
      security: [{ adminToken: [] }],
      requestBody: { required: true, content: { [JSON_TYPE]: { schema: schemaRef('PurgeRequest') } } },
      responses: {
        '200': jsonResponse('How many recordings were purged', schemaRef('Purged'), { 'Cache-Control': headerRef('NoStore') }),
        ...errorResponses('400', '401', '413'),
      },
    },
  },
  [WEBHOOK_PATH]: {
    post: {
      tags: ['webhooks'],
      operationId: 'flyflowWebhook',
      summary: "Flyflow's call events; call_ended warms the cache in the background",
      security: [{ webhookToken: [] }],
      parameters: [{ name: 'tenant', in: 'path', required: true, schema: { type: 'string' } }],
      requestBody: { required: true, content: { [JSON_TYPE]: { schema: schemaRef('WebhookEvent') } } },
      responses: {
        '202': jsonResponse('Accepted, or another event type acknowledged and ignored', schemaRef('WebhookAccepted'), RATE_LIMIT_HEADERS),
        ...errorResponses('400', '401', '413', '429', '503'),
      },
    },
  },
  [PEER_RECORDING_ROUTE_PATH]: {
    get: {
      tags: ['internal'],
      operationId: 'peerRecording',
      summary: 'Cluster only: a copy this replica holds, or its download under way, streamed to another replica',
      security: [{ peerSecret: [] }],
      parameters: [ref('parameters', 'Namespace'), idParameter],
      responses: {
        '200': {
          description:
            'The recording in the peer stream framing: a line `<proof> <head JSON>`, the bytes, then a line `<proof> {"sha256":…,"size":…}`; ' +
            'each proof is an HMAC-SHA256 with the peer secret bound to the request nonce (README, "How replicas talk to each other")',
          headers: { ...REQUEST_ID, 'Cache-Control': headerRef('NoStore') },
          content: { [PEER_STREAM_TYPE]: { schema: { type: 'string' } } },
        },
        ...errorResponses('400', '401', '404'),
      },
    },
  },
  [PEER_PURGE_ROUTE_PATH]: {
    post: {
      tags: ['internal'],
      operationId: 'peerPurge',
      summary: 'Cluster only: drop a recording from this replica (a purge elsewhere)',
      security: [{ peerSecret: [] }],
      parameters: [ref('parameters', 'Namespace'), idParameter],
      responses: {
        '204': { description: 'Gone from this replica', headers: { ...REQUEST_ID, 'X-Peer-Proof': PEER_PROOF } },
        ...errorResponses('400', '401'),
      },
    },
  },
  [PEER_REDIS_PATH]: {
    get: {
      tags: ['internal'],
      operationId: 'peerRedis',
      summary: "Cluster only: whether this replica reaches the cluster's Redis (asked by a replica that lost its own link)",
      security: [{ peerSecret: [] }],
      responses: {
        '200': jsonResponse(
          "This replica's link to Redis",
          {
            type: 'object',
            required: ['redis'],
            additionalProperties: false,
            properties: { redis: { type: 'string', enum: ['up', 'unreachable'] } },
          },
          { 'Cache-Control': headerRef('NoStore'), 'X-Peer-Proof': PEER_PROOF },
        ),
        ...errorResponses('401'),
      },
    },
  },
};

const errorStatuses: Record<ErrorStatus, { description: string; headers?: Record<string, Json> }> = {
  '400': { description: 'Bad request: a bad call id or body' },
  '401': {
    description: 'Missing, invalid or expired credentials',
    headers: { 'WWW-Authenticate': headerRef('WWWAuthenticate') },
  },
  '404': { description: 'Not found (negative-cached for a while)' },
  '412': { description: 'If-Match does not match' },
  '413': { description: 'Request body too large' },
  '416': { description: 'Range not satisfiable', headers: { 'Content-Range': headerRef('ContentRange') } },
  '429': { description: 'Over the rate limit', headers: { 'Retry-After': headerRef('RetryAfter') } },
  '502': { description: 'Upstream rejected the server key, failed, or sent a bad body' },
  '503': { description: 'Upstream circuit open, or a queue full', headers: { 'Retry-After': headerRef('RetryAfter') } },
  '504': { description: 'Upstream timed out' },
};

const stringHeader = (description: string, required = false): Json => ({ description, required, schema: { type: 'string' } });
const integerHeader = (description: string): Json => ({ description, schema: { type: 'integer', minimum: 0 } });
const queryString = (name: string, description: string): Json => ({
  name,
  in: 'query',
  required: false,
  description,
  schema: { type: 'string' },
});
const headerParameter = (name: string, description: string): Json => ({
  name,
  in: 'header',
  required: false,
  description,
  schema: { type: 'string' },
});

/**
 * Every GET also answers HEAD (Hono answers HEAD through the GET route): the
 * same responses and headers, without a body. Paths that describe their HEAD
 * themselves keep it.
 */
function withHeadOperations(items: OpenApiDocument['paths']): OpenApiDocument['paths'] {
  return Object.fromEntries(
    Object.entries(items).map(([path, item]) => {
      const get = item.get as (Json & { operationId: string; summary: string; responses: Record<string, Json> }) | undefined;
      if (!get || item.head) return [path, item];
      const responses = Object.fromEntries(
        Object.entries(get.responses).map(([status, response]) => {
          const { content: _body, ...head } = response;
          return [status, head];
        }),
      );
      const head = { ...get, operationId: `${get.operationId}Head`, summary: `${get.summary} (headers only)`, responses };
      return [path, { ...item, head }];
    }),
  );
}

/** The gateway's OpenAPI 3.1 document, served at GET /openapi.json. */
export const openApiDocument: OpenApiDocument = {
  openapi: '3.1.0',
  info: {
    title: 'recording-gateway',
    version,
    description:
      'A caching, tenant-authenticating reverse proxy for Flyflow call recordings. Every error is ' +
      '`{"error": "<reason phrase>", "message": "..."}`; a method a path does not take answers 405 with `Allow`.',
    license: { name: 'MIT', identifier: 'MIT' },
  },
  servers: [{ url: '/' }],
  tags: [
    { name: 'recordings', description: 'Call recordings, for tenants' },
    { name: 'operations', description: 'Health, readiness, metrics and cache administration' },
    { name: 'webhooks', description: "Flyflow's events" },
    { name: 'internal', description: 'Between the replicas of a cluster; not for clients' },
  ],
  paths: withHeadOperations(paths),
  components: {
    schemas: {
      Error: {
        type: 'object',
        required: ['error', 'message'],
        properties: {
          error: { type: 'string', description: 'The reason phrase', examples: ['Not Found'] },
          message: { type: 'string', description: 'What happened' },
        },
      },
      Health: { type: 'object', required: ['status'], properties: { status: { const: 'ok' } } },
      ClusterStatus: {
        type: 'object',
        required: ['state', 'redis', 'peers'],
        properties: {
          state: { enum: ['ok', 'degraded'] },
          redis: { enum: ['up', 'unreachable'] },
          peers: { type: 'integer', minimum: 0, description: 'Other replicas seen alive' },
        },
      },
      Ready: {
        type: 'object',
        required: ['status'],
        properties: { status: { const: 'ready' }, cluster: schemaRef('ClusterStatus') },
      },
      NotReady: {
        type: 'object',
        required: ['error', 'message'],
        properties: { error: { const: 'Service Unavailable' }, message: { type: 'string' }, cluster: schemaRef('ClusterStatus') },
      },
      SignedUrlRequest: {
        type: 'object',
        description: 'Any other field is refused with 400',
        additionalProperties: false,
        properties: {
          ttl_seconds: { type: 'integer', minimum: 1, description: "At most the tenant's max_signed_url_ttl_seconds" },
          kid: {
            type: 'string',
            pattern: KID.source,
            description: "The signing key to sign with, one of the tenant's `signing_keys`; default the first listed",
          },
        },
      },
      SignedUrl: {
        type: 'object',
        required: ['url', 'expires_at'],
        properties: { url: { type: 'string' }, expires_at: { type: 'integer', description: 'Unix seconds' } },
      },
      PurgeRequest: {
        description: 'A call id, a tenant, both, or {"all": true}',
        oneOf: [
          {
            type: 'object',
            additionalProperties: false,
            anyOf: [{ required: ['call_id'] }, { required: ['tenant'] }],
            properties: {
              call_id: {
                oneOf: [
                  { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
                  { type: 'string', pattern: CALL_ID_PATTERN },
                ],
              },
              tenant: { type: 'string' },
            },
          },
          { type: 'object', additionalProperties: false, required: ['all'], properties: { all: { const: true } } },
        ],
      },
      Purged: { type: 'object', required: ['purged'], properties: { purged: { type: 'integer', minimum: 0 } } },
      RecordingInfo: {
        type: 'object',
        required: ['call_id', 'size', 'etag', 'duration_seconds', 'bitrate', 'sample_rate', 'channels'],
        properties: {
          call_id: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
          size: { type: 'integer', minimum: 0, description: "The recording's bytes" },
          etag: { type: 'string', description: "The recording's own ETag (as its .mp3 answers carry)" },
          duration_seconds: { type: 'number', exclusiveMinimum: 0, description: 'Seconds of audio' },
          bitrate: { type: 'integer', minimum: 1, description: 'Bits per second (the average, for a variable bitrate)' },
          sample_rate: { type: 'integer', minimum: 1, description: 'Samples per second' },
          channels: { type: 'integer', minimum: 1 },
        },
      },
      WaveformPeaks: {
        type: 'object',
        description: "audiowaveform's JSON format, version 2, as peaks.js and wavesurfer.js read it",
        required: ['version', 'channels', 'sample_rate', 'samples_per_pixel', 'bits', 'length', 'data'],
        properties: {
          version: { const: 2 },
          channels: { const: 1, description: "The recording's channels merged into one waveform" },
          sample_rate: { type: 'integer', minimum: 1 },
          samples_per_pixel: { type: 'integer', minimum: 1, description: 'Samples each point covers (rounded)' },
          bits: { const: 8 },
          length: { type: 'integer', minimum: 1, maximum: MAX_PEAK_POINTS, description: 'Points: min,max pairs in data' },
          data: {
            type: 'array',
            description: 'min, max, min, max, ...',
            maxItems: 2 * MAX_PEAK_POINTS,
            items: { type: 'integer', minimum: -128, maximum: 127 },
          },
        },
      },
      WebhookEvent: {
        type: 'object',
        required: ['event_type'],
        properties: {
          event_type: { type: 'string', description: 'Only call_ended is acted on', examples: ['call_ended'] },
          call_id: {
            oneOf: [
              { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
              { type: 'string', pattern: CALL_ID_PATTERN },
            ],
          },
        },
      },
      WebhookAccepted: { type: 'object', required: ['status'], properties: { status: { enum: ['accepted', 'ignored'] } } },
    },
    parameters: {
      CallId: {
        name: 'id',
        in: 'path',
        required: true,
        description: 'The call id: 1 to 9007199254740991, decimal, no sign, no leading zero',
        schema: { type: 'string', pattern: CALL_ID_PATTERN },
      },
      Namespace: {
        name: 'namespace',
        in: 'path',
        required: true,
        description: 'A cache namespace (a digest of the upstream account)',
        schema: { type: 'string', pattern: '^[0-9a-f]{32}$' },
      },
      SignedUrlTenant: queryString('tenant', 'Signed URL: the tenant id'),
      SignedUrlExp: {
        name: 'exp',
        in: 'query',
        required: false,
        description: 'Signed URL: expiry in unix seconds',
        schema: { type: 'string', pattern: '^[0-9]+$' },
      },
      SignedUrlKid: queryString('kid', "Signed URL: which of the tenant's signing keys"),
      Range: headerParameter('Range', 'A single byte range, e.g. bytes=0-1023'),
      IfRange: headerParameter('If-Range', 'An ETag or date: the range only if the recording is still that one'),
      IfNoneMatch: headerParameter('If-None-Match', 'ETags held: 304 when one is current'),
      IfMatch: headerParameter('If-Match', 'ETags: 412 when none is current'),
      IfNoneMatchOnDelete: headerParameter('If-None-Match', 'ETags, or *: 412 when one is current (*: when a copy is held)'),
      IfModifiedSince: headerParameter('If-Modified-Since', 'A date: 304 when the recording is no newer (ignored with If-None-Match)'),
      IfUnmodifiedSince: headerParameter('If-Unmodified-Since', 'A date: 412 when the recording is newer (ignored with If-Match)'),
      Points: {
        name: 'points',
        in: 'query',
        required: false,
        description: `How many min,max pairs: 1 to ${MAX_PEAK_POINTS}, default ${DEFAULT_PEAK_POINTS}; anything else is 400`,
        schema: { type: 'integer', minimum: 1, maximum: MAX_PEAK_POINTS, default: DEFAULT_PEAK_POINTS },
      },
    },
    headers: {
      XRequestId: stringHeader("The request's id (the caller's when well-formed), also on its log line", true),
      AcceptRanges: { description: 'Always bytes', required: true, schema: { const: 'bytes' } },
      ETag: stringHeader("A strong, content-derived tag; absent while a recording's first download is under way"),
      AnswerETag: stringHeader("A strong tag derived from the recording's digest and what was asked (points)", true),
      LastModified: stringHeader('When the recording was last modified'),
      CacheStatus: stringHeader('RFC 9211: recording-gateway; hit, or fwd=uri-miss (with collapsed when it joined a download)', true),
      RecordingCacheControl: stringHeader('private, max-age=<n>, immutable; a signed URL caps n at its remaining validity', true),
      PublicCache: { description: 'public, max-age=300', required: true, schema: { type: 'string' } },
      NoStore: { description: 'no-store', required: true, schema: { const: 'no-store' } },
      ContentDisposition: stringHeader('inline; filename="call-<id>.mp3"', true),
      ContentLength: { description: 'Bytes in the body', required: true, schema: { type: 'integer', minimum: 0 } },
      ContentRange: stringHeader('bytes <first>-<last>/<size> on 206, bytes */<size> on 416', true),
      RateLimitLimit: integerHeader("The tenant's requests per window, when it has a limit"),
      RateLimitRemaining: integerHeader('Requests left in this window'),
      RateLimitReset: integerHeader('Seconds until the window resets'),
      RetryAfter: { ...integerHeader('Seconds to wait before trying again'), required: true },
      WWWAuthenticate: stringHeader('Bearer realm="recording-gateway", with error="invalid_token" for a bad credential', true),
    },
    responses: Object.fromEntries(
      Object.entries(errorStatuses).map(([status, { description, headers }]) => [
        `Error${status}`,
        jsonResponse(description, schemaRef('Error'), { 'Cache-Control': headerRef('NoStore'), ...headers }),
      ]),
    ),
    securitySchemes: {
      tenantKey: { type: 'http', scheme: 'bearer', description: 'A tenant API key (the config holds only its sha256)' },
      signedUrlSig: {
        type: 'apiKey',
        in: 'query',
        name: 'sig',
        description:
          'A signed URL, for <audio src>. OpenAPI names one parameter per scheme: this is `sig`; the URL also carries ' +
          '`tenant`, `exp` (unix seconds) and `kid`, documented as parameters. ' +
          'sig = base64url_nopad(HMAC_SHA256(secret, "v1\\n" + tenant + "\\n" + id + "\\n" + exp)), with the signing key named by kid. ' +
          'Mint one with POST /v1/call/recording/{id}/signed-url.',
      },
      adminToken: { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN' },
      webhookToken: { type: 'apiKey', in: 'query', name: 'token', description: "The tenant's webhook token" },
      peerSecret: {
        // Not an http scheme: RecordingGatewayPeer is no registered one, and client generators know only those.
        type: 'apiKey',
        in: 'header',
        name: 'Authorization',
        description:
          "A request signed with the cluster's peer secret, which never goes on the wire: " +
          '`Authorization: RecordingGatewayPeer v1 node=<node id>, nonce=<32 hex>, ts=<unix seconds>, mac=<64 hex>`, ' +
          'mac = hex(HMAC_SHA256(peer secret, "recording-gateway peer request v1\\n" + METHOD + "\\n" + path + "\\n" + node + "\\n" + nonce + "\\n" + ts)); ' +
          "ts within 60 s of the replica's clock; each nonce is taken once (a replay is 401).",
      },
    },
  },
};
