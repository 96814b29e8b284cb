/**
 * `npm run bench:encryption`: what `cache.encryption` costs on a disk hit.
 * The same recording is served by two gateways, one storing it in the clear
 * and one encrypted, from disk (a memory tier too small to hold it), whole
 * and by 64 KiB ranges at random offsets; then the file reads alone, without
 * HTTP, so the cost of decryption itself shows. Small recordings are served
 * from memory after their first hit, where encryption costs nothing.
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
import { fmt, markdownTable, type Cell } from './table.js';

const SECONDS = positiveNumber('BENCH_SECONDS', 3);
const SIZE = positiveNumber('BENCH_ENCRYPTION_MIB', 4) * 1024 * 1024;
const CONCURRENCY = positiveInteger('BENCH_ENCRYPTION_CONCURRENCY', 4);
const RANGE_BYTES = 64 * 1024;
const CALL_ID = 1;

type Mode = 'plain' | 'encrypted';
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

function percentile(sorted: number[], p: number): number | undefined {
  return sorted.length === 0 ? undefined : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Runs `once` from CONCURRENCY loops for `seconds`; an answer that is not exactly right counts as an error. */
async function measure(
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

function row(name: string, mode: Mode, result: Awaited<ReturnType<typeof measure>>, unit: 'ms' | 'µs'): Cell[] {
  const scale = unit === 'ms' ? 1 : 1000;
  const sorted = result.samples.map((sample) => sample.ms * scale).sort((a, b) => a - b);
  const bytes = result.samples.reduce((sum, sample) => sum + sample.bytes, 0);
  return [
    name,
    mode,
    result.samples.length,
    fmt(result.samples.length / result.seconds, 0),
    fmt(bytes / 1024 ** 2 / result.seconds, 0),
    fmt(percentile(sorted, 50), 2),
    fmt(percentile(sorted, 99), 2),
    result.errors,
  ];
}

async function timed(run: () => Promise<number>): Promise<Sample> {
  const started = performance.now();
  const bytes = await run();
  return { ms: performance.now() - started, bytes };
}

const upstream = await startFakeFlyflow({ recordings: new Map([[CALL_ID, await recording()]]) });
const body = upstream.recording(CALL_ID)!;
const key: CacheEncryptionConfig = { key: randomBytes(32), previousKeys: [] };
const httpRows: Cell[][] = [];
const fileRows: Cell[][] = [];
const rangeStart = () => Math.floor(Math.random() * (body.length - RANGE_BYTES));

for (const mode of ['plain', 'encrypted'] as const) {
  const dir = await makeTempDir(`rg-bench-encryption-${mode}-`);
  const encryption = mode === 'encrypted' ? key : undefined;
  let gateway: RunningGateway | undefined;
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  try {
    gateway = await startGateway(
      testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, cache: { maxMemoryBytes: 1024 * 1024, ...(encryption ? { encryption } : {}) } }),
    );
    const url = `${gateway.baseUrl}/v1/call/recording/${CALL_ID}.mp3`;
    const auth = { authorization: `Bearer ${ACME_KEY}` };
    await get(agent, url, auth);
    await gateway.gateway.downloads.idle();
    await gateway.gateway.analyser.idle();

    const full = async () => {
      const sample = await timed(async () => {
        const answer = await get(agent, url, auth);
        return answer.status === 200 && answer.body.equals(body) ? answer.body.length : -1;
      });
      return sample.bytes < 0 ? undefined : sample;
    };
    const range = async () => {
      const start = rangeStart();
      const sample = await timed(async () => {
        const answer = await get(agent, url, { ...auth, range: `bytes=${start}-${start + RANGE_BYTES - 1}` });
        return answer.status === 206 && answer.body.equals(body.subarray(start, start + RANGE_BYTES)) ? answer.body.length : -1;
      });
      return sample.bytes < 0 ? undefined : sample;
    };
    const warmUp = Math.min(1, SECONDS * 0.2);
    for (const [name, once] of [
      [`full ${fmt(SIZE / 1024 ** 2, 0)} MiB`, full],
      ['64 KiB range', range],
    ] as const) {
      await measure(warmUp, once);
      httpRows.push(row(name, mode, await measure(SECONDS, once), 'ms'));
    }

    // The file alone: open, read, close, as a disk hit does, without HTTP.
    const disk: DiskStore = createDiskStore(dir, { encryption });
    const namespace = namespaceFor(upstream.baseUrl);
    const readRange = async () =>
      timed(async () => {
        const file = (await disk.openRecording(namespace, String(CALL_ID)))!;
        try {
          const buffer = Buffer.allocUnsafe(RANGE_BYTES);
          return await file.read(buffer, rangeStart());
        } finally {
          await file.close();
        }
      });
    const readWhole = async () =>
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
    for (const [name, once] of [
      ['file: 64 KiB range', readRange],
      [`file: whole ${fmt(SIZE / 1024 ** 2, 0)} MiB in 256 KiB reads`, readWhole],
    ] as const) {
      await measure(warmUp, once);
      fileRows.push(row(name, mode, await measure(SECONDS, once), 'µs'));
    }
  } finally {
    agent.destroy();
    await gateway?.close();
    await removeDir(dir);
  }
}
await upstream.close();

const header = (unit: string) => ['case', 'storage', 'count', 'per s', 'MB/s', `p50 ${unit}`, `p99 ${unit}`, 'errors'];
console.log(
  `# encryption at rest: disk hits, ${fmt(SIZE / 1024 ** 2, 0)} MiB recording, concurrency ${CONCURRENCY}, ${SECONDS} s per case\n`,
);
console.log('## over HTTP (a gateway on 127.0.0.1, keep-alive)\n');
console.log(markdownTable(header('ms'), httpRows));
console.log('\n## the stored file alone (DiskStore.openRecording, read, close)\n');
console.log(markdownTable(header('µs'), fileRows));
console.log(
  '\nEncrypted files are read in 64 KiB AES-256-GCM chunks: a 64 KiB range decrypts one or two chunks, a whole file every chunk once.' +
    ' Compare each case plain against encrypted; the difference is the cost of encryption on that path.',
);
