/**
 * `npm run bench:cluster`: what a cluster of 1, 2 and 3 replicas does with
 * the work (issue 10, bench/README.md "Cluster"), printed as markdown tables.
 * Not a test: nothing passes or fails on timing; wrong answers are counted,
 * and the exit code is 1 when a part could not run.
 *
 *   BENCH_SECONDS=5               measured seconds of hit load per case (plus a warm-up of 20 %, at most 1 s)
 *   BENCH_CLUSTER_VOLUMES=shared,own   `own`: also 2 and 3 replicas with one cache volume each
 *   BENCH_JOINERS=10              recordings in the late-joiner part
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { syntheticRecording } from '../dev/recording-bytes.js';
import { ACME_AUTH, recordingPath, startCluster, streamGet, upstreamFetches, type Cluster } from '../test/support/cluster.js';
import { NGINX_BINARY, NGINX_INSTALL_HINT, nginxInstalled, nginxVersion, startNginx } from './cluster-nginx.js';
import { checkedGet, coldFanOut, describeKinds, groupCpuSeconds, percentile, type FanOutResult } from './cluster-probes.js';
import type { LoadResult } from './load.js';
import { startLoadProcess, type LoadProcess } from './load-process.js';
import { fmt, markdownTable, mib, type Cell } from './table.js';

const MIB = 2 ** 20;
const COLD_REQUESTS = 100;
/** The 23 KB fixture: the cold small recording and the warm one of the throughput part. */
const SMALL_FIXTURE_ID = 1;
// 40 chunks of 512 KiB, one every 50 ms: the download lasts about 2 s.
const LARGE_BYTES = 20 * MIB;
const LARGE_DRIP = { kind: 'slow-body', chunkBytes: 512 * 1024, intervalMs: 50 } as const;
// 16 chunks of 256 KiB, one every 50 ms: 1 MiB has arrived after ~150 ms, ~600 ms are left for the joiners.
const JOINER_BYTES = 4 * MIB;
const JOINER_DRIP = { kind: 'slow-body', chunkBytes: 256 * 1024, intervalMs: 50 } as const;
const JOIN_AFTER_BYTES = MIB;
const CONCURRENCY = 32;
const MAX_WARMUP_MS = 1_000;
const WARM_ATTEMPTS = 5;
const STEP_TIMEOUT_MS = 30_000;
const REPLICA_COUNTS = [1, 2, 3];

type Volumes = 'shared' | 'own';

interface LoadCase {
  via: string;
  result: LoadResult;
  /** CPU as % of one core over the case (warm-up included). */
  gatewaysCpu: number;
  nginxCpu: number | undefined;
}

interface SetupResult {
  replicas: number;
  volumes: Volumes;
  small?: { fetches: number; fanOut: FanOutResult };
  large?: { fetches: number; fanOut: FanOutResult };
  joiners?: { firstByteMs: number[]; where: string; kinds: Map<string, number>; wrong: number; problems: string[]; fetches: number };
  loads: LoadCase[];
  failures: string[];
}

interface Shared {
  upstream: FakeFlyflow;
  load: LoadProcess;
  small: Buffer;
  large: Buffer;
  joiner: Buffer;
  durationMs: number;
  warmupMs: number;
  joinerCount: number;
  nginx: boolean;
}

function positiveInteger(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number (got ${JSON.stringify(raw)})`);
  return value;
}

function volumeKinds(): Volumes[] {
  const raw = process.env.BENCH_CLUSTER_VOLUMES ?? 'shared,own';
  const kinds = raw.split(',').map((part) => part.trim());
  if (kinds.length === 0 || kinds.some((kind) => kind !== 'shared' && kind !== 'own')) {
    throw new Error(`BENCH_CLUSTER_VOLUMES must list shared and/or own (got ${JSON.stringify(raw)})`);
  }
  return kinds as Volumes[];
}

/** Whatever must be stopped if the run ends early: Ctrl-C, an error, or a normal end. */
const stoppers = new Set<() => Promise<void>>();
const exitKillers = new Set<() => void>();

async function stopEverything(): Promise<void> {
  for (const stop of [...stoppers].reverse()) await stop().catch(() => {});
  stoppers.clear();
}

async function using<T extends { stop(): Promise<void> }, R>(resource: T, use: (resource: T) => Promise<R>): Promise<R> {
  const stop = () => resource.stop();
  stoppers.add(stop);
  try {
    return await use(resource);
  } finally {
    stoppers.delete(stop);
    await stop();
  }
}

function progress(message: string): void {
  process.stderr.write(`bench:cluster: ${message}\n`);
}

/** Runs one part; a failure is recorded for the table, and the next part still runs. */
async function part(result: SetupResult, label: string, run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (error) {
    process.exitCode = 1;
    result.failures.push(`${label}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** 100 concurrent cold GETs round robin over the replicas, and how often the upstream was asked. */
async function fanOut(shared: Shared, cluster: Cluster, id: number, bytes: Buffer, drip?: typeof LARGE_DRIP) {
  shared.upstream.setRecording(id, bytes);
  if (drip) shared.upstream.setBehaviour(id, drip);
  const result = await coldFanOut(cluster.urls, recordingPath(id), ACME_AUTH, COLD_REQUESTS, bytes);
  return { fetches: upstreamFetches(shared.upstream, id), fanOut: result };
}

/**
 * A slow download runs on replica 1 for one client; once 1 MiB has reached it,
 * a GET on each other replica (on replica 1 itself when alone) is timed to its first body byte.
 */
async function lateJoiners(shared: Shared, cluster: Cluster, firstId: number): Promise<NonNullable<SetupResult['joiners']>> {
  const targets = cluster.urls.length === 1 ? [0] : cluster.urls.map((_, i) => i).slice(1);
  const firstByteMs: number[] = [];
  const kinds = new Map<string, number>();
  const problems: string[] = [];
  let wrong = 0;
  let fetches = 0;
  for (let i = 0; i < shared.joinerCount; i++) {
    const id = firstId + i;
    const path = recordingPath(id);
    shared.upstream.setRecording(id, shared.joiner);
    shared.upstream.setBehaviour(id, JOINER_DRIP);
    const first = await streamGet(`${cluster.urls[0]}${path}`, ACME_AUTH);
    if (first.status !== 200) throw new Error(`the first client of recording ${id} got ${first.status}`);
    await first.reached(JOIN_AFTER_BYTES, STEP_TIMEOUT_MS);
    // At once, so each joiner arrives while the download is under way.
    const answers = await Promise.all(targets.map((target) => checkedGet(`${cluster.urls[target]}${path}`, ACME_AUTH, shared.joiner)));
    const whole = await first.body;
    if (!whole.complete || !whole.bytes.equals(shared.joiner)) {
      wrong += 1;
      problems.push(`the first client of ${id} got ${whole.bytes.length} bytes${whole.complete ? '' : ', cut short'}`);
    }
    for (const answer of answers) {
      const kind = answer.cacheStatus.replace(/^recording-gateway; /, '');
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      if (answer.problem === undefined) firstByteMs.push(answer.firstByteMs);
      else {
        wrong += 1;
        if (problems.length < 3) problems.push(answer.problem);
      }
    }
    fetches += upstreamFetches(shared.upstream, id);
  }
  const where = cluster.urls.length === 1 ? 'gw-1 itself' : targets.map((t) => `gw-${t + 1}`).join(', ');
  return { firstByteMs, where, kinds, wrong, problems, fetches };
}

/** GETs the recording on every replica until each answers it from memory (or gives up after a few tries). */
async function warmEveryReplica(cluster: Cluster, path: string, bytes: Buffer): Promise<void> {
  for (const url of cluster.urls) {
    for (let attempt = 0; ; attempt++) {
      const answer = await checkedGet(`${url}${path}`, ACME_AUTH, bytes);
      if (answer.problem) throw new Error(`warming ${url}: ${answer.problem}`);
      if (answer.cacheStatus.includes('hit; detail=memory')) break;
      if (attempt === WARM_ATTEMPTS) throw new Error(`warming ${url}: still \`${answer.cacheStatus}\` after ${WARM_ATTEMPTS + 1} GETs`);
    }
  }
}

/** Fixed-concurrency hit load against `baseUrl`, with the CPU of the replicas (and nginx) over it. */
async function hitLoad(
  shared: Shared,
  cluster: Cluster,
  via: string,
  baseUrl: string,
  path: string,
  nginxGroup?: number,
): Promise<LoadCase> {
  const gatewayGroups = cluster.replicas.map((replica) => replica.process.child.pid!);
  const groupsCpu = (groups: number[]) => groups.reduce((sum, pgid) => sum + groupCpuSeconds(pgid), 0);
  const gatewaysBefore = groupsCpu(gatewayGroups);
  const nginxBefore = nginxGroup === undefined ? 0 : groupCpuSeconds(nginxGroup);
  const started = performance.now();
  const result = await shared.load.run({
    baseUrl,
    paths: [path],
    headers: ACME_AUTH,
    concurrency: CONCURRENCY,
    durationMs: shared.durationMs,
    warmupMs: shared.warmupMs,
    expect: { status: 200, contentLength: shared.small.length, cacheStatus: 'hit' },
  });
  const percent = (seconds: number) => (100 * seconds * 1000) / (performance.now() - started);
  return {
    via,
    result,
    gatewaysCpu: percent(groupsCpu(gatewayGroups) - gatewaysBefore),
    nginxCpu: nginxGroup === undefined ? undefined : percent(groupCpuSeconds(nginxGroup) - nginxBefore),
  };
}

async function benchSetup(shared: Shared, replicas: number, volumes: Volumes, idBase: number): Promise<SetupResult> {
  const result: SetupResult = { replicas, volumes, loads: [], failures: [] };
  progress(`starting redis-server and ${replicas} replica(s), ${volumes} volume(s)`);
  const cluster = await startCluster({ replicas, volumes, upstreamBaseUrl: shared.upstream.baseUrl });
  await using({ stop: () => cluster.stopAll() }, async () => {
    const small = idBase + 1;
    progress(`${replicas}/${volumes}: ${COLD_REQUESTS} cold requests, 23 KB and 20 MB`);
    await part(result, '23 KB fan-out', async () => {
      result.small = await fanOut(shared, cluster, small, shared.small);
    });
    await part(result, '20 MB fan-out', async () => {
      result.large = await fanOut(shared, cluster, idBase + 2, shared.large, LARGE_DRIP);
    });
    progress(`${replicas}/${volumes}: late joiners on ${shared.joinerCount} recordings`);
    await part(result, 'late joiners', async () => {
      result.joiners = await lateJoiners(shared, cluster, idBase + 100);
    });
    progress(`${replicas}/${volumes}: hit load`);
    await part(result, 'hit load', async () => {
      shared.upstream.setRecording(small, shared.small);
      await warmEveryReplica(cluster, recordingPath(small), shared.small);
      if (replicas === 1) result.loads.push(await hitLoad(shared, cluster, 'gw-1 directly', cluster.urls[0]!, recordingPath(small)));
      if (!shared.nginx) return;
      const nginx = await startNginx(cluster.urls);
      exitKillers.add(nginx.killNow);
      try {
        await using(nginx, async () => {
          result.loads.push(await hitLoad(shared, cluster, 'nginx, round robin', nginx.url, recordingPath(small), nginx.pgid));
        });
      } finally {
        exitKillers.delete(nginx.killNow);
      }
    });
  });
  return result;
}

function ms(value: number | undefined): string {
  return fmt(value, value !== undefined && value < 10 ? 2 : 1);
}

function mainRow(setup: SetupResult): Cell[] {
  const nginx = setup.loads.find((load) => load.via.startsWith('nginx'));
  const wrong = (setup.small?.fanOut.wrong ?? 0) + (setup.large?.fanOut.wrong ?? 0) + (setup.joiners?.wrong ?? 0);
  const joinMs = setup.joiners?.firstByteMs ?? [];
  return [
    setup.replicas,
    setup.volumes,
    setup.small?.fetches ?? '-',
    setup.large?.fetches ?? '-',
    setup.large ? fmt(setup.large.fanOut.wallMs / 1000, 2) : '-',
    setup.joiners ? `${joinMs.length} (${setup.joiners.where})` : '-',
    ms(percentile(joinMs, 50)),
    ms(joinMs.length ? Math.max(...joinMs) : undefined),
    nginx ? fmt(nginx.result.requestsPerSecond, 0) : '-',
    nginx ? ms(nginx.result.latencyMs.p50) : '-',
    nginx ? ms(nginx.result.latencyMs.p99) : '-',
    wrong + (nginx?.result.errors ?? 0),
  ];
}

function loadRows(setups: SetupResult[]): Cell[][] {
  return setups.flatMap((setup) =>
    setup.loads.map(({ via, result, gatewaysCpu, nginxCpu }) => [
      setup.replicas,
      setup.volumes,
      via,
      result.concurrency,
      result.requests,
      fmt(result.requestsPerSecond, 0),
      fmt(result.megabytesPerSecond, 1),
      ms(result.latencyMs.p50),
      ms(result.latencyMs.p90),
      ms(result.latencyMs.p99),
      ms(result.latencyMs.max),
      result.errors,
      `${fmt(gatewaysCpu, 0)} %`,
      nginxCpu === undefined ? '-' : `${fmt(nginxCpu, 0)} %`,
      `${fmt(result.clientCpuPercent, 0)} %`,
    ]),
  );
}

/** Per setup: the answers by Cache-Status, any wrong answer and any part that could not run. */
function notes(setup: SetupResult, joinerCount: number): string[] {
  const name = `${setup.replicas} × ${setup.volumes}`;
  const lines: string[] = [];
  for (const [label, fan] of [
    ['23 KB', setup.small],
    ['20 MB', setup.large],
  ] as const) {
    if (!fan) continue;
    lines.push(`- ${name}, ${label}: ${describeKinds(fan.fanOut.kinds)}${fan.fanOut.problems.map((p) => `; **wrong:** ${p}`).join('')}`);
  }
  if (setup.joiners) {
    const j = setup.joiners;
    const upstreamNote = j.fetches === joinerCount ? '' : `; **${j.fetches} upstream GETs for ${joinerCount} recordings**`;
    lines.push(`- ${name}, late joiners: ${describeKinds(j.kinds)}${upstreamNote}${j.problems.map((p) => `; **wrong:** ${p}`).join('')}`);
  }
  for (const load of setup.loads) {
    for (const sample of load.result.errorSamples) lines.push(`- ${name}, ${load.via}: **error:** ${sample}`);
  }
  for (const failure of setup.failures) lines.push(`- ${name}: **could not run** ${failure}`);
  return lines;
}

function summary(setups: SetupResult[], nginx: boolean): string {
  const fetches = setups.flatMap((s) => [s.small?.fetches, s.large?.fetches]).filter((n): n is number => n !== undefined);
  const allOne = fetches.length > 0 && fetches.every((n) => n === 1);
  const sharedRows = setups.filter((s) => s.volumes === 'shared');
  const byCount = (pick: (s: SetupResult) => string) => sharedRows.map(pick).join(' / ');
  const counts = sharedRows.map((s) => s.replicas).join(' / ');
  const joinP50 = byCount((s) => ms(percentile(s.joiners?.firstByteMs ?? [], 50)));
  const parts = [
    allOne
      ? `1 upstream GET per recording in all ${fetches.length} fan-outs`
      : `upstream GETs per recording: ${fetches.join(', ')} (**expected 1 each**)`,
    `late-joiner first byte p50 ${joinP50} ms for ${counts} replicas (shared volume)`,
  ];
  if (nginx) {
    const rps = byCount((s) => fmt(s.loads.find((l) => l.via.startsWith('nginx'))?.result.requestsPerSecond, 0));
    const direct = setups.find((s) => s.replicas === 1)?.loads.find((l) => l.via.endsWith('directly'));
    parts.push(`hits through nginx ${rps} req/s (1 replica directly: ${fmt(direct?.result.requestsPerSecond, 0)} req/s)`);
  }
  return `**Summary:** ${parts.join('; ')}.`;
}

async function main(): Promise<void> {
  const seconds = positiveInteger('BENCH_SECONDS', 5);
  const joinerCount = Math.round(positiveInteger('BENCH_JOINERS', 10));
  const volumes = volumeKinds();
  const nginx = nginxInstalled();
  const setups = volumes.flatMap((kind) => REPLICA_COUNTS.filter((n) => kind === 'shared' || n > 1).map((n) => ({ n, kind })));
  const began = performance.now();

  const cpus = os.cpus();
  console.log('# recording-gateway cluster bench\n');
  console.log(`- Node ${process.version} on ${os.platform()} ${os.release()} (${os.arch()})`);
  console.log(`- CPU: ${cpus[0]?.model ?? 'unknown'} × ${cpus.length} cores, RAM ${mib(os.totalmem())} MiB`);
  console.log('- Replicas: `recording-gateway serve` child processes (src/cli.ts via tsx), one redis-server per cluster, all on 127.0.0.1');
  console.log('- Fake Flyflow and the cold/late-joiner clients in this process; the hit load in a child process (keep-alive node:http)');
  console.log(
    nginx
      ? `- ${await nginxVersion()} (worker_processes auto, upstream keepalive 64) in front; ${CONCURRENCY} connections for ${seconds} s after a ${Math.min(MAX_WARMUP_MS, seconds * 200) / 1000} s warm-up`
      : `- **nginx is not installed** (${NGINX_BINARY}): the throughput columns are skipped. Install it with \`${NGINX_INSTALL_HINT}\``,
  );
  console.log(
    `- Started ${new Date().toISOString()}; load average ${os
      .loadavg()
      .map((v) => v.toFixed(2))
      .join(' / ')}\n`,
  );

  const results: SetupResult[] = [];
  let smallBytes = 0;
  const upstream = await startFakeFlyflow();
  await using({ stop: () => upstream.close() }, async () => {
    const load = await startLoadProcess();
    await using({ stop: () => load.close() }, async () => {
      const fixture = upstream.recording(SMALL_FIXTURE_ID);
      if (!fixture) throw new Error(`fixture recording ${SMALL_FIXTURE_ID} is missing from dev/fixtures`);
      smallBytes = fixture.length;
      const shared: Shared = {
        upstream,
        load,
        small: fixture,
        large: syntheticRecording(LARGE_BYTES),
        joiner: syntheticRecording(JOINER_BYTES),
        durationMs: seconds * 1000,
        warmupMs: Math.min(MAX_WARMUP_MS, seconds * 200),
        joinerCount,
        nginx,
      };
      for (const [index, { n, kind }] of setups.entries()) {
        try {
          results.push(await benchSetup(shared, n, kind, 100_000 + index * 1_000));
        } catch (error) {
          process.exitCode = 1;
          results.push({
            replicas: n,
            volumes: kind,
            loads: [],
            failures: [`start: ${error instanceof Error ? error.message : String(error)}`],
          });
        }
      }
    });
  });

  console.log('## One cluster per row\n');
  const header = [
    'replicas',
    'volumes',
    'upstream GETs: 23 KB × 100',
    'upstream GETs: 20 MB slow × 100',
    '20 MB × 100 done s',
    'late joiners',
    'joiner 1st byte p50 ms',
    'joiner max ms',
    nginx ? 'nginx req/s' : 'nginx req/s (not installed)',
    'nginx p50 ms',
    'nginx p99 ms',
    'wrong answers',
  ];
  console.log(markdownTable(header, results.map(mainRow)));
  console.log(
    `\nUpstream GETs: what the fake Flyflow received for one recording after ${COLD_REQUESTS} concurrent cold GETs sent round robin straight to the replicas ` +
      `(20 MB: dripped as 512 KiB every 50 ms, about 2 s). Late joiners: a client streams a ${JOINER_BYTES / MIB} MiB recording from gw-1 ` +
      `(256 KiB every 50 ms); once ${JOIN_AFTER_BYTES / MIB} MiB has reached it, one GET on each other replica at once, timed from sending to the first body byte ` +
      `(fresh connection); ${joinerCount} recordings. Every body is compared with the upstream's bytes.\n`,
  );
  if (nginx) {
    console.log('## Hit throughput\n');
    const loadHeader = [
      'replicas',
      'volumes',
      'via',
      'conc',
      'requests',
      'req/s',
      'MB/s',
      'p50 ms',
      'p90 ms',
      'p99 ms',
      'max ms',
      'errors',
    ];
    console.log(markdownTable([...loadHeader, 'gateways CPU', 'nginx CPU', 'client CPU'], loadRows(results)));
    console.log(
      `\nFull-body GETs of the warm ${smallBytes}-byte fixture with the tenant key, each answer checked (200, length, \`Cache-Status: hit\`). ` +
        'CPU: % of one core, summed over the replicas (their process groups) and over nginx’s master and workers.\n',
    );
  }
  const noteLines = results.flatMap((setup) => notes(setup, joinerCount));
  if (noteLines.length) console.log(`## Answers by Cache-Status\n\n${noteLines.join('\n')}\n`);
  console.log(summary(results, nginx));
  console.log(
    `\n_Total ${((performance.now() - began) / 1000).toFixed(1)} s; load average at the end ${os
      .loadavg()
      .map((v) => v.toFixed(2))
      .join(' / ')}._`,
  );
}

process.on('exit', () => {
  for (const kill of exitKillers) kill();
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    progress(`${signal}: stopping every child`);
    void stopEverything().finally(() => process.exit(130));
  });
}

main().catch(async (error: unknown) => {
  console.error(error);
  process.exitCode = 1;
  await stopEverything();
});
