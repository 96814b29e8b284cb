/**
 * One download as a browser or a slow player would do it: node:http on its
 * own connection, counting (and optionally hashing) the body, optionally
 * capped to a read rate by pausing the response, so TCP pushes back on the
 * gateway instead of this process buffering.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import { performance } from 'node:perf_hooks';

export interface ReadOptions {
  url: string;
  headers: Record<string, string>;
  /** Read no faster than this; unlimited when absent. */
  bytesPerSecond?: number;
  hash?: boolean;
  signal: AbortSignal;
}

export interface ReadResult {
  status: number;
  cacheStatus: string;
  /** The Content-Length header, or -1. */
  contentLength: number;
  bytes: number;
  sha256: string | undefined;
  firstByteMs: number;
  totalMs: number;
  /** How often the reader stopped taking bytes to keep to its rate. */
  pauses: number;
  error: string | undefined;
}

// Pausing for less than this is pointless: timers are not that precise.
const MIN_PAUSE_MS = 5;

export function readRecording(options: ReadOptions): Promise<ReadResult> {
  const { bytesPerSecond } = options;
  return new Promise((resolve) => {
    const started = performance.now();
    const hash = options.hash ? createHash('sha256') : undefined;
    const result: ReadResult = {
      status: 0,
      cacheStatus: '',
      contentLength: -1,
      bytes: 0,
      sha256: undefined,
      firstByteMs: Number.NaN,
      totalMs: Number.NaN,
      pauses: 0,
      error: undefined,
    };
    let settled = false;
    let resumeTimer: NodeJS.Timeout | undefined;
    const finish = (error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(resumeTimer);
      result.totalMs = performance.now() - started;
      result.error = error;
      if (hash && !error) result.sha256 = hash.digest('hex');
      resolve(result);
    };
    const request = http.get(options.url, { headers: options.headers, agent: false, signal: options.signal }, (response) => {
      result.status = response.statusCode ?? 0;
      result.cacheStatus = String(response.headers['cache-status'] ?? '');
      result.contentLength = Number(response.headers['content-length'] ?? -1);
      response.on('data', (chunk: Buffer) => {
        if (result.bytes === 0) result.firstByteMs = performance.now() - started;
        result.bytes += chunk.length;
        hash?.update(chunk);
        if (bytesPerSecond === undefined || response.isPaused()) return;
        const aheadMs = (result.bytes / bytesPerSecond) * 1000 - (performance.now() - started);
        if (aheadMs < MIN_PAUSE_MS) return;
        response.pause();
        result.pauses++;
        resumeTimer = setTimeout(() => response.resume(), aheadMs);
      });
      response.on('end', () => finish());
      response.on('error', (error) => finish(error.message));
      response.on('close', () => {
        if (!response.complete) finish('connection closed before the end of the body');
      });
    });
    request.on('error', (error) => finish(error.message));
  });
}
