import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { Clock } from './clock.js';
import type { GatewayConfig } from './config/index.js';
import { createGateway, type Gateway } from './gateway.js';
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

/** Loads the cache, then listens on the configured host and port. */
export async function startServer(config: GatewayConfig, options: { logger: Logger; clock?: Clock }): Promise<RunningServer> {
  const gateway = await createGateway({ config, logger: options.logger, ...(options.clock ? { clock: options.clock } : {}) });
  let server: ServerType;
  try {
    server = await new Promise<ServerType>((resolve, reject) => {
      const started = serve(
        { fetch: gateway.app.fetch, hostname: config.listen.host, port: config.listen.port },
        () => resolve(started),
      );
      started.once('error', reject);
    });
  } catch (error) {
    await gateway.close();
    throw error;
  }
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  const httpServer = server as ServerType & { closeIdleConnections?: () => void; closeAllConnections?: () => void };

  return {
    url: `http://${host}:${port}`,
    gateway,
    async close(graceMs = DEFAULT_GRACE_MS) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      httpServer.closeIdleConnections?.();
      const grace = new Promise<'timeout'>((resolve) => setTimeout(resolve, graceMs, 'timeout').unref());
      if ((await Promise.race([closed, grace])) === 'timeout') {
        options.logger.warn({ graceMs }, 'grace period over; closing the remaining connections');
        httpServer.closeAllConnections?.();
        await closed;
      }
      await gateway.close();
    },
  };
}
