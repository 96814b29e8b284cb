/**
 * Cold misses for the peers bench: sequential GETs for recordings nobody has
 * asked for, each target in turn (the upstream directly, then each server),
 * timing the first body byte on a warm keep-alive connection. What a server
 * adds to a cold miss is its median minus the upstream's own.
 */
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { median } from './stats.js';

const REQUEST_TIMEOUT_MS = 15_000;
// Lets each server finish storing (file writes, fsync) before the next target's request.
const PAUSE_MS = 50;
// GETs of the warm path per target first: its connection open, the client's and each server's code paths warm.
const WARM_REQUESTS = 5;

export interface ColdTarget {
  label: string;
  /** `http://127.0.0.1:PORT` */
  origin: string;
  headers: Record<string, string>;
}

export interface ColdResult {
  /** First-byte times of the answers that were right, ms. */
  firstByteMs: number[];
  medianMs: number;
  errors: string[];
}

interface Timed {
  firstByteMs: number;
  error: string | undefined;
}

/** One GET read to its end: the time to its first body byte, and what was wrong with the answer, if anything. */
function timedGet(agent: Agent, url: string, headers: Record<string, string>, size: number): Promise<Timed> {
  return new Promise((resolve) => {
    const started = performance.now();
    let firstByteMs = Number.NaN;
    let bytes = 0;
    const req = request(url, { agent, headers }, (res) => {
      res.on('data', (chunk: Buffer) => {
        if (bytes === 0) firstByteMs = performance.now() - started;
        bytes += chunk.length;
      });
      res.once('error', (error) => resolve({ firstByteMs, error: error.message }));
      res.once('end', () => {
        const wrong = res.statusCode !== 200 ? `status ${res.statusCode}` : bytes !== size ? `${bytes} bytes, expected ${size}` : undefined;
        resolve({ firstByteMs, error: wrong });
      });
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.once('error', (error) => resolve({ firstByteMs, error: error.message }));
    req.end();
  });
}

/**
 * `warmMisses` unmeasured rounds, then `requests` measured ones; in each,
 * every target gets a GET for an id of its own that nobody has fetched (from
 * `firstId` on, 100,000 apart per target). GETs of `warmPath` (cached by
 * then) come first. The unmeasured misses are what a server running for a
 * while has behind it: by then V8 has compiled much of a Node server's miss
 * path, which a new process interprets (the gateway's first 20 misses took
 * 0.4–1.1 ms more than its next 60–80, median against median, on this
 * project's VM).
 */
export async function measureColdMisses(
  targets: ColdTarget[],
  options: { requests: number; warmMisses: number; firstId: number; size: number; warmPath: string },
): Promise<Map<string, ColdResult>> {
  const agents = targets.map(() => new Agent({ keepAlive: true, maxSockets: 1 }));
  const times = targets.map(() => [] as number[]);
  const errors = targets.map(() => [] as string[]);
  try {
    for (let warm = 0; warm < WARM_REQUESTS; warm++) {
      for (const [t, target] of targets.entries()) {
        await timedGet(agents[t]!, `${target.origin}${options.warmPath}`, target.headers, options.size);
      }
    }
    for (let round = 0; round < options.warmMisses + options.requests; round++) {
      const measured = round >= options.warmMisses;
      for (const [t, target] of targets.entries()) {
        const id = options.firstId + t * 100_000 + round;
        const timed = await timedGet(agents[t]!, `${target.origin}/v1/call/recording/${id}.mp3`, target.headers, options.size);
        if (!measured && timed.error === undefined) {
          await sleep(PAUSE_MS);
          continue;
        }
        if (timed.error === undefined && Number.isFinite(timed.firstByteMs)) times[t]!.push(timed.firstByteMs);
        else errors[t]!.push(`id ${id}: ${timed.error ?? 'no body'}`);
        await sleep(PAUSE_MS);
      }
    }
  } finally {
    for (const agent of agents) agent.destroy();
  }
  return new Map(targets.map((target, t) => [target.label, { firstByteMs: times[t]!, medianMs: median(times[t]!), errors: errors[t]! }]));
}
