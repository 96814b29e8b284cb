import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { TenantRegistry } from './auth/tenants.js';
import { corsHeaders, preflightResponse } from './http/cors.js';
import { BadRequestError, ContentTooLargeError, GatewayError, errorResponse } from './errors.js';
import { otherMethodAnswer } from './routes/other-methods.js';
import type { GatewayEnv } from './routes/gateway-env.js';
import { RECORDING_PREFIX, rawRequestPath } from './routes/request-target.js';
import { requestLog, type RequestReporter } from './routes/request-log.js';
import type { GatewayMetrics } from './metrics/gateway-metrics.js';
import { createHealthHandlers, type ReadinessCheck } from './routes/health.js';
import { ADMIN_PURGE_PATH } from './admin-api.js';
import { createAdminPurgeHandler, type AdminRoutesDeps } from './routes/admin.js';
import { createMetricsHandler } from './routes/metrics.js';
import { openApiHandler } from './routes/openapi.js';
import { createPeerHandlers, type PeerRoutesDeps } from './routes/peer.js';
import { PEER_PURGE_PATH, PEER_RECORDING_PATH, PEER_REDIS_PATH } from './cluster/peer-client.js';
import { headContentLength } from './routes/head-length.js';
import { createWebhookHandler, type WebhookDeps } from './routes/webhooks.js';
import { createRecordingHandlers, type RecordingRoutesDeps, recordingRouteMethods } from './routes/recordings.js';
import { registerRecordingFactsRoutes } from './routes/recording-facts.js';
import type { RecordingFactsService } from './recordings/analysis/recording-facts-service.js';

export interface AppDeps extends RecordingRoutesDeps {
  tenants: TenantRegistry;
  readiness: ReadinessCheck[];
  metrics: GatewayMetrics;
  adminToken: string | undefined;
  webhooks: Omit<WebhookDeps, 'tenants' | 'logger' | 'metrics'>;
  admin: Omit<AdminRoutesDeps, 'tenants' | 'adminToken'>;
  /** More for the /readyz body (the cluster's state). */
  readinessDetails?: () => Record<string, unknown>;
  /** Cluster mode: the routes the other replicas call. */
  peer?: PeerRoutesDeps;
  /** Answers info.json and peaks.json. */
  facts: RecordingFactsService;
  /** Writes each request's log line, metrics and audit line. */
  report: RequestReporter;
}

const SIGNED_URL_BODY_LIMIT_BYTES = 4 * 1024;
const ADMIN_BODY_LIMIT_BYTES = 4 * 1024;
const WEBHOOK_BODY_LIMIT_BYTES = 64 * 1024;
/** The methods of every other route, for a 405's and a plain OPTIONS's `Allow` (RFC 9110 15.5.6, 9.3.7); every route answers OPTIONS. */
const OTHER_ROUTE_METHODS: ReadonlyArray<[string, string]> = [
  ['/healthz', 'GET, HEAD, OPTIONS'],
  ['/readyz', 'GET, HEAD, OPTIONS'],
  ['/openapi.json', 'GET, HEAD, OPTIONS'],
  ['/metrics', 'GET, HEAD, OPTIONS'],
  [ADMIN_PURGE_PATH, 'POST, OPTIONS'],
  ['/v1/webhooks/flyflow/:tenant', 'POST, OPTIONS'],
];
// The replicas' own routes (cluster only).
const PEER_RECORDING_METHODS = 'GET, HEAD, OPTIONS';
const PEER_PURGE_METHODS = 'POST, OPTIONS';
const PEER_REDIS_METHODS = 'GET, HEAD, OPTIONS';

/** Refuses a body over `maxBytes` with 413 in the JSON error shape. */
function limitBody(maxBytes: number) {
  return bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw new ContentTooLargeError(maxBytes);
    },
  });
}

/** Builds the gateway's HTTP app from its dependencies. It never listens. */
export function createApp(deps: AppDeps): Hono<GatewayEnv> {
  const app = new Hono<GatewayEnv>();
  const recordings = createRecordingHandlers(deps);
  const health = createHealthHandlers(deps.readiness, deps.readinessDetails);

  app.use('*', requestLog(deps.clock, deps.report));
  app.use('*', headContentLength());
  app.options('*', function preflight(c, next) {
    const origin = c.req.header('origin');
    // A plain OPTIONS asks the route what it takes: the route's own fallback answers, with its Allow.
    if (origin === undefined) return next();
    return preflightResponse(origin, deps.tenants.anyAllowedOrigin);
  });
  app.get('/healthz', health.healthz);
  app.get('/readyz', health.readyz);
  app.get('/openapi.json', openApiHandler);
  app.get('/metrics', createMetricsHandler(deps.metrics, deps.adminToken));
  app.post(
    ADMIN_PURGE_PATH,
    limitBody(ADMIN_BODY_LIMIT_BYTES),
    createAdminPurgeHandler({ ...deps.admin, tenants: deps.tenants, adminToken: deps.adminToken }),
  );
  app.post(
    '/v1/webhooks/flyflow/:tenant',
    limitBody(WEBHOOK_BODY_LIMIT_BYTES),
    createWebhookHandler({ ...deps.webhooks, tenants: deps.tenants, logger: deps.logger, metrics: deps.metrics }),
  );

  if (deps.peer) {
    const peer = createPeerHandlers(deps.peer);
    app.get(`${PEER_RECORDING_PATH}/:namespace/:callId`, peer.recording);
    app.post(`${PEER_PURGE_PATH}/:namespace/:callId`, peer.purge);
    app.get(PEER_REDIS_PATH, peer.redis);
    app.all(`${PEER_RECORDING_PATH}/:namespace/:callId`, (c) => otherMethodAnswer(c, PEER_RECORDING_METHODS));
    app.all(`${PEER_PURGE_PATH}/:namespace/:callId`, (c) => otherMethodAnswer(c, PEER_PURGE_METHODS));
    app.all(PEER_REDIS_PATH, (c) => otherMethodAnswer(c, PEER_REDIS_METHODS));
  }

  registerRecordingFactsRoutes(app, deps);
  // Hono answers HEAD through the GET route and drops the body; the handler
  // sees the HEAD method and never opens a body it would not send.
  app.get('/v1/call/recording/*', recordings.getRecording);
  app.delete('/v1/call/recording/*', recordings.deleteRecording);
  app.post('/v1/call/recording/*', limitBody(SIGNED_URL_BODY_LIMIT_BYTES), recordings.createSignedUrl);
  app.all('/v1/call/recording/*', (c) => {
    const methods = recordingRouteMethods(c);
    if (methods === undefined) throw new BadRequestError('Expected /v1/call/recording/{id}.mp3 with a decimal call id');
    return otherMethodAnswer(c, methods);
  });
  for (const [path, methods] of OTHER_ROUTE_METHODS) {
    app.all(path, (c) => otherMethodAnswer(c, methods));
  }

  app.notFound((c) => {
    // The URL parser resolved dot segments out of a recording path: still a bad id, not another route.
    if (rawRequestPath(c).startsWith(RECORDING_PREFIX))
      throw new BadRequestError('Expected /v1/call/recording/{id}.mp3 with a decimal call id');
    return errorResponse(new GatewayError(404, 'Not Found', 'No such route'));
  });
  app.onError((error, c) => handleError(error, c, deps));
  return app;
}

function handleError(error: Error, c: Context<GatewayEnv>, deps: AppDeps): Response {
  const caller = c.get('caller');
  const cors = corsHeaders(c.req.header('origin'), caller?.tenant.allowedOrigins ?? deps.tenants.anyAllowedOrigin);
  const headers = { ...cors, 'X-Request-Id': c.get('requestId'), ...c.get('rateLimits') };
  if (error instanceof GatewayError) return errorResponse(error, headers);
  // The client went away, or was timed out, while its body was read: its request log line says so (`aborted`).
  if ((error as NodeJS.ErrnoException).code === 'ECONNRESET' && c.env?.incoming?.destroyed) {
    return errorResponse(new BadRequestError('The request body was cut short'), headers);
  }
  deps.logger.error({ err: error, method: c.req.method, reqId: c.get('requestId') }, 'unexpected error');
  return errorResponse(new GatewayError(500, 'Internal Server Error', 'Internal error'), headers);
}
