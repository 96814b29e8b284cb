import type { Context } from 'hono';
import { MethodNotAllowedError } from '../errors.js';

/**
 * A method a route has no handler of: a plain OPTIONS (a preflight, which
 * carries an Origin, is answered before any route) gets 204 with the route's
 * `Allow` (RFC 9110 9.3.7), anything else 405 with it (15.5.6).
 */
export function otherMethodAnswer(c: Context, allow: string): Response {
  if (c.req.method === 'OPTIONS') return c.body(null, 204, { Allow: allow });
  throw new MethodNotAllowedError(allow);
}
