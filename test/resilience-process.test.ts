import { Agent, type IncomingMessage } from 'node:http';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { hostname } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { capturingLogger } from './support/capturing-logger.js';
import { silentLogger } from '../src/logger.js';
import { startServer } from '../src/server.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  SERVER_KEY,
  acmeTenant,
  makeTempDir,
  rawRequest,
  removeDir,
  startGateway,
  tempFilesIn,
  testConfig,
} from '../dev/gateway-harness.js';
import { startGatewayProcess, stopGatewayProcess, tryConnect, writeGatewayConfig, type GatewayProcess } from '../dev/gateway-process.js';
import { askThenLeave, eventually, openGet, readBody, storedRecordingFiles, syntheticRecording } from '../dev/recording-bytes.js';
import { contractViolation, requestFuzzer, sendRaw, type FuzzRequest } from './support/request-fuzz.js';

const AUTH = { authorization: `Bearer ${ACME_KEY}` };
/** The CLI's default grace period for responses in flight at shutdown (server.ts). */
const CLI_GRACE_MS = 10_000;
/** Set RESILIENCE_FUZZ_SEED to replay a failing run; the seed is in every failure message. */
const FUZZ_SEED = Number(process.env.RESILIENCE_FUZZ_SEED ?? 20_261_130);
const FUZZ_REQUESTS = 1_200;
const FUZZ_CONCURRENCY = 16;
const CANONICAL_RECORDING_PATH = /^\/v1\/call\/recording\/([1-9][0-9]{0,15})\.mp3$/;
/** The log line the gateway writes when the grace period ends with downloads still under way. */
const ABANDONED = /^grace period over; abandoned \d+ downloads? still in progress/;

let upstream: FakeFlyflow;
let dir: string;
let cacheDir: string;
let configPath: string;
const children: GatewayProcess[] = [];

/** Reads `response`'s body once its first bytes have come (in an object: a promise returned bare would be awaited). */
async function bodyUnderWay(response: IncomingMessage): Promise<{ body: ReturnType<typeof readBody> }> {
  let firstBytes!: () => void;
  const started = new Promise<void>((resolve) => (firstBytes = resolve));
  const body = readBody(response, () => firstBytes());
  await started;
  return { body };
}

async function startChild(): Promise<GatewayProcess> {
  const child = await startGatewayProcess(configPath);
  children.push(child);
  return child;
}

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir('rg-resilience-');
  cacheDir = path.join(dir, 'cache');
  configPath = await writeGatewayConfig(dir, { upstreamBaseUrl: upstream.baseUrl, cacheDir });
});

afterEach(async () => {
  for (const child of children.splice(0)) await stopGatewayProcess(child);
  await upstream.close();
  await removeDir(dir);
});

describe('the gateway process', () => {
  test('a gateway killed mid-download serves the whole, correct recording after a restart and leaves no partial file', async () => {
    const recording = syntheticRecording(3 * 1024 * 1024);
    upstream.setRecording(100, recording);
    upstream.setBehaviour(100, { kind: 'slow-body', chunkBytes: 64 * 1024, intervalMs: 25 });

    const first = await startChild();
    const response = await openGet(`${first.url}/v1/call/recording/100.mp3`, AUTH);
    expect(response.statusCode).toBe(200);
    let partReached!: () => void;
    const part = new Promise<void>((resolve) => (partReached = resolve));
    const body = readBody(response, (received) => {
      if (received >= 512 * 1024) partReached();
    });
    await part;
    // Mid-download: the bytes so far sit in a temporary file, nothing is under recordings/.
    expect(await tempFilesIn(cacheDir)).toHaveLength(1);
    first.child.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');
    const cut = await body;
    expect(cut.complete).toBe(false);
    expect(cut.bytes.length).toBeLessThan(recording.length);
    expect(await storedRecordingFiles(cacheDir)).toEqual([]);

    upstream.setBehaviour(100, undefined);
    const second = await startChild();
    expect(await tempFilesIn(cacheDir)).toEqual([]);
    expect(await storedRecordingFiles(cacheDir)).toEqual([]);

    const again = await fetch(`${second.url}/v1/call/recording/100.mp3`, { headers: AUTH });
    expect(again.status).toBe(200);
    expect(again.headers.get('cache-status')).toContain('fwd=uri-miss');
    expect(Buffer.from(await again.arrayBuffer()).equals(recording)).toBe(true);

    // The store lands just after the last byte went out.
    expect(await eventually(async () => (await storedRecordingFiles(cacheDir)).length === 1)).toBe(true);
    const [stored] = await storedRecordingFiles(cacheDir);
    expect(stored!.size).toBe(recording.length);
    expect((await readFile(stored!.path)).equals(recording)).toBe(true);
    expect(await tempFilesIn(cacheDir)).toEqual([]);

    // Until the finished download leaves the registry, a request may still join it (collapsed); then it is a hit.
    const isHit = async () => {
      const head = await fetch(`${second.url}/v1/call/recording/100.mp3`, { method: 'HEAD', headers: AUTH });
      return head.headers.get('cache-status')?.includes('; hit') ?? false;
    };
    expect(await eventually(isHit)).toBe(true);
    const hit = await fetch(`${second.url}/v1/call/recording/100.mp3`, { headers: AUTH });
    expect(hit.headers.get('cache-status')).toContain('; hit');
    expect(Buffer.from(await hit.arrayBuffer()).equals(recording)).toBe(true);
    expect(upstream.recordingRequests(100)).toHaveLength(2);
  });

  test('SIGTERM lets a download in flight finish whole, refuses new connections and exits 0 within the grace period', async () => {
    const recording = syntheticRecording(1024 * 1024);
    upstream.setRecording(101, recording);
    upstream.setBehaviour(101, { kind: 'slow-body', chunkBytes: 64 * 1024, intervalMs: 50 });

    const gateway = await startChild();
    // A keep-alive client, as browsers are.
    const agent = new Agent({ keepAlive: true });
    try {
      const response = await openGet(`${gateway.url}/v1/call/recording/101.mp3`, AUTH, agent);
      expect(response.statusCode).toBe(200);
      let firstBytes!: () => void;
      const started = new Promise<void>((resolve) => (firstBytes = resolve));
      const body = readBody(response, () => firstBytes());
      let bodyEnded = false;
      void body.then(() => (bodyEnded = true));
      await started;

      const signalledAt = Date.now();
      gateway.child.kill('SIGTERM');
      await gateway.waitForLog((line) => line.msg === 'shutting down');
      // The log line comes a moment before the listener closes; a connect in between still lands in the backlog.
      expect(await eventually(async () => (await tryConnect(gateway.port)) === 'refused', 2_000)).toBe(true);
      expect(bodyEnded).toBe(false);

      const received = await body;
      expect(received.complete).toBe(true);
      expect(received.bytes.equals(recording)).toBe(true);

      const { code, signal } = await gateway.exited;
      const shutdownMs = Date.now() - signalledAt;
      expect({ code, signal }).toEqual({ code: 0, signal: null });
      expect(shutdownMs).toBeLessThan(CLI_GRACE_MS);
      // The download finished during shutdown was stored before the process left.
      const stored = await storedRecordingFiles(cacheDir);
      expect(stored.map((file) => file.size)).toEqual([recording.length]);
      expect(await tempFilesIn(cacheDir)).toEqual([]);
    } finally {
      agent.destroy();
    }
  });
});

describe('a graceful stop', () => {
  test.each(['SIGTERM', 'SIGINT'] as const)(
    "after %s the cache directory keeps no empty tmp/ folder of the stopped process; a live process's stays",
    async (signal) => {
      const gateway = await startChild();
      const response = await fetch(`${gateway.url}/v1/call/recording/1.mp3`, { headers: AUTH });
      expect(response.status).toBe(200);
      await response.arrayBuffer();
      await expect.poll(() => storedRecordingFiles(cacheDir).then((files) => files.length)).toBe(1);
      const tmp = path.join(cacheDir, 'tmp');
      const own = `${hostname()}-${gateway.child.pid}-`;
      expect((await readdir(tmp)).filter((name) => name.startsWith(own))).toHaveLength(1);
      // Another process's on this host, alive (this one): never the stopping gateway's to remove.
      const alive = path.join(tmp, `${hostname()}-${process.pid}-0badcafe`);
      await mkdir(alive);

      gateway.child.kill(signal);
      expect(await gateway.exited).toEqual({ code: 0, signal: null });
      expect((await readdir(tmp)).sort()).toEqual([path.basename(alive)]);
      expect(await storedRecordingFiles(cacheDir)).toHaveLength(1);
    },
  );
});

describe('shutdown past the grace period', () => {
  test('SIGTERM: a download still under way when the grace period ends is abandoned, and the process exits 0 soon after the grace', async () => {
    const recording = syntheticRecording(1024 * 1024);
    upstream.setRecording(103, recording);
    // 16 chunks a second apart: the whole body would take 15 s, longer than the grace period.
    upstream.setBehaviour(103, { kind: 'slow-body', chunkBytes: 64 * 1024, intervalMs: 1_000 });

    const gateway = await startChild();
    const response = await openGet(`${gateway.url}/v1/call/recording/103.mp3`, AUTH);
    expect(response.statusCode).toBe(200);
    const { body } = await bodyUnderWay(response);

    const signalledAt = Date.now();
    gateway.child.kill('SIGTERM');
    const { code, signal } = await gateway.exited;
    const shutdownMs = Date.now() - signalledAt;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(shutdownMs).toBeGreaterThanOrEqual(CLI_GRACE_MS - 100);
    expect(shutdownMs).toBeLessThan(CLI_GRACE_MS + 2_500);
    // The client was cut; nothing of the download was stored, and its temporary file is gone.
    expect((await body).complete).toBe(false);
    expect(gateway.logs.find((line) => ABANDONED.test(String(line.msg)))).toMatchObject({ abandoned: 1 });
    expect(await storedRecordingFiles(cacheDir)).toEqual([]);
    expect(await tempFilesIn(cacheDir)).toEqual([]);
    // The next start finds nothing of it and fetches it whole.
    upstream.setBehaviour(103, undefined);
    const again = await startChild();
    const whole = await fetch(`${again.url}/v1/call/recording/103.mp3`, { headers: AUTH });
    expect(Buffer.from(await whole.arrayBuffer()).equals(recording)).toBe(true);
  }, 40_000);

  test('a second SIGTERM ends the grace period at once: the download is abandoned and removed, and the process exits 0', async () => {
    upstream.setRecording(104, syntheticRecording(1024 * 1024));
    upstream.setBehaviour(104, { kind: 'slow-body', chunkBytes: 64 * 1024, intervalMs: 1_000 });
    const gateway = await startChild();
    const response = await openGet(`${gateway.url}/v1/call/recording/104.mp3`, AUTH);
    const { body } = await bodyUnderWay(response);

    const signalledAt = Date.now();
    gateway.child.kill('SIGTERM');
    await gateway.waitForLog((line) => line.msg === 'shutting down');
    gateway.child.kill('SIGTERM');
    const { code, signal } = await gateway.exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalledAt).toBeLessThan(CLI_GRACE_MS / 2);
    expect(gateway.logs.find((line) => line.msg === 'second signal: ending the grace period now')).toMatchObject({ level: 40 });
    expect(gateway.logs.some((line) => line.msg === 'grace period over; closing the remaining connections')).toBe(false);
    expect(gateway.logs.find((line) => ABANDONED.test(String(line.msg)))).toMatchObject({ abandoned: 1 });
    expect((await body).complete).toBe(false);
    expect(await storedRecordingFiles(cacheDir)).toEqual([]);
    expect(await tempFilesIn(cacheDir)).toEqual([]);
  }, 30_000);

  test('a request still waiting for its download when the grace period ends is answered 503, as its log line says, not cut off unanswered', async () => {
    upstream.setRecording(105, syntheticRecording(64 * 1024));
    upstream.setBehaviour(105, { kind: 'slow-head', delayMs: 5_000 });
    const { logger, lines } = capturingLogger();
    const server = await startServer(testConfig({ dir: cacheDir, upstreamBaseUrl: upstream.baseUrl }), { logger });
    const answer = fetch(`${server.url}/v1/call/recording/105.mp3`, { headers: AUTH });
    expect(await eventually(() => upstream.recordingRequests(105).length === 1, 2_000)).toBe(true);

    await server.close(300);
    const response = await answer;
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toMatch(/^[1-9][0-9]*$/);
    expect(await response.json()).toMatchObject({ error: 'Service Unavailable' });
    const logged = lines.find((line) => line.callId === '105' && line.status !== undefined);
    expect(logged).toMatchObject({ status: 503 });
    expect(logged?.aborted).toBeUndefined();
    upstream.setBehaviour(105, undefined);
  });

  test('a download whose client is cut at the end of the grace period has its upstream request aborted and leaves nothing behind', async () => {
    const recording = syntheticRecording(1024 * 1024);
    upstream.setRecording(104, recording);
    upstream.setBehaviour(104, { kind: 'slow-body', chunkBytes: 64 * 1024, intervalMs: 200 });
    const { logger, lines } = capturingLogger();
    const server = await startServer(testConfig({ dir: cacheDir, upstreamBaseUrl: upstream.baseUrl }), { logger });
    const response = await openGet(`${server.url}/v1/call/recording/104.mp3`, AUTH);
    const { body } = await bodyUnderWay(response);

    const closingAt = Date.now();
    await server.close(500);
    // The whole body would take 3 s more; the close ends soon after the grace.
    expect(Date.now() - closingAt).toBeLessThan(1_500);
    expect((await body).complete).toBe(false);
    expect(lines.find((line) => ABANDONED.test(String(line.msg)))).toMatchObject({ level: 40, abandoned: 1 });
    expect(lines.filter((line) => line.msg === 'download failed; nothing stored')).toEqual([]);
    expect(await storedRecordingFiles(cacheDir)).toEqual([]);
    expect(await tempFilesIn(cacheDir)).toEqual([]);
    // The upstream's response was destroyed, not read on to its end.
    expect(await eventually(() => upstream.openConnections() === 0, 1_000)).toBe(true);
    expect(upstream.recordingRequests(104)).toHaveLength(1);
  });

  test("a listener's download, a webhook prefetch waiting for its download slot and one queued behind it are abandoned or dropped at the end of the grace period", async () => {
    const webhookToken = 'acme-webhook-token-for-shutdown-0001';
    for (const id of [105, 106, 107]) {
      upstream.setRecording(id, syntheticRecording(512 * 1024));
      upstream.setBehaviour(id, { kind: 'slow-body', chunkBytes: 64 * 1024, intervalMs: 300 });
    }
    const { logger, lines } = capturingLogger();
    // One download slot: the listener's download holds it, so the first prefetch waits for it; the second waits its turn in the queue.
    const server = await startServer(
      testConfig({
        dir: cacheDir,
        upstreamBaseUrl: upstream.baseUrl,
        upstream: { maxConcurrentDownloads: 1 },
        tenants: [acmeTenant({ webhookToken })],
      }),
      { logger },
    );
    const response = await openGet(`${server.url}/v1/call/recording/105.mp3`, AUTH);
    const body = readBody(response);
    for (const callId of [106, 107]) {
      const event = await fetch(`${server.url}/v1/webhooks/flyflow/acme?token=${webhookToken}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ event_type: 'call_ended', call_id: callId }),
      });
      expect(event.status).toBe(202);
    }
    expect(await eventually(() => server.gateway.downloads.inFlight === 2)).toBe(true);

    const closingAt = Date.now();
    await server.close(500);
    // Before, the close waited for the listener's download, then for both prefetches in turn: 5 s and more.
    expect(Date.now() - closingAt).toBeLessThan(1_500);
    expect((await body).complete).toBe(false);
    expect(lines.find((line) => ABANDONED.test(String(line.msg)))).toMatchObject({ abandoned: 2 });
    expect(upstream.recordingRequests(106)).toEqual([]);
    expect(upstream.recordingRequests(107)).toEqual([]);
    expect(await storedRecordingFiles(cacheDir)).toEqual([]);
    expect(await tempFilesIn(cacheDir)).toEqual([]);
  });

  test('a download no client reads any more that finishes within the grace period is still stored', async () => {
    const recording = syntheticRecording(512 * 1024);
    upstream.setRecording(108, recording);
    upstream.setBehaviour(108, { kind: 'slow-body', chunkBytes: 64 * 1024, intervalMs: 100 });
    const { logger, lines } = capturingLogger();
    const server = await startServer(testConfig({ dir: cacheDir, upstreamBaseUrl: upstream.baseUrl }), { logger });
    // The listener leaves at once; the download goes on without it.
    await askThenLeave(`${server.url}/v1/call/recording/108.mp3`, AUTH, () => upstream.recordingRequests(108).length === 1);

    await server.close(5_000);
    expect(lines.some((line) => ABANDONED.test(String(line.msg)))).toBe(false);
    const stored = await storedRecordingFiles(cacheDir);
    expect(stored.map((file) => file.size)).toEqual([recording.length]);
    expect((await readFile(stored[0]!.path)).equals(recording)).toBe(true);
    expect(await tempFilesIn(cacheDir)).toEqual([]);
  });
});

describe('hostile and malformed requests', () => {
  test(`${FUZZ_REQUESTS} random requests (seed ${FUZZ_SEED}) get no 500, only contract-shaped JSON errors, and reach upstream only for valid ids`, async () => {
    const gateway = await startGateway(testConfig({ dir: cacheDir, upstreamBaseUrl: upstream.baseUrl }));
    const agent = new Agent({ keepAlive: true, maxSockets: FUZZ_CONCURRENCY });
    const next = requestFuzzer(FUZZ_SEED, () => Math.floor(Date.now() / 1000));
    const requests: FuzzRequest[] = Array.from({ length: FUZZ_REQUESTS }, next);
    const validIds = new Set(requests.flatMap((request) => (request.validId === undefined ? [] : [request.validId])));
    const violations: string[] = [];
    const statuses = new Map<number, number>();
    try {
      let cursor = 0;
      await Promise.all(
        Array.from({ length: FUZZ_CONCURRENCY }, async () => {
          while (cursor < requests.length) {
            const index = cursor++;
            const request = requests[index]!;
            const describeRequest = `#${index} ${request.method} ${request.target.slice(0, 300)} ${JSON.stringify(request.headers).slice(0, 300)}`;
            try {
              const response = await sendRaw(gateway.baseUrl, request, agent);
              statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
              const problem = contractViolation(request, response);
              if (problem) violations.push(`${problem}: ${describeRequest}`);
            } catch (error) {
              violations.push(`${error instanceof Error ? error.message : String(error)}: ${describeRequest}`);
            }
          }
        }),
      );
      expect(violations, `seed ${FUZZ_SEED}; statuses ${JSON.stringify([...statuses])}`).toEqual([]);

      // Still alive and serving.
      const health = await fetch(`${gateway.baseUrl}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({ status: 'ok' });
      const recording = await gateway.fetch('/v1/call/recording/1.mp3');
      expect(recording.status).toBe(200);
      expect(Buffer.from(await recording.arrayBuffer()).equals(upstream.recording(1)!)).toBe(true);

      // Upstream saw only canonical recording paths for ids the fuzz sent as such, with nothing of the client's.
      const strays = upstream.requests.filter((seen) => {
        const id = CANONICAL_RECORDING_PATH.exec(seen.url)?.[1];
        const canonical = seen.method === 'GET' && id !== undefined && (validIds.has(id) || id === '1');
        return !canonical || seen.headers.authorization !== `Bearer ${SERVER_KEY}` || seen.headers.range !== undefined;
      });
      expect(
        strays.map((seen) => `${seen.method} ${seen.url.slice(0, 200)}`),
        `seed ${FUZZ_SEED}`,
      ).toEqual([]);
      expect(upstream.recordingRequests().length).toBeGreaterThan(0);
      await gateway.gateway.downloads.idle();
      expect(await tempFilesIn(cacheDir)).toEqual([]);
    } finally {
      agent.destroy();
      await gateway.close();
    }
  });
});

describe('edge cases that once failed', () => {
  // Node's parser and @hono/node-server refuse these before the app runs; src/server.ts answers them in JSON.
  test('a request the HTTP layer refuses before routing (backslash, not origin-form, a huge target) still gets a JSON error', async () => {
    const server = await startServer(testConfig({ dir: cacheDir, upstreamBaseUrl: upstream.baseUrl }), { logger: silentLogger() });
    try {
      const cases: Array<[string, number]> = [
        ['/v1/call/recording/1.mp3\\..', 400],
        ['/v1\\call/recording/1.mp3', 400],
        ['%2fv1/call/recording/1.mp3', 400],
        ['*', 400],
        [`/v1/call/recording/${'9'.repeat(20_000)}.mp3`, 414],
      ];
      for (const [target, status] of cases) {
        const response = await rawRequest(server.url, target, { headers: { authorization: `Bearer ${ACME_KEY}` } });
        const label = target.slice(0, 40);
        expect({ label, status: response.status, type: response.headers['content-type'] }).toEqual({
          label,
          status,
          type: 'application/json',
        });
        expect(Object.keys(JSON.parse(response.body.toString('utf8')) as object).sort()).toEqual(['error', 'message']);
      }
      expect(upstream.requests).toEqual([]);
    } finally {
      await server.close(0);
    }
  });

  // src/http/recording-response.ts downloadResponse: 'not-modified' answers 200 with Content-Length and no body.
  test('If-None-Match: * for a recording not cached yet answers 304, not a 200 whose body never comes', async () => {
    const gateway = await startGateway(testConfig({ dir: cacheDir, upstreamBaseUrl: upstream.baseUrl }));
    const agent = new Agent({ keepAlive: true });
    try {
      const request = {
        method: 'GET',
        target: '/v1/call/recording/1.mp3',
        headers: { authorization: `Bearer ${ACME_KEY}`, 'if-none-match': '*' },
        validId: '1',
      };
      const response = await sendRaw(gateway.baseUrl, request, agent, 2_000);
      expect(response.status).toBe(304);
      expect(response.body.length).toBe(0);
    } finally {
      agent.destroy();
      await gateway.close();
    }
  });

  test("shutdown lets a client slow to read take the whole of a memory answer Node's server was handed, on a connection the door gave it", async () => {
    // More than loopback's socket buffers hold: part of it waits in Node when the client reads nothing.
    const recording = syntheticRecording(16 * 1024 * 1024);
    upstream.setRecording(103, recording);
    const config = testConfig({ dir: cacheDir, upstreamBaseUrl: upstream.baseUrl, cache: { maxMemoryBytes: 256 * 1024 * 1024 } });
    const server = await startServer(config, { logger: silentLogger() });
    const namespace = server.gateway.tenants.byApiKey(ACME_KEY)!.namespace;
    const socket = connect(Number(new URL(server.url).port), '127.0.0.1');
    try {
      await (await fetch(`${server.url}/v1/call/recording/103.mp3`, { headers: AUTH })).arrayBuffer();
      await eventually(async () => server.gateway.recordings.findInMemory(namespace, '103') !== undefined);
      socket.on('error', () => {});
      // A request the door hands to Node's server, which keeps the connection; then the memory hit, answered there whole.
      const hit = `GET /v1/call/recording/103.mp3 HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer ${ACME_KEY}\r\n\r\n`;
      socket.write(`GET /healthz HTTP/1.1\r\nHost: gw.test\r\n\r\n${hit}`);
      socket.pause();
      await sleep(300);
      const closed = server.close(CLI_GRACE_MS);
      await sleep(300);
      let received = 0;
      socket.on('data', (chunk: Buffer) => (received += chunk.length));
      const ended = new Promise((resolve) => socket.once('close', resolve));
      socket.resume();
      await ended;
      await closed;
      // 0.7.6 before this: Node's closeIdleConnections cut it as server.close() began, a few MB in.
      expect(received).toBeGreaterThan(recording.length);
    } finally {
      socket.destroy();
    }
  });

  // src/server.ts close(): only connections idle when it starts are closed; later ones linger for keepAliveTimeout.
  test('shutdown ends soon after the last response, not a keep-alive timeout later', async () => {
    const recording = syntheticRecording(256 * 1024);
    upstream.setRecording(102, recording);
    upstream.setBehaviour(102, { kind: 'slow-body', chunkBytes: 64 * 1024, intervalMs: 50 });
    const server = await startServer(testConfig({ dir: cacheDir, upstreamBaseUrl: upstream.baseUrl }), { logger: silentLogger() });
    const agent = new Agent({ keepAlive: true });
    try {
      const response = await openGet(`${server.url}/v1/call/recording/102.mp3`, AUTH, agent);
      const { body } = await bodyUnderWay(response);
      const closed = server.close(CLI_GRACE_MS);
      expect((await body).bytes.equals(recording)).toBe(true);
      const bodyDoneAt = Date.now();
      await closed;
      expect(Date.now() - bodyDoneAt).toBeLessThan(1_500);
    } finally {
      agent.destroy();
    }
  });
});
