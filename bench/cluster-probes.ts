/**
 * The clients of `npm run bench:cluster` that are not a load loop: many cold
 * requests at once, one late joiner timed to its first body byte, and the CPU
 * a process group used (read from /proc, Linux only).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { request } from 'node:http';
import { performance } from 'node:perf_hooks';

// USER_HZ: the unit of utime/stime in /proc/<pid>/stat.
/** No single bench request may hang the run. */
const REQUEST_TIMEOUT_MS = 60_000;
/** What every Cache-Status of the gateway starts with; left out when answers are counted by kind. */
const CACHE_NAME_PREFIX = 'recording-gateway; ';

/** One GET read to its end and compared with the bytes it should carry, chunk by chunk (never held whole). */
export interface CheckedAnswer {
  status: number;
  cacheStatus: string;
  /** Milliseconds from sending the request to its first body byte. */
  firstByteMs: number;
  /** Milliseconds from sending the request to its last body byte. */
  totalMs: number;
  /** Why the answer is wrong (status, length or bytes), or undefined when it is right. */
  problem: string | undefined;
}

/** GETs `url` on a fresh connection and checks that the body is exactly `expected`. */
export function checkedGet(url: string, headers: Record<string, string>, expected: Buffer): Promise<CheckedAnswer> {
  return new Promise((resolve) => {
    const sent = performance.now();
    let firstByteMs = Number.NaN;
    let received = 0;
    let mismatch: string | undefined;
    let settled = false;
    const finish = (status: number, responseHeaders: IncomingHttpHeaders | undefined, problem: string | undefined) => {
      if (settled) return;
      settled = true;
      const cacheStatus = String(responseHeaders?.['cache-status'] ?? '-');
      resolve({ status, cacheStatus, firstByteMs, totalMs: performance.now() - sent, problem });
    };
    const req = request(url, { headers, agent: false }, (response) => {
      const status = response.statusCode ?? 0;
      response.on('data', (chunk: Buffer) => {
        if (received === 0) firstByteMs = performance.now() - sent;
        // Comparing in place keeps 100 concurrent 20 MB answers out of memory.
        if (mismatch === undefined && !chunk.equals(expected.subarray(received, received + chunk.length))) {
          mismatch = `bytes differ from the upstream's after offset ${received}`;
        }
        received += chunk.length;
      });
      response.once('end', () => {
        const problem =
          status !== 200
            ? `status ${status}`
            : received !== expected.length
              ? `body ${received} bytes, expected ${expected.length}`
              : mismatch;
        finish(status, response.headers, problem);
      });
      response.once('error', (error) => finish(status, response.headers, error.message));
      response.once('close', () => {
        if (!response.complete) finish(status, response.headers, `connection closed after ${received} body bytes`);
      });
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.once('error', (error) => finish(0, undefined, error.message));
    req.end();
  });
}

/** What `count` concurrent cold requests received. */
export interface FanOutResult {
  /** Answers that were not exactly the recording, with the first few reasons. */
  wrong: number;
  problems: string[];
  /** Answers by Cache-Status (without the cache name), e.g. `fwd=uri-miss; collapsed; detail=peer` → 33. */
  kinds: Map<string, number>;
  /** From the first request sent to the last body byte of the last answer. */
  wallMs: number;
}

/** Sends `count` GETs at once, request i to `urls[i % urls.length]` (round robin), and checks every answer. */
export async function coldFanOut(
  urls: string[],
  path: string,
  headers: Record<string, string>,
  count: number,
  expected: Buffer,
): Promise<FanOutResult> {
  const started = performance.now();
  const answers = await Promise.all(
    Array.from({ length: count }, (_, i) => checkedGet(`${urls[i % urls.length]}${path}`, headers, expected)),
  );
  const wallMs = performance.now() - started;
  const kinds = new Map<string, number>();
  const problems = new Set<string>();
  let wrong = 0;
  for (const answer of answers) {
    const kind = answer.cacheStatus.startsWith(CACHE_NAME_PREFIX) ? answer.cacheStatus.slice(CACHE_NAME_PREFIX.length) : answer.cacheStatus;
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    if (answer.problem === undefined) continue;
    wrong += 1;
    if (problems.size < 3) problems.add(answer.problem);
  }
  return { wrong, problems: [...problems], kinds, wallMs };
}

/** `3 × fwd=uri-miss, 97 × hit; detail=memory`: answers by kind, most common last. */
export function describeKinds(kinds: Map<string, number>): string {
  return [...kinds]
    .sort((a, b) => a[1] - b[1])
    .map(([kind, count]) => `${count} × \`${kind}\``)
    .join(', ');
}

/** Nearest-rank percentile; NaN for no values. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}
