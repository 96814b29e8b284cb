import type { IncomingMessage, ServerResponse } from 'node:http';
import { requestIdFrom } from './routes/request-log.js';

/**
 * A whole answer in the JSON error shape, written straight to a socket no
 * ServerResponse owns; the connection closes after it. With a Date, as RFC
 * 9110 6.6.1 asks of every 4xx from a server with a clock.
 */
export function rawJsonAnswer(
  status: string,
  answer: { error: string; message: string },
  requestId: string,
  headers = '',
  headOnly = false,
): string {
  const body = JSON.stringify(answer);
  return `HTTP/1.1 ${status}\r\nDate: ${new Date().toUTCString()}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${headers}X-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${headOnly ? '' : body}`;
}

/** Writes an error in the contract's JSON shape straight to Node's response, with the request's X-Request-Id; a HEAD gets the head alone. */
export function writeJsonError(
  request: IncomingMessage,
  response: ServerResponse,
  status: number,
  answer: { error: string; message: string },
  headers: Record<string, string | number> = {},
): void {
  const body = JSON.stringify(answer);
  response.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': String(Buffer.byteLength(body)),
    ...headers,
    'X-Request-Id': requestIdFrom(request.headers['x-request-id'] as string | undefined),
  });
  response.end(request.method === 'HEAD' ? undefined : body);
}
