import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { whenClosed } from './http/response-closed.js';

/** What the guard did to stay under its cap. */
export type ConnectionPressure =
  /** The connection idle longest was closed to make room for a new one. */
  | 'reclaimed'
  /** Every connection had a request in flight: the new one gets a quick 503 and is closed. */
  | 'refused'
  /** Over the cap and its headroom too: the new connection was closed unanswered. */
  | 'dropped';

export interface ConnectionGuardOptions {
  /** Connections served at once. */
  maxConnections: number;
  /** Connections beyond the cap that may still get one quick answer before they are closed. */
  headroom: number;
  /** Paths served as usual on a connection over the cap (liveness probes), then the connection closes. */
  alwaysServed: ReadonlySet<string>;
  onPressure?(pressure: ConnectionPressure): void;
}

export interface ConnectionGuard {
  /** For the server's 'connection' event. */
  admit(socket: Socket): void;
  /** Wraps the server's request listener. */
  wrap(listener: RequestListener): RequestListener;
  /** Open connections, by state. */
  counts(): { idle: number; busy: number; overCap: number };
}

const AT_CAPACITY = JSON.stringify({
  error: 'Service Unavailable',
  message: 'The gateway is at its connection limit; retry shortly',
});

function pathOf(url: string | undefined): string {
  const query = url?.indexOf('?') ?? -1;
  return query === -1 ? (url ?? '') : url!.slice(0, query);
}

/**
 * Caps the connections a server holds, so that a flood of idle connections
 * cannot use up the process's file descriptors (after which every new
 * connection, health checks included, is reset). Node's own
 * `server.maxConnections` closes new connections unanswered; this guard
 * instead makes room: a new connection over the cap takes the place of the
 * connection that has been idle longest (no request in flight: a keep-alive
 * connection between requests, or one that has not finished sending its
 * request yet). Only when every connection has a request in flight is a new
 * one answered `503` (liveness paths as usual) and closed, up to `headroom`
 * such connections at once; beyond that, new connections are closed.
 */
export function createConnectionGuard(options: ConnectionGuardOptions): ConnectionGuard {
  // A Set keeps insertion order: the first idle connection is the one idle longest.
  const idle = new Set<Socket>();
  const busy = new Map<Socket, number>();
  const overCap = new Set<Socket>();

  function forget(socket: Socket): void {
    idle.delete(socket);
    busy.delete(socket);
    overCap.delete(socket);
  }

  function admit(socket: Socket): void {
    socket.once('close', () => forget(socket));
    if (idle.size + busy.size < options.maxConnections) {
      idle.add(socket);
      return;
    }
    const longestIdle = idle.values().next();
    if (!longestIdle.done) {
      idle.delete(longestIdle.value);
      longestIdle.value.destroy();
      idle.add(socket);
      options.onPressure?.('reclaimed');
      return;
    }
    if (overCap.size < options.headroom) {
      overCap.add(socket);
      options.onPressure?.('refused');
      return;
    }
    socket.destroy();
    options.onPressure?.('dropped');
  }

  function answerOverCap(request: IncomingMessage, response: ServerResponse, listener: RequestListener): void {
    // One answer, then the connection closes and frees its descriptor.
    response.shouldKeepAlive = false;
    if (options.alwaysServed.has(pathOf(request.url))) {
      listener(request, response);
      return;
    }
    response.writeHead(503, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(AT_CAPACITY),
      'Retry-After': '1',
      'Cache-Control': 'no-store',
    });
    response.end(AT_CAPACITY);
  }

  function wrap(listener: RequestListener): RequestListener {
    return function guardedRequest(request, response) {
      const socket = request.socket;
      if (overCap.has(socket)) {
        answerOverCap(request, response, listener);
        return;
      }
      idle.delete(socket);
      busy.set(socket, (busy.get(socket) ?? 0) + 1);
      whenClosed(response, () => {
        const left = (busy.get(socket) ?? 1) - 1;
        if (left > 0) {
          busy.set(socket, left);
          return;
        }
        busy.delete(socket);
        if (!socket.destroyed) idle.add(socket);
      });
      listener(request, response);
    };
  }

  return {
    admit,
    wrap,
    counts: () => ({ idle: idle.size, busy: busy.size, overCap: overCap.size }),
  };
}
