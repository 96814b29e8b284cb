/**
 * `npm run demo` on a machine where a port it wants is taken: one line that
 * names the variable to set, for each of its three servers.
 */
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { startDemo } from '../scripts/demo.js';

let busy: Server;
let busyPort: number;

beforeAll(async () => {
  busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  busyPort = (busy.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise((resolve) => busy.close(resolve));
});

test.each([
  ['upstream', 'DEMO_UPSTREAM_PORT', { upstreamPort: 'busy', gatewayPort: 0, playerPort: 0 }],
  ['gateway', 'DEMO_GATEWAY_PORT', { upstreamPort: 0, gatewayPort: 'busy', playerPort: 0 }],
  ['player', 'DEMO_PLAYER_PORT', { upstreamPort: 0, gatewayPort: 0, playerPort: 'busy' }],
] as const)('the %s port taken: the error names %s', async (name, envName, ports) => {
  const port = (value: number | 'busy') => (value === 'busy' ? busyPort : value);
  const started = startDemo({
    upstreamPort: port(ports.upstreamPort),
    gatewayPort: port(ports.gatewayPort),
    playerPort: port(ports.playerPort),
    quiet: true,
  });
  await expect(started).rejects.toThrow(
    `demo ${name}: cannot listen on 127.0.0.1:${busyPort}: the port is in use; set ${envName} to another port (0 picks a free one)`,
  );
});
