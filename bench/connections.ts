/**
 * `npx tsx bench/connections.ts`: a flood of idle connections against a
 * gateway with a bounded number of file descriptors, as in a container. It
 * runs `recording-gateway serve` in a child under `ulimit -n`, opens
 * connections that never send a byte, then times `/healthz` and a recording,
 * each on a fresh connection. Loopback only; the flood is bounded.
 *
 *   BENCH_CONNECTIONS   idle connections to open (default 5000)
 *   BENCH_FILE_LIMIT    the gateway's open-file limit (default 4096)
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { startFakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY } from '../dev/gateway-harness.js';
import { startGatewayProcess, stopGatewayProcess, writeGatewayConfig } from '../dev/gateway-process.js';
import { fmt, markdownTable, type Cell } from './table.js';

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 5000);
const FILE_LIMIT = Number(process.env.BENCH_FILE_LIMIT ?? 4096);
const SAMPLES = 5;
const CONNECT_BATCH = 250;
const REQUEST_TIMEOUT_MS = 5_000;

interface Probe {
  ok: boolean;
  ms: number;
  outcome: string;
}

/** One GET on a fresh connection; never throws. */
function probe(url: string, target: string): Promise<Probe> {
  const started = performance.now();
  return new Promise((resolve) => {
    const done = (ok: boolean, outcome: string) => resolve({ ok, ms: performance.now() - started, outcome });
    const req = request(
      `${url}${target}`,
      { agent: false, headers: { authorization: `Bearer ${ACME_KEY}` }, timeout: REQUEST_TIMEOUT_MS },
      (res) => {
        res.resume();
        res.on('end', () => done(res.statusCode === 200, String(res.statusCode)));
        res.on('error', (error: NodeJS.ErrnoException) => done(false, error.code ?? error.message));
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', (error: NodeJS.ErrnoException) => done(false, error.code ?? error.message));
    req.end();
  });
}

async function probes(url: string, target: string): Promise<Cell[]> {
  const results: Probe[] = [];
  for (let i = 0; i < SAMPLES; i++) results.push(await probe(url, target));
  const times = results
    .filter((r) => r.ok)
    .map((r) => r.ms)
    .sort((a, b) => a - b);
  const failures = [...new Set(results.filter((r) => !r.ok).map((r) => r.outcome))].join(', ');
  return [`${times.length}/${SAMPLES}`, fmt(times[Math.floor(times.length / 2)], 1), fmt(times.at(-1), 1), failures || '-'];
}

/** Opens `count` connections that send nothing; resolves once each connected or failed. */
async function flood(url: string, count: number): Promise<{ sockets: Socket[]; open: () => number; failed: number }> {
  const { hostname, port } = new URL(url);
  const sockets: Socket[] = [];
  let closed = 0;
  let failed = 0;
  for (let at = 0; at < count; at += CONNECT_BATCH) {
    const batch = Array.from(
      { length: Math.min(CONNECT_BATCH, count - at) },
      () =>
        new Promise<void>((resolve) => {
          const socket = connect({ host: hostname, port: Number(port) });
          sockets.push(socket);
          socket.once('connect', () => resolve());
          socket.on('error', () => {
            failed++;
            resolve();
          });
          socket.once('close', () => {
            closed++;
            resolve();
          });
        }),
    );
    await Promise.all(batch);
  }
  return { sockets, open: () => sockets.length - closed, failed };
}

async function settle(open: () => number): Promise<void> {
  let last = -1;
  for (let stableMs = 0, waited = 0; stableMs < 1_000 && waited < 20_000; waited += 100) {
    await sleep(100);
    stableMs = open() === last ? stableMs + 100 : 0;
    last = open();
  }
}

async function main(): Promise<void> {
  const upstream = await startFakeFlyflow();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-connections-'));
  const configPath = await writeGatewayConfig(dir, { upstreamBaseUrl: upstream.baseUrl, cacheDir: path.join(dir, 'cache') });
  const gateway = await startGatewayProcess(configPath, { fileLimit: FILE_LIMIT });
  const { url, child } = gateway;

  const rows: Cell[][] = [];
  rows.push(['no flood', 0, ...(await probes(url, '/healthz')), ...(await probes(url, '/v1/call/recording/1.mp3')).slice(0, 1)]);
  const idle = await flood(url, CONNECTIONS);
  await settle(idle.open);
  const kept = idle.open();
  const health = await probes(url, '/healthz');
  const recording = await probes(url, '/v1/call/recording/2.mp3');
  rows.push([`${CONNECTIONS} idle connections`, kept, ...health, recording[0]!]);
  const exit = child.exitCode === null && child.signalCode === null ? undefined : await gateway.exited;
  const state = exit ? `exited (${exit.signal ?? exit.code})` : 'running';

  console.log(
    `\nIdle-connection flood: gateway allowed ${FILE_LIMIT} open files (ulimit -n), ${CONNECTIONS} connections that send nothing, then ${SAMPLES} GETs each on a fresh connection.\n`,
  );
  console.log(
    markdownTable(
      ['case', 'flood conns the gateway keeps open', '/healthz ok', 'p50 ms', 'max ms', '/healthz failures', 'recording ok'],
      rows,
    ),
  );
  console.log(`\ngateway after the flood: ${state}${idle.failed ? `; ${idle.failed} flood connections failed to connect` : ''}`);

  for (const socket of idle.sockets) socket.destroy();
  await stopGatewayProcess(gateway);
  await upstream.close();
  await rm(dir, { recursive: true, force: true });
}

await main();
