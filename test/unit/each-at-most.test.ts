import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { eachAtMost } from '../../src/each-at-most.js';

describe('eachAtMost', () => {
  it('runs every item once, starting them in order, never more than the limit at once', async () => {
    const started: number[] = [];
    let running = 0;
    let most = 0;
    await eachAtMost(
      Array.from({ length: 40 }, (_, i) => i),
      4,
      async (item) => {
        started.push(item);
        running++;
        most = Math.max(most, running);
        await sleep(item % 3);
        running--;
      },
    );
    expect(started).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect(most).toBe(4);
  });

  it("takes any iterable, a Map's values included, and nothing at all", async () => {
    const seen: string[] = [];
    await eachAtMost(
      new Map([
        ['a', 'x'],
        ['b', 'y'],
      ]).values(),
      8,
      async (value) => {
        seen.push(value);
      },
    );
    expect(seen).toEqual(['x', 'y']);
    await expect(eachAtMost([], 2, async () => {})).resolves.toBeUndefined();
  });

  it('stops starting items after a failure, lets those under way finish, and rejects with the first failure', async () => {
    const started: number[] = [];
    const finished: number[] = [];
    const run = eachAtMost([0, 1, 2, 3, 4, 5, 6, 7], 2, async (item) => {
      started.push(item);
      if (item === 1) {
        await sleep(30);
        finished.push(item);
        throw new Error('item 1 failed later');
      }
      if (item === 2) throw new Error('item 2 failed');
      finished.push(item);
    });
    await expect(run).rejects.toThrow('item 2 failed');
    expect(started).toEqual([0, 1, 2]);
    // Item 1 was under way when item 2 failed: the promise settled only after it.
    expect(finished).toEqual([0, 1]);
  });

  it('refuses a limit that is not a whole number of at least 1', async () => {
    for (const limit of [0, -1, 1.5, Number.NaN]) {
      await expect(eachAtMost([1], limit, async () => {})).rejects.toThrow(RangeError);
    }
  });
});
