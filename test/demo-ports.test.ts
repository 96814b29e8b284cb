/**
 * `npm run demo`'s ports: on a machine where a port it wants is taken, one
 * line that names the variable to set, for each of its three servers; a
 * page asked for while it starts is answered once it is up.
 */
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { startDemo } from '../scripts/demo.js';
import { freePort } from '../dev/free-port.js';

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

test('the player page asked for while the demo is still starting is answered once it is up, not left hanging', async () => {
  const playerPort = await freePort();
  const started = startDemo({ upstreamPort: 0, gatewayPort: 0, playerPort, quiet: true });
  // The first connection the player's port takes: the demo listens before it wires its servers (it needs both ports first).
  let page: Promise<Response> | undefined;
  for (let attempt = 0; attempt < 2_000 && !page; attempt++) {
    const response = fetch(`http://127.0.0.1:${playerPort}/`, { signal: AbortSignal.timeout(5_000) });
    const connected = await response.then(
      () => true,
      // Refused: not listening yet. A timeout: it took the connection and never answered.
      (error: Error) => error.name === 'TimeoutError' || !/ECONNREFUSED/.test(String(error.cause ?? error)),
    );
    if (connected) page = response;
    else await new Promise((resolve) => setTimeout(resolve, 2));
  }
  const demo = await started;
  try {
    const answer = await page!;
    expect(answer.status).toBe(200);
    expect(await answer.text()).toContain('<audio');
  } finally {
    await demo.stop();
  }
});
