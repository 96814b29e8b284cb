/**
 * Availability under hostile or unlucky traffic (README, "Hostile header values" and "Upstream trouble"): prints
 * one table of figures that a regression would move by orders of magnitude.
 *
 *   npx tsx bench/hardening.ts
 *
 * 1. `/healthz` latency while 4 senders, holding only a signed URL, send
 *    15 KB `Range` values of spaces followed by one other character.
 * 2. Another account's cold miss after one account's failures opened the
 *    circuit breaker.
 * 3. Another tenant's cold-miss latency while one tenant floods the gateway
 *    with 3,000 HEADs for distinct ids; and the answer to a request queued
 *    behind one busy download slot with a 1 s `upstream.timeout_ms`.
 *
 * The gateway and the fake Flyflow run in this process; every client that
 * measures or floods runs in a worker thread, so its own work never sits on
 * the gateway's event loop.
 */
import { createHmac } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  ACME_SIGNING_SECRET,
  acmeTenant,
  makeTempDir,
  removeDir,
  startGateway,
  testConfig,
  testTenant,
  type RunningGateway,
  type TestConfigOptions,
} from '../dev/gateway-harness.js';
import { fmt, markdownTable, type Cell } from './table.js';

const BETA_KEY = 'beta-tenant-key-for-bench-0000000001';
const BETA_UPSTREAM_KEY = 'beta-flyflow-account-key-bench-00000';
const GAMMA_KEY = 'gamma-tenant-key-for-bench-000000001';
const HOSTILE_RANGE = `bytes=0-1${' '.repeat(15_000)}x`;
const PROBE_SECONDS = 3;
const FLOOD = 3_000;

/**
 * The clients, as plain JavaScript for a worker thread. `probe` GETs
 * /healthz every 10 ms and returns the latencies, while `senders` loops send
 * `headers` to `path`; `flood` sends `count` HEADs for distinct ids at once,
 * posts 'sent', and returns the statuses.
 */
const CLIENT = `
const { parentPort, workerData } = require('node:worker_threads');
const { Agent, request } = require('node:http');
const { baseUrl, mode } = workerData;
const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
function send(method, path, headers) {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = request(baseUrl + path, { method, headers, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - started }));
      res.on('error', () => resolve({ status: 0, ms: performance.now() - started }));
    });
    req.on('error', () => resolve({ status: 0, ms: performance.now() - started }));
    req.end();
  });
}
async function main() {
  if (mode === 'probe') {
    const until = performance.now() + workerData.seconds * 1000;
    let stop = false;
    let sent = 0;
    const senders = Array.from({ length: workerData.senders }, async () => {
      while (!stop) { await send('GET', workerData.path, workerData.headers); sent++; }
    });
    const latencies = [];
    while (performance.now() < until) {
      latencies.push((await send('GET', '/healthz', {})).ms);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    stop = true;
    await Promise.all(senders);
    return { latencies, sent };
  }
  if (mode === 'flood') {
    const answers = [];
    for (let i = 0; i < workerData.count; i++) {
      answers.push(send('HEAD', '/v1/call/recording/' + (workerData.firstId + i) + '.mp3', workerData.headers));
    }
    parentPort.postMessage({ sent: true });
    const statuses = {};
    for (const answer of await Promise.all(answers)) statuses[answer.status] = (statuses[answer.status] || 0) + 1;
    return { statuses };
  }
}
main().then((result) => { parentPort.postMessage({ result }); agent.destroy(); });
`;

interface ClientRun<T> {
  /** Resolves once a flood has been sent in full. */
  sent: Promise<void>;
  result: Promise<T>;
}

function client<T>(data: Record<string, unknown>): ClientRun<T> {
  const worker = new Worker(CLIENT, { eval: true, workerData: data });
  let onSent!: () => void;
  const sent = new Promise<void>((resolve) => (onSent = resolve));
  const result = new Promise<T>((resolve, reject) => {
    worker.on('message', (message: { sent?: boolean; result?: T }) => {
      if (message.sent) onSent();
      if (message.result) {
        resolve(message.result);
        void worker.terminate();
      }
    });
    worker.once('error', reject);
  });
  return { sent, result };
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** A signed URL for acme, minted from the contract's formula (section 3). */
function signedPath(callId: number): string {
  const exp = Math.floor(Date.now() / 1000) + 3_000;
  const sig = createHmac('sha256', ACME_SIGNING_SECRET).update(`v1\nacme\n${callId}\n${exp}`).digest('base64url');
  return `/v1/call/recording/${callId}.mp3?tenant=acme&exp=${exp}&kid=k1&sig=${sig}`;
}

async function timedFetch(gateway: RunningGateway, path: string, key: string): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  const response = await gateway.fetch(path, { headers: { authorization: `Bearer ${key}` } });
  await response.arrayBuffer();
  return { status: response.status, ms: performance.now() - started };
}

async function withGateway<T>(
  upstream: FakeFlyflow,
  options: Partial<TestConfigOptions>,
  run: (gateway: RunningGateway) => Promise<T>,
): Promise<T> {
  const dir = await makeTempDir('rg-bench-hardening-');
  const tenants = [acmeTenant(), testTenant('beta', BETA_KEY, { upstreamApiKey: BETA_UPSTREAM_KEY }), testTenant('gamma', GAMMA_KEY)];
  const gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, tenants, ...options }));
  try {
    return await run(gateway);
  } finally {
    upstream.reset();
    await gateway.close();
    await removeDir(dir);
  }
}

async function healthzUnderHostileRanges(upstream: FakeFlyflow): Promise<Cell[][]> {
  return withGateway(upstream, {}, async (gateway) => {
    const path = signedPath(1);
    const warm = await gateway.fetch(path);
    await warm.arrayBuffer();
    await gateway.gateway.downloads.idle();
    const rows: Cell[][] = [];
    for (const senders of [0, 4]) {
      const { latencies, sent } = await client<{ latencies: number[]; sent: number }>({
        baseUrl: gateway.baseUrl,
        mode: 'probe',
        seconds: PROBE_SECONDS,
        senders,
        path,
        headers: { range: HOSTILE_RANGE },
      }).result;
      const label = senders === 0 ? '1. /healthz, idle' : `1. /healthz, ${senders} senders of 15 KB spaced Range (signed URL)`;
      const spread = `p50 ${fmt(percentile(latencies, 50), 2)} ms, p99 ${fmt(percentile(latencies, 99), 2)} ms, max ${fmt(Math.max(...latencies), 2)} ms`;
      rows.push([label, `${spread} (${latencies.length} probes in ${PROBE_SECONDS} s, ${sent} hostile requests answered)`]);
    }
    return rows;
  });
}

async function otherAccountAfterCircuitOpens(upstream: FakeFlyflow): Promise<Cell[][]> {
  return withGateway(upstream, {}, async (gateway) => {
    upstream.setBehaviour(2, { kind: 'status', status: 500 });
    const failures: number[] = [];
    for (let i = 0; i < 5; i++) failures.push((await timedFetch(gateway, '/v1/call/recording/2.mp3', ACME_KEY)).status);
    const sameAccount = await timedFetch(gateway, '/v1/call/recording/3.mp3', GAMMA_KEY);
    const otherAccount = await timedFetch(gateway, '/v1/call/recording/3.mp3', BETA_KEY);
    return [
      ['2. acme, 5 misses upstream fails', failures.join(', ')],
      ['2. then a cold miss by gamma (same account)', String(sameAccount.status)],
      ['2. then a cold miss by beta (other account)', String(otherAccount.status)],
    ];
  });
}

async function coldMissDuringFlood(upstream: FakeFlyflow): Promise<Cell[][]> {
  return withGateway(upstream, {}, async (gateway) => {
    const idle = await timedFetch(gateway, '/v1/call/recording/3.mp3', BETA_KEY);
    const flood = client<{ statuses: Record<string, number> }>({
      baseUrl: gateway.baseUrl,
      mode: 'flood',
      count: FLOOD,
      firstId: 100_000,
      headers: { authorization: `Bearer ${ACME_KEY}` },
    });
    await flood.sent;
    // Ask once the flood has filled the queue, as a user arriving mid-flood would.
    while (gateway.gateway.downloads.inFlight < FLOOD / 3) await new Promise((resolve) => setTimeout(resolve, 5));
    const queuedAhead = gateway.gateway.downloads.inFlight;
    const during = await timedFetch(gateway, '/v1/call/recording/4.mp3', BETA_KEY);
    const { statuses } = await flood.result;
    return [
      ['3. beta cold miss, idle', `${idle.status} in ${fmt(idle.ms, 1)} ms`],
      [
        `3. beta cold miss during acme's ${FLOOD} HEADs (${queuedAhead} downloads in flight or queued)`,
        `${during.status} in ${fmt(during.ms, 1)} ms (flood answers: ${Object.entries(statuses)
          .map(([s, n]) => `${n}×${s}`)
          .join(', ')})`,
      ],
    ];
  });
}

async function queuedPastTimeout(upstream: FakeFlyflow): Promise<Cell[][]> {
  // bodyIdleTimeoutMs above the 4 s the busy download is held, so it stays busy.
  const options = { upstream: { maxConcurrentDownloads: 1, timeoutMs: 1_000, bodyIdleTimeoutMs: 10_000 } };
  return withGateway(upstream, options, async (gateway) => {
    upstream.setBehaviour(1, { kind: 'gate' });
    const busy = await gateway.fetch('/v1/call/recording/1.mp3');
    const busyBody = busy.arrayBuffer();
    const opening = setTimeout(() => upstream.release(1), 4_000);
    const queued = await timedFetch(gateway, '/v1/call/recording/2.mp3', ACME_KEY);
    clearTimeout(opening);
    upstream.release(1);
    await busyBody;
    return [
      ['3. request queued behind 1 busy slot, timeout_ms 1000 (slot busy 4 s)', `${queued.status} after ${fmt(queued.ms / 1000, 2)} s`],
    ];
  });
}

const upstream = await startFakeFlyflow();
try {
  const rows = [
    ...(await healthzUnderHostileRanges(upstream)),
    ...(await otherAccountAfterCircuitOpens(upstream)),
    ...(await coldMissDuringFlood(upstream)),
    ...(await queuedPastTimeout(upstream)),
  ];
  console.log(markdownTable(['case', 'result'], rows));
} finally {
  await upstream.close();
}
