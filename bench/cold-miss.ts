/**
 * Scenario 6: many callers for one recording nobody has fetched yet, with an
 * upstream that drips the body. One caller starts the download; the rest
 * arrive while it is under way and must join it (one upstream request), get
 * the bytes already received at once, and finish when the download does.
 * Runs in the load process, like every other client, so the gateway's
 * event loop only serves.
 */
import { createHash } from 'node:crypto';
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { summariseLatencies, type LatencySummary } from './load.js';

export interface ColdMissOptions {
  baseUrl: string;
  path: string;
  headers: Record<string, string>;
  /** sha256 (hex) and length of the recording: every caller must receive exactly these bytes. */
  expected: { sha256: string; size: number };
  callers: number;
  /** When the joiners are sent, after the first caller. */
  joinAfterMs: number;
}

interface Timing {
  /** From sending the request to the response head. */
  headMs: number;
  /** From sending the request to the first body byte. */
  ttfbMs: number;
  totalMs: number;
  /** Since the first caller was sent, when this one finished. */
  finishedAtMs: number;
  cacheStatus: string;
  ok: boolean;
  error?: string;
}

export interface ColdMissResult {
  first: Timing;
  joiners: { headMs: LatencySummary; ttfbMs: LatencySummary; totalMs: LatencySummary; cacheStatuses: string[] };
  /** First request sent to last body byte received, over all callers. */
  wallMs: number;
  errors: string[];
}

function fetchTimed(
  agent: Agent,
  url: URL,
  headers: Record<string, string>,
  expected: ColdMissOptions['expected'],
  origin: number,
): Promise<Timing> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const fail = (error: string) => {
      const now = performance.now();
      resolve({ headMs: Number.NaN, ttfbMs: Number.NaN, totalMs: now - t0, finishedAtMs: now - origin, cacheStatus: '', ok: false, error });
    };
    const req = request({ agent, host: url.hostname, port: url.port, path: url.pathname + url.search, headers }, (res) => {
      const headMs = performance.now() - t0;
      let ttfb = Number.NaN;
      const hash = createHash('sha256');
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        if (Number.isNaN(ttfb)) ttfb = performance.now() - t0;
        bytes += chunk.length;
        hash.update(chunk);
      });
      res.on('error', (error) => fail(error.message));
      res.on('end', () => {
        const now = performance.now();
        const same = bytes === expected.size && hash.digest('hex') === expected.sha256;
        const ok = res.statusCode === 200 && same;
        resolve({
          headMs,
          ttfbMs: ttfb,
          totalMs: now - t0,
          finishedAtMs: now - origin,
          cacheStatus: String(res.headers['cache-status'] ?? ''),
          ok,
          ...(ok ? {} : { error: `status ${res.statusCode}, ${bytes} bytes${same ? '' : ' (body differs from upstream)'}` }),
        });
      });
    });
    req.on('error', (error) => fail(error.message));
    req.end();
  });
}

export async function runColdMiss(options: ColdMissOptions): Promise<ColdMissResult> {
  const url = new URL(options.path, options.baseUrl);
  const agent = new Agent({ keepAlive: false, maxSockets: options.callers });
  try {
    const origin = performance.now();
    const firstPromise = fetchTimed(agent, url, options.headers, options.expected, origin);
    await sleep(options.joinAfterMs);
    const joinerPromises = Array.from({ length: options.callers - 1 }, () =>
      fetchTimed(agent, url, options.headers, options.expected, origin),
    );
    const [first, ...joiners] = await Promise.all([firstPromise, ...joinerPromises]);
    const all = [first!, ...joiners];
    const okJoiners = joiners.filter((timing) => timing.ok);
    return {
      first: first!,
      joiners: {
        headMs: summariseLatencies(okJoiners.map((timing) => timing.headMs)),
        ttfbMs: summariseLatencies(okJoiners.map((timing) => timing.ttfbMs)),
        totalMs: summariseLatencies(okJoiners.map((timing) => timing.totalMs)),
        cacheStatuses: [...new Set(joiners.map((timing) => timing.cacheStatus))],
      },
      wallMs: Math.max(...all.map((timing) => timing.finishedAtMs)),
      errors: [...new Set(all.flatMap((timing) => (timing.error ? [timing.error] : [])))],
    };
  } finally {
    agent.destroy();
  }
}
