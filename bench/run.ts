/**
 * `npm run bench`: the gateway's throughput and latency on loopback, printed
 * as markdown tables (see bench/README.md). Not a test: nothing here passes or
 * fails on timing; a wrong answer is counted as an error and a broken
 * collapse is flagged, and the exit code is 1 if any scenario could not run.
 *
 *   BENCH_SECONDS=5      measured seconds per load case (plus a warm-up of 20%, at most 1 s)
 *   BENCH_ONLY=1,7       run only these scenarios
 *   BENCH_FIRST_HITS=200 recordings per first-hit case in scenario 4
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { startFakeFlyflow, loadFixtureRecordings, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { makeTempDir, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { startLoadProcess, type LoadProcess } from './load-process.js';
import { COLD_BYTES, COLD_ID, LARGE_BYTES, LARGE_ID, MEDIUM_ID, SMALL_ID, prime, repeatTo, type BenchContext } from './context.js';
import { scenarios } from './scenarios.js';
import { markdownTable, mib, type Cell } from './table.js';
import { positiveNumber } from './env.js';

const DEFAULT_SECONDS = 5;
const DEFAULT_FIRST_HITS = 200;
const MAX_WARMUP_MS = 1000;

function selectedScenarios(): Set<number> | undefined {
  const raw = process.env.BENCH_ONLY;
  if (!raw) return undefined;
  const ids = raw.split(',').map((part) => Number(part.trim()));
  const known = new Set(scenarios.map((scenario) => scenario.id));
  if (ids.some((id) => !known.has(id))) {
    throw new Error(`BENCH_ONLY must list scenario numbers from ${[...known].join(', ')} (got ${JSON.stringify(raw)})`);
  }
  return new Set(ids);
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((value) => value.toFixed(2))
    .join(' / ');
}

/** Other work on the machine skews every number: say so up front. */
function busyWarning(cores: number): string {
  const [oneMinute = 0] = os.loadavg();
  return oneMinute > cores / 2 ? ` (**busy machine**: other processes compete for the ${cores} cores, expect noisy numbers)` : '';
}

interface MemorySample {
  stage: string;
  /** As the OS sees it, before any forced collection. */
  rss: number;
  /** After a full GC when one can be forced: what is live, not what V8 has yet to collect. */
  usage: NodeJS.MemoryUsage;
}

/** A full-GC function without `--expose-gc` on the command line (npm run bench passes no flags). */
function gcFunction(): (() => void) | undefined {
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  const seconds = positiveNumber('BENCH_SECONDS', DEFAULT_SECONDS);
  const firstHits = Math.round(positiveNumber('BENCH_FIRST_HITS', DEFAULT_FIRST_HITS));
  const only = selectedScenarios();
  const durationMs = seconds * 1000;
  const warmupMs = Math.min(MAX_WARMUP_MS, durationMs * 0.2);
  const memory: MemorySample[] = [];
  const gc = gcFunction();
  const sample = (stage: string) => {
    const { rss } = process.memoryUsage();
    gc?.();
    memory.push({ stage, rss, usage: process.memoryUsage() });
  };
  const began = performance.now();
  sample('start (nothing loaded)');

  const cpus = os.cpus();
  console.log('# recording-gateway bench\n');
  console.log(`- Node ${process.version} on ${os.platform()} ${os.release()} (${os.arch()})`);
  console.log(`- CPU: ${cpus[0]?.model ?? 'unknown'} × ${cpus.length}, RAM ${mib(os.totalmem())} MiB`);
  console.log(`- ${seconds} s measured per load case after a ${warmupMs / 1000} s warm-up; keep-alive node:http client in a child process`);
  console.log('- Gateway, fake Flyflow upstream and bench driver share this process, all on 127.0.0.1');
  console.log(`- Started ${new Date().toISOString()}; load average ${loadAverage()}${busyWarning(cpus.length)}\n`);

  let upstream: FakeFlyflow | undefined;
  let load: LoadProcess | undefined;
  let gateway: RunningGateway | undefined;
  const dir = await makeTempDir('rg-bench-');
  try {
    const fixtures = await loadFixtureRecordings();
    const bytes = new Map(fixtures);
    bytes.set(LARGE_ID, repeatTo(fixtures.get(MEDIUM_ID)!, LARGE_BYTES));
    bytes.set(COLD_ID, repeatTo(fixtures.get(MEDIUM_ID)!, COLD_BYTES));
    upstream = await startFakeFlyflow({ recordings: bytes });
    load = await startLoadProcess();
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
    await prime(gateway, SMALL_ID);
    await prime(gateway, MEDIUM_ID);
    sample('gateway up, recordings 1 and 4 cached (before load)');

    const ctx: BenchContext = { upstream, load, gateway, durationMs, warmupMs, firstHits, bytes };
    for (const scenario of scenarios) {
      if (only && !only.has(scenario.id)) continue;
      console.log(`## ${scenario.id}. ${scenario.title}\n`);
      const started = performance.now();
      try {
        console.log(await scenario.run(ctx));
      } catch (error) {
        process.exitCode = 1;
        console.log(`**Could not run:** ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      }
      console.log(`\n_(${((performance.now() - started) / 1000).toFixed(1)} s)_\n`);
      sample(`after scenario ${scenario.id}`);
    }

    console.log('## Gateway process memory\n');
    const rows: Cell[][] = memory.map(({ stage, rss, usage }) => [
      stage,
      mib(rss),
      mib(usage.heapUsed),
      mib(usage.external),
      mib(usage.arrayBuffers),
    ]);
    const after = gc ? ' after GC' : '';
    console.log(markdownTable(['stage', 'RSS MiB', `heap used MiB${after}`, `external MiB${after}`, `arrayBuffers MiB${after}`], rows));
    const first = memory.find((entry) => entry.stage.startsWith('gateway up'))!.rss;
    const last = memory[memory.length - 1]!.rss;
    const stats = gateway.gateway.cache.stats();
    console.log(
      `\nRSS before load ${mib(first)} MiB, after ${mib(last)} MiB (${last >= first ? '+' : ''}${mib(last - first)} MiB). ` +
        `Shared gateway's memory tier at the end: ${stats.memoryEntries} entries, ${mib(stats.memoryBytes)} MiB. ` +
        `The load-generator process (not included above) was at ${mib(await load.rss())} MiB RSS.`,
    );
    console.log(`\nTotal bench time ${((performance.now() - began) / 1000).toFixed(1)} s; load average at the end ${loadAverage()}.`);
    console.log('\nThe gateway side by side with nginx and Varnish, one core each: `npm run bench:peers` (bench/README.md).');
    console.log(
      'What the audit trail costs on hits and ranges: the `gateway + audit` column of `npm run bench:peers`; what encryption at rest costs on disk hits, whole and ranges: `npm run bench:encryption`.',
    );
  } finally {
    await gateway?.close().catch(() => {});
    await load?.close();
    await upstream?.close();
    await removeDir(dir);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
