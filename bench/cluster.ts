/**
 * `npm run bench:cluster`: what clusters of 1, 2 and 3 replicas do with the
 * work (issue 10; bench/README.md, "Cluster"), printed as markdown tables.
 * Not a test: nothing passes or fails on timing; wrong answers are counted,
 * and the exit code is 1 when a part could not run.
 *
 *   BENCH_SECONDS=5                    measured seconds of hit load per case (plus a warm-up of 20 %, at most 1 s)
 *   BENCH_CLUSTER_VOLUMES=shared,own   `own` adds 2 and 3 replicas with a cache volume each
 *   BENCH_JOINERS=10                   recordings in the late-joiner part
 *
 * Every child (replicas, their redis-server, nginx, the load process) is
 * stopped at the end, on an error and on Ctrl-C; replicas, redis-server and
 * nginx also die with this process if it is killed outright.
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { startFakeFlyflow } from '../dev/fake-flyflow.js';
import { syntheticRecording } from '../dev/recording-bytes.js';
import { recordingPath, startCluster } from '../test/support/cluster.js';
import { NGINX_BINARY, NGINX_INSTALL_HINT, nginxInstalled, nginxVersion, startNginx } from './cluster-nginx.js';
import {
  COLD_REQUESTS,
  CONCURRENCY,
  JOINER_BYTES,
  LARGE_BYTES,
  LARGE_DRIP,
  fanOut,
  hitLoad,
  lateJoiners,
  warmEveryReplica,
  type BenchInputs,
} from './cluster-parts.js';
import { renderReport, type SetupResult, type Volumes } from './cluster-report.js';
import { startLoadProcess } from './load-process.js';
import { mib } from './table.js';
import { positiveNumber } from './env.js';

/** The 23 KB fixture: the cold small recording, then the warm one of the hit load. */
const SMALL_FIXTURE_ID = 1;
const REPLICA_COUNTS = [1, 2, 3];
const MAX_WARMUP_MS = 1_000;
/** Each cluster gets its own recording ids, so the upstream's request log counts its GETs alone. */
const IDS_PER_SETUP = 1_000;
const FIRST_SETUP_ID = 100_000;

function volumeKinds(): Volumes[] {
  const raw = process.env.BENCH_CLUSTER_VOLUMES ?? 'shared,own';
  const kinds = raw.split(',').map((part) => part.trim());
  if (kinds.some((kind) => kind !== 'shared' && kind !== 'own')) {
    throw new Error(`BENCH_CLUSTER_VOLUMES must list shared and/or own (got ${JSON.stringify(raw)})`);
  }
  return kinds as Volumes[];
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((value) => value.toFixed(2))
    .join(' / ');
}

/** Other work on the machine skews every figure: say so up front. */
function busyWarning(cores: number): string {
  const [oneMinute = 0] = os.loadavg();
  return oneMinute > cores / 2 ? ` (**busy machine**: other processes compete for the ${cores} cores, expect noisy numbers)` : '';
}

function progress(message: string): void {
  process.stderr.write(`bench:cluster: ${message}\n`);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** What must be stopped if the run ends early (Ctrl-C, an error) or normally; newest first. */
const stoppers = new Set<() => Promise<void>>();
/** Synchronous kills for the `exit` event, where nothing can be awaited. */
const exitKillers = new Set<() => void>();

async function stopEverything(): Promise<void> {
  for (const stop of [...stoppers].reverse()) await stop().catch(() => {});
  stoppers.clear();
}

/** Set by Ctrl-C: nothing new starts, and what starts anyway is stopped at once. */
let interrupted = false;
/** How long an interrupted run may take to wind down before it exits regardless. */
const WIND_DOWN_MS = 15_000;

/** Runs `use`, then `stop`, also when `use` throws or the run is interrupted meanwhile. */
async function using<R>(stop: () => Promise<void>, use: () => Promise<R>): Promise<R> {
  if (interrupted) {
    await stop();
    throw new Error('interrupted');
  }
  stoppers.add(stop);
  try {
    return await use();
  } finally {
    stoppers.delete(stop);
    await stop();
  }
}

/** Runs one part; a failure is recorded for the report, and the next part still runs. */
async function part(result: SetupResult, label: string, run: () => Promise<void>): Promise<void> {
  if (interrupted) return;
  try {
    await run();
  } catch (error) {
    process.exitCode = 1;
    result.failures.push(`${label}: ${messageOf(error)}`);
  }
}

/** One cluster from start to stop: the three measurements, each on recordings of its own. */
async function benchSetup(inputs: BenchInputs, replicas: number, volumes: Volumes, idBase: number, nginx: boolean): Promise<SetupResult> {
  const result: SetupResult = { replicas, volumes, loads: [], failures: [] };
  const name = `${replicas}/${volumes}`;
  progress(`${name}: starting redis-server and ${replicas} replica(s)`);
  const cluster = await startCluster({ replicas, volumes, upstreamBaseUrl: inputs.upstream.baseUrl });
  await using(cluster.stopAll, async () => {
    const small = idBase + 1;
    progress(`${name}: ${COLD_REQUESTS} cold requests, 23 KB and 20 MB`);
    await part(result, '23 KB fan-out', async () => {
      result.small = await fanOut(inputs, cluster, small, inputs.small);
    });
    await part(result, '20 MB fan-out', async () => {
      result.large = await fanOut(inputs, cluster, idBase + 2, inputs.large, LARGE_DRIP);
    });
    progress(`${name}: late joiners on ${inputs.joinerCount} recordings`);
    await part(result, 'late joiners', async () => {
      result.joiners = await lateJoiners(inputs, cluster, idBase + 100);
    });
    progress(`${name}: hit load`);
    await part(result, 'hit load', async () => {
      const path = recordingPath(small);
      await warmEveryReplica(cluster, path, inputs.small);
      if (replicas === 1) result.loads.push(await hitLoad(inputs, cluster, { via: 'gw-1 directly', baseUrl: cluster.urls[0]!, path }));
      if (!nginx) return;
      const proxy = await startNginx(cluster.urls);
      exitKillers.add(proxy.killNow);
      try {
        await using(proxy.stop, async () => {
          result.loads.push(
            await hitLoad(inputs, cluster, { via: 'nginx, round robin', baseUrl: proxy.url, path, nginxGroup: proxy.pgid }),
          );
        });
      } finally {
        exitKillers.delete(proxy.killNow);
      }
    });
  });
  return result;
}

async function main(): Promise<void> {
  const seconds = positiveNumber('BENCH_SECONDS', 5);
  const joinerCount = Math.round(positiveNumber('BENCH_JOINERS', 10));
  const setups = volumeKinds().flatMap((volumes) =>
    REPLICA_COUNTS.filter((n) => volumes === 'shared' || n > 1).map((replicas) => ({ replicas, volumes })),
  );
  const nginx = nginxInstalled();
  const warmupMs = Math.min(MAX_WARMUP_MS, seconds * 200);
  const began = performance.now();

  const cpus = os.cpus();
  console.log('# recording-gateway cluster bench\n');
  console.log(`- Node ${process.version} on ${os.platform()} ${os.release()} (${os.arch()})`);
  console.log(`- CPU: ${cpus[0]?.model ?? 'unknown'} × ${cpus.length} cores, RAM ${mib(os.totalmem())} MiB`);
  console.log('- Replicas: `recording-gateway serve` child processes (src/cli.ts via tsx), one redis-server per cluster, all on 127.0.0.1');
  console.log(
    '- Fake Flyflow and the cold and late-joiner clients in this process; the hit load in a child process (keep-alive node:http)',
  );
  console.log(
    nginx
      ? `- ${await nginxVersion()} in front (worker_processes auto, upstream keepalive 64); ` +
          `${CONCURRENCY} connections for ${seconds} s after a ${warmupMs / 1000} s warm-up`
      : `- **nginx is not installed** (${NGINX_BINARY}): the throughput columns are skipped; install it with \`${NGINX_INSTALL_HINT}\``,
  );
  console.log(`- Started ${new Date().toISOString()}; load average ${loadAverage()}${busyWarning(cpus.length)}\n`);

  const results: SetupResult[] = [];
  const upstream = await startFakeFlyflow();
  const fixture = upstream.recording(SMALL_FIXTURE_ID);
  await using(upstream.close, async () => {
    if (!fixture) throw new Error(`fixture recording ${SMALL_FIXTURE_ID} is missing from dev/fixtures`);
    const load = await startLoadProcess();
    await using(load.close, async () => {
      const inputs: BenchInputs = {
        upstream,
        load,
        small: fixture,
        large: syntheticRecording(LARGE_BYTES),
        joiner: syntheticRecording(JOINER_BYTES),
        durationMs: seconds * 1000,
        warmupMs,
        joinerCount,
      };
      for (const [index, { replicas, volumes }] of setups.entries()) {
        if (interrupted) break;
        try {
          results.push(await benchSetup(inputs, replicas, volumes, FIRST_SETUP_ID + index * IDS_PER_SETUP, nginx));
        } catch (error) {
          process.exitCode = 1;
          results.push({ replicas, volumes, loads: [], failures: [`start: ${messageOf(error)}`] });
        }
      }
    });
  });

  if (interrupted) return;
  console.log(renderReport(results, { nginx, joinerCount, smallBytes: fixture?.length ?? 0 }));
  console.log(`\n_Total ${((performance.now() - began) / 1000).toFixed(1)} s; load average at the end ${loadAverage()}._`);
}

process.on('exit', () => {
  for (const kill of exitKillers) kill();
});
// `on`, not `once`: Ctrl-C reaches this process twice (from the terminal and
// relayed by tsx), and a second SIGINT without a handler would end it before
// the cleanup has removed the temp dirs.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    progress(`${signal}: stopping every child`);
    void (async () => {
      await stopEverything();
      // Whatever main() started meanwhile stops itself (see `using`); give it a bounded moment.
      await Promise.race([finished, sleep(WIND_DOWN_MS)]);
      await stopEverything();
      process.exit(130);
    })();
  });
}

const finished = main().catch(async (error: unknown) => {
  if (!interrupted) console.error(error);
  process.exitCode = 1;
  await stopEverything();
});
