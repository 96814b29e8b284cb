/**
 * The load side of the peers bench: wrk (one thread, pinned to the client
 * core, a Lua script for headers and random windows) or, without wrk, the
 * project's node load generator; and one measured run of a case against a
 * server with the CPU time every party used during it.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startLoadProcess, type LoadProcess } from './load-process.js';
import { wrkScript } from './peers-configs.js';
import { groupCpuSeconds, machineBusySeconds, pinned, startGroup, TICKS_PER_SECOND } from './peers-process.js';
import type { PeerServer } from './peers-servers.js';
import { median } from './stats.js';

export const WRK_BINARY = '/usr/bin/wrk';
// Headers a server adds above the body; an answer outside this is the wrong answer.
const MAX_HEADER_BYTES = 2_048;

/** One kind of request, the same for every server. */
export interface LoadCase {
  key: 'full' | 'probe' | 'window';
  title: string;
  path: string;
  range?: { header: string } | { randomLength: number; size: number };
  status: 200 | 206;
  bodyBytes: number;
}

/** What a load generator saw in one run. */
export interface LoadFigures {
  requests: number;
  seconds: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  /** What went wrong, when something did. */
  errorNote: string | undefined;
  clientCpuSeconds: number;
}

export interface LoadGenerator {
  /** e.g. `wrk 4.1.0, 1 thread, 32 connections`. */
  readonly description: string;
  run(server: PeerServer, loadCase: LoadCase, seconds: number): Promise<LoadFigures>;
  close(): Promise<void>;
}

/** A measured run: the load generator's figures and the CPU each party used meanwhile. */
export interface CaseResult extends LoadFigures {
  serverCpuUsPerRequest: number;
  /** As % of one core over the run. */
  serverCpuPercent: number;
  clientCpuPercent: number;
  /** Everything else the machine ran meanwhile (this driver excluded), as % of one core. */
  otherCpuPercent: number;
  /** What the servers' core took for a fixed job around the run (peers-speed.ts), ms. */
  coreCheckMs: number;
}

/** wrk with one thread and `connections` keep-alive connections on `core`. */
export async function wrkGenerator(options: { core: number | undefined; connections: number; version: string }): Promise<LoadGenerator> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'rg-peers-wrk-'));
  let scripts = 0;
  return {
    description: `${options.version}, 1 thread, ${options.connections} connections`,
    async run(server, loadCase, seconds) {
      const script = path.join(dir, `case-${scripts++}.lua`);
      const headers = { ...server.headers, ...(loadCase.range && 'header' in loadCase.range ? { Range: loadCase.range.header } : {}) };
      const randomWindow =
        loadCase.range && 'randomLength' in loadCase.range ? { length: loadCase.range.randomLength, size: loadCase.range.size } : undefined;
      await writeFile(script, wrkScript({ headers, ...(randomWindow ? { randomWindow } : {}) }));
      const args = [
        '-t1',
        `-c${options.connections}`,
        `-d${Math.max(1, Math.round(seconds))}s`,
        '-s',
        script,
        `${server.url}${loadCase.path}`,
      ];
      const wrk = startGroup('wrk', pinned(options.core, WRK_BINARY, args));
      await wrk.exited;
      wrk.kill();
      const json = /^PEERS_JSON (.*)$/m.exec(wrk.output())?.[1];
      if (json === undefined) throw new Error(`wrk printed no summary: ${wrk.output().trim()}`);
      const s = JSON.parse(json) as Record<string, number>;
      const secondsRun = s.durationUs! / 1e6;
      const socketErrors = s.connectErrors! + s.readErrors! + s.writeErrors! + s.timeouts!;
      const bytesPerAnswer = s.requests! > 0 ? s.bytes! / s.requests! : 0;
      // wrk also counts what arrived of the answers still in flight when it stopped.
      const inFlight = (options.connections * loadCase.bodyBytes) / Math.max(1, s.requests!);
      const wrongSize = bytesPerAnswer < loadCase.bodyBytes || bytesPerAnswer > loadCase.bodyBytes + MAX_HEADER_BYTES + inFlight;
      const notes = [
        socketErrors > 0 ? `${socketErrors} socket errors or timeouts` : '',
        s.statusErrors! > 0 ? `${s.statusErrors} answers not 2xx/3xx` : '',
        wrongSize ? `${bytesPerAnswer.toFixed(0)} bytes per answer, expected ${loadCase.bodyBytes} plus headers` : '',
      ].filter(Boolean);
      return {
        requests: s.requests!,
        seconds: secondsRun,
        requestsPerSecond: s.requests! / secondsRun,
        p50Ms: s.p50Us! / 1000,
        p99Ms: s.p99Us! / 1000,
        maxMs: s.maxUs! / 1000,
        errors: socketErrors + s.statusErrors! + (wrongSize ? s.requests! : 0),
        errorNote: notes.length > 0 ? notes.join('; ') : undefined,
        clientCpuSeconds: s.cpuTicks! / TICKS_PER_SECOND,
      };
    },
    async close() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The project's node:http load generator (load-process.ts), forked from this process and so on its core. */
export async function nodeGenerator(options: { connections: number }): Promise<LoadGenerator> {
  const load: LoadProcess = await startLoadProcess();
  return {
    description: `the project's node load generator (bench/load-process.ts), ${options.connections} connections`,
    async run(server, loadCase, seconds) {
      const result = await load.run({
        baseUrl: server.url,
        paths: [loadCase.path],
        headers: server.headers,
        ...(loadCase.range ? { range: loadCase.range } : {}),
        concurrency: options.connections,
        durationMs: seconds * 1000,
        expect: { status: loadCase.status, contentLength: loadCase.bodyBytes },
      });
      const { latencyMs: l } = result;
      return {
        requests: result.requests,
        seconds: result.elapsedMs / 1000,
        requestsPerSecond: result.requestsPerSecond,
        p50Ms: l.p50,
        p99Ms: l.p99,
        maxMs: l.max,
        errors: result.errors,
        errorNote: result.errorSamples.length > 0 ? result.errorSamples.join('; ') : undefined,
        clientCpuSeconds: ((result.clientCpuPercent / 100) * result.elapsedMs) / 1000,
      };
    },
    close: () => load.close(),
  };
}

/** Runs one case against one server and charges the CPU Linux counted meanwhile to the server, the client and everyone else. */
export async function measureCase(
  generator: LoadGenerator,
  server: PeerServer,
  loadCase: LoadCase,
  seconds: number,
): Promise<Omit<CaseResult, 'coreCheckMs'>> {
  const serverBefore = groupCpuSeconds(server.group.pgid);
  const machineBefore = machineBusySeconds();
  const driverBefore = process.cpuUsage();
  const figures = await generator.run(server, loadCase, seconds);
  const serverSeconds = groupCpuSeconds(server.group.pgid) - serverBefore;
  const machineSeconds = machineBusySeconds() - machineBefore;
  const driver = process.cpuUsage(driverBefore);
  const driverSeconds = (driver.user + driver.system) / 1e6;
  const other = Math.max(0, machineSeconds - serverSeconds - figures.clientCpuSeconds - driverSeconds);
  const percentOfCore = (cpuSeconds: number) => (100 * cpuSeconds) / figures.seconds;
  return {
    ...figures,
    serverCpuUsPerRequest: figures.requests > 0 ? (serverSeconds * 1e6) / figures.requests : Number.NaN,
    serverCpuPercent: percentOfCore(serverSeconds),
    clientCpuPercent: percentOfCore(figures.clientCpuSeconds),
    otherCpuPercent: percentOfCore(other),
  };
}

/**
 * One server's case over several rounds: each figure the median of the
 * rounds' figures, so that one round in a slow phase of the machine does not
 * decide the verdict; errors are summed, and their note is the first one.
 */
export function medianOfRuns(runs: CaseResult[]): CaseResult {
  const of = (pick: (run: CaseResult) => number) => median(runs.map(pick));
  return {
    requests: of((run) => run.requests),
    seconds: of((run) => run.seconds),
    requestsPerSecond: of((run) => run.requestsPerSecond),
    p50Ms: of((run) => run.p50Ms),
    p99Ms: of((run) => run.p99Ms),
    maxMs: of((run) => run.maxMs),
    errors: runs.reduce((sum, run) => sum + run.errors, 0),
    errorNote: runs.find((run) => run.errorNote !== undefined)?.errorNote,
    clientCpuSeconds: of((run) => run.clientCpuSeconds),
    serverCpuUsPerRequest: of((run) => run.serverCpuUsPerRequest),
    serverCpuPercent: of((run) => run.serverCpuPercent),
    clientCpuPercent: of((run) => run.clientCpuPercent),
    otherCpuPercent: of((run) => run.otherCpuPercent),
    coreCheckMs: of((run) => run.coreCheckMs),
  };
}
