import type { MiddlewareHandler } from 'hono';

// The answers built whole in memory, small by construction; a recording may stream without a length and is never read here.
const BUILT_WHOLE = /^(?:application\/json|text\/plain)\b/;

/**
 * RFC 9110 9.3.2: a HEAD answer carries the header fields a GET would. Hono
 * answers HEAD through the GET route and drops the body, and Node counts
 * only a body it writes, so JSON and text answers (errors, /healthz,
 * /metrics) lost their Content-Length on HEAD. Recording answers set their own.
 */
export function headContentLength(): MiddlewareHandler {
  return async function headContentLength(c, next) {
    await next();
    if (c.req.method !== 'HEAD') return;
    const answer = c.res;
    if (answer.body === null || answer.headers.has('content-length') || !BUILT_WHOLE.test(answer.headers.get('content-type') ?? '')) return;
    const length = (await answer.clone().arrayBuffer()).byteLength;
    answer.headers.set('Content-Length', String(length));
  };
}
