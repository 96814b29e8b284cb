/**
 * The child process `load-process.ts` forks: runs load jobs sent over IPC, so
 * the client's HTTP work never shares the gateway's event loop.
 */
import { runColdMiss } from './cold-miss.js';
import { runLoad } from './load.js';
import type { WorkerReply, WorkerRequest } from './load-process.js';

if (!process.send) throw new Error('load-worker: start it with child_process.fork (see load-process.ts)');

function reply(message: WorkerReply): void {
  process.send!(message);
}

process.on('message', (message: WorkerRequest) => {
  if (message.kind === 'rss') {
    reply({ id: message.id, rss: process.memoryUsage().rss });
    return;
  }
  const work = message.kind === 'run' ? runLoad(message.job) : runColdMiss(message.options);
  work.then(
    (result) => reply({ id: message.id, result }),
    (error: unknown) => reply({ id: message.id, error: error instanceof Error ? error.message : String(error) }),
  );
});
