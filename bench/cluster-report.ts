/** The tables and the summary line `npm run bench:cluster` prints, from what each cluster measured. */
import {
  COLD_REQUESTS,
  JOIN_AFTER_BYTES,
  JOINER_BYTES,
  LARGE_DRIP,
  type FanOut,
  type LateJoiners,
  type LoadCase,
} from './cluster-parts.js';
import { describeKinds, percentile } from './cluster-probes.js';
import { fmt, markdownTable, type Cell } from './table.js';

const MIB = 2 ** 20;

export type Volumes = 'shared' | 'own';

/** Everything one cluster (N replicas, shared or own volumes) measured; a part that failed is missing and named in `failures`. */
export interface SetupResult {
  replicas: number;
  volumes: Volumes;
  small?: FanOut;
  large?: FanOut;
  joiners?: LateJoiners;
  loads: LoadCase[];
  failures: string[];
}

function ms(value: number | undefined): string {
  return fmt(value, value !== undefined && value < 10 ? 2 : 1);
}

function throughNginx(setup: SetupResult): LoadCase | undefined {
  return setup.loads.find((load) => load.via.startsWith('nginx'));
}

function mainRow(setup: SetupResult): Cell[] {
  const nginx = throughNginx(setup);
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

/** Per cluster: the answers by Cache-Status, any wrong answer and any part that could not run. */
function notes(setup: SetupResult, joinerCount: number): string[] {
  const name = `${setup.replicas} ${setup.replicas === 1 ? 'replica' : 'replicas'}, ${setup.volumes === 'shared' ? 'shared volume' : 'own volumes'}`;
  const wrong = (problems: string[]) => problems.map((problem) => `; **wrong:** ${problem}`).join('');
  const lines: string[] = [];
  for (const [label, fan] of [
    ['23 KB', setup.small],
    ['20 MB', setup.large],
  ] as const) {
    if (fan) lines.push(`- ${name}, ${label}: ${describeKinds(fan.fanOut.kinds)}${wrong(fan.fanOut.problems)}`);
  }
  if (setup.joiners) {
    const { kinds, fetches, problems } = setup.joiners;
    const upstream = fetches === joinerCount ? '' : `; **${fetches} upstream GETs for ${joinerCount} recordings**`;
    lines.push(`- ${name}, late joiners: ${describeKinds(kinds)}${upstream}${wrong(problems)}`);
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
  // The shared-volume rows when there are any (BENCH_CLUSTER_VOLUMES=own runs none).
  const shared = setups.filter((s) => s.volumes === 'shared');
  const sharedRows = shared.length > 0 ? shared : setups;
  const volumes = shared.length > 0 ? 'shared volume' : 'own volumes';
  const perCount = (pick: (s: SetupResult) => string) => sharedRows.map(pick).join(' / ');
  const parts = [
    allOne
      ? `1 upstream GET per recording in all ${fetches.length} fan-outs`
      : `upstream GETs per recording: ${fetches.join(', ')} (**expected 1 each**)`,
    `late-joiner first byte p50 ${perCount((s) => ms(percentile(s.joiners?.firstByteMs ?? [], 50)))} ms ` +
      `for ${perCount((s) => String(s.replicas))} replicas (${volumes})`,
  ];
  if (nginx) {
    const direct = setups.find((s) => s.replicas === 1)?.loads.find((l) => l.via.endsWith('directly'));
    parts.push(
      `hits through nginx ${perCount((s) => fmt(throughNginx(s)?.result.requestsPerSecond, 0))} req/s ` +
        `(1 replica directly: ${fmt(direct?.result.requestsPerSecond, 0)} req/s)`,
    );
  }
  return `**Summary:** ${parts.join('; ')}.`;
}

/** The report: one row per cluster, the throughput details, the answers by kind, and a one-line summary. */
export function renderReport(setups: SetupResult[], options: { nginx: boolean; joinerCount: number; smallBytes: number }): string {
  const out: string[] = ['## One cluster per row', ''];
  const header = [
    'replicas',
    'volumes',
    `upstream GETs: 23 KB × ${COLD_REQUESTS}`,
    `upstream GETs: 20 MB slow × ${COLD_REQUESTS}`,
    `20 MB × ${COLD_REQUESTS} done s`,
    'late joiners',
    'joiner 1st byte p50 ms',
    'joiner max ms',
    options.nginx ? 'nginx req/s' : 'nginx req/s (not installed)',
    'nginx p50 ms',
    'nginx p99 ms',
    'wrong answers',
  ];
  out.push(markdownTable(header, setups.map(mainRow)), '');
  out.push(
    `Upstream GETs: what the fake Flyflow received for one recording after ${COLD_REQUESTS} concurrent cold GETs sent round robin ` +
      `straight to the replicas (20 MB: dripped as ${LARGE_DRIP.chunkBytes / 1024} KiB every ${LARGE_DRIP.intervalMs} ms, about 2 s). ` +
      `Late joiners: a client streams a ${JOINER_BYTES / MIB} MiB recording from gw-1 (256 KiB every 50 ms); once ` +
      `${JOIN_AFTER_BYTES / MIB} MiB has reached it, one GET on each other replica at once, timed from sending to the first body ` +
      `byte (fresh connection); ${options.joinerCount} recordings. Every body is compared with the upstream's bytes.`,
    '',
  );
  if (options.nginx) {
    const loadHeader = ['replicas', 'volumes', 'via', 'conc', 'requests', 'req/s', 'MB/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms'];
    out.push('## Hit throughput', '');
    out.push(markdownTable([...loadHeader, 'errors', 'gateways CPU', 'nginx CPU', 'client CPU'], loadRows(setups)), '');
    out.push(
      `Full-body GETs of the warm ${options.smallBytes}-byte fixture with the tenant key, each answer checked (200, length, ` +
        '`Cache-Status: hit`). CPU: % of one core, summed over the replicas (their process groups) and over nginx’s master and workers.',
      '',
    );
  }
  const noteLines = setups.flatMap((setup) => notes(setup, options.joinerCount));
  if (noteLines.length) out.push('## Answers by Cache-Status', '', ...noteLines, '');
  out.push(summary(setups, options.nginx));
  return out.join('\n');
}
