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
  else response.on('close', () => run(response.writableFinished ? 'sent' : neverWritten.has(response) ? 'unanswered' : 'cut'));
}

// Answers closed while queued behind others on their connection: Node held their bytes, none was written.
const neverWritten = new WeakSet<ServerResponse>();

/** Says that `response` closes before Node gave it its connection: {@link whenClosed} reports it `unanswered`. */
export function closedBeforeItsTurn(response: ServerResponse): void {
  neverWritten.add(response);
}

/**
 * Resolves once Node gives `response` its connection: at once for the answer
 * next in line, later for one queued behind others on a pipelined
 * connection, or when it closes before its turn (then `destroyed`).
 */
function untilItsTurn(response: ServerResponse): Promise<void> | undefined {
  if (response.socket !== null || response.destroyed) return undefined;
  return firstOf(response, 'socket', 'close');
}

/**
 * For a handler that is about to read files or fetch: undefined when its
 * answer is next in line on its connection; else a promise, once its turn
 * came, of whether anyone is still there to answer.
 */
export function turnOf(response: ServerResponse | undefined): Promise<boolean> | undefined {
  const turn = response && untilItsTurn(response);
  return turn?.then(() => !response!.destroyed);
}

/** Resolves once `connection` can take more, or is gone. */
export function drained(connection: ServerResponse): Promise<void> {
  // A write to a destroyed connection returns false, and neither 'drain' nor 'close' comes again.
  if (connection.destroyed) return Promise.resolve();
  return firstOf(connection, 'drain', 'close');
}

/** Resolves at whichever of the two events `response` emits first; neither listener is left behind. */
function firstOf(response: ServerResponse, one: string, other: string): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      response.off(one, done);
      response.off(other, done);
      resolve();
    };
    response.on(one, done);
    response.on(other, done);
  });
}
