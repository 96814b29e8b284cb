/**
 * A cold cache must answer as a warm one would: conditionals judged against
 * the recording's real ETag, Cache-Status claiming `stored` only of what was
 * stored, and a transfer the client cut short counted for the bytes it got.
 */
import { request } from 'node:http';
import path from 'node:path';
import { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { FIXTURE_LAST_MODIFIED, startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  bytesOf,
  expectedEtag,
  makeTempDir,
  manualClock,
  removeDir,
  startGateway,
  testConfig,
  type RunningGateway,
} from '../dev/gateway-harness.js';
import { askThenLeave } from '../dev/recording-bytes.js';
import { createLogger } from '../src/logger.js';

const ADMIN_TOKEN = 'admin-token-for-tests-0123456789';

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway;
let lines: Array<Record<string, unknown>>;

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  lines = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  // 1 MiB of memory: recordings over 128 KiB stream from disk, as long calls do.
  const config = testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, cache: { maxMemoryBytes: 1024 * 1024 } });
  gateway = await startGateway({ ...config, adminToken: ADMIN_TOKEN }, { logger: createLogger({ destination, level: 'info' }) });
});

afterEach(async () => {
  await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Status, ETag and body of one answer, for comparing a cold answer with a warm one. */
async function answer(id: number, headers: Record<string, string>) {
  const response = await gateway.fetch(`/v1/call/recording/${id}.mp3`, { headers });
  const body = await bytesOf(response);
  return {
    status: response.status,
    etag: response.headers.get('etag'),
    contentRange: response.headers.get('content-range'),
    length: body.length,
    cacheStatus: response.headers.get('cache-status'),
  };
}

/** Cold, then (after the download is stored) warm: the same request twice. */
async function coldThenWarm(id: number, headers: Record<string, string>) {
  const cold = await answer(id, headers);
  await gateway.gateway.downloads.idle();
  const warm = await answer(id, headers);
  return { cold, warm };
}

describe('conditional requests get the same answer cold and warm', () => {
  test("If-Match with the recording's ETag plays it on a cold cache instead of answering 412", async () => {
    const etag = expectedEtag(upstream.recording(2)!);
    const { cold, warm } = await coldThenWarm(2, { 'if-match': etag });
    expect(warm).toMatchObject({ status: 200, etag, length: upstream.recording(2)!.length });
    expect(cold).toMatchObject({ status: warm.status, etag: warm.etag, length: warm.length });
    expect(upstream.recordingRequests(2)).toHaveLength(1);
  });

  test('If-Match with another ETag is 412 cold and warm', async () => {
    const { cold, warm } = await coldThenWarm(2, { 'if-match': '"not-this-one"' });
    expect(warm.status).toBe(412);
    expect(cold.status).toBe(412);
  });

  test("If-None-Match with the recording's ETag is 304 on a cold cache too", async () => {
    const etag = expectedEtag(upstream.recording(3)!);
    const { cold, warm } = await coldThenWarm(3, { 'if-none-match': etag });
    expect(warm).toMatchObject({ status: 304, etag, length: 0 });
    expect(cold).toMatchObject({ status: 304, etag, length: 0 });
  });

  test("If-Range with the recording's ETag resumes with a 206 on a cold cache too", async () => {
    const etag = expectedEtag(upstream.recording(4)!);
    const { cold, warm } = await coldThenWarm(4, { range: 'bytes=100-199', 'if-range': etag });
    expect(warm).toMatchObject({ status: 206, etag, length: 100, contentRange: `bytes 100-199/${upstream.recording(4)!.length}` });
    expect(cold).toMatchObject({ status: 206, etag, length: 100, contentRange: warm.contentRange });
  });

  test('a conditional miss that waited for the whole recording says it was stored', async () => {
    const { cold } = await coldThenWarm(1, { 'if-none-match': '"other"' });
    expect(cold.cacheStatus).toBe('recording-gateway; fwd=uri-miss; stored');
  });
});

describe('Cache-Status says stored only of what is stored', () => {
  test('a miss answered while its download is under way makes no claim that it was stored', async () => {
    const response = await gateway.fetch('/v1/call/recording/1.mp3');
    await bytesOf(response);
    expect(response.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
  });

  test("a miss answered while its download is under way has the upstream's Last-Modified, as the stored copy has", async () => {
    const cold = await gateway.fetch('/v1/call/recording/1.mp3');
    await bytesOf(cold);
    expect(cold.headers.get('etag')).toBeNull();
    expect(cold.headers.get('last-modified')).toBe(FIXTURE_LAST_MODIFIED);
    await gateway.gateway.downloads.idle();
    const warm = await gateway.fetch('/v1/call/recording/1.mp3');
    await bytesOf(warm);
    expect(warm.headers.get('last-modified')).toBe(cold.headers.get('last-modified'));
  });

  test('a Last-Modified in the future (an upstream clock gone wrong) is sent as the fetch time, cold and warm, so If-Unmodified-Since: now passes', async () => {
    const future = await startFakeFlyflow({ lastModified: 'Sat, 01 Jan 2039 00:00:00 GMT' });
    const clock = manualClock(Date.UTC(2026, 10, 30, 12, 0, 0, 250));
    const fetchedAt = new Date(clock.now()).toUTCString();
    const ahead = await startGateway(testConfig({ dir: path.join(dir, 'ahead'), upstreamBaseUrl: future.baseUrl }), { clock });
    try {
      const cold = await ahead.fetch('/v1/call/recording/1.mp3');
      await bytesOf(cold);
      expect(cold.headers.get('last-modified')).toBe(fetchedAt);
      await ahead.gateway.downloads.idle();
      clock.advance(5_000);
      const warm = await ahead.fetch('/v1/call/recording/1.mp3', {
        headers: { 'if-unmodified-since': new Date(clock.now()).toUTCString() },
      });
      await bytesOf(warm);
      expect(warm.status).toBe(200);
      expect(warm.headers.get('last-modified')).toBe(fetchedAt);
    } finally {
      await ahead.close();
      await future.close();
    }
  });

  test('a truncated upstream body is never announced as stored, and nothing is stored', async () => {
    // Several MB, cut after 1 MB: the answer's head is out before the body breaks.
    upstream.setRecording(8, Buffer.concat(Array.from({ length: 40 }, () => upstream.recording(4)!)));
    upstream.setBehaviour(8, { kind: 'truncate', afterBytes: 1024 * 1024 });
    const response = await gateway.fetch('/v1/call/recording/8.mp3');
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    await expect(bytesOf(response)).rejects.toThrow();
    await gateway.gateway.downloads.idle();
    expect(gateway.gateway.cache.lookup(`${gateway.gateway.tenants.byId('acme')!.namespace}/8`)).toBeUndefined();
  });
});

describe('the head of a miss goes out', () => {
  // The gate holds the upstream after the first quarter: the head waits for the bytes asked for,
  // so that a body that stalls short of them is still answered with an error (resilience-upstream).
  test('with the bytes asked for, once the upstream has sent them', async () => {
    const recording = upstream.recording(4)!;
    upstream.setBehaviour(4, { kind: 'gate' });
    const lastBytes = `bytes=${recording.length - 100}-`;
    const answer = gateway.fetch('/v1/call/recording/4.mp3', { headers: { range: lastBytes } });
    await waitFor(() => upstream.recordingRequests(4).length === 1);
    upstream.release(4);
    const response = await answer;
    expect(response.status).toBe(206);
    expect(response.headers.get('content-range')).toBe(`bytes ${recording.length - 100}-${recording.length - 1}/${recording.length}`);
    expect(Buffer.from(await bytesOf(response))).toEqual(recording.subarray(recording.length - 100));
    expect(upstream.recordingRequests(4)).toHaveLength(1);
  });

  // A miss answers once the first chunk is in, so it is at hand. Counted at
  // the gateway's socket: a client in this process reads only after both
  // writes, so what it reads cannot tell one write from two.
  test('in the same write as the first body bytes when they are at hand', async () => {
    const port = Number(new URL(gateway.baseUrl).port);
    const writes: number[] = [];
    const socketPrototype = Socket.prototype as unknown as {
      _writeGeneric: (writev: boolean, data: unknown, ...rest: unknown[]) => unknown;
    };
    const original = socketPrototype._writeGeneric;
    socketPrototype._writeGeneric = function (this: Socket, writev, data, ...rest) {
      if (this.localPort === port) {
        const parts = writev ? (data as Array<{ chunk: string | Buffer }>).map((part) => part.chunk) : [data as string | Buffer];
        writes.push(parts.reduce((sum, part) => sum + Buffer.byteLength(part), 0));
      }
      return original.call(this, writev, data, ...rest);
    };
    let response: Response;
    try {
      response = await gateway.fetch('/v1/call/recording/1.mp3');
    } finally {
      socketPrototype._writeGeneric = original;
    }
    expect(response.status).toBe(200);
    expect(Buffer.from(await bytesOf(response))).toEqual(upstream.recording(1));
    // The head alone is a few hundred bytes; the first write carries the whole 23 KB recording with it.
    expect(writes[0]).toBeGreaterThan(upstream.recording(1)!.length);
  });

  test('with bytes already received while the upstream holds the rest', async () => {
    const recording = upstream.recording(4)!;
    upstream.setBehaviour(4, { kind: 'gate' });
    const response = await gateway.fetch('/v1/call/recording/4.mp3', { headers: { range: 'bytes=0-99' } });
    expect(response.status).toBe(206);
    expect(Buffer.from(await bytesOf(response))).toEqual(recording.subarray(0, 100));
    upstream.release(4);
  });
});

describe('a transfer the client cut short', () => {
  /** Reads `keep` bytes of a recording's body over a raw connection, then drops it. */
  function readPartThenAbort(id: number, keep: number): Promise<number> {
    const url = new URL(gateway.baseUrl);
    return new Promise((resolve, reject) => {
      const req = request(
        { host: url.hostname, port: url.port, path: `/v1/call/recording/${id}.mp3`, headers: { authorization: `Bearer ${ACME_KEY}` } },
        (res) => {
          let received = 0;
          res.on('data', (chunk: Buffer) => {
            received += chunk.length;
            if (received >= keep) {
              req.destroy();
              resolve(received);
            }
          });
          res.on('error', () => {});
        },
      );
      req.on('error', (error) => {
        if (!req.destroyed) reject(error);
      });
      req.end();
    });
  }

  test('before its answer started (the upstream head still awaited) is logged as aborted, with no status and no bytes, and counted with status none', async () => {
    upstream.setBehaviour(4, { kind: 'slow-head', delayMs: 400 });
    // Gone while the gateway still waits for the upstream's head.
    await askThenLeave(
      `${gateway.baseUrl}/v1/call/recording/4.mp3`,
      { authorization: `Bearer ${ACME_KEY}` },
      () => upstream.recordingRequests(4).length === 1,
    );

    await waitFor(() => lines.some((line) => line.msg === 'request' && line.callId === '4'));
    const logged = lines.find((line) => line.msg === 'request' && line.callId === '4')!;
    expect(logged.aborted).toBe(true);
    expect(logged.bytes).toBe(0);
    // No status was sent: none is claimed, as in the audit line.
    expect(logged.status).toBeNull();
    const metrics = await (await gateway.fetch('/metrics', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
    const counted = metrics
      .split('\n')
      .filter((line) => line.startsWith('recording_gateway_requests_total{') && line.includes('route="recording"'));
    expect(counted.filter((line) => line.includes('status="none"'))).toHaveLength(1);
    expect(counted.filter((line) => line.includes('status="200"'))).toEqual([]);
  });

  test('is logged and counted with the bytes it was sent, not 0', async () => {
    const big = Buffer.concat(Array.from({ length: 40 }, () => upstream.recording(4)!));
    upstream.setRecording(9, big);
    await bytesOf(await gateway.fetch('/v1/call/recording/9.mp3'));
    await gateway.gateway.downloads.idle();
    lines.length = 0;

    const received = await readPartThenAbort(9, 64 * 1024);
    await waitFor(() => lines.some((line) => line.msg === 'request' && line.aborted === true));
    const logged = lines.find((line) => line.msg === 'request' && line.aborted === true)!;
    expect(logged.cache).toBe('hit');
    expect(logged.bytes as number).toBeGreaterThanOrEqual(received);
    expect(logged.bytes as number).toBeLessThan(big.length);

    const metrics = await (await gateway.fetch('/metrics', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
    const served = metrics.split('\n').find((line) => line.startsWith('recording_gateway_served_bytes_total{tier="disk"}'));
    expect(Number(served?.split(' ').pop())).toBe(logged.bytes);
  });
});
