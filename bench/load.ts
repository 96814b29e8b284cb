/**
 * A keep-alive HTTP load generator on node:http alone (no wrk, no autocannon):
 * `concurrency` loops, each with its own socket from one keep-alive Agent,
 * send one request after another for a fixed time or a fixed request count.
 * Every answer is checked (status, Content-Length, body length, optional
 * Content-Range and Cache-Status); a wrong one counts as an error, not a sample.
 */
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';

/** One measured run. Either `durationMs` or `requests` bounds it. */
export interface LoadJob {
  baseUrl: string;
  method?: 'GET' | 'HEAD';
  /** Paths (with query) handed out in turn, so `requests: paths.length` hits each once. */
  paths: string[];
  headers?: Record<string, string>;
  /** A fixed Range header, or a random window of `length` bytes inside a `size`-byte body. */
  range?: { header: string } | { randomLength: number; size: number };
  concurrency: number;
  durationMs?: number;
  requests?: number;
  /** Same load, unrecorded, before the measured run: JIT, sockets and caches warm up. */
  warmupMs?: number;
  expect: {
    status: number;
    /** The Content-Length header every answer must carry (the body length for GET). */
    contentLength: number;
    /** A substring the Cache-Status header must contain, e.g. `detail=memory`. */
    cacheStatus?: string;
  };
}

export interface LatencySummary {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export interface LoadResult {
  concurrency: number;
  requests: number;
  errors: number;
  /** Up to five distinct error messages, to say what went wrong. */
  errorSamples: string[];
  elapsedMs: number;
  bodyBytes: number;
  requestsPerSecond: number;
  megabytesPerSecond: number;
  latencyMs: LatencySummary;
  /** CPU the load process used while measuring, as % of one core: near 100 means the client was the limit. */
  clientCpuPercent: number;
}

const REQUEST_TIMEOUT_MS = 15_000;
const MAX_ERROR_SAMPLES = 5;

interface Outcome {
  ok: boolean;
  error?: string;
  bytes: number;
}

/** Nearest-rank percentile of an ascending array. */
function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function summariseLatencies(values: number[]): LatencySummary {
  const sorted = Float64Array.from(values).sort();
  const total = values.reduce((sum, value) => sum + value, 0);
  return {
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1]! : Number.NaN,
    mean: values.length ? total / values.length : Number.NaN,
  };
}

function rangeFor(job: LoadJob): { header: string; contentRange?: string } | undefined {
  const spec = job.range;
  if (!spec) return undefined;
  if ('header' in spec) return { header: spec.header };
  const start = Math.floor(Math.random() * (spec.size - spec.randomLength + 1));
  const end = start + spec.randomLength - 1;
  return { header: `bytes=${start}-${end}`, contentRange: `bytes ${start}-${end}/${spec.size}` };
}

function sendOne(job: LoadJob, agent: Agent, url: URL, path: string): Promise<Outcome> {
  const method = job.method ?? 'GET';
  const range = rangeFor(job);
  const headers = range ? { ...job.headers, range: range.header } : { ...job.headers };
  return new Promise((resolve) => {
    let settled = false;
    const done = (outcome: Outcome) => {
      if (settled) return;
      settled = true;
      resolve(outcome);
    };
    const req = request({ agent, host: url.hostname, port: url.port, method, path, headers }, (res) => {
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
      });
      res.on('error', (error) => done({ ok: false, error: error.message, bytes }));
      res.on('aborted', () => done({ ok: false, error: 'response aborted', bytes }));
      res.on('end', () => {
        const problem = checkAnswer(job, method, res.statusCode, res.headers, bytes, range?.contentRange);
        done(problem ? { ok: false, error: problem, bytes } : { ok: true, bytes });
      });
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', (error) => done({ ok: false, error: error.message, bytes: 0 }));
    req.end();
  });
}

function checkAnswer(
  job: LoadJob,
  method: string,
  status: number | undefined,
  headers: import('node:http').IncomingHttpHeaders,
  bytes: number,
  contentRange: string | undefined,
): string | undefined {
  const { expect } = job;
  if (status !== expect.status) return `status ${status}, expected ${expect.status}`;
  const declared = Number(headers['content-length']);
  if (declared !== expect.contentLength) return `Content-Length ${headers['content-length']}, expected ${expect.contentLength}`;
  const expectedBytes = method === 'HEAD' ? 0 : expect.contentLength;
  if (bytes !== expectedBytes) return `body ${bytes} bytes, expected ${expectedBytes}`;
  if (contentRange !== undefined && headers['content-range'] !== contentRange) {
    return `Content-Range ${headers['content-range']}, expected ${contentRange}`;
  }
  const cacheStatus = headers['cache-status'];
  if (expect.cacheStatus !== undefined && !String(cacheStatus).includes(expect.cacheStatus)) {
    return `Cache-Status ${cacheStatus}, expected ${expect.cacheStatus}`;
  }
  return undefined;
}

/** Runs the loops until the deadline or the request budget; `record` is false while warming up. */
async function phase(job: LoadJob, agent: Agent, limit: { deadline?: number; requests?: number }, record: boolean): Promise<LoadResult> {
  const url = new URL(job.baseUrl);
  const latencies: number[] = [];
  const errorSamples = new Set<string>();
  let started = 0;
  let errors = 0;
  let bodyBytes = 0;
  const begin = performance.now();
  const cpuBefore = process.cpuUsage();
  let lastEnd = begin;

  const more = () =>
    (limit.requests === undefined || started < limit.requests) && (limit.deadline === undefined || performance.now() < limit.deadline);

  async function loop(): Promise<void> {
    while (more()) {
      const path = job.paths[started % job.paths.length]!;
      started += 1;
      const t0 = performance.now();
      const outcome = await sendOne(job, agent, url, path);
      const t1 = performance.now();
      lastEnd = Math.max(lastEnd, t1);
      if (!record) continue;
      bodyBytes += outcome.bytes;
      if (outcome.ok) {
        latencies.push(t1 - t0);
      } else {
        errors += 1;
        if (errorSamples.size < MAX_ERROR_SAMPLES && outcome.error) errorSamples.add(outcome.error);
      }
    }
  }

  await Promise.all(Array.from({ length: job.concurrency }, loop));
  const cpu = process.cpuUsage(cpuBefore);
  const elapsedMs = lastEnd - begin;
  const seconds = elapsedMs / 1000;
  return {
    concurrency: job.concurrency,
    requests: latencies.length,
    errors,
    errorSamples: [...errorSamples],
    elapsedMs,
    bodyBytes,
    requestsPerSecond: seconds > 0 ? latencies.length / seconds : Number.NaN,
    megabytesPerSecond: seconds > 0 ? bodyBytes / 1e6 / seconds : Number.NaN,
    latencyMs: summariseLatencies(latencies),
    clientCpuPercent: (100 * (cpu.user + cpu.system)) / 1000 / (performance.now() - begin),
  };
}

/** Runs one job: optional warm-up, then the measured phase, over the same keep-alive sockets. */
export async function runLoad(job: LoadJob): Promise<LoadResult> {
  if (job.durationMs === undefined && job.requests === undefined) {
    throw new Error('load: a job needs durationMs or requests');
  }
  if (job.paths.length === 0) throw new Error('load: a job needs at least one path');
  const agent = new Agent({ keepAlive: true, maxSockets: job.concurrency });
  try {
    if (job.warmupMs) await phase(job, agent, { deadline: performance.now() + job.warmupMs }, false);
    return await phase(
      job,
      agent,
      {
        ...(job.durationMs === undefined ? {} : { deadline: performance.now() + job.durationMs }),
        ...(job.requests === undefined ? {} : { requests: job.requests }),
      },
      true,
    );
  } finally {
    agent.destroy();
  }
}
