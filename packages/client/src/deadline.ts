/** One request's deadline: aborts the fetch when the gateway stays silent for `timeoutMs`. */
export interface Deadline {
  signal: AbortSignal;
  readonly expired: boolean;
  /** Bytes arrived: the wait starts again. */
  touch(): void;
  dispose(): void;
}

export function startDeadline(timeoutMs: number): Deadline {
  const controller = new AbortController();
  let expired = false;
  const timer = setTimeout(() => {
    expired = true;
    controller.abort(new Error(`no answer within ${timeoutMs} ms`));
  }, timeoutMs);
  return {
    signal: controller.signal,
    get expired() {
      return expired;
    },
    touch: () => timer.refresh(),
    dispose() {
      clearTimeout(timer);
      // Whatever is still open (an unread body) is released with the request.
      if (!controller.signal.aborted) controller.abort(new Error('request finished'));
    },
  };
}
