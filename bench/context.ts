/**
 * What every scenario shares: the context, the recordings it uses, and the
 * helpers that turn a load case into a checked, measured table row.
 */
import { performance } from 'node:perf_hooks';
import type { FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, makeTempDir, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import type { LoadJob, LoadResult } from './load.js';
import type { LoadProcess } from './load-process.js';
import { LOAD_HEADER, loadRow, markdownTable } from './table.js';

export interface BenchContext {
  upstream: FakeFlyflow;
  load: LoadProcess;
  /** The shared gateway: default 64 MiB memory tier, recordings 1 and 4 already in memory. */
  gateway: RunningGateway;
  durationMs: number;
  warmupMs: number;
  /** How many recordings scenario 4 hits for the first time, per concurrency level. */
  firstHits: number;
  /** Recording bytes by id, as the fake upstream serves them. */
  bytes: Map<number, Buffer>;
}

export interface Scenario {
  id: number;
  title: string;
  run(ctx: BenchContext): Promise<string>;
}

export const SMALL_ID = 1;
export const MEDIUM_ID = 4;
export const LARGE_ID = 200;
export const LARGE_BYTES = 2 * 1024 * 1024;
export const COLD_ID = 600;
export const COLD_BYTES = 512 * 1024;
export const FIRST_HIT_BASE_ID = 1000;
export const CONCURRENCY = 32;
export const LARGE_CONCURRENCY = 16;
export const SMALL_MEMORY_TIER_BYTES = 1024 * 1024;
export const AUTH = { authorization: `Bearer ${ACME_KEY}` };

export const recordingPath = (id: number) => `/v1/call/recording/${id}.mp3`;

/** A recording of `size` bytes: `seed` repeated. It starts like `seed`, which is all the MP3 check reads. */
export function repeatTo(seed: Buffer, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  for (let at = 0; at < size; at += seed.length) seed.copy(out, at, 0, Math.min(seed.length, size - at));
  return out;
}

/** Fetches a recording once, whole, and waits until the gateway has stored it. */
export async function prime(gateway: RunningGateway, id: number): Promise<void> {
  const response = await gateway.fetch(recordingPath(id));
  await response.arrayBuffer();
  if (response.status !== 200) throw new Error(`priming recording ${id}: status ${response.status}`);
  await gateway.gateway.downloads.idle();
}

export function job(ctx: BenchContext, id: number, expect: LoadJob['expect'], extra: Partial<LoadJob> = {}): LoadJob {
  return {
    baseUrl: ctx.gateway.baseUrl,
    paths: [recordingPath(id)],
    headers: AUTH,
    concurrency: CONCURRENCY,
    durationMs: ctx.durationMs,
    warmupMs: ctx.warmupMs,
    expect,
    ...extra,
  };
}

export const sizeOf = (ctx: BenchContext, id: number) => ctx.bytes.get(id)!.length;
export const memoryHit = (ctx: BenchContext, id: number): LoadJob['expect'] => ({
  status: 200,
  contentLength: sizeOf(ctx, id),
  cacheStatus: 'detail=memory',
});

/** Runs `use` with gateways on a fresh temporary directory, closed and removed afterwards. */
export async function withGateway<T>(
  ctx: BenchContext,
  maxMemoryBytes: number | undefined,
  use: (start: () => Promise<RunningGateway>) => Promise<T>,
): Promise<T> {
  const dir = await makeTempDir('rg-bench-');
  const open = new Set<RunningGateway>();
  const start = async () => {
    const config = testConfig({
      dir,
      upstreamBaseUrl: ctx.upstream.baseUrl,
      ...(maxMemoryBytes === undefined ? {} : { cache: { maxMemoryBytes } }),
    });
    const gateway = await startGateway(config);
    open.add(gateway);
    // Closing removes it from the set, so the cleanup below never closes it twice.
    return {
      ...gateway,
      async close() {
        open.delete(gateway);
        await gateway.close();
      },
    };
  };
  try {
    return await use(start);
  } finally {
    for (const gateway of open) await gateway.close().catch(() => {});
    await removeDir(dir);
  }
}

export interface MeasuredCase {
  label: string;
  result: LoadResult;
  /** This process's CPU over the case, as % of one core. */
  gatewayCpu: number;
}

/** One load case, with this process's CPU over it. */
export async function measure(ctx: BenchContext, label: string, loadJob: LoadJob): Promise<MeasuredCase> {
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  const result = await ctx.load.run(loadJob);
  const cpu = process.cpuUsage(cpuBefore);
  return { label, result, gatewayCpu: (100 * (cpu.user + cpu.system)) / 1000 / (performance.now() - started) };
}

/** The throughput table, then the note and any error messages. */
export function render(rows: MeasuredCase[], note: string): string {
  const table = markdownTable(
    LOAD_HEADER,
    rows.map(({ label, result, gatewayCpu }) => loadRow(label, result, gatewayCpu)),
  );
  const errors = rows.flatMap(({ label, result }) => result.errorSamples.map((sample) => `- errors in "${label}": ${sample}`));
  return `${table}\n\n${note}${errors.length ? `\n\n${errors.join('\n')}` : ''}`;
}

/** Measures the cases one after another and renders them. */
export async function loadTable(ctx: BenchContext, cases: Array<{ label: string; job: LoadJob }>, note: string): Promise<string> {
  const rows: MeasuredCase[] = [];
  for (const { label, job: loadJob } of cases) rows.push(await measure(ctx, label, loadJob));
  return render(rows, note);
}
