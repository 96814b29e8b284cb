import type { IncomingMessage, ServerResponse } from 'node:http';
import { requestIdFrom } from './routes/request-log.js';

/**
 * A whole answer in the JSON error shape, written straight to a socket no
 * ServerResponse owns; the connection closes after it. With a Date, as RFC
 * 9110 6.6.1 asks of every 4xx from a server with a clock, and, as every
 * error answer, `Cache-Control: no-store`: a 404 or 414 is cacheable by
 * default (RFC 9110 15.1), and what it says may change.
 */
export function rawJsonAnswer(
  status: string,
  answer: { error: string; message: string },
  requestId: string,
  headers = '',
  headOnly = false,
): string {
  const body = JSON.stringify(answer);
  return `HTTP/1.1 ${status}\r\nDate: ${new Date().toUTCString()}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${headers}X-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${headOnly ? '' : body}`;
}

/**
 * Writes an error in the contract's JSON shape straight to Node's response,
 * with the request's X-Request-Id, which it returns; a HEAD gets the head alone.
 */
export function writeJsonError(
  request: IncomingMessage,
  response: ServerResponse,
  status: number,
  answer: { error: string; message: string },
  headers: Record<string, string | number> = {},
): string {
  const body = JSON.stringify(answer);
  const requestId = requestIdFrom(request.headers['x-request-id'] as string | undefined);
  response.writeHead(status, {
    'Content-Type': 'application/json',
    'Cache-Control': 'no-store',
    'Content-Length': String(Buffer.byteLength(body)),
    ...headers,
    'X-Request-Id': requestId,
  });
  response.end(request.method === 'HEAD' ? undefined : body);
  return requestId;
}
