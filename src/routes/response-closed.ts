import type { ServerResponse } from 'node:http';

/**
 * Runs `run` once `response` has closed (sent, or its client gone), at once
 * if it has already: a client that left while the answer was prepared (a cold
 * miss waiting for the upstream, a Redis rate-limit check) closed it before
 * anyone listened, and its 'close' does not come again.
 */
export function whenClosed(response: ServerResponse, run: () => void): void {
  if (response.destroyed) run();
  else response.once('close', run);
}
