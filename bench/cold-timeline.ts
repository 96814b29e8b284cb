/**
 * `npm run bench:cold-timeline`: where a cold miss's time goes, step by step,
 * in the compiled gateway and in the bare node:http floor (issue 11: the
 * peers bench says how much each adds to a cold miss's first byte; this says
 * where). Both run pinned as in the peers bench, with
 * `cold-timeline-preload.mjs` loaded (`node --import`), which times each miss
 * at node:http's edges: from the request's arrival to the upstream request
 * made and written, the upstream's head in, the client's head and first body
 * bytes written. Sequential misses on a warm keep-alive connection, 50 ms
 * apart, after unmeasured ones, as the peers bench's cold misses. Not a test:
 * the exit code is 1 only when something could not run or answered wrong.
 *
 *   PEERS_COLD_REQUESTS=40  measured misses per server
 *   PEERS_COLD_WARMUP=20    unmeasured misses per server first
 *   PEERS_SKIP_BUILD=1      use dist/ as it is instead of running `npm run build`
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { coldBenchSetup, printProblems } from './cold-setup.js';
import { measureColdMisses } from './peers-cold.js';
import {
  type Instrumentation,
  PEERS_RECORDING_BYTES,
  type PeerServer,
  startGatewayServer,
  startFloorServer,
  startPeersUpstream,
} from './peers-servers.js';
import { NODE_FLOOR } from './peers-report.js';
import { median } from './stats.js';
import { fmt, markdownTable } from './table.js';

const WARM_ID = '1';
const FIRST_ID = 3_000_000;
const PRELOAD = pathToFileURL(fileURLToPath(new URL('./cold-timeline-preload.mjs', import.meta.url))).href;

/** The steps the preload times, in the order a miss reaches them, with what the table calls them. */
const STEPS = [
  ['upstreamCalled', '`http.request` called for the upstream'],
  ['upstreamWritten', 'upstream request written to its socket'],
  ['upstreamHead', "upstream's head in (`response`)"],
  ['clientHead', "client's head (`writeHead`)"],
  ['clientFirstByte', "client's first body bytes written"],
] as const;
type Step = (typeof STEPS)[number][0];
type Timeline = Partial<Record<Step, number>>;

/** The segments the summary splits a miss into: [label, from (undefined: the request's arrival), to]. */
const SEGMENTS: Array<[string, Step | undefined, Step]> = [
  ['request in → upstream request written', undefined, 'upstreamWritten'],
  ['… of which `http.request` → written (Node’s client)', 'upstreamCalled', 'upstreamWritten'],
  ['upstream request written → its head in (the upstream, two loopback hops)', 'upstreamWritten', 'upstreamHead'],
  ["upstream's head in → client's first body bytes", 'upstreamHead', 'clientFirstByte'],
];

/** `http.request` calls back to back before any is timed, so that V8 has compiled the path. */
const CALL_WARMUP = 2_000;
const CALLS_TIMED = 30;
const CALLS_APART_MS = 20;

/**
 * What building one node:http request costs on this core (the call itself,
 * HEADs to the upstream on a keep-alive connection): back to back, and
 * `CALLS_APART_MS` apart, as a cold miss finds the server after idling.
 */
async function requestCallCost(origin: string, headers: Record<string, string>): Promise<{ backToBackMs: number; apartMs: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const url = new URL(`/v1/call/recording/${WARM_ID}.mp3`, origin);
  const timedCall = async (): Promise<number> => {
    let answered!: () => void;
    const done = new Promise<void>((resolve) => {
      answered = resolve;
    });
    const started = performance.now();
    const upstreamRequest = request(url, { method: 'HEAD', headers, agent }, (answer) => {
      answer.resume();
      answer.once('end', answered);
    });
    const took = performance.now() - started;
    upstreamRequest.once('error', answered);
    upstreamRequest.end();
    await done;
    return took;
  };
  try {
    for (let call = 0; call < CALL_WARMUP; call++) await timedCall();
    const backToBack: number[] = [];
    for (let call = 0; call < CALLS_TIMED; call++) backToBack.push(await timedCall());
    const apart: number[] = [];
    for (let call = 0; call < CALLS_TIMED; call++) {
      await sleep(CALLS_APART_MS);
      apart.push(await timedCall());
    }
    return { backToBackMs: median(backToBack), apartMs: median(apart) };
  } finally {
    agent.destroy();
  }
}

function instrumentation(file: string): Instrumentation {
  return { nodeFlags: ['--import', PRELOAD], env: { COLD_TIMELINE_FILE: file, COLD_TIMELINE_WARM_ID: WARM_ID } };
}

async function timelines(file: string, measured: number): Promise<Timeline[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const lines = text.split('\n').filter(Boolean);
  // The warm misses' lines come first.
  return lines.slice(-measured).map((line) => JSON.parse(line) as Timeline);
}

function medianOf(timelines: Timeline[], from: Step | undefined, to: Step): number {
  return median(
    timelines
      .map((timeline) => (timeline[to] ?? Number.NaN) - (from === undefined ? 0 : (timeline[from] ?? Number.NaN)))
      .filter(Number.isFinite),
  );
}

async function main(): Promise<void> {
  const { requests, warmMisses, cores, serverKey, tenantKey } = coldBenchSetup();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'rg-cold-timeline-'));
  const files = { gateway: path.join(dir, 'gateway.jsonl'), floor: path.join(dir, 'floor.jsonl') };
  const upstream = await startPeersUpstream({ core: cores.upstream, size: PEERS_RECORDING_BYTES, serverKey });
  const servers: PeerServer[] = [];
  try {
    const common = { core: cores.server, upstream, serverKey };
    servers.push(await startGatewayServer({ ...common, tenantKey, version: 'gateway', instrument: instrumentation(files.gateway) }));
    servers.push(await startFloorServer(NODE_FLOOR, { ...common, instrument: instrumentation(files.floor) }));
    const [gateway, floor] = servers as [PeerServer, PeerServer];
    const upstreamLabel = 'upstream directly';
    const cold = await measureColdMisses(
      [
        { label: upstreamLabel, origin: new URL(upstream.baseUrl).origin, headers: { authorization: `Bearer ${serverKey}` } },
        ...servers.map((server) => ({ label: server.label, origin: server.url, headers: server.headers })),
      ],
      { requests, warmMisses, firstId: FIRST_ID, size: PEERS_RECORDING_BYTES, warmPath: `/v1/call/recording/${WARM_ID}.mp3` },
    );
    const problems = [...cold].flatMap(([label, result]) => result.errors.map((error) => `${label}: ${error}`));
    const gatewayTimes = await timelines(files.gateway, requests);
    const floorTimes = await timelines(files.floor, requests);
    for (const [label, times] of [
      [gateway.label, gatewayTimes],
      [floor.label, floorTimes],
    ] as const) {
      if (times.length < requests) problems.push(`${label}: ${times.length} of ${requests} misses timed`);
    }

    console.log(`# Cold misses, step by step (${requests} measured per server after ${warmMisses} unmeasured)\n`);
    console.log(`- Cores: ${cores.description}`);
    console.log(
      `- Servers: the compiled gateway as npm start runs it, and ${floor.label}, each with \`--import bench/cold-timeline-preload.mjs\``,
    );
    console.log(`- Recording: ${PEERS_RECORDING_BYTES.toLocaleString('en-US')} bytes; ids nobody fetched; 50 ms between misses\n`);
    console.log('Milliseconds from the request’s arrival (`request` event), medians:\n');
    const row = (label: string, from: Step | undefined, to: Step) => {
      const ofGateway = medianOf(gatewayTimes, from, to);
      const ofFloor = medianOf(floorTimes, from, to);
      return [label, fmt(ofGateway, 3), fmt(ofFloor, 3), fmt(ofGateway - ofFloor, 3)];
    };
    const header = ['step', gateway.label, floor.label, 'gateway − floor'];
    console.log(
      markdownTable(
        header,
        STEPS.map(([step, label]) => row(label, undefined, step)),
      ),
    );
    console.log('\nThe same misses in segments, medians of each miss’s own (ms):\n');
    console.log(
      markdownTable(
        ['segment', ...header.slice(1)],
        SEGMENTS.map(([label, from, to]) => row(label, from, to)),
      ),
    );
    const direct = cold.get(upstreamLabel)?.medianMs ?? Number.NaN;
    const added = (server: PeerServer) => fmt((cold.get(server.label)?.medianMs ?? Number.NaN) - direct, 3);
    console.log(
      `\nThe client's first body byte, median: upstream directly ${fmt(direct, 3)} ms; added by ${gateway.label} +${added(gateway)} ms, by ${floor.label} +${added(floor)} ms`,
    );
    const cost = await requestCallCost(new URL(upstream.baseUrl).origin, { authorization: `Bearer ${serverKey}` });
    console.log(
      `\nOne \`http.request()\` call on this machine (the bench driver's core): ${fmt(cost.backToBackMs * 1000, 0)} µs back to back, ` +
        `${fmt(cost.apartMs * 1000, 0)} µs made ${CALLS_APART_MS} ms apart (${fmt(cost.apartMs / cost.backToBackMs, 1)}×; medians of ${CALLS_TIMED}, ` +
        `after ${CALL_WARMUP.toLocaleString('en-US')} calls): how much slower code runs after an idle spell, which a cold miss meets`,
    );
    printProblems(problems);
  } finally {
    for (const server of servers) await server.stop();
    await upstream.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
