import type { ServerResponse } from 'node:http';

/**
 * Runs `run` once `response` has closed, with whether the answer was sent
 * whole (else its client went away first). At once, unsent, if it has closed
 * already: a client that left while the answer was prepared (a cold miss
 * waiting for the upstream, a Redis rate-limit check) closed it before anyone
 * listened, and its 'close' does not come again. Node would count an answer
 * ended on such a response as finished, though nothing reached the client.
 */
export function whenClosed(response: ServerResponse, run: (sent: boolean) => void): void {
  if (response.destroyed) run(false);
  // `on`, not `once`: Node emits a response's 'close' once (emitCloseNT checks
  // `_closed`), and once's wrapper cost two allocations on every answer.
  else response.on('close', () => run(response.writableFinished));
}
