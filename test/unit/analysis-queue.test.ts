import { describe, expect, test } from 'vitest';
import { AnalysisQueue, type QueuedTask } from '../../src/recordings/analysis/analysis-queue.js';

/** A task that notes its name in `order` when it starts, and ends once `wait` has. */
function noting(order: string[]) {
  return (name: string, wait?: Promise<void>) => async () => {
    order.push(name);
    await wait;
    return name;
  };
}

function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

const resultsOf = (tasks: (QueuedTask<string> | undefined)[]) => Promise.all(tasks.map((task) => task!.result));

describe('the analysis queue', () => {
  test('runs requests before background work, a few at a time', async () => {
    const queue = new AnalysisQueue(1, 2);
    const order: string[] = [];
    const task = noting(order);
    const first = gate();
    const background = [
      queue.add(task('background-1', first.opened), false, 'acme'),
      queue.add(task('background-2'), false, 'acme'),
      queue.add(task('background-3'), false, 'acme'),
    ];
    expect(queue.add(task('background-4'), false, 'acme')).toBeUndefined(); // two already wait
    const urgent = queue.add(task('request'), true, 'acme')!;
    background[2]!.promote();
    first.open();
    await resultsOf([...background, urgent]);
    expect(order).toEqual(['background-1', 'request', 'background-3', 'background-2']);

    // Closing drops what waits and lets what runs finish.
    const last = gate();
    const runningTask = queue.add(task('running', last.opened), false, 'acme')!;
    const dropped = queue.add(task('dropped'), false, 'acme')!;
    const closing = queue.close();
    await expect(dropped.result).rejects.toThrow(/closed/);
    last.open();
    await closing;
    await expect(runningTask.result).resolves.toBe('running');
    expect(order).not.toContain('dropped');
  });

  test("one account's 20 queued decodes hold another account's request back by one task, not twenty", async () => {
    const queue = new AnalysisQueue(1, 0);
    const order: string[] = [];
    const task = noting(order);
    const first = gate();
    const flood = Array.from({ length: 20 }, (_, i) => queue.add(task(`evil-${i}`, i === 0 ? first.opened : undefined), true, 'evil'));
    const acme = queue.add(task('acme'), true, 'acme');
    expect(queue.waiting).toBe(20);
    first.open();
    await resultsOf([...flood, acme]);
    expect(order.slice(0, 3)).toEqual(['evil-0', 'acme', 'evil-1']);
    // The flooding account's own tasks still run in the order it queued them.
    expect(order.filter((name) => name !== 'acme')).toEqual(flood.map((_, i) => `evil-${i}`));
  });

  test('accounts with work waiting take turns, one task each, newcomers included', async () => {
    const queue = new AnalysisQueue(1, 0);
    const order: string[] = [];
    const task = noting(order);
    const first = gate();
    const tasks = [
      queue.add(task('a1', first.opened), true, 'a'),
      queue.add(task('a2'), true, 'a'),
      queue.add(task('a3'), true, 'a'),
      queue.add(task('b1'), true, 'b'),
      queue.add(task('b2'), true, 'b'),
      queue.add(task('b3'), true, 'b'),
      queue.add(task('c1'), true, 'c'),
    ];
    first.open();
    await resultsOf(tasks);
    expect(order).toEqual(['a1', 'b1', 'c1', 'a2', 'b2', 'a3', 'b3']);
  });

  test("a request goes before every account's background work; background work takes turns too, and one account's fills the shared cap", async () => {
    const queue = new AnalysisQueue(1, 4);
    const order: string[] = [];
    const task = noting(order);
    const first = gate();
    const tasks = [
      queue.add(task('a-background-1', first.opened), false, 'a'),
      queue.add(task('a-background-2'), false, 'a'),
      queue.add(task('a-background-3'), false, 'a'),
      queue.add(task('a-background-4'), false, 'a'),
      queue.add(task('b-background-1'), false, 'b'),
    ];
    expect(queue.add(task('b-background-2'), false, 'b')).toBeUndefined(); // four already wait, whoever queued them
    tasks.push(queue.add(task('b-request'), true, 'b'));
    tasks[2]!.promote(); // a request now waits for a-background-3
    first.open();
    await resultsOf(tasks);
    expect(order).toEqual(['a-background-1', 'b-request', 'a-background-3', 'b-background-1', 'a-background-2', 'a-background-4']);
  });

  test('with two at a time, a place that comes free goes to an account running none before one running one', async () => {
    const queue = new AnalysisQueue(2, 0);
    const order: string[] = [];
    const task = noting(order);
    const [a1, a2] = [gate(), gate()];
    const tasks = [
      queue.add(task('a1', a1.opened), true, 'a'),
      queue.add(task('a2', a2.opened), true, 'a'),
      queue.add(task('a3'), true, 'a'),
      queue.add(task('b1'), true, 'b'),
    ];
    expect(queue.running).toBe(2);
    a1.open();
    await tasks[0]!.result;
    a2.open();
    await resultsOf(tasks);
    // a3 (its account running a2) waits for b1, though it was queued first.
    expect(order).toEqual(['a1', 'a2', 'b1', 'a3']);
  });
});
