/**
 * The peers bench's output: the issue's table (metrics by server), the
 * details of every run, the gateway's ratios to nginx, Varnish and the bare
 * `node:http` and `net` floors, one line that holds the ratios to nginx and Varnish
 * against issue 11's goals (and says where the floors stand), and one with
 * what the audit trail costs (issue 12).
 */
import type { ColdResult } from './peers-cold.js';
import type { CaseResult, LoadCase } from './peers-load.js';
import { median } from './stats.js';
import { fmt, markdownTable, type Cell } from './table.js';
import { CORE_CHECK_JOB } from './peers-speed.js';

export const GATEWAY = 'gateway';
/** The same gateway with an audit trail: measured on hits and ranges only, for what auditing costs. */
export const GATEWAY_AUDIT = 'gateway + audit';
export const NGINX = 'nginx';
export const VARNISH = 'Varnish';
/** A bare `node:http` server answering from memory (peers-node-floor.ts): how close a Node caching proxy can get. */
export const NODE_FLOOR = 'node:http floor';
/** A bare `net` server answering from memory as the gateway's door does (peers-net-floor.ts): what Node's sockets alone cost a hit. */
export const NET_FLOOR = 'node:net floor';
/** The node:http floor with the node:net floor's raw upstream connection: cold misses only, Node's HTTP server without its HTTP client. */
export const NODE_FLOOR_RAW_UPSTREAM = 'node:http floor, raw upstream';
/** The cold-miss baseline's label. */
export const UPSTREAM = 'upstream';
/** Other processes using more than this share of a core during a run make its figures suspect. */
const OTHER_CPU_WARN_PERCENT = 5;
/** A load generator this busy was the limit: the req/s it saw is a floor. */
const CLIENT_CPU_WARN_PERCENT = 90;
/** A core check this much slower than the run's fastest marks a slow phase of the host. */
const SLOW_CORE_FACTOR = 1.25;

export interface PeersReport {
  /** Column order, with the version each server reported. */
  servers: Array<{ label: string; version: string }>;
  cases: LoadCase[];
  /** By case key, then server label, the median of the rounds' runs; a missing entry is a run that could not happen. */
  results: Map<string, Map<string, CaseResult>>;
  /** The same, every round's run, in round order. */
  runs: Map<string, Map<string, CaseResult[]>>;
  rounds: number;
  /** By server label, plus {@link UPSTREAM}; undefined when the cold case could not run. */
  cold: Map<string, ColdResult> | undefined;
  coldRequests: number;
  /** Unmeasured cold misses each server answered before the measured ones. */
  coldWarmup: number;
}

function result(report: PeersReport, key: LoadCase['key'], label: string): CaseResult | undefined {
  return report.results.get(key)?.get(label);
}

/** First byte a server adds over the upstream's own, median against median, ms. */
export function coldAddedMs(report: PeersReport, label: string): number | undefined {
  const server = report.cold?.get(label)?.medianMs;
  const upstream = report.cold?.get(UPSTREAM)?.medianMs;
  return server === undefined || upstream === undefined ? undefined : server - upstream;
}

/** The issue's table: rows are metrics, columns are servers. */
export function headlineTable(report: PeersReport): string {
  const header = ['metric', ...report.servers.map((server) => server.version)];
  const rows: Cell[][] = report.cases.map((loadCase) => [
    `${loadCase.title}: req/s · server CPU µs per request · p99`,
    ...report.servers.map(({ label }) => {
      const run = result(report, loadCase.key, label);
      if (!run) return 'not run';
      const flag = run.errors > 0 ? ' (errors)' : '';
      return `${fmt(run.requestsPerSecond, 0)} · ${fmt(run.serverCpuUsPerRequest, 1)} · ${fmt(run.p99Ms, 2)} ms${flag}`;
    }),
  ]);
  rows.push([
    `cold miss: first byte added over going to upstream directly (median of ${report.coldRequests}, after ${report.coldWarmup} unmeasured)`,
    ...report.servers.map(({ label }) => {
      if (label === GATEWAY_AUDIT) return '-';
      const added = coldAddedMs(report, label);
      return added === undefined ? 'not run' : `${fmt(added, 2)} ms`;
    }),
  ]);
  return markdownTable(header, rows);
}

/** Every run, round by round: what the load generator saw and the CPU each party used. */
function everyRun(report: PeersReport): Array<{ loadCase: LoadCase; label: string; round: number; run: CaseResult }> {
  const all = [];
  for (const loadCase of report.cases) {
    for (const { label } of report.servers) {
      for (const [index, run] of (report.runs.get(loadCase.key)?.get(label) ?? []).entries()) {
        all.push({ loadCase, label, round: index + 1, run });
      }
    }
  }
  return all;
}

/** Every run: what the load generator saw and the CPU each party used. */
export function detailTable(report: PeersReport): string {
  const rows: Cell[][] = [];
  for (const { loadCase, label, round, run } of everyRun(report)) {
    rows.push([
      loadCase.title,
      label,
      round,
      run.requests,
      fmt(run.requestsPerSecond, 0),
      fmt(run.p50Ms, 2),
      fmt(run.p99Ms, 2),
      fmt(run.maxMs, 1),
      run.errors,
      fmt(run.serverCpuUsPerRequest, 1),
      `${fmt(run.serverCpuPercent, 0)} %`,
      `${fmt(run.clientCpuPercent, 0)} %`,
      `${fmt(run.otherCpuPercent, 1)} %`,
      fmt(run.coreCheckMs, 0),
    ]);
  }
  const header = [
    'case',
    'server',
    'round',
    'requests',
    'req/s',
    'p50 ms',
    'p99 ms',
    'max ms',
    'errors',
    'CPU µs/req',
    'server CPU',
    'load gen CPU',
    'other CPU',
    'core check ms',
  ];
  return markdownTable(header, rows);
}

/** The first figure over the second; undefined when either is missing, or the second is not above zero (a cold miss can add nothing). */
function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b <= 0 ? undefined : a / b;
}

const times = (value: number | undefined) => (value === undefined ? '-' : `${fmt(value, 2)}×`);

/**
 * The gateway's (or `subject`'s) figure over `peer`'s on one case: each
 * round's ratio, then their median. Two servers run seconds apart within a
 * round, so a slow phase of the machine weighs on both sides of a ratio
 * rather than on one server's median. Undefined when no round ran both.
 */
function against(report: PeersReport, key: LoadCase['key'], peer: string, pick: (run: CaseResult) => number, subject = GATEWAY) {
  const own = report.runs.get(key)?.get(subject) ?? [];
  const other = report.runs.get(key)?.get(peer) ?? [];
  const ratios = own.flatMap((run, round) => {
    const peerRun = other[round];
    const value = peerRun ? ratio(pick(run), pick(peerRun)) : undefined;
    return value === undefined ? [] : [value];
  });
  return ratios.length === 0 ? undefined : median(ratios);
}

/** gateway / each other server (nginx, Varnish, the floors) for every metric, the median of the rounds' ratios. */
export function ratioTable(report: PeersReport): string {
  const labels = report.servers.map((server) => server.label).filter((label) => label !== GATEWAY && label !== GATEWAY_AUDIT);
  const rows: Cell[][] = [];
  const metrics: Array<[string, (run: CaseResult) => number]> = [
    ['req/s', (run) => run.requestsPerSecond],
    ['server CPU µs per request', (run) => run.serverCpuUsPerRequest],
    ['p99', (run) => run.p99Ms],
  ];
  for (const loadCase of report.cases) {
    for (const [name, pick] of metrics) {
      rows.push([`${loadCase.title}, ${name}`, ...labels.map((label) => times(against(report, loadCase.key, label, pick)))]);
    }
  }
  rows.push([
    'cold miss, first byte added',
    ...labels.map((label) => times(ratio(coldAddedMs(report, GATEWAY), coldAddedMs(report, label)))),
  ]);
  return markdownTable(['metric', ...labels.map((label) => `gateway / ${label}`)], rows);
}

interface Goal {
  text: string;
  met: boolean | undefined;
}

/** Issue 11's bench goals, each with the gateway's figure and whether it is met. */
function issueGoals(report: PeersReport): Goal[] {
  const atLeast = (value: number | undefined, goal: number) => (value === undefined ? undefined : value >= goal);
  const atMost = (value: number | undefined, goal: number) => (value === undefined ? undefined : value <= goal);
  const rps = (run: CaseResult) => run.requestsPerSecond;
  const p99 = (run: CaseResult) => run.p99Ms;
  const cpu = (run: CaseResult) => run.serverCpuUsPerRequest;
  const goals: Goal[] = [];
  const add = (text: string, value: number | undefined, met: boolean | undefined) =>
    goals.push({ text: text.replace('{}', value === undefined ? 'n/a' : fmt(value, 2)), met });
  for (const [key, name] of [
    ['probe', 'probe'],
    ['window', '64 KB range'],
  ] as const) {
    const speed = against(report, key, NGINX, rps);
    const tail = against(report, key, NGINX, p99);
    add(`${name} {}× nginx req/s (goal ≥ 0.7)`, speed, atLeast(speed, 0.7));
    add(`${name} p99 {}× nginx's (goal ≤ 2)`, tail, atMost(tail, 2));
  }
  const fullSpeed = against(report, 'full', VARNISH, rps);
  const fullCpu = against(report, 'full', VARNISH, cpu);
  add('full-body hit {}× Varnish req/s (goal ≥ 1.0)', fullSpeed, atLeast(fullSpeed, 1));
  add("full-body hit CPU per request {}× Varnish's (goal ≤ 1.0)", fullCpu, atMost(fullCpu, 1));
  const cold = coldAddedMs(report, GATEWAY);
  add('cold miss first byte +{} ms over upstream (goal ≤ 0.5 ms)', cold, atMost(cold, 0.5));
  return goals;
}

/** The report as one round alone saw it: that round's run for every case and server. */
function roundOnly(report: PeersReport, round: number): PeersReport {
  const runs = new Map<string, Map<string, CaseResult[]>>();
  for (const [key, byServer] of report.runs) {
    const ofRound = new Map<string, CaseResult[]>();
    for (const [label, serverRuns] of byServer) if (serverRuns[round]) ofRound.set(label, [serverRuns[round]]);
    runs.set(key, ofRound);
  }
  return { ...report, runs, rounds: 1 };
}

/**
 * One line: each of issue 11's bench goals with the gateway's ratio (the
 * median of the rounds' ratios) and whether it is met, and how many each round alone
 * met; then, for each floor that ran, where it stands against the same
 * peers and what share of its probe req/s the gateway reaches.
 */
export function goalSummary(report: PeersReport): string {
  const goals = issueGoals(report);
  const word = (met: boolean | undefined) => (met === undefined ? 'not measured' : met ? 'met' : 'missed');
  const judged = goals.filter((goal) => goal.met !== undefined);
  const met = judged.filter((goal) => goal.met).length;
  const metEachRound = Array.from(
    { length: report.rounds },
    (_, round) => issueGoals(roundOnly(report, round)).filter((goal) => goal.met).length,
  );
  const byRound =
    report.rounds > 1
      ? ` Round by round: ${metEachRound.join(', ')} of ${goals.length} met (the cold misses are measured once, for every round).`
      : '';
  const summary = `**Goals (issue 11): ${met} of ${goals.length} met${judged.length < goals.length ? ` (${goals.length - judged.length} not measured)` : ''}${report.rounds > 1 ? `, each ratio the median of ${report.rounds} rounds' ratios` : ''}.** ${goals
    .map((goal) => `${goal.text}: ${word(goal.met)}`)
    .join('; ')}.${byRound}`;
  const rps = (run: CaseResult) => run.requestsPerSecond;
  const figure = (value: number | undefined) => (value === undefined ? 'n/a' : times(value));
  const floors = [NODE_FLOOR, NET_FLOOR].filter((label) =>
    report.cases.some((loadCase) => result(report, loadCase.key, label) !== undefined),
  );
  const stands = floors.map((label) => {
    const floor = (key: LoadCase['key'], peer: string) => against(report, key, peer, rps, label);
    const share = against(report, 'probe', label, rps);
    const cold = coldAddedMs(report, label);
    return (
      ` The ${label}: probe ${figure(floor('probe', NGINX))} nginx req/s, 64 KB ${figure(floor('window', NGINX))}, ` +
      `full-body ${figure(floor('full', VARNISH))} Varnish, cold miss ${cold === undefined ? 'n/a' : `+${fmt(cold, 2)} ms`}; ` +
      `the gateway reaches ${share === undefined ? 'n/a' : `${fmt(100 * share, 0)} %`} of its probe req/s.`
    );
  });
  return `${summary}${stands.join('')}${coldSplit(report)}`;
}

/**
 * What Node's HTTP client and server each add to a cold miss, from the
 * floors that differ in one of them: the node:http floor over the same
 * server with a raw upstream connection (the client), and that over the
 * node:net floor (the server). Empty unless all three were measured.
 */
function coldSplit(report: PeersReport): string {
  const both = coldAddedMs(report, NODE_FLOOR);
  const server = coldAddedMs(report, NODE_FLOOR_RAW_UPSTREAM);
  const neither = coldAddedMs(report, NET_FLOOR);
  if (both === undefined || server === undefined || neither === undefined) return '';
  return (
    ` A cold miss through Node's HTTP server with a raw upstream connection adds +${fmt(server, 2)} ms: ` +
    `Node's HTTP client costs ${fmt(both - server, 2)} ms of the node:http floor's, its HTTP server ${fmt(server - neither, 2)} ms over the node:net floor's.`
  );
}

/**
 * One line: the CPU the audit trail adds per request on each case, the
 * audited gateway's CPU µs per request minus the plain one's; undefined
 * without an audited gateway.
 */
export function auditCostLine(report: PeersReport): string | undefined {
  if (!report.servers.some((server) => server.label === GATEWAY_AUDIT)) return undefined;
  const pairs = (['probe', 'window', 'full'] as const).map(
    (key) => [result(report, key, GATEWAY), result(report, key, GATEWAY_AUDIT)] as const,
  );
  const each = (figure: (plain: CaseResult, audited: CaseResult) => string) =>
    pairs.map(([plain, audited]) => (plain && audited ? figure(plain, audited) : 'n/a'));
  const [probe, range, full] = each((plain, audited) => `${fmt(audited.serverCpuUsPerRequest - plain.serverCpuUsPerRequest, 1)} µs`);
  const shares = each((plain, audited) => {
    const share = (100 * audited.serverCpuUsPerRequest) / plain.serverCpuUsPerRequest - 100;
    return `${share >= 0 ? '+' : ''}${fmt(share, 0)} %`;
  });
  const speeds = each((plain, audited) => times(ratio(audited.requestsPerSecond, plain.requestsPerSecond)));
  return (
    `**Auditing costs ${probe} of CPU per request (probe), ${range} (64 KB), ${full} (full-body hit)**: ` +
    `\`${GATEWAY_AUDIT}\`'s server CPU µs per request minus the plain gateway's (${shares.join(', ')}); its req/s ${speeds.join(', ')} the plain gateway's. ` +
    'Both are the same compiled gateway, one with `audit: { dir }` in its YAML, measured one after the other: a figure below zero is noise.'
  );
}

/**
 * Runs in or next to a slow phase of the host: the slower of their two core
 * checks took over {@link SLOW_CORE_FACTOR} times the fastest. Undefined when
 * none did.
 */
function slowPhaseLine(all: ReturnType<typeof everyRun>): string | undefined {
  const checked = all.filter(({ run }) => Number.isFinite(run.coreCheckMs));
  const fastest = Math.min(...checked.map(({ run }) => run.coreCheckMs));
  const slow = checked.filter(({ run }) => run.coreCheckMs > SLOW_CORE_FACTOR * fastest);
  if (slow.length === 0) return undefined;
  const worst = Math.max(...slow.map(({ run }) => run.coreCheckMs));
  const rounds = new Map<string, number[]>();
  for (const { loadCase, label, round } of slow) {
    const key = `${loadCase.key}: ${label}`;
    rounds.set(key, [...(rounds.get(key) ?? []), round]);
  }
  const which = [...rounds].map(([key, numbers]) => `${key} ${numbers.join(', ')}`).join('; ');
  return (
    `- **Slow phases:** the servers' core took up to ${fmt(worst / fastest, 2)}× its fastest time for the same job (${CORE_CHECK_JOB}, ` +
    `"core check ms" below) around ${slow.length} of ${all.length} runs (case: server rounds: ${which}): the host was slower then for every process, ` +
    'with no other process busy here; compare those runs only with care.'
  );
}

/** Lines about runs whose figures are suspect: other processes busy, the host in a slow phase, the client the limit, wrong answers. */
export function runWarnings(report: PeersReport): string[] {
  const lines: string[] = [];
  const all = everyRun(report);
  const busy = all.map(({ run }) => run.otherCpuPercent).filter((percent) => percent > OTHER_CPU_WARN_PERCENT);
  if (busy.length > 0) {
    lines.push(
      `- **Busy machine:** other processes used more than ${OTHER_CPU_WARN_PERCENT} % of a core during ${busy.length} of ${all.length} runs ` +
        `(up to ${fmt(Math.max(...busy), 0)} %, see "other CPU" below): these figures are noisy; compare them only with care.`,
    );
  }
  const slowPhase = slowPhaseLine(all);
  if (slowPhase) lines.push(slowPhase);
  for (const loadCase of report.cases) {
    const ofCase = all.filter((entry) => entry.loadCase === loadCase);
    const saturated = ofCase.filter(({ run }) => run.clientCpuPercent > CLIENT_CPU_WARN_PERCENT);
    if (saturated.length === 0) continue;
    const percents = saturated.map(({ run }) => run.clientCpuPercent);
    const [low, high] = [fmt(Math.min(...percents), 0), fmt(Math.max(...percents), 0)];
    lines.push(
      `- ${loadCase.title}: the load generator used ${low === high ? low : `${low}–${high}`} % of its core ` +
        `in ${saturated.length} of ${ofCase.length} runs (${[...new Set(saturated.map(({ label }) => label))].join(', ')}), so it may have been the limit there.`,
    );
  }
  for (const { loadCase, label, round, run } of all) {
    if (run.errors === 0) continue;
    const where = `${loadCase.title}, ${label}${report.rounds > 1 ? `, round ${round}` : ''}`;
    lines.push(`- **Errors** (${where}): ${run.errors}: ${run.errorNote ?? 'see the details'}.`);
  }
  for (const [label, cold] of report.cold ?? []) {
    if (cold.errors.length > 0) lines.push(`- **Cold-miss errors** (${label}): ${cold.errors.slice(0, 3).join('; ')}.`);
  }
  return lines;
}

/** Each cold-miss target's median first byte, and what it adds over the upstream's. */
export function coldTable(cold: Map<string, ColdResult>): string {
  const upstream = cold.get(UPSTREAM)?.medianMs;
  const rows: Cell[][] = [...cold].map(([label, result]) => [
    label,
    result.firstByteMs.length,
    fmt(result.medianMs, 2),
    label === UPSTREAM || upstream === undefined ? '-' : fmt(result.medianMs - upstream, 2),
    result.errors.length,
  ]);
  return markdownTable(['target', 'answers', 'median ms', 'added ms', 'errors'], rows);
}
