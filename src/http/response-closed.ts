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

/**
 * Resolves once Node gives `response` its connection: at once for the answer
 * next in line, later for one queued behind others on a pipelined
 * connection, or when it closes before its turn (then `destroyed`).
 */
export function untilItsTurn(response: ServerResponse): Promise<void> | undefined {
  if (response.socket !== null || response.destroyed) return undefined;
  return new Promise((resolve) => {
    const done = () => {
      response.off('socket', done);
      response.off('close', done);
      resolve();
    };
    response.on('socket', done);
    response.on('close', done);
  });
}
