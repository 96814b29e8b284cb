import { RequestError, getRequestListener } from '@hono/node-server';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Clock } from './clock.js';
import type { GatewayConfig } from './config/index.js';
import { createGateway, type Gateway } from './gateway.js';
import { BadRequestError, GatewayError, errorResponse } from './errors.js';
import type { Logger } from './logger.js';

export interface RunningServer {
  url: string;
  gateway: Gateway;
  /**
   * Stops accepting connections, lets responses in flight finish for up to
   * `graceMs`, then cuts what is left, waits for downloads to be stored and
   * closes the index.
   */
  close(graceMs?: number): Promise<void>;
}

const DEFAULT_GRACE_MS = 10_000;
const IDLE_SWEEP_MS = 100;

/**
 * @hono/node-server refuses some request targets before the app sees them (not
 * origin-form, a backslash in the path) and would answer a bare 400: answer in
 * the contract's JSON shape instead.
 */
function adapterErrorResponse(error: unknown): Response {
  if (error instanceof RequestError) return errorResponse(new BadRequestError('Malformed request target'));
  return errorResponse(new GatewayError(500, 'Internal Server Error', 'Internal error'));
}

/**
 * Node's HTTP parser answers a request it cannot parse (a target that is not
 * origin-form, headers over the size limit) with a bare status line: write the
 * contract's JSON error instead, then close, as Node itself would.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const tooLarge = error.code === 'HPE_HEADER_OVERFLOW';
  const status = tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request';
  const body = JSON.stringify({
    error: status.slice(4),
    message: tooLarge ? 'Request headers are too large' : 'Malformed HTTP request',
  });
  // A HEAD gets the head alone; the request line is still in the packet the parser refused.
  const raw = (error as NodeJS.ErrnoException & { rawPacket?: Buffer }).rawPacket;
  const head = raw?.subarray(0, 5).toString('latin1') === 'HEAD ';
  socket.end(
    `HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${head ? '' : body}`,
  );
}

/** Loads the cache, then listens on the configured host and port. */
/**
 * The Node HTTP server for the app, with every error in the contract's JSON
 * shape, also those refused before the app runs. It does not listen yet.
 */
export function createHttpServer(app: { fetch: (request: Request, env: never) => Response | Promise<Response> }, hostname: string): Server {
  // serve() takes no errorHandler; getRequestListener does.
  const listener = getRequestListener(app.fetch as Parameters<typeof getRequestListener>[0], {
    hostname,
    errorHandler: adapterErrorResponse,
  });
  const server = createServer(listener);
  server.on('clientError', answerClientError);
  return server;
}

export async function startServer(config: GatewayConfig, options: { logger: Logger; clock?: Clock }): Promise<RunningServer> {
  const gateway = await createGateway({ config, logger: options.logger, ...(options.clock ? { clock: options.clock } : {}) });
  let server: Server;
  try {
    server = await new Promise<Server>((resolve, reject) => {
      const started = createHttpServer(gateway.app, config.listen.host);
      started.once('error', reject);
      started.listen(config.listen.port, config.listen.host, () => resolve(started));
    });
  } catch (error) {
    await gateway.close();
    throw error;
  }
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  const httpServer = server;

  return {
    url: `http://${host}:${port}`,
    gateway,
    async close(graceMs = DEFAULT_GRACE_MS) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      httpServer.closeIdleConnections();
      // server.close() closes only the connections idle at that moment: a keep-alive
      // connection whose response ends during the grace period would stay open until
      // keepAliveTimeout and hold up the exit for nothing.
      const sweep = setInterval(() => httpServer.closeIdleConnections(), IDLE_SWEEP_MS);
      const grace = new Promise<'timeout'>((resolve) => setTimeout(resolve, graceMs, 'timeout').unref());
      if ((await Promise.race([closed, grace])) === 'timeout') {
        options.logger.warn({ graceMs }, 'grace period over; closing the remaining connections');
        httpServer.closeAllConnections();
        await closed;
      }
      clearInterval(sweep);
      await gateway.close();
    },
  };
}
