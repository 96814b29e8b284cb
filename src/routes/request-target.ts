import type { Context } from 'hono';
import type { GatewayEnv } from './gateway-env.js';

/**
 * The path exactly as the client sent it, before the URL parser resolved dot
 * segments or anything was percent-decoded, so that `..`, `%2E%2E` or `%2F`
 * can never turn one request into another call id. Under @hono/node-server the
 * raw request line is on the Node request; elsewhere (app.request in tests)
 * the Request URL is all there is.
 */
export function rawRequestPath(c: Context<GatewayEnv>): string {
  const target = c.env?.incoming?.url ?? c.req.url;
  const pathStart = target.startsWith('/') ? 0 : target.indexOf('/', target.indexOf('//') + 2);
  const queryStart = target.indexOf('?', pathStart);
  return target.slice(pathStart, queryStart === -1 ? undefined : queryStart);
}

export const RECORDING_PREFIX = '/v1/call/recording/';
