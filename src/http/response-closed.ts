import type { ServerResponse } from 'node:http';

/**
 * How a response ended: sent whole, cut short by its client, or closed
 * before it was answered at all (its client left while the answer was
 * prepared: a cold miss waiting for the upstream, a Redis rate-limit check),
 * in which case nothing reached the client, whatever the answer counted.
 */
export type ResponseEnd = 'sent' | 'cut' | 'unanswered';

/**
 * Runs `run` once `response` has closed, with how it ended. At once,
 * `unanswered`, if it has closed already: its 'close' does not come again,
 * and Node would count an answer ended on such a response as finished.
 */
export function whenClosed(response: ServerResponse, run: (end: ResponseEnd) => void): void {
  if (response.destroyed) run('unanswered');
  // `on`, not `once`: Node emits a response's 'close' once (emitCloseNT checks
  // `_closed`), and once's wrapper cost two allocations on every answer.
  else response.on('close', () => run(response.writableFinished ? 'sent' : 'cut'));
}
