/**
 * How fast the servers' core runs right now: a fixed job (5,000 `fstat`
 * calls, the fastest of three, in a node process pinned to that core), timed
 * inside that process and run before each measured run. This project's VM
 * has phases in which every process runs up to twice as slow while no other
 * process is busy and steal time stays 0, so the bench's "other CPU" cannot
 * see them; this can. They slow system calls, page faults and memory access,
 * not pure computation: a sha256 of 32 MiB took the same time in them.
 */
import { spawnSync } from 'node:child_process';
import { pinned } from './peers-process.js';

const CALLS = 5_000;
const ROUNDS = 3;

/** The job, as the bench's report names it. */
export const CORE_CHECK_JOB = `${CALLS.toLocaleString('en-US')} \`fstat\` calls, the fastest of ${ROUNDS}`;

// The fastest of three, so that one hiccup does not count as a slow phase (those last seconds).
const JOB = `
const { fstatSync } = require('node:fs');
let fastest = Infinity;
for (let round = 0; round < ${ROUNDS}; round++) {
  const started = process.hrtime.bigint();
  for (let i = 0; i < ${CALLS}; i++) fstatSync(1);
  fastest = Math.min(fastest, Number(process.hrtime.bigint() - started) / 1e6);
}
process.stdout.write(String(fastest));
`;

/** Milliseconds the fixed job took on `core`; NaN when it could not run. */
export function coreCheckMs(core: number | undefined): number {
  const [command, ...args] = pinned(core, process.execPath, ['-e', JOB]);
  const result = spawnSync(command, args, { encoding: 'utf8' });
  return result.status === 0 ? Number(result.stdout) : Number.NaN;
}
