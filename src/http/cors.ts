/**
 * CORS for media elements and fetch() from a tenant's own frontends
 * (README, "CORS"). Only listed origins get headers; others get none, so
 * the browser refuses to hand them the body.
 */
const EXPOSED_HEADERS = 'Content-Range, Content-Length, Accept-Ranges, ETag, Cache-Status';
const ALLOWED_METHODS = 'GET, HEAD, POST, DELETE';
const ALLOWED_HEADERS =
  'Authorization, Range, If-Range, If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, Content-Type, X-Request-Id';
const PREFLIGHT_MAX_AGE_SECONDS = '600';

/** Headers for an actual response; `Vary: Origin` always, since the answer depends on it. */
export function corsHeaders(origin: string | undefined, allowed: ReadonlySet<string>): Record<string, string> {
  const headers: Record<string, string> = {};
  addCorsHeaders(headers, origin, allowed);
  return headers;
}

/** {@link corsHeaders}, added to `headers` in the same order: no object made and copied on every answer. */
export function addCorsHeaders(headers: Record<string, string>, origin: string | undefined, allowed: ReadonlySet<string>): void {
  if (origin !== undefined && allowed.has(origin)) {
    headers['Access-Control-Allow-Origin'] = origin;
    headers['Access-Control-Expose-Headers'] = EXPOSED_HEADERS;
  }
  headers.Vary = 'Origin';
}

/** The answer to a preflight; it carries no credentials, so any tenant's listed origin passes. */
export function preflightResponse(origin: string | undefined, allowed: ReadonlySet<string>): Response {
  if (origin === undefined || !allowed.has(origin)) {
    return new Response(null, { status: 204, headers: { Vary: 'Origin' } });
  }
  return new Response(null, {
    status: 204,
    headers: {
      'Access-Control-Allow-Origin': origin,
      'Access-Control-Allow-Methods': ALLOWED_METHODS,
      'Access-Control-Allow-Headers': ALLOWED_HEADERS,
      'Access-Control-Max-Age': PREFLIGHT_MAX_AGE_SECONDS,
      Vary: 'Origin',
    },
  });
}
