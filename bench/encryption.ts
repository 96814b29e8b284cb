/**
 * `npm run bench:encryption`: what `cache.encryption` costs on a disk hit.
 * The same recording is served by two gateways side by side, one storing it
 * in the clear and one encrypted, from disk (a memory tier too small to hold
 * it): whole, by 64 KiB ranges at random offsets, and by the `bytes=0-1`
 * probe; each case is warmed on both, then measured on one after the other.
 * The client runs in a child process (load-process.ts), so this process's CPU
 * over a run is the gateway's (the in-process upstream idles during hits).
 * Then the file reads alone, without HTTP, so the cost of decryption itself
 * shows. Small recordings are served from memory after their first hit, where
 * encryption costs nothing.
 *
 *   BENCH_SECONDS=3                 measured seconds per case (a warm-up of 20 %, at most 1 s, runs first)
 *   BENCH_ENCRYPTION_MIB=4          size of the recording
 *   BENCH_ENCRYPTION_CONCURRENCY=4  requests in flight
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { FIXTURE_DIR, startFakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, makeTempDir, namespaceFor, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { createDiskStore, type DiskStore } from '../src/cache/disk-store.js';
import type { CacheEncryptionConfig } from '../src/config/index.js';
import { positiveInteger, positiveNumber } from './env.js';
import type { LoadJob, LoadResult } from './load.js';
import { startLoadProcess } from './load-process.js';
import { fmt, markdownTable, type Cell } from './table.js';

const SECONDS = positiveNumber('BENCH_SECONDS', 3);
const SIZE = positiveNumber('BENCH_ENCRYPTION_MIB', 4) * 1024 * 1024;
const CONCURRENCY = positiveInteger('BENCH_ENCRYPTION_CONCURRENCY', 4);
const WARM_UP_SECONDS = Math.min(1, SECONDS * 0.2);
const RANGE_BYTES = 64 * 1024;
const CALL_ID = 1;
const RECORDING_PATH = `/v1/call/recording/${CALL_ID}.mp3`;
const AUTH = { authorization: `Bearer ${ACME_KEY}` };
const MODES = ['plain', 'encrypted'] as const;

type Mode = (typeof MODES)[number];

/** One request shape, loaded over HTTP; `bytes` picks what a right answer holds, to check it byte for byte before the load. */
interface HttpCase {
  key: 'full' | 'window' | 'probe';
  title: string;
  expect: LoadJob['expect'];
  range?: LoadJob['range'];
  /** The Range header of the byte check, and the bytes it must answer. */
  check: { range?: string; start: number; end: number };
}

interface HttpRun {
  result: LoadResult;
  /** CPU this process (the gateway) used over the measured run, per answer. */
  cpuUsPerRequest: number;
}

/** One of the two gateways and its cache directory. */
interface Store {
  mode: Mode;
  dir: string;
  encryption: CacheEncryptionConfig | undefined;
  gateway: RunningGateway | undefined;
}

interface Sample {
  ms: number;
  bytes: number;
}

/** A real MP3 repeated to SIZE, so the gateway's analysis at store time decodes it as it would a call. */
async function recording(): Promise<Buffer> {
  const fixture = await readFile(path.join(FIXTURE_DIR, 'call-4.mp3'));
  return Buffer.concat(Array.from({ length: Math.ceil(SIZE / fixture.length) }, () => fixture)).subarray(0, SIZE);
}

function get(agent: http.Agent, url: string, headers: Record<string, string>): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { agent, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks) }));
      response.on('error', reject);
    });
    request.on('error', reject);
  });
}

function httpCases(size: number): HttpCase[] {
  const middle = Math.floor(size / 2) - RANGE_BYTES / 2;
  const disk = 'detail=disk';
  return [
    {
      key: 'full',
      title: `disk hit, full ${fmt(size / 1024 ** 2, 0)} MiB body`,
      expect: { status: 200, contentLength: size, cacheStatus: disk },
      check: { start: 0, end: size - 1 },
    },
    {
      key: 'window',
      title: '64 KiB range (random window)',
      expect: { status: 206, contentLength: RANGE_BYTES, cacheStatus: disk },
      range: { randomLength: RANGE_BYTES, size },
      check: { range: `bytes=${middle}-${middle + RANGE_BYTES - 1}`, start: middle, end: middle + RANGE_BYTES - 1 },
    },
    {
      key: 'probe',
      title: '`Range: bytes=0-1` (the Safari probe)',
      expect: { status: 206, contentLength: 2, cacheStatus: disk },
      range: { header: 'bytes=0-1' },
      check: { range: 'bytes=0-1', start: 0, end: 1 },
    },
  ];
}

/** One answer of each case, compared byte for byte with the recording; throws on a wrong one. */
async function checkAnswers(gateway: RunningGateway, cases: HttpCase[], body: Buffer, mode: Mode): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (const { title, expect, check } of cases) {
      const answer = await get(agent, `${gateway.baseUrl}${RECORDING_PATH}`, { ...AUTH, ...(check.range ? { range: check.range } : {}) });
      if (answer.status !== expect.status || !answer.body.equals(body.subarray(check.start, check.end + 1))) {
        throw new Error(
          `${mode}, ${title}: status ${answer.status} with ${answer.body.length} bytes that are not bytes ${check.start}-${check.end}`,
        );
      }
    }
  } finally {
    agent.destroy();
  }
}

/** Runs `once` from CONCURRENCY loops for `seconds`; an answer that is not exactly right counts as an error. */
async function measureReads(
  seconds: number,
  once: () => Promise<Sample | undefined>,
): Promise<{ samples: Sample[]; errors: number; seconds: number }> {
  const samples: Sample[] = [];
  let errors = 0;
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < deadline) {
        const sample = await once().catch(() => undefined);
        if (sample) samples.push(sample);
        else errors++;
      }
    }),
  );
  return { samples, errors, seconds: (performance.now() - started) / 1000 };
}

function percentile(sorted: number[], p: number): number | undefined {
  return sorted.length === 0 ? undefined : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function readRow(name: string, mode: Mode, result: Awaited<ReturnType<typeof measureReads>>): Cell[] {
  const sorted = result.samples.map((sample) => sample.ms * 1000).sort((a, b) => a - b);
  const bytes = result.samples.reduce((sum, sample) => sum + sample.bytes, 0);
  return [
    name,
    mode,
    result.samples.length,
    fmt(result.samples.length / result.seconds, 0),
    fmt(bytes / 1024 ** 2 / result.seconds, 0),
    fmt(percentile(sorted, 50), 1),
    fmt(percentile(sorted, 99), 1),
    result.errors,
  ];
}

async function timed(run: () => Promise<number>): Promise<Sample> {
  const started = performance.now();
  const bytes = await run();
  return { ms: performance.now() - started, bytes };
}

/** The file alone: open, read, close, as a disk hit does, without HTTP. */
async function fileRows(disk: DiskStore, namespace: string, size: number, mode: Mode): Promise<Cell[][]> {
  const rangeStart = () => Math.floor(Math.random() * (size - RANGE_BYTES));
  const readRange = () =>
    timed(async () => {
      const file = (await disk.openRecording(namespace, String(CALL_ID)))!;
      try {
        return await file.read(Buffer.allocUnsafe(RANGE_BYTES), rangeStart());
      } finally {
        await file.close();
      }
    });
  const readWhole = () =>
    timed(async () => {
      const file = (await disk.openRecording(namespace, String(CALL_ID)))!;
      try {
        const buffer = Buffer.allocUnsafe(256 * 1024);
        let position = 0;
        for (let read = 1; read > 0; position += read) read = await file.read(buffer, position);
        return position;
      } finally {
        await file.close();
      }
    });
  const rows: Cell[][] = [];
  for (const [name, once] of [
    ['64 KiB range', readRange],
    [`whole ${fmt(size / 1024 ** 2, 0)} MiB in 256 KiB reads`, readWhole],
  ] as const) {
    await measureReads(WARM_UP_SECONDS, once);
    rows.push(readRow(name, mode, await measureReads(SECONDS, once)));
  }
  return rows;
}

/** Encrypted minus plain, for one figure of one case: `-` when a run is missing. */
function added(runs: Map<string, HttpRun>, key: HttpCase['key'], pick: (run: HttpRun) => number, decimals: number, unit: string): string {
  const plain = runs.get(`plain/${key}`);
  const encrypted = runs.get(`encrypted/${key}`);
  if (!plain || !encrypted) return '-';
  const difference = pick(encrypted) - pick(plain);
  return `${difference >= 0 ? '+' : ''}${fmt(difference, decimals)} ${unit}`;
}

async function main(): Promise<void> {
  const upstream = await startFakeFlyflow({ recordings: new Map([[CALL_ID, await recording()]]) });
  const load = await startLoadProcess();
  const body = upstream.recording(CALL_ID)!;
  const cases = httpCases(body.length);
  const key: CacheEncryptionConfig = { key: randomBytes(32), previousKeys: [] };
  const httpRuns = new Map<string, HttpRun>();
  const readRows: Cell[][] = [];
  const stores: Store[] = [];
  try {
    // Both gateways up at once, and each case warmed on both before either is measured: neither runs on colder code than the other.
    for (const mode of MODES) {
      const store: Store = {
        mode,
        dir: await makeTempDir(`rg-bench-encryption-${mode}-`),
        encryption: mode === 'encrypted' ? key : undefined,
        gateway: undefined,
      };
      stores.push(store);
      const gateway = await startGateway(
        testConfig({
          dir: store.dir,
          upstreamBaseUrl: upstream.baseUrl,
          cache: { maxMemoryBytes: 1024 * 1024, ...(store.encryption ? { encryption: store.encryption } : {}) },
        }),
      );
      store.gateway = gateway;
      await (await gateway.fetch(RECORDING_PATH)).arrayBuffer();
      await gateway.gateway.downloads.idle();
      await gateway.gateway.analyser.idle();
      await checkAnswers(gateway, cases, body, mode);
    }

    for (const loadCase of cases) {
      const job = (gateway: RunningGateway, seconds: number): LoadJob => ({
        baseUrl: gateway.baseUrl,
        paths: [RECORDING_PATH],
        headers: AUTH,
        concurrency: CONCURRENCY,
        durationMs: seconds * 1000,
        expect: loadCase.expect,
        ...(loadCase.range ? { range: loadCase.range } : {}),
      });
      for (const { gateway } of stores) await load.run(job(gateway!, WARM_UP_SECONDS));
      for (const { mode, gateway } of stores) {
        const cpuBefore = process.cpuUsage();
        const result = await load.run(job(gateway!, SECONDS));
        const cpu = process.cpuUsage(cpuBefore);
        const cpuUsPerRequest = result.requests > 0 ? (cpu.user + cpu.system) / result.requests : Number.NaN;
        httpRuns.set(`${mode}/${loadCase.key}`, { result, cpuUsPerRequest });
        if (result.errors > 0) process.exitCode = 1;
      }
    }

    for (const { mode, dir, encryption } of stores) {
      const disk: DiskStore = createDiskStore(dir, { encryption });
      const reads = await fileRows(disk, namespaceFor(upstream.baseUrl), body.length, mode);
      if (reads.some((row) => Number(row[row.length - 1]) > 0)) process.exitCode = 1;
      readRows.push(...reads);
    }
  } finally {
    for (const { dir, gateway } of stores) {
      await gateway?.close();
      await removeDir(dir);
    }
    await load.close();
    await upstream.close();
  }

  const rows: Cell[][] = [];
  for (const loadCase of cases) {
    for (const mode of MODES) {
      const run = httpRuns.get(`${mode}/${loadCase.key}`);
      if (!run) continue;
      const { result } = run;
      rows.push([
        loadCase.title,
        mode,
        result.requests,
        fmt(result.requestsPerSecond, 0),
        fmt(result.megabytesPerSecond, 1),
        fmt(result.latencyMs.p50, 2),
        fmt(result.latencyMs.p99, 2),
        fmt(run.cpuUsPerRequest, 1),
        result.errors,
      ]);
    }
  }
  const size = `${fmt(body.length / 1024 ** 2, 0)} MiB`;
  console.log(`# encryption at rest: disk hits of a ${size} recording, concurrency ${CONCURRENCY}, ${SECONDS} s per case\n`);
  console.log(
    'Both gateways run in this process (1 MiB memory tiers, so the recording is always read from disk), the client in a child process; ' +
      'each case is warmed on both, then measured plain, then encrypted. ' +
      'Every answer is checked (status, length, `Cache-Status: …detail=disk`); one of each case byte for byte before the load.\n',
  );
  const cpuHeader = 'gateway CPU µs/req (in-process)';
  console.log(markdownTable(['case', 'storage', 'requests', 'req/s', 'MB/s', 'p50 ms', 'p99 ms', cpuHeader, 'errors'], rows));
  const cpu = (key: HttpCase['key']) => added(httpRuns, key, (run) => run.cpuUsPerRequest, 1, 'µs');
  const p50 = (key: HttpCase['key']) => added(httpRuns, key, (run) => run.result.latencyMs.p50, 2, 'ms');
  console.log(
    `\n**Encryption costs ${cpu('probe')} of gateway CPU per request (probe), ${cpu('window')} (64 KiB range), ${cpu('full')} (full ${size} body)**; ` +
      `p50 latency ${p50('probe')}, ${p50('window')}, ${p50('full')}. Encrypted minus plain; ` +
      "CPU µs/req is this process's user + system time over the measured run per answer, so a figure below zero is noise.",
  );
  const errors = rows.reduce((sum, row) => sum + Number(row[row.length - 1]), 0);
  if (errors > 0) console.log(`\n**${errors} wrong answers** (counted as errors, not samples): see the table.`);
  console.log('\n## Decryption alone: the stored file without HTTP (DiskStore.openRecording, read, close)\n');
  console.log(markdownTable(['read', 'storage', 'count', 'per s', 'MB/s', 'p50 µs', 'p99 µs', 'errors'], readRows));
  console.log(
    '\nEncrypted files are read in 64 KiB AES-256-GCM chunks: the probe and a 64 KiB range decrypt one or two chunks, a whole file every chunk once.',
  );
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exitCode = 1;
});
