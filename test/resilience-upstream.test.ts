import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  makeTempDir,
  removeDir,
  startGateway,
  tempFilesIn,
  testConfig,
  type RunningGateway,
  type TestConfigOptions,
  bytesOf,
} from '../dev/gateway-harness.js';
import { eventually, storedRecordingFiles } from '../dev/recording-bytes.js';
import { createLogger, type Logger } from '../src/logger.js';
import { frameHeaderAt } from '../src/recordings/analysis/mp3-header.js';

let upstream: FakeFlyflow;

/** Where the MPEG frame that ends at or after `offset` ends (walking the frames from the ID3v2 tag's end). */
function frameEndNear(mp3: Buffer, offset: number): number {
  let at = mp3.subarray(0, 3).toString('latin1') === 'ID3' ? 10 + ((mp3[6]! << 21) | (mp3[7]! << 14) | (mp3[8]! << 7) | mp3[9]!) : 0;
  while (at < offset) at += frameHeaderAt(mp3, at)!.length!;
  return at;
}
let dir: string;
const running: RunningGateway[] = [];

async function start(options: Partial<TestConfigOptions> = {}, logger?: Logger): Promise<RunningGateway> {
  const gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, ...options }), logger ? { logger } : {});
  running.push(gateway);
  return gateway;
}

/** The contract's error shape, read from a response. */
async function errorOf(response: Response): Promise<{ status: number; contentType: string | null; body: unknown }> {
  return { status: response.status, contentType: response.headers.get('content-type'), body: await response.json() };
}

const jsonError = (status: number, error: string) => ({
  status,
  contentType: 'application/json',
  body: { error, message: expect.any(String) as unknown },
});

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir('rg-resilience-');
});

afterEach(async () => {
  for (const gateway of running.splice(0)) await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

/** The circuit of the acme tenant's upstream account. */
function acmeCircuit(gateway: RunningGateway) {
  return gateway.gateway.circuits.forAccount(gateway.gateway.tenants.byId('acme')!.namespace);
}

describe('circuit breaker', () => {
  test('after repeated upstream failures, uncached recordings fail fast with 503 and Retry-After while cached ones are still served; one probe after the cooldown closes the circuit', async () => {
    const logged: Array<{ level: number; msg: string; account?: string }> = [];
    const logger = createLogger({ level: 'info', destination: { write: (line: string) => void logged.push(JSON.parse(line)) } });
    const gateway = await start({ upstream: { circuitBreaker: { failureThreshold: 2, cooldownSeconds: 1 } } }, logger);
    const cached = await gateway.fetch('/v1/call/recording/1.mp3');
    expect((await bytesOf(cached)).equals(upstream.recording(1)!)).toBe(true);
    await gateway.gateway.downloads.idle();

    upstream.setBehaviour(2, { kind: 'status', status: 500 });
    for (let failure = 0; failure < 2; failure++) {
      expect(await errorOf(await gateway.fetch('/v1/call/recording/2.mp3'))).toEqual(jsonError(502, 'Bad Gateway'));
    }
    expect(upstream.recordingRequests(2)).toHaveLength(2);
    const openedAt = Date.now();

    const failFast = await gateway.fetch('/v1/call/recording/3.mp3');
    expect(failFast.headers.get('retry-after')).toBe('1');
    expect(await errorOf(failFast)).toEqual(jsonError(503, 'Service Unavailable'));
    expect(upstream.recordingRequests(3)).toHaveLength(0);
    expect(acmeCircuit(gateway).state).toBe('open');

    const hit = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(hit.status).toBe(200);
    expect(hit.headers.get('cache-status')).toContain('hit');
    expect((await bytesOf(hit)).equals(upstream.recording(1)!)).toBe(true);

    // After the cooldown, one probe goes through; its success closes the circuit.
    upstream.setBehaviour(2, undefined);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, openedAt + 1_100 - Date.now())));
    const probe = await gateway.fetch('/v1/call/recording/3.mp3');
    expect(probe.status).toBe(200);
    expect((await bytesOf(probe)).equals(upstream.recording(3)!)).toBe(true);
    expect(upstream.recordingRequests(3)).toHaveLength(1);
    expect(acmeCircuit(gateway).state).toBe('closed');
    // Each change is in the log, by the account's short label: a gateway that recovered on its own says so.
    const account = gateway.gateway.tenants.byId('acme')!.namespace.slice(0, 12);
    expect(
      logged.filter((line) => line.msg.startsWith('upstream circuit')).map((line) => [line.level, line.account, line.msg.split(':')[0]]),
    ).toEqual([
      [40, account, 'upstream circuit open'],
      [30, account, 'upstream circuit half-open'],
      [30, account, 'upstream circuit closed'],
    ]);

    const after = await gateway.fetch('/v1/call/recording/2.mp3');
    expect(after.status).toBe(200);
    expect((await bytesOf(after)).equals(upstream.recording(2)!)).toBe(true);
  });
});

describe('download concurrency cap', () => {
  test('with max_concurrent_downloads 1, other recordings wait without reaching upstream until the running download ends, then go in the order they came', async () => {
    const gateway = await start({ upstream: { maxConcurrentDownloads: 1 } });
    upstream.setBehaviour(1, { kind: 'gate' });
    const first = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(first.status).toBe(200);
    const firstBody = bytesOf(first);

    const waiting: Array<Promise<Response>> = [];
    for (const id of [3, 2, 4]) {
      waiting.push(gateway.fetch(`/v1/call/recording/${id}.mp3`));
      // Each joins the queue before the next is sent, so the order is the order of arrival.
      expect(await eventually(() => gateway.gateway.downloads.inFlight === waiting.length + 1)).toBe(true);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(upstream.recordingRequests().map((request) => request.id)).toEqual([1]);

    upstream.release(1);
    expect((await firstBody).equals(upstream.recording(1)!)).toBe(true);
    const answers = await Promise.all(waiting);
    for (const [i, id] of [3, 2, 4].entries()) {
      expect(answers[i]!.status).toBe(200);
      expect((await bytesOf(answers[i]!)).equals(upstream.recording(id)!)).toBe(true);
    }
    expect(upstream.recordingRequests().map((request) => request.id)).toEqual([1, 3, 2, 4]);
  });
});

describe('recording size limit', () => {
  test('an upstream body without Content-Length that grows past max_recording_bytes is a 502 and nothing is stored', async () => {
    const size = upstream.recording(4)!.length;
    const gateway = await start({ cache: { maxRecordingBytes: Math.floor(size / 3) } });
    upstream.setBehaviour(4, { kind: 'no-content-length' });

    const response = await gateway.fetch('/v1/call/recording/4.mp3');
    expect(await errorOf(response)).toEqual(jsonError(502, 'Bad Gateway'));
    await gateway.gateway.downloads.idle();
    expect(await storedRecordingFiles(dir)).toEqual([]);
    expect(await tempFilesIn(dir)).toEqual([]);

    // Nothing was cached: the next request asks upstream again, and is refused the same way.
    const again = await gateway.fetch('/v1/call/recording/4.mp3');
    expect(again.status).toBe(502);
    await again.arrayBuffer();
    expect(upstream.recordingRequests(4)).toHaveLength(2);
  });

  test('an upstream Content-Length over max_recording_bytes is refused with 502 before the body is read', async () => {
    const size = upstream.recording(4)!.length;
    const gateway = await start({ cache: { maxRecordingBytes: size - 1 } });
    expect(await errorOf(await gateway.fetch('/v1/call/recording/4.mp3'))).toEqual(jsonError(502, 'Bad Gateway'));
    await gateway.gateway.downloads.idle();
    expect(await storedRecordingFiles(dir)).toEqual([]);
    expect(await tempFilesIn(dir)).toEqual([]);
  });
});

describe('an upstream body framed by its connection only (neither Content-Length nor chunks)', () => {
  test('whole: served and stored', async () => {
    const gateway = await start();
    upstream.setBehaviour(1, { kind: 'close-delimited' });
    const response = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(response.status).toBe(200);
    expect((await bytesOf(response)).equals(upstream.recording(1)!)).toBe(true);
    await gateway.gateway.downloads.idle();
    expect(await storedRecordingFiles(dir)).toHaveLength(1);
  });

  test('closed inside an MP3 frame: the answer is cut short and nothing is stored; the next request fetches it whole', async () => {
    const gateway = await start();
    upstream.setBehaviour(1, { kind: 'close-delimited', afterBytes: 10_000 });
    const response = await gateway.fetch('/v1/call/recording/1.mp3');
    // The 10 KB and the close come at once: whether the head went out before the close depends on timing.
    if (response.status === 200) await expect(bytesOf(response)).rejects.toThrow();
    else expect(await errorOf(response)).toEqual(jsonError(502, 'Bad Gateway'));
    await gateway.gateway.downloads.idle();
    expect(await storedRecordingFiles(dir)).toEqual([]);
    expect(await tempFilesIn(dir)).toEqual([]);

    // A cut before the client had a byte is retried, as a reset is: each try was cut the same way.
    const tries = upstream.recordingRequests(1).length;
    expect(tries).toBeGreaterThanOrEqual(1);
    upstream.setBehaviour(1, undefined);
    const again = await gateway.fetch('/v1/call/recording/1.mp3');
    expect((await bytesOf(again)).equals(upstream.recording(1)!)).toBe(true);
    expect(upstream.recordingRequests(1)).toHaveLength(tries + 1);
  });

  test('reset by the upstream at the end of a frame: the answer is not taken for whole and nothing is stored', async () => {
    const gateway = await start();
    const recording = upstream.recording(1)!;
    upstream.setBehaviour(1, { kind: 'close-delimited', afterBytes: frameEndNear(recording, 10_000), reset: true });
    const response = await gateway.fetch('/v1/call/recording/1.mp3');
    if (response.status === 200) await expect(bytesOf(response)).rejects.toThrow();
    else expect(await errorOf(response)).toEqual(jsonError(502, 'Bad Gateway'));
    await gateway.gateway.downloads.idle();
    expect(await storedRecordingFiles(dir)).toEqual([]);
  });
});

describe('an upstream body that stalls', () => {
  test('silent past body_idle_timeout_ms: the answer is cut short, the upstream connection closed and nothing stored; the next request fetches it whole', async () => {
    const gateway = await start({ upstream: { bodyIdleTimeoutMs: 300 } });
    // The head and a quarter of the body, then nothing until released.
    upstream.setBehaviour(2, { kind: 'gate' });

    const response = await gateway.fetch('/v1/call/recording/2.mp3');
    expect(response.status).toBe(200);
    await expect(bytesOf(response)).rejects.toThrow();
    expect(await eventually(() => upstream.openConnections() === 0)).toBe(true);
    await gateway.gateway.downloads.idle();
    expect(await storedRecordingFiles(dir)).toEqual([]);
    expect(await tempFilesIn(dir)).toEqual([]);

    upstream.setBehaviour(2, undefined);
    const again = await gateway.fetch('/v1/call/recording/2.mp3');
    expect((await bytesOf(again)).equals(upstream.recording(2)!)).toBe(true);
    expect(upstream.recordingRequests(2)).toHaveLength(2);
  });
  test('silent before any byte of the range asked for: a JSON 504, not a 206 head cut with no byte', async () => {
    const gateway = await start({ upstream: { bodyIdleTimeoutMs: 300 } });
    const size = upstream.recording(2)!.length;
    // The gate holds everything after the first quarter: the last 100 bytes never come.
    upstream.setBehaviour(2, { kind: 'gate' });

    const response = await gateway.fetch('/v1/call/recording/2.mp3', { headers: { range: `bytes=${size - 100}-` } });
    expect(await errorOf(response)).toEqual(jsonError(504, 'Gateway Timeout'));
    await gateway.gateway.downloads.idle();
    expect(await storedRecordingFiles(dir)).toEqual([]);
  });
});

describe('upstream retries', () => {
  test('an upstream that answers 503 twice and then 200 still delivers the recording', async () => {
    const gateway = await start();
    upstream.setBehaviour(1, { kind: 'status', status: 503, times: 2 });
    const response = await gateway.fetch('/v1/call/recording/1.mp3');
    expect(response.status).toBe(200);
    expect((await bytesOf(response)).equals(upstream.recording(1)!)).toBe(true);
    expect(upstream.recordingRequests(1)).toHaveLength(3);
  });

  test('an upstream that answers 503 forever gives a 502, after retrying', async () => {
    const gateway = await start();
    upstream.setBehaviour(2, { kind: 'status', status: 503 });
    expect(await errorOf(await gateway.fetch('/v1/call/recording/2.mp3'))).toEqual(jsonError(502, 'Bad Gateway'));
    await gateway.gateway.downloads.idle();
    expect(upstream.recordingRequests(2)).toHaveLength(3);
  });

  // The download retries only a body that broke; open() has already retried the head itself.
  test('an upstream that answers 503 forever is asked exactly 3 times, not 3 times 3', async () => {
    const gateway = await start();
    upstream.setBehaviour(2, { kind: 'status', status: 503 });
    expect((await gateway.fetch('/v1/call/recording/2.mp3')).status).toBe(502);
    await gateway.gateway.downloads.idle();
    expect(upstream.recordingRequests(2)).toHaveLength(3);
  });

  test('a connection reset before the first byte reached the client is retried transparently', async () => {
    const gateway = await start();
    upstream.setBehaviour(3, { kind: 'reset', afterBytes: 0, times: 1 });
    const response = await gateway.fetch('/v1/call/recording/3.mp3');
    expect(response.status).toBe(200);
    expect((await bytesOf(response)).equals(upstream.recording(3)!)).toBe(true);
    expect(upstream.recordingRequests(3)).toHaveLength(2);
    await gateway.gateway.downloads.idle();
    expect(await tempFilesIn(dir)).toEqual([]);
  });
});
