/**
 * What one loopback round trip costs between the servers' core and the
 * client's: a one-byte echo over TCP (Nagle off), a node process pinned to
 * the servers' core answering this driver, which runs on the client's. A
 * cold miss through any proxy takes at least one more round trip than going
 * to the upstream directly (the proxy's own request to it), so this is the
 * least any server in the cold-miss table can add. On this project's VM it
 * was 0.2–0.26 ms against 0.1 ms with both ends on one core: waking an idle
 * virtual CPU is what costs.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { median } from './stats.js';
import { pinned } from './peers-process.js';

const ROUND_TRIPS = 400;
// A pause like the cold-miss bench's between requests, so the servers' core is idle (halted) when each byte arrives, as it is there.
const PAUSE_MS = 2;
const TIMEOUT_MS = 10_000;

const ECHO = `
const server = require('node:net').createServer((socket) => {
  socket.setNoDelay(true);
  socket.on('data', (data) => socket.write(data));
});
server.listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
`;

/** The median round trip, ms, of a one-byte echo from this process to `core`; NaN when it could not run. */
export async function loopbackRoundTripMs(core: number | undefined): Promise<number> {
  const [command, ...args] = pinned(core, process.execPath, ['-e', ECHO]);
  const echo = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'] });
  const deadline = setTimeout(() => echo.kill(), TIMEOUT_MS);
  try {
    const [firstLine] = (await once(echo.stdout, 'data')) as [Buffer];
    const socket = net.connect(Number(firstLine.toString().trim()), '127.0.0.1');
    socket.setNoDelay(true);
    await once(socket, 'connect');
    const times: number[] = [];
    for (let trip = 0; trip < ROUND_TRIPS; trip++) {
      const started = performance.now();
      const answered = once(socket, 'data');
      socket.write('x');
      await answered;
      times.push(performance.now() - started);
      await sleep(PAUSE_MS);
    }
    socket.destroy();
    return median(times);
  } catch {
    return Number.NaN;
  } finally {
    clearTimeout(deadline);
    echo.kill();
  }
}
