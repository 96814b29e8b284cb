/**
 * `npm run bench:durability`: two questions the issue tracker asks, answered
 * with tables (see bench/README.md). Not a test: nothing here is timed against
 * a budget in the test suite; the memory table says pass or fail against its
 * target, and the exit code is 1 when a target is missed or a part could not run.
 *
 *   DURABILITY_ONLY=memory|startup   run one part
 *   DURABILITY_RECORDING_MB=200      recording size (MB = 10^6 bytes)
 *   DURABILITY_CLIENTS=20            concurrent downloads per case
 *   DURABILITY_UPSTREAM_MBPS=100     the generated upstream's send rate
 *   DURABILITY_SLOW_MBPS=6           each slow reader's rate in case (b)
 *   DURABILITY_RSS_TARGET_MB=150     the gateway's resident-memory target (issue 11)
 *   DURABILITY_ENTRIES=100000        recordings in the start-up cache
 *   DURABILITY_CPU_PROF_DIR=/tmp/p   CPU-profile each start-up child into this folder
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { memoryUnderLoad } from './durability-memory.js';
import { startupWithEntries } from './durability-startup.js';
import { positiveNumber } from './env.js';

// The gateway runs as production runs it, compiled, with npm start's Node flags: tsx
// alone would add some 30 MB to every resident-memory figure.
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });

const MB = 1e6;

function selectedParts(): Set<'memory' | 'startup'> {
  const raw = process.env.DURABILITY_ONLY;
  if (!raw) return new Set(['memory', 'startup']);
  if (raw !== 'memory' && raw !== 'startup') throw new Error(`DURABILITY_ONLY must be "memory" or "startup" (got ${JSON.stringify(raw)})`);
  return new Set([raw]);
}

async function part(title: string, run: () => Promise<{ text: string; pass: boolean }>): Promise<void> {
  console.log(`## ${title}\n`);
  const started = performance.now();
  try {
    const { text, pass } = await run();
    console.log(text);
    if (!pass) process.exitCode = 1;
  } catch (error) {
    process.exitCode = 1;
    console.log(`**Could not run:** ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  }
  console.log(`\n_(${((performance.now() - started) / 1000).toFixed(1)} s)_\n`);
}

async function main(): Promise<void> {
  if (process.platform !== 'linux') throw new Error('the durability bench reads /proc: Linux only');
  const parts = selectedParts();
  const memory = {
    size: Math.round(positiveNumber('DURABILITY_RECORDING_MB', 200) * MB),
    clients: Math.round(positiveNumber('DURABILITY_CLIENTS', 20)),
    upstreamBytesPerSecond: positiveNumber('DURABILITY_UPSTREAM_MBPS', 100) * MB,
    slowBytesPerSecond: positiveNumber('DURABILITY_SLOW_MBPS', 6) * MB,
    rssTargetBytes: positiveNumber('DURABILITY_RSS_TARGET_MB', 150) * MB,
  };
  const entries = Math.round(positiveNumber('DURABILITY_ENTRIES', 100_000));
  const cpus = os.cpus();
  console.log('# recording-gateway durability bench\n');
  console.log(
    `- Node ${process.version} on ${os.platform()} ${os.release()}; ${cpus[0]?.model ?? 'unknown CPU'} × ${cpus.length}, RAM ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB`,
  );
  console.log(
    `- Temporary directories under ${os.tmpdir()}; load average at start ${os
      .loadavg()
      .map((v) => v.toFixed(2))
      .join(' / ')}\n`,
  );
  const began = performance.now();
  if (parts.has('memory')) {
    await part(`1. Memory bound: ${memory.clients} concurrent downloads of a ${memory.size / MB} MB recording`, () =>
      memoryUnderLoad(memory),
    );
  }
  if (parts.has('startup')) {
    await part(`2. Start-up with ${entries.toLocaleString('en-US')} index entries`, () =>
      startupWithEntries({ entries, runs: 3, keyvSample: 2_000, cpuProfileDir: process.env.DURABILITY_CPU_PROF_DIR || undefined }),
    );
  }
  console.log(
    `Total ${((performance.now() - began) / 1000).toFixed(1)} s; load average at the end ${os
      .loadavg()
      .map((v) => v.toFixed(2))
      .join(' / ')}.`,
  );
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
