/**
 * Runs the load generator in its own process. On a 2-core machine the gateway
 * (in this process) and the client then each get a core and an event loop,
 * and the gateway's RSS is not inflated by the client's buffers.
 */
import { fork } from 'node:child_process';
import type { ColdMissOptions, ColdMissResult } from './cold-miss.js';
import type { LoadJob, LoadResult } from './load.js';

export interface LoadProcess {
  run(job: LoadJob): Promise<LoadResult>;
  /** Scenario 6's staggered callers, see cold-miss.ts. */
  coldMiss(options: ColdMissOptions): Promise<ColdMissResult>;
  /** The client process's RSS in bytes, for context next to the gateway's. */
  rss(): Promise<number>;
  close(): Promise<void>;
}

type Work = { kind: 'run'; job: LoadJob } | { kind: 'cold-miss'; options: ColdMissOptions } | { kind: 'rss' };
export type WorkerRequest = Work & { id: number };
export type WorkerReply = { id: number; result: LoadResult | ColdMissResult } | { id: number; rss: number } | { id: number; error: string };

/** Forks `load-worker.ts` with this process's loader flags (tsx), minus profiling flags. */
export async function startLoadProcess(): Promise<LoadProcess> {
  const execArgv = process.execArgv.filter((flag) => !flag.startsWith('--cpu-prof') && !flag.startsWith('--heap-prof'));
  const child = fork(new URL('./load-worker.ts', import.meta.url), [], { execArgv, stdio: 'inherit' });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  const pending = new Map<number, { resolve: (reply: WorkerReply) => void; reject: (error: Error) => void }>();
  let nextId = 0;
  child.on('message', (reply: WorkerReply) => {
    const waiter = pending.get(reply.id);
    if (!waiter) return;
    pending.delete(reply.id);
    if ('error' in reply) waiter.reject(new Error(`load worker: ${reply.error}`));
    else waiter.resolve(reply);
  });
  child.on('exit', (code) => {
    for (const waiter of pending.values()) waiter.reject(new Error(`load worker exited with code ${code}`));
    pending.clear();
  });

  function ask(request: Work): Promise<WorkerReply> {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      child.send({ id, ...request } satisfies WorkerRequest);
    });
  }

  return {
    async run(job) {
      const reply = await ask({ kind: 'run', job });
      if (!('result' in reply)) throw new Error('load worker: unexpected reply');
      return reply.result as LoadResult;
    },
    async coldMiss(options) {
      const reply = await ask({ kind: 'cold-miss', options });
      if (!('result' in reply)) throw new Error('load worker: unexpected reply');
      return reply.result as ColdMissResult;
    },
    async rss() {
      const reply = await ask({ kind: 'rss' });
      if (!('rss' in reply)) throw new Error('load worker: unexpected reply');
      return reply.rss;
    },
    close() {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      return new Promise((resolve) => {
        child.once('exit', () => resolve());
        child.kill();
      });
    },
  };
}
