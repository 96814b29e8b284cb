/**
 * Part 1 of `npm run bench:durability`: the gateway's resident memory while
 * many clients download one recording far larger than its memory tier. The
 * gateway runs as an operator runs it (`recording-gateway serve` in a child
 * process), so its RSS is its own; the upstream and the clients run here.
 */
import { setMaxListeners } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { ACME_KEY } from '../dev/gateway-harness.js';
import { startGatewayProcess, stopGatewayProcess, writeGatewayConfig, type GatewayProcess } from '../dev/gateway-process.js';
import { startGeneratedUpstream, type GeneratedUpstream } from './generated-upstream.js';
import { readRecording, type ReadResult } from './http-reader.js';
import { cpuSeconds, procMemory, resetPeakRss, sampleRss } from './proc-stats.js';
import { fmt, markdownTable, type Cell } from './table.js';
import { median } from './stats.js';

export interface MemorySettings {
  /** Bytes of the recording. */
  size: number;
  clients: number;
  /** The upstream's send rate. */
  upstreamBytesPerSecond: number;
  /** Each slow client's read rate in scenario (b). */
  slowBytesPerSecond: number;
  /** The resident-memory target for the gateway process. */
  rssTargetBytes: number;
}

const RSS_POLL_MS = 50;
// /metrics costs the gateway a little CPU: polled less often than /proc.
const METRICS_POLL_MS = 250;
const SETTLE_MS = 1_000;
const STORE_WAIT_MS = 15_000;
const FAST_DEADLINE_MS = 90_000;
const AUTH = { authorization: `Bearer ${ACME_KEY}` };
// cache.max_memory_bytes is left at its default; entries over 1/8 of it stream from disk.
const MEMORY_ENTRY_MAX_BYTES = (256 * 1024 ** 2) / 8;
const MB = 1e6;

interface Case {
  label: string;
  callId: string;
  /** Per-client read cap; full speed when absent. */
  bytesPerSecond?: number;
  /** Hash every client's body, not just the first one's. */
  hashAll: boolean;
  cacheStatus: RegExp;
  upstreamRequests: number;
  deadlineMs: number;
}

interface CaseOutcome {
  row: Cell[];
  problems: string[];
  pass: boolean;
}

const mb = (bytes: number) => fmt(bytes / MB, 1);

/** What is wrong with one client's answer, if anything. */
function checkClient(result: ReadResult, index: number, size: number, digest: string, expected: Case): string[] {
  const problems: string[] = [];
  const who = `client ${index}`;
  if (result.error) problems.push(`${who}: ${result.error}`);
  if (result.status !== 200) problems.push(`${who}: status ${result.status}`);
  if (result.contentLength !== size) problems.push(`${who}: Content-Length ${result.contentLength}`);
  if (result.bytes !== size) problems.push(`${who}: received ${result.bytes} bytes of ${size}`);
  if (result.sha256 !== undefined && result.sha256 !== digest) problems.push(`${who}: sha256 differs from the upstream's`);
  if (!expected.cacheStatus.test(result.cacheStatus)) problems.push(`${who}: Cache-Status "${result.cacheStatus}"`);
  return problems;
}

/**
 * The gateway's own view of its memory from /metrics (prom-client's default
 * metrics, open without an admin token): the highest V8 heap and external
 * (Buffer/ArrayBuffer) sizes seen while polling. Says what a peak was made of.
 */
function sampleGatewayHeap(baseUrl: string): { stop(): Promise<{ heapTotal: number; external: number }> } {
  let heapTotal = 0;
  let external = 0;
  let stopped = false;
  const value = (text: string, name: string) => Number(new RegExp(`^recording_gateway_${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  const loop = (async () => {
    while (!stopped) {
      const text = await fetch(`${baseUrl}/metrics`).then(
        (response) => response.text(),
        () => '',
      );
      heapTotal = Math.max(heapTotal, value(text, 'nodejs_heap_size_total_bytes') || 0);
      external = Math.max(external, value(text, 'nodejs_external_memory_bytes') || 0);
      await sleep(METRICS_POLL_MS);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { heapTotal, external };
    },
  };
}

/** Polls with HEAD until the gateway answers the recording from its cache. */
async function waitUntilStored(baseUrl: string, callId: string): Promise<void> {
  const until = performance.now() + STORE_WAIT_MS;
  while (performance.now() < until) {
    const response = await fetch(`${baseUrl}/v1/call/recording/${callId}.mp3`, { method: 'HEAD', headers: AUTH });
    if (response.headers.get('cache-status')?.includes('; hit;')) return;
    await sleep(200);
  }
  throw new Error(`recording ${callId} was not cached ${STORE_WAIT_MS} ms after its download`);
}

async function runCase(
  gateway: GatewayProcess,
  upstream: GeneratedUpstream,
  settings: MemorySettings,
  expected: Case,
): Promise<CaseOutcome> {
  const pid = gateway.child.pid!;
  const digest = upstream.digest(expected.callId);
  const ownPeak = resetPeakRss(pid);
  const before = procMemory(pid)!;
  const upstreamBefore = upstream.requests(expected.callId);
  const cpuBefore = cpuSeconds(pid);
  const sampler = sampleRss(pid, RSS_POLL_MS);
  const heapSampler = sampleGatewayHeap(gateway.url);
  const controller = new AbortController();
  setMaxListeners(settings.clients + 1, controller.signal);
  const deadline = setTimeout(() => controller.abort(), expected.deadlineMs);
  const started = performance.now();
  const results = await Promise.all(
    Array.from({ length: settings.clients }, (_, i) =>
      readRecording({
        url: `${gateway.url}/v1/call/recording/${expected.callId}.mp3`,
        headers: AUTH,
        ...(expected.bytesPerSecond === undefined ? {} : { bytesPerSecond: expected.bytesPerSecond }),
        hash: expected.hashAll || i === 0,
        signal: controller.signal,
      }),
    ),
  );
  const wallMs = performance.now() - started;
  clearTimeout(deadline);
  const cpu = cpuSeconds(pid) - cpuBefore;
  const { peak, ownPeak: benchPeak } = sampler.stop();
  const hwm = procMemory(pid)?.hwm ?? Number.NaN;
  const heap = await heapSampler.stop();
  await sleep(SETTLE_MS);
  const after = procMemory(pid)?.rss ?? Number.NaN;

  const problems = results.flatMap((result, i) => checkClient(result, i, upstream.size, digest, expected));
  const upstreamRequests = upstream.requests(expected.callId) - upstreamBefore;
  if (upstreamRequests !== expected.upstreamRequests) {
    problems.push(`${upstreamRequests} upstream requests, expected ${expected.upstreamRequests}`);
  }
  const complete = results.filter((result) => !result.error && result.bytes === upstream.size).length;
  const hashed = results.filter((result) => result.sha256 !== undefined);
  const hashedOk = hashed.filter((result) => result.sha256 === digest).length;
  // With the peak reset per case, VmHWM catches spikes between two polls.
  const worst = ownPeak ? Math.max(peak, hwm) : peak;
  const memoryOk = worst < settings.rssTargetBytes;
  const pass = memoryOk && problems.length === 0;
  const received = results.reduce((sum, result) => sum + result.bytes, 0);
  const perClient = median(results.map((result) => result.bytes / MB / (result.totalMs / 1000)));
  const verdict = pass ? 'PASS' : !memoryOk ? `FAIL (memory${problems.length ? ', answers' : ''})` : 'FAIL (answers)';
  return {
    pass,
    problems,
    row: [
      expected.label,
      settings.clients,
      expected.bytesPerSecond === undefined ? 'full speed' : `${mb(expected.bytesPerSecond)} MB/s`,
      `${complete}/${settings.clients}`,
      `${hashedOk}/${hashed.length}`,
      upstreamRequests,
      fmt(wallMs / 1000, 1),
      fmt(received / MB / (wallMs / 1000), 0),
      fmt(perClient, 1),
      mb(before.rss),
      mb(peak),
      ownPeak ? mb(hwm) : `${mb(hwm)} (since start)`,
      mb(heap.heapTotal),
      mb(heap.external),
      mb(after),
      `${fmt((cpu / (wallMs / 1000)) * 100, 0)} %`,
      `${mb(benchPeak)}`,
      verdict,
    ],
  };
}

/** Runs the three cases against one gateway process and renders the table. */
export async function memoryUnderLoad(settings: MemorySettings): Promise<{ text: string; pass: boolean }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'rg-durability-memory-'));
  let upstream: GeneratedUpstream | undefined;
  let gateway: GatewayProcess | undefined;
  try {
    upstream = await startGeneratedUpstream({ size: settings.size, bytesPerSecond: settings.upstreamBytesPerSecond });
    // Hashed up front so the digest costs no CPU while the gateway is measured.
    for (const callId of ['1', '2']) upstream.digest(callId);
    const size = settings.size;
    const configPath = await writeGatewayConfig(dir, {
      upstreamBaseUrl: upstream.baseUrl,
      cacheDir: path.join(dir, 'cache'),
      // Room for the recording; max_memory_bytes stays at its 256MiB default,
      // so a recording over 32 MiB (1/8 of it) streams from disk.
      cacheYaml: [`max_recording_bytes: ${Math.max(size, 256 * 1024 ** 2)}`, `max_disk_bytes: ${Math.max(4 * size, 1024 ** 3)}`],
    });
    gateway = await startGatewayProcess(configPath, { compiled: true });
    await sleep(SETTLE_MS);
    const idle = procMemory(gateway.child.pid!)!;
    const idleHeap = await sampleGatewayHeap(gateway.url).stop();

    const slowSeconds = size / settings.slowBytesPerSecond;
    // Only a small recording (DURABILITY_RECORDING_MB under 33) is a memory hit.
    const hitTier = size > MEMORY_ENTRY_MAX_BYTES ? 'disk' : 'memory';
    const cases: Case[] = [
      {
        label: '(a) cold miss, one shared download',
        callId: '1',
        hashAll: false,
        cacheStatus: /fwd=uri-miss(; collapsed)?$/,
        upstreamRequests: 1,
        deadlineMs: FAST_DEADLINE_MS,
      },
      {
        label: '(b) cold miss, slow readers',
        callId: '2',
        bytesPerSecond: settings.slowBytesPerSecond,
        hashAll: true,
        cacheStatus: /fwd=uri-miss(; collapsed)?$/,
        upstreamRequests: 1,
        deadlineMs: slowSeconds * 1000 * 2 + 30_000,
      },
      {
        label: `(c) ${hitTier} hit`,
        callId: '1',
        hashAll: false,
        cacheStatus: new RegExp(`; hit; detail=${hitTier}$`),
        upstreamRequests: 0,
        deadlineMs: FAST_DEADLINE_MS,
      },
      // The same again: RSS that keeps climbing case after case would be a leak, a plateau is not.
      {
        label: `(c') ${hitTier} hit, repeated`,
        callId: '1',
        hashAll: false,
        cacheStatus: new RegExp(`; hit; detail=${hitTier}$`),
        upstreamRequests: 0,
        deadlineMs: FAST_DEADLINE_MS,
      },
    ];
    const rows: Cell[][] = [];
    const problems: string[] = [];
    let pass = true;
    for (const spec of cases) {
      if (spec.upstreamRequests === 0) await waitUntilStored(gateway.url, spec.callId);
      const outcome = await runCase(gateway, upstream, settings, spec);
      rows.push(outcome.row);
      pass &&= outcome.pass;
      problems.push(...outcome.problems.slice(0, 5).map((problem) => `${spec.label}: ${problem}`));
    }
    await stopGatewayProcess(gateway, 'SIGTERM');
    const exit = await gateway.exited;

    const header = [
      'case',
      'clients',
      'client reads at',
      'complete',
      'sha256 ok',
      'upstream reqs',
      'wall s',
      'total MB/s',
      'per-client MB/s (median)',
      'RSS before MB',
      'peak RSS MB (50 ms polls)',
      'VmHWM MB',
      'peak V8 heap MB',
      'peak external MB',
      `RSS ${SETTLE_MS / 1000} s after MB`,
      'gw CPU',
      'bench proc peak RSS MB',
      `< ${mb(settings.rssTargetBytes)} MB`,
    ];
    const lines = [
      `Recording ${mb(size)} MB (${size} bytes), generated by the upstream at ${mb(settings.upstreamBytesPerSecond)} MB/s; ` +
        `${settings.clients} clients at once, each on its own connection. Gateway idle after start-up: ${mb(idle.rss)} MB RSS, ` +
        `V8 heap ${mb(idleHeap.heapTotal)} MB, external ${mb(idleHeap.external)} MB. ` +
        `MB = 10^6 bytes throughout.\n`,
      markdownTable(header, rows),
      '',
      `- **complete**: clients that got status 200, the right Content-Length and every byte; **sha256 ok**: bodies hashed and equal to the upstream's ` +
        `(the first client in (a) and (c), every client in (b)).`,
      `- **peak RSS** is the highest VmRSS of 50 ms polls; **VmHWM** the kernel's high-water mark, reset before each case ` +
        `(\`/proc/<pid>/clear_refs\`), so it also catches spikes between polls. The verdict takes the larger.`,
      `- **peak V8 heap / external**: the highest \`nodejs_heap_size_total_bytes\` and \`nodejs_external_memory_bytes\` (Buffers, ArrayBuffers) of ${METRICS_POLL_MS} ms polls of the gateway's /metrics: what the RSS above the idle process is made of.`,
      `- **gw CPU**: the gateway's CPU over the case, % of one core. The clients and the upstream share the bench process (its own peak RSS in the next column, to show it never holds a recording).`,
      `- Gateway stopped with SIGTERM: exit code ${exit.code}${exit.signal ? `, signal ${exit.signal}` : ''}.`,
    ];
    if (problems.length > 0) lines.push('', '**Problems:**', ...problems.map((problem) => `- ${problem}`));
    return { text: lines.join('\n'), pass };
  } finally {
    if (gateway) await stopGatewayProcess(gateway).catch(() => {});
    await upstream?.close();
    await rm(dir, { recursive: true, force: true });
  }
}
