/**
 * `npm run bench:instructions`: how many instructions the compiled gateway's
 * process runs per answer, counted by valgrind's callgrind (issue 11). Unlike
 * seconds, the count does not move with what else the machine (or the host
 * under a VM) is doing: the same build and requests give the same count to
 * about 0.5 % (the full body aside, below), so a change of a few percent on
 * the hot path can be seen. It counts user-space instructions only: the
 * kernel's share (socket writes, about a third of a probe's CPU time) is the
 * peers bench's to measure.
 *
 * The gateway runs as `npm start` runs it, under `valgrind --tool=callgrind
 * --instr-atstart=no`, in front of the peers bench's generated upstream. Each
 * case is warmed at full speed, then instrumented: more warm requests (the
 * code is translated again), then `BENCH_INSTR_WINDOWS` windows of
 * `BENCH_INSTR_REQUESTS` requests one after the other on one keep-alive
 * connection, the counters zeroed before and dumped after each. "of which
 * GC" is what V8's garbage collector ran (its marking, sweeping and
 * scavenging functions by name), "of which compiling" what its optimising
 * compiler ran (on its own thread, counted too): a major GC or a
 * recompilation landing in a window shows there, not as a change of the
 * request path. The row is the window whose count without either is the
 * median; the last column gives the lowest and highest. The full body's
 * count depends on how fast the client reads (partial writes): run it on a
 * machine no other valgrind shares.
 *
 *   BENCH_INSTR_WINDOWS=3      counted windows per case
 *   BENCH_INSTR_REQUESTS=1500  requests per window
 *   BENCH_INSTR_WARMUP=12000   requests per case before instrumenting
 *   BENCH_INSTR_TOP=N          also list each case's N costliest functions, JavaScript named
 *                              through V8's `--perf-basic-prof` map
 *   BENCH_INSTR_KEEP=1         keep the callgrind dumps (one per window, in order) and the code map, and say where
 *   PEERS_SKIP_BUILD=1         use dist/ as it is instead of running `npm run build`
 *
 * Needs valgrind (`apt-get install -y valgrind`).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startScriptNodeFlags } from '../dev/gateway-process.js';
import { nonNegativeInteger, positiveInteger } from './env.js';
import { gatewayYaml } from './peers-configs.js';
import { executable, freePort, startGroup, waitForPort } from './peers-process.js';
import { buildUnlessSkipped, GATEWAY_CLI, ROOT, startPeersUpstream } from './peers-servers.js';
import { markdownTable } from './table.js';

const VALGRIND = '/usr/bin/valgrind';
const CALLGRIND_CONTROL = '/usr/bin/callgrind_control';
const CALLGRIND_ANNOTATE = '/usr/bin/callgrind_annotate';
const RECORDING_BYTES = 954_000;
const START_TIMEOUT_MS = 120_000;
// Instrumented warm requests before the counters are zeroed: callgrind translates the code again once it is on.
const INSTRUMENTED_WARMUP = 1_000;
// V8's collector, by function name: what "of which GC" adds up.
const GC_FUNCTION =
  /v8::internal::(?:Concurrent|Marking|Sweeper|MarkCompact|Scaveng|IncrementalMarking|MainMarking|Evacuat|RememberedSet|SlotSet|BodyDescriptor)|MarkingVisitor|MemoryChunkData/;
// V8's optimising compilers, by namespace: what "of which compiling" adds up.
const COMPILER_FUNCTION = /v8::internal::(?:compiler|maglev)::/;

interface InstructionCase {
  title: string;
  headers: (tenantKey: string) => Record<string, string>;
  status: number;
}

const CASES: InstructionCase[] = [
  {
    title: '`Range: bytes=0-1` (the Safari probe), memory hit',
    headers: (key) => ({ authorization: `Bearer ${key}`, range: 'bytes=0-1' }),
    status: 206,
  },
  {
    title: '64 KB range, memory hit',
    headers: (key) => ({ authorization: `Bearer ${key}`, range: 'bytes=327680-393215' }),
    status: 206,
  },
  { title: 'full-body hit (932 KB), memory', headers: (key) => ({ authorization: `Bearer ${key}` }), status: 200 },
  { title: 'no credential (401)', headers: () => ({}), status: 401 },
];

/** `count` GETs one after the other on `agent`'s one connection; throws at the first answer other than `status`. */
async function sequentialGets(agent: Agent, url: string, headers: Record<string, string>, status: number, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    await new Promise<void>((resolve, reject) => {
      const req = request(url, { agent, headers }, (res) => {
        res.resume();
        res.once('end', () => (res.statusCode === status ? resolve() : reject(new Error(`${url}: ${res.statusCode}, expected ${status}`))));
      });
      req.once('error', reject);
      req.end();
    });
  }
}

function callgrindControl(pid: number, option: string): void {
  const result = spawnSync(CALLGRIND_CONTROL, [option, String(pid)], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`callgrind_control ${option} ${pid}: ${result.stderr || result.stdout}`);
}

/** Where V8's `--perf-basic-prof` put each compiled JavaScript function: sorted starts, sizes and names. */
interface CodeMap {
  starts: number[];
  entries: { size: number; name: string }[];
}

function readCodeMap(file: string): CodeMap {
  const rows = readFileSync(file, 'utf8')
    .split('\n')
    .map((line) => /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line))
    .filter((match) => match !== null)
    .map((match) => ({ start: Number.parseInt(match[1]!, 16), size: Number.parseInt(match[2]!, 16), name: match[3]! }))
    .sort((a, b) => a.start - b.start);
  return { starts: rows.map((row) => row.start), entries: rows };
}

/** The JavaScript function at `address`, if the map has one there. */
function codeAt(map: CodeMap, address: number): string | undefined {
  let low = 0;
  let high = map.starts.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if (map.starts[middle]! <= address) low = middle + 1;
    else high = middle - 1;
  }
  const entry = map.entries[high];
  return entry && address < map.starts[high]! + entry.size ? entry.name : undefined;
}

/** Each function's own instructions in a callgrind dump; JIT code named through `codeMap` when there is one. */
function functionCosts(file: string, codeMap: CodeMap | undefined): { instructions: number; name: string }[] {
  const annotated = spawnSync(CALLGRIND_ANNOTATE, ['--threshold=100', file], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 }).stdout;
  const costs = new Map<string, number>();
  for (const line of annotated.split('\n')) {
    const match = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$/.exec(line);
    if (!match || match[2]!.includes('PROGRAM TOTALS')) continue;
    const address = /^\?\?\?:0x([0-9a-f]+) \[\?\?\?\]$/.exec(match[2]!)?.[1];
    const code = address === undefined || codeMap === undefined ? undefined : codeAt(codeMap, Number.parseInt(address, 16));
    const name = code === undefined ? match[2]!.replace(/^\?\?\?:/, '').replace(/ \[[^\]]*\]$/, '') : `JS ${code}`;
    costs.set(name, (costs.get(name) ?? 0) + Number(match[1]!.replaceAll(',', '')));
  }
  return [...costs].map(([name, instructions]) => ({ name, instructions })).sort((a, b) => b.instructions - a.instructions);
}

interface WindowCounts {
  total: number;
  gc: number;
  compiling: number;
  /** The request path's own: the total without GC and compiling. */
  own: number;
}

/** Total instructions of a callgrind dump, and those in V8's collector and its optimising compiler. */
function countsOf(file: string, costs: { instructions: number; name: string }[]): WindowCounts {
  const total = Number(/^summary: (\d+)$/m.exec(readFileSync(file, 'utf8'))?.[1]);
  const sumOf = (pattern: RegExp) => costs.filter((cost) => pattern.test(cost.name)).reduce((sum, cost) => sum + cost.instructions, 0);
  const gc = sumOf(GC_FUNCTION);
  const compiling = sumOf(COMPILER_FUNCTION);
  return { total, gc, compiling, own: total - gc - compiling };
}

/** Where `--perf-basic-prof` writes the map of process `pid`'s compiled code. */
function codeMapFile(pid: number): string {
  return `/tmp/perf-${pid}.map`;
}

/** The newest dump callgrind wrote for `pid` in `dir` (`callgrind.out.PID.N`). */
function newestDump(dir: string, pid: number, before: Set<string>): string {
  const dumps = readdirSync(dir).filter((name) => name.startsWith(`callgrind.out.${pid}.`) && !before.has(name));
  if (dumps.length !== 1) throw new Error(`expected one new callgrind dump in ${dir}, found ${dumps.length}`);
  return path.join(dir, dumps[0]!);
}

async function main(): Promise<void> {
  const missing = [VALGRIND, CALLGRIND_CONTROL, CALLGRIND_ANNOTATE].filter((binary) => !executable(binary));
  if (missing.length > 0) {
    console.error(`bench:instructions needs valgrind (${missing.join(', ')} missing): apt-get install -y valgrind`);
    process.exit(1);
  }
  const windows = positiveInteger('BENCH_INSTR_WINDOWS', 3);
  const requests = positiveInteger('BENCH_INSTR_REQUESTS', 1_500);
  const warmup = positiveInteger('BENCH_INSTR_WARMUP', 12_000);
  const top = nonNegativeInteger('BENCH_INSTR_TOP', 0);
  buildUnlessSkipped();
  const serverKey = `bench-server-${randomBytes(8).toString('hex')}`;
  const tenantKey = `bench-tenant-${randomBytes(8).toString('hex')}`;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'rg-instructions-'));
  const upstream = await startPeersUpstream({ core: undefined, size: RECORDING_BYTES, serverKey });
  const port = await freePort();
  const configPath = path.join(dir, 'gateway.yaml');
  await writeFile(configPath, gatewayYaml({ port, upstreamBaseUrl: upstream.baseUrl, cacheDir: path.join(dir, 'cache'), tenantKey }));
  const valgrindLog = path.join(dir, 'valgrind.log');
  const gateway = startGroup(
    'the gateway under callgrind',
    [
      VALGRIND,
      '--tool=callgrind',
      '--instr-atstart=no',
      // V8 writes and patches its own machine code.
      '--smc-check=all',
      `--callgrind-out-file=${path.join(dir, 'callgrind.out.%p')}`,
      `--log-file=${valgrindLog}`,
      process.execPath,
      ...startScriptNodeFlags(),
      // The map goes to /tmp/perf-PID.map; V8's log, which the flag turns on, to the temp dir rather than the repository.
      ...(top > 0 ? ['--perf-basic-prof', `--logfile=${path.join(dir, 'v8.log')}`, '--no-logfile-per-isolate'] : []),
      GATEWAY_CLI,
      '--config',
      configPath,
      'serve',
    ],
    { cwd: ROOT, env: { PATH: process.env.PATH ?? '', FLYFLOW_API_KEY: serverKey }, logFile: path.join(dir, 'gateway.log') },
  );
  // One connection per case, and another for the miss: the first request the memory-hit door cannot
  // answer hands its connection to Node's HTTP server for good, and the hits after it would not be the door's.
  const agents: Agent[] = [];
  const connection = () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    agents.push(agent);
    return agent;
  };
  let pid: number | undefined;
  try {
    await waitForPort(gateway, port, START_TIMEOUT_MS);
    pid = Number(/^==(\d+)==/.exec(readFileSync(valgrindLog, 'utf8'))?.[1]);
    if (!Number.isSafeInteger(pid)) throw new Error(`no pid in ${valgrindLog}`);
    const url = `http://127.0.0.1:${port}/v1/call/recording/1.mp3`;
    // The miss that stores the recording; then it is a memory hit.
    await sequentialGets(connection(), url, CASES[2]!.headers(tenantKey), 200, 1);
    await sleep(500);
    const rows: (string | number)[][] = [];
    const tops: { title: string; costs: { instructions: number; name: string }[] }[] = [];
    for (const instructionCase of CASES) {
      const headers = instructionCase.headers(tenantKey);
      const agent = connection();
      await sequentialGets(agent, url, headers, instructionCase.status, warmup);
      callgrindControl(pid, '--instr=on');
      await sequentialGets(agent, url, headers, instructionCase.status, INSTRUMENTED_WARMUP);
      const counted: { counts: WindowCounts; dump: string }[] = [];
      for (let window = 0; window < windows; window++) {
        callgrindControl(pid, '--zero');
        await sequentialGets(agent, url, headers, instructionCase.status, requests);
        const before = new Set(readdirSync(dir));
        callgrindControl(pid, '--dump');
        const dump = newestDump(dir, pid, before);
        // GC and the compiler are told apart by their C++ names: JavaScript's need no code map here.
        counted.push({ counts: countsOf(dump, functionCosts(dump, undefined)), dump });
      }
      callgrindControl(pid, '--instr=off');
      const byOwn = counted.sort((a, b) => a.counts.own - b.counts.own);
      const median = byOwn[(byOwn.length - 1) >> 1]!;
      const perRequest = (instructions: number) => Math.round(instructions / requests).toLocaleString('en-US');
      // The code map read once, for the window the row shows.
      if (top > 0)
        tops.push({ title: instructionCase.title, costs: functionCosts(median.dump, readCodeMap(codeMapFile(pid))).slice(0, top) });
      rows.push([
        instructionCase.title,
        `${windows} × ${requests.toLocaleString('en-US')}`,
        perRequest(median.counts.total),
        perRequest(median.counts.gc),
        perRequest(median.counts.compiling),
        perRequest(median.counts.own),
        `${perRequest(byOwn[0]!.counts.own)}–${perRequest(byOwn.at(-1)!.counts.own)}`,
      ]);
      console.error(`${instructionCase.title}: done`);
    }
    const version = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    console.log(`# Instructions per answer: gateway ${version}, Node ${process.version}, callgrind\n`);
    console.log(
      `- ${warmup.toLocaleString('en-US')} requests per case at full speed, ${INSTRUMENTED_WARMUP.toLocaleString('en-US')} instrumented, then ${windows} windows of ${requests.toLocaleString('en-US')} counted, one at a time on one keep-alive connection; user-space instructions of the gateway's process (all its threads); the kernel's are not counted; each row is its case's median window\n`,
    );
    console.log(
      markdownTable(
        [
          'case',
          'windows × requests',
          'instructions per request',
          'of which GC',
          'of which compiling',
          'the path itself',
          'windows (lowest–highest)',
        ],
        rows,
      ),
    );
    for (const { title, costs } of tops) {
      console.log(`\n## ${title}: the ${costs.length} functions with the most instructions of their own\n`);
      console.log(
        markdownTable(
          ['instructions per request', 'function'],
          costs.map((cost) => [Math.round(cost.instructions / requests).toLocaleString('en-US'), cost.name]),
        ),
      );
    }
    console.log('\n_Compare "the path itself" between builds: the full body depends on how fast the client reads (bench/README.md)._');
  } finally {
    for (const agent of agents) agent.destroy();
    await gateway.terminate(30_000);
    await upstream.stop();
    if (process.env.BENCH_INSTR_KEEP === '1') {
      console.log(`\nKept: the dumps in ${dir}${pid === undefined ? '' : `, the code map ${codeMapFile(pid)}`}`);
    } else {
      if (pid !== undefined) await rm(codeMapFile(pid), { force: true });
      await rm(dir, { recursive: true, force: true });
    }
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
