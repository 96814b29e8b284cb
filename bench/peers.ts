/**
 * `npm run bench:peers`: the compiled gateway side by side with nginx
 * (proxy_cache) and Varnish in front of one generated upstream, on one core
 * each, loaded by wrk on another (issue 11, item 1); the same gateway
 * with an audit trail on the hit and range cases, for what auditing costs
 * (issue 12); and two floors answering from memory: a bare `node:http`
 * server (peers-node-floor.ts), the floor any Node caching proxy on Node's
 * HTTP server stands on, and a bare `net` server reading heads as the
 * gateway's door does (peers-net-floor.ts), what Node's sockets alone cost;
 * on cold misses a third, the first with the second's raw upstream
 * connection, which splits a miss's cost between Node's HTTP client and
 * server. Prints
 * the issue's table, the gateway's ratios to its peers, one line against the
 * issue's goals (and where the floor stands), one with the audit trail's cost
 * and one proving the trail was written, and every run's details. Not a test: nothing
 * passes or fails on timing; the exit code is 1 only when something could not
 * run, answered wrong, or the audit trail misses lines.
 *
 *   BENCH_SECONDS=5         measured seconds per run (after a 1 s warm-up run)
 *   PEERS_ROUNDS=3          rounds of every case on every server; each figure is the median of its rounds
 *   PEERS_CONNECTIONS=32    wrk's connections
 *   PEERS_COLD_REQUESTS=20  cold misses per server, measured
 *   PEERS_COLD_WARMUP=20    cold misses per server before those, not measured
 *   PEERS_SKIP_BUILD=1      use dist/ as it is instead of running `npm run build`
 *   PEERS_SKIP_AUDIT=1      no `gateway + audit` server
 *   PEERS_SKIP_FLOOR=1      no floor servers (`node:http floor`, `node:net floor`, `node:http floor, raw upstream`)
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import { checkAuditTrail, settledAuditLines, type AuditTally } from './peers-audit.js';
import { measureColdMisses, type ColdResult } from './peers-cold.js';
import { loopbackRoundTripMs } from './peers-loopback.js';
import { measureCase, medianOfRuns, nodeGenerator, wrkGenerator, WRK_BINARY, type CaseResult, type LoadCase } from './peers-load.js';
import { executable, pinSelf, planCores, type ProcessGroup } from './peers-process.js';
import { CORE_CHECK_JOB, coreCheckMs } from './peers-speed.js';
import {
  GATEWAY,
  GATEWAY_AUDIT,
  NET_FLOOR,
  NGINX,
  NODE_FLOOR,
  NODE_FLOOR_RAW_UPSTREAM,
  UPSTREAM,
  VARNISH,
  auditCostLine,
  coldTable,
  detailTable,
  goalSummary,
  headlineTable,
  ratioTable,
  runWarnings,
  type PeersReport,
} from './peers-report.js';
import {
  binaryVersion,
  installedPeers,
  PEERS_INSTALL_HINT,
  PEERS_RECORDING_BYTES,
  ROOT,
  startGatewayServer,
  startNginxServer,
  startFloorServer,
  startPeersUpstream,
  startVarnishServer,
  type GatewayServer,
  type PeerServer,
  type PeersUpstream,
} from './peers-servers.js';
import { caseOf, warmAndCheck } from './peers-warm.js';
import { mib } from './table.js';
import { nonNegativeInteger, positiveInteger } from './env.js';
import { startScriptNodeFlags } from '../dev/gateway-process.js';

const WINDOW_BYTES = 64 * 1024;
const WARM_PATH = '/v1/call/recording/1.mp3';
const COLD_FIRST_ID = 100_000;
const WARMUP_SECONDS = 1;

const CASES: LoadCase[] = [
  { key: 'full', title: 'full-body hit', path: WARM_PATH, status: 200, bodyBytes: PEERS_RECORDING_BYTES },
  {
    key: 'probe',
    title: '`Range: bytes=0-1` (the Safari probe)',
    path: WARM_PATH,
    range: { header: 'bytes=0-1' },
    status: 206,
    bodyBytes: 2,
  },
  {
    key: 'window',
    title: '64 KB mid-file range (random window)',
    path: WARM_PATH,
    range: { randomLength: WINDOW_BYTES, size: PEERS_RECORDING_BYTES },
    status: 206,
    bodyBytes: WINDOW_BYTES,
  },
];

/** `0.2.0 (a779a25 + working tree)`: which gateway the figures belong to. */
function gatewayVersion(): string {
  const git = (...args: string[]) => spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() ?? '';
  const { version } = JSON.parse(readFileSync(`${ROOT}/package.json`, 'utf8')) as { version: string };
  const commit = git('rev-parse', '--short', 'HEAD');
  const dirty = git('status', '--porcelain', '--untracked-files=no') !== '';
  return `gateway ${version}${commit ? ` (${commit}${dirty ? ' + working tree' : ''})` : ''}`;
}

function build(): void {
  console.log('Building the gateway (`npm run build`)...');
  const result = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' });
  if (result.status !== 0) {
    throw new Error(`npm run build failed (exit ${result.status}):\n${`${result.stdout}\n${result.stderr}`.trim().slice(-4_000)}`);
  }
}

async function main(): Promise<void> {
  const seconds = positiveInteger('BENCH_SECONDS', 5);
  const rounds = positiveInteger('PEERS_ROUNDS', 3);
  const connections = positiveInteger('PEERS_CONNECTIONS', 32);
  const coldRequests = positiveInteger('PEERS_COLD_REQUESTS', 20);
  const coldWarmup = nonNegativeInteger('PEERS_COLD_WARMUP', 20);
  const withAudit = process.env.PEERS_SKIP_AUDIT !== '1';
  const withFloor = process.env.PEERS_SKIP_FLOOR !== '1';
  if (process.env.PEERS_SKIP_BUILD !== '1') build();

  const cores = planCores();
  pinSelf(cores.client);
  const serverKey = randomBytes(24).toString('base64url');
  const tenantKey = randomBytes(24).toString('base64url');
  const groups = new Set<ProcessGroup>();
  const stops: Array<() => Promise<void>> = [];
  const killAll = () => {
    for (const group of groups) group.kill();
  };
  process.once('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      killAll();
      void Promise.allSettled(stops.map((stop) => stop())).finally(() => process.exit(130));
    });
  }
  const track = <T extends { group: ProcessGroup; stop(): Promise<void> }>(started: T): T => {
    groups.add(started.group);
    stops.push(started.stop);
    return started;
  };

  try {
    const cpus = os.cpus();
    const loadAverage = () =>
      os
        .loadavg()
        .map((value) => value.toFixed(2))
        .join(' / ');
    console.log('\n# recording-gateway vs nginx and Varnish\n');
    console.log(`- Node ${process.version} on ${os.platform()} ${os.release()}; CPU ${cpus[0]?.model ?? 'unknown'} × ${cpus.length}`);
    console.log(`- Pinning: ${cores.description}`);

    const upstream: PeersUpstream = track(await startPeersUpstream({ core: cores.upstream, size: PEERS_RECORDING_BYTES, serverKey }));
    const servers: PeerServer[] = [];
    // Measured on cold misses only: its hits are the node:http floor's.
    const coldOnly: PeerServer[] = [];
    const startProblems: string[] = [];
    const installed = installedPeers();
    const common = { core: cores.server, upstream, serverKey };
    const version = gatewayVersion();
    servers.push(track(await startGatewayServer({ ...common, tenantKey, version })));
    let audited: GatewayServer | undefined;
    if (withAudit) {
      try {
        audited = track(await startGatewayServer({ ...common, tenantKey, version, audit: true }));
        servers.push(audited);
      } catch (error) {
        process.exitCode = 1;
        startProblems.push(`${GATEWAY_AUDIT} could not start: ${(error as Error).message}`);
      }
    }
    if (withFloor) {
      for (const floor of [NODE_FLOOR, NET_FLOOR, NODE_FLOOR_RAW_UPSTREAM] as const) {
        try {
          const started = track(await startFloorServer(floor, common));
          (floor === NODE_FLOOR_RAW_UPSTREAM ? coldOnly : servers).push(started);
        } catch (error) {
          process.exitCode = 1;
          startProblems.push(`${floor} could not start: ${(error as Error).message}`);
        }
      }
    }
    for (const [present, name, start] of [
      [installed.nginx, NGINX, startNginxServer],
      [installed.varnish, VARNISH, startVarnishServer],
    ] as const) {
      if (!present) {
        startProblems.push(`${name} is not installed: skipped (install it with \`${PEERS_INSTALL_HINT}\`)`);
        continue;
      }
      try {
        servers.push(track(await start(common)));
      } catch (error) {
        process.exitCode = 1;
        startProblems.push(`${name} could not start: ${(error as Error).message}`);
      }
    }

    const wrk = executable(WRK_BINARY);
    if (!wrk) startProblems.push(`${WRK_BINARY} is missing (\`apt-get install -y wrk\`): using the project's node load generator instead`);
    const generator = wrk
      ? await wrkGenerator({ core: cores.client, connections, version: binaryVersion(WRK_BINARY, '-v', /wrk \S+/) })
      : await nodeGenerator({ connections });
    stops.push(generator.close);
    console.log(
      `- Load: ${generator.description}; ${seconds} s measured per run after a ${WARMUP_SECONDS} s warm-up run; ` +
        `${rounds} round${rounds === 1 ? '' : 's'} of every case, each starting with the next server in turn; a figure is the median of its rounds, a ratio the median of the rounds' ratios`,
    );
    console.log(
      `- Recording: ${PEERS_RECORDING_BYTES.toLocaleString('en-US')} bytes of MP3 from one upstream process (Content-Length, ETag, Last-Modified, ranges)`,
    );
    console.log(
      `- Gateway: \`node ${[...startScriptNodeFlags(), 'dist/cli.js'].join(' ')} --config <temp yaml> serve\` (as npm start runs it), default config, request log at info to a file`,
    );
    if (audited) {
      console.log(
        `- ${GATEWAY_AUDIT}: the same, with \`audit: { dir: <its temp dir>/audit }\`; hit and range cases only, right after the plain gateway`,
      );
    }
    if (servers.some((server) => server.label === NODE_FLOOR)) {
      console.log(
        `- ${NODE_FLOOR}: \`node --import tsx bench/peers-node-floor.ts\`, a bare node:http server: a Map of recordings in memory, the gateway's hit headers, no log, auth or metrics`,
      );
    }
    if (servers.some((server) => server.label === NET_FLOOR)) {
      console.log(
        `- ${NET_FLOOR}: \`node --import tsx bench/peers-net-floor.ts\`, a bare net server reading heads as the gateway's door does: the same Map and headers, no HTTP parser or response objects, no log, auth or metrics; a miss goes to the upstream over a raw keep-alive connection`,
      );
    }
    if (coldOnly.length > 0) {
      console.log(
        `- ${NODE_FLOOR_RAW_UPSTREAM}: the ${NODE_FLOOR} with \`PEERS_FLOOR_UPSTREAM_CLIENT=raw\`, its misses over the ${NET_FLOOR}'s raw upstream connection; cold misses only`,
      );
    }
    console.log('- nginx: proxy_cache, 1 worker, buffered access log; Varnish: malloc 256 MB, 1 thread pool');
    console.log(`- Started ${new Date().toISOString()}; load average ${loadAverage()}\n`);
    for (const line of startProblems) console.log(`- **${line}**`);

    const runs = new Map<string, Map<string, CaseResult[]>>(CASES.map((loadCase) => [loadCase.key, new Map()]));
    const { skipped, lines } = await warmAndCheck(servers, upstream, CASES, { path: WARM_PATH, size: PEERS_RECORDING_BYTES });
    for (const line of lines) console.log(`- ${line}`);
    if (skipped.size > 0) process.exitCode = 1;

    // The audited gateway's lines so far are the warm-up's and checks'; the load's are counted against the load generator's answers.
    const auditLinesBefore = audited ? await settledAuditLines(audited.auditDir!) : 0;
    const auditTally: AuditTally = { runs: 0, answers: 0 };
    // The audited gateway runs right after the plain one, so that what the audit costs is measured seconds apart.
    const slots = servers
      .filter((server) => server !== audited)
      .map((server) => (server.label === GATEWAY && audited ? [server, audited] : [server]));
    for (let round = 0; round < rounds; round++) {
      // A slow phase of the machine, or the first run after a case change, should not fall on the same server every round.
      const turn = round % slots.length;
      const order = [...slots.slice(turn), ...slots.slice(0, turn)].flat();
      for (const loadCase of CASES) {
        for (const server of order) {
          if (skipped.has(caseOf(server, loadCase))) continue;
          // Before the warm-up, so that its own process is gone well before the measured seconds, and after them.
          const checkBefore = coreCheckMs(cores.server);
          const warm = await generator.run(server, loadCase, WARMUP_SECONDS);
          const measured = await measureCase(generator, server, loadCase, seconds);
          const run: CaseResult = { ...measured, coreCheckMs: Math.max(checkBefore, coreCheckMs(cores.server)) };
          const serverRuns = runs.get(loadCase.key)!;
          serverRuns.set(server.label, [...(serverRuns.get(server.label) ?? []), run]);
          if (run.errors > 0) process.exitCode = 1;
          if (server === audited) {
            auditTally.runs += 2;
            auditTally.answers += warm.requests + run.requests;
          }
        }
      }
    }
    const results = new Map(
      [...runs].map(([key, byServer]) => [key, new Map([...byServer].map(([label, serverRuns]) => [label, medianOfRuns(serverRuns)]))]),
    );
    let auditCheck: string | undefined;
    if (audited) {
      const { line, ok } = await checkAuditTrail(audited, {
        before: auditLinesBefore,
        tally: auditTally,
        connections,
        counter: wrk ? 'wrk' : 'the load generator',
      });
      auditCheck = line;
      if (!ok) process.exitCode = 1;
    }

    let cold: Map<string, ColdResult> | undefined;
    try {
      const targets = [
        { label: UPSTREAM, origin: new URL(upstream.baseUrl).origin, headers: { authorization: `Bearer ${serverKey}` } },
        ...[...servers, ...coldOnly]
          .filter((server) => server !== audited)
          .map((server) => ({ label: server.label, origin: server.url, headers: server.headers })),
      ];
      cold = await measureColdMisses(targets, {
        requests: coldRequests,
        warmMisses: coldWarmup,
        firstId: COLD_FIRST_ID,
        size: PEERS_RECORDING_BYTES,
        warmPath: WARM_PATH,
      });
    } catch (error) {
      process.exitCode = 1;
      console.log(`- **Cold misses could not run:** ${(error as Error).message}`);
    }
    const roundTripMs = cold ? await loopbackRoundTripMs(cores.server) : Number.NaN;

    const report: PeersReport = {
      servers: servers.map((server) => ({
        label: server.label,
        version: server.label === NGINX ? `${server.version} proxy_cache` : server.version,
      })),
      cases: CASES,
      results,
      runs,
      rounds,
      cold,
      coldRequests,
      coldWarmup,
    };
    console.log('\n## Side by side\n');
    console.log(headlineTable(report));
    console.log('\n## The gateway over its peers\n');
    console.log(ratioTable(report));
    console.log(`\n${goalSummary(report)}\n`);
    const auditCost = auditCostLine(report);
    if (auditCost !== undefined) console.log(`## What auditing costs\n\n${auditCost}\n`);
    if (auditCheck !== undefined) console.log(`${auditCheck}\n`);
    const warnings = runWarnings(report);
    if (warnings.length > 0) console.log(`${warnings.join('\n')}\n`);
    console.log('## Every run\n');
    console.log(detailTable(report));
    console.log(
      "\n_CPU µs/req: user + system time of the server's processes (from /proc) over the run, per answer. " +
        'Server, load generator and other CPU: % of one core; "other" is every other process on the machine (this driver excluded). ' +
        `Core check: ${CORE_CHECK_JOB} on the servers' core, the slower of two checks, before the run's warm-up and after the run, ms (bench/peers-speed.ts)._\n`,
    );
    if (cold) {
      console.log(
        `## Cold misses: first body byte, sequential, warm keep-alive connection, after ${coldWarmup} unmeasured misses per server\n`,
      );
      console.log(coldTable(cold));
      console.log(
        `\n_A loopback round trip between the client's core and the servers' (a one-byte echo, median of 400, bench/peers-loopback.ts): ${roundTripMs.toFixed(3)} ms. ` +
          "A proxy's cold miss costs at least one more than going to the upstream directly._",
      );
    }
    const logSizes = servers
      .map((server) => {
        if (server.label === NODE_FLOOR || server.label === NET_FLOOR) return `${server.label} none`;
        return `${server.label} ${server.requestLog ? `${mib(fileSize(server.requestLog))} MiB` : 'in shared memory'}`;
      })
      .join(', ');
    console.log(`\nRequest/access logs at the end: ${logSizes}. Load average at the end ${loadAverage()}.`);
  } finally {
    await Promise.allSettled(stops.map((stop) => stop()));
  }
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return Number.NaN;
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exitCode = 1;
});
