/**
 * Runs `task` for each item, at most `limit` at once, in the items' order. A
 * task that fails stops new ones from starting; the promise rejects with the
 * first failure once those under way have settled, as a loop of awaits would
 * have stopped at it.
 */
export async function eachAtMost<T>(items: Iterable<T>, limit: number, task: (item: T) => Promise<void>): Promise<void> {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`eachAtMost: limit must be an integer >= 1, got ${limit}`);
  const pending = items[Symbol.iterator]();
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    for (let next = pending.next(); !next.done && failure === undefined; next = pending.next()) {
      try {
        await task(next.value);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  if (failure !== undefined) throw failure.error;
}
