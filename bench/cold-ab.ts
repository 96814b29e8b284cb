/**
 * `npm run bench:cold-ab`: two builds of the gateway side by side on cold
 * misses, to tell whether a change to the miss path buys anything. A cold
 * miss's figure moves by a tenth of a millisecond from one run to the next
 * on this project's VM (the host's phases), more than most changes to the
 * path are worth; measured in one run, interleaved, both builds meet the
 * same phases. It starts the peers bench's upstream, the baseline build
 * (`COLD_AB_BASELINE`, a build's `dist` folder), this checkout's `dist/` and
 * the node:http floor, pinned as in the peers bench, then repeats the peers
 * bench's cold-miss measurement `COLD_AB_REPEATS` times, the two builds
 * taking turns at going first. Prints each repeat's first-byte times added
 * over the upstream directly, and the median of the repeats' differences.
 * Not a test: the exit code is 1 only when something could not run or
 * answered wrong, 2 when `COLD_AB_BASELINE` names no build.
 *
 *   COLD_AB_BASELINE        the other build's dist folder (required); its
 *                           packages must resolve, as from a `git worktree`
 *                           with `node_modules` linked in (see bench/README.md)
 *   COLD_AB_REPEATS=6       measurements, the builds' order swapped each time
 *   PEERS_COLD_REQUESTS=40  measured misses per server in each
 *   PEERS_COLD_WARMUP=20    unmeasured misses per server before the first
 *   PEERS_SKIP_BUILD=1      use dist/ as it is instead of running `npm run build`
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { positiveInteger } from './env.js';
import { coldBenchSetup, printProblems } from './cold-setup.js';
import { measureColdMisses, type ColdTarget } from './peers-cold.js';
import { NODE_FLOOR } from './peers-report.js';
import {
  GATEWAY_CLI,
  PEERS_RECORDING_BYTES,
  type PeerServer,
  startFloorServer,
  startGatewayServer,
  startPeersUpstream,
} from './peers-servers.js';
import { median } from './stats.js';
import { fmt, markdownTable } from './table.js';

const BASELINE = 'baseline';
const THIS_BUILD = 'this build';
const UPSTREAM = 'upstream directly';
const WARM_PATH = '/v1/call/recording/1.mp3';
const FIRST_ID = 5_000_000;
// Ids per repeat: far more than its misses, so no repeat asks for another's.
const IDS_PER_REPEAT = 10_000;

/** The baseline's cli.js, or what is wrong with `COLD_AB_BASELINE`. */
function baselineCli(): { cli: string } | { problem: string } {
  const folder = process.env.COLD_AB_BASELINE;
  if (!folder)
    return { problem: 'COLD_AB_BASELINE must name the other build\'s dist folder (see bench/README.md, "Two builds on cold misses")' };
  const cli = path.resolve(folder, 'cli.js');
  if (!existsSync(cli)) return { problem: `COLD_AB_BASELINE: no cli.js in ${path.resolve(folder)}; build it first` };
  return { cli };
}

async function main(cli: string): Promise<void> {
  const repeats = positiveInteger('COLD_AB_REPEATS', 6);
  const { requests, warmMisses, cores, serverKey, tenantKey } = coldBenchSetup();
  const upstream = await startPeersUpstream({ core: cores.upstream, size: PEERS_RECORDING_BYTES, serverKey });
  const servers: PeerServer[] = [];
  try {
    const common = { core: cores.server, upstream, serverKey, tenantKey };
    const baseline = await startGatewayServer({ ...common, version: BASELINE, cli });
    servers.push(baseline);
    const current = await startGatewayServer({ ...common, version: THIS_BUILD });
    servers.push(current);
    const floor = await startFloorServer(NODE_FLOOR, common);
    servers.push(floor);
    const target = (label: string, server: PeerServer): ColdTarget => ({ label, origin: server.url, headers: server.headers });
    const direct: ColdTarget = {
      label: UPSTREAM,
      origin: new URL(upstream.baseUrl).origin,
      headers: { authorization: `Bearer ${serverKey}` },
    };
    const builds = [target(BASELINE, baseline), target(THIS_BUILD, current)];

    console.log(`# Two builds on cold misses (${repeats} × ${requests} measured per build, after ${warmMisses} unmeasured)\n`);
    console.log(`- Cores: ${cores.description}`);
    console.log(
      `- ${BASELINE}: \`${path.relative(process.cwd(), cli)}\`; ${THIS_BUILD}: \`${path.relative(process.cwd(), GATEWAY_CLI)}\`; both as npm start runs them`,
    );
    console.log(`- Recording: ${PEERS_RECORDING_BYTES.toLocaleString('en-US')} bytes; ids nobody fetched; 50 ms between misses\n`);

    const rows: Array<Array<string | number>> = [];
    const differences: number[] = [];
    // Each round's two misses, one per build, moments apart: their difference leaves out the host's slower phases.
    const paired: number[] = [];
    const problems: string[] = [];
    for (let repeat = 0; repeat < repeats; repeat++) {
      const order = repeat % 2 === 0 ? builds : [...builds].reverse();
      const cold = await measureColdMisses([direct, ...order, target(NODE_FLOOR, floor)], {
        requests,
        warmMisses: repeat === 0 ? warmMisses : 0,
        firstId: FIRST_ID + repeat * IDS_PER_REPEAT,
        size: PEERS_RECORDING_BYTES,
        warmPath: WARM_PATH,
      });
      for (const [label, result] of cold) for (const error of result.errors) problems.push(`${label}: ${error}`);
      const upstreamMs = cold.get(UPSTREAM)?.medianMs ?? Number.NaN;
      const added = (label: string) => (cold.get(label)?.medianMs ?? Number.NaN) - upstreamMs;
      const ofBaseline = cold.get(BASELINE)?.firstByteMs ?? [];
      const ofThisBuild = cold.get(THIS_BUILD)?.firstByteMs ?? [];
      // Rounds with an error leave no time, so only error-free repeats pair up.
      if (ofBaseline.length === requests && ofThisBuild.length === requests) {
        for (const [round, ms] of ofThisBuild.entries()) paired.push(ms - ofBaseline[round]!);
      }
      const difference = added(THIS_BUILD) - added(BASELINE);
      differences.push(difference);
      rows.push([
        repeat + 1,
        order[0]!.label,
        fmt(upstreamMs, 3),
        `+${fmt(added(BASELINE), 3)}`,
        `+${fmt(added(THIS_BUILD), 3)}`,
        `+${fmt(added(NODE_FLOOR), 3)}`,
        fmt(difference, 3),
      ]);
    }
    console.log(
      markdownTable(
        ['repeat', 'first', 'upstream ms', `${BASELINE} added`, `${THIS_BUILD} added`, `${NODE_FLOOR} added`, 'this − baseline'],
        rows,
      ),
    );
    const faster = differences.filter((difference) => difference < 0).length;
    console.log(
      `\n${THIS_BUILD} − ${BASELINE}, median of the ${repeats} repeats: **${fmt(median(differences), 3)} ms** ` +
        `(${THIS_BUILD} faster in ${faster} of ${repeats}; each repeat's figure is its median first byte added over the upstream's). ` +
        `Miss by miss, each round's two misses paired: median difference ${fmt(median(paired), 3)} ms over ${paired.length} pairs.`,
    );
    printProblems(problems);
  } finally {
    for (const server of servers) await server.stop();
    await upstream.stop();
  }
}

const baseline = baselineCli();
if ('problem' in baseline) {
  console.error(`bench:cold-ab: ${baseline.problem}`);
  process.exitCode = 2;
} else {
  await main(baseline.cli);
}
