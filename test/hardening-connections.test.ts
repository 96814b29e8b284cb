import { request, type IncomingHttpHeaders } from 'node:http';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { afterEach, beforeAll, afterAll, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, makeTempDir, removeDir, testConfig } from '../dev/gateway-harness.js';
import { startGatewayProcess, stopGatewayProcess, writeGatewayConfig } from '../dev/gateway-process.js';
import type { GatewayConfig } from '../src/config/index.js';
import { createLogger, silentLogger, type Logger } from '../src/logger.js';
import { DEFAULT_CONNECTION_LIMITS, createHttpServer, startServer, type RunningServer } from '../src/server.js';

let upstream: FakeFlyflow;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  upstream = await startFakeFlyflow();
});
afterAll(async () => {
  await upstream.close();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  upstream.reset();
});

async function start(listen: Partial<GatewayConfig['listen']>, logger: Logger = silentLogger()): Promise<RunningServer> {
  const dir = await makeTempDir();
  const config = testConfig({ dir, upstreamBaseUrl: upstream.baseUrl });
  const server = await startServer({ ...config, listen: { ...config.listen, ...listen } }, { logger });
  cleanups.push(() => removeDir(dir));
  cleanups.push(() => server.close(0));
  return server;
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** One request on a connection of its own (no pooling), so each test knows exactly what it holds open. */
function get(baseUrl: string, target: string, onHead?: (status: number) => void): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(`${baseUrl}${target}`, { agent: false, headers: { authorization: `Bearer ${ACME_KEY}` } }, (res) => {
      onHead?.(res.statusCode ?? 0);
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** A gateway capped at two connections, both holding an answer (its head sent) until `upstream.release(1)`. */
async function capAtTwoAnswersHeld(): Promise<{ server: RunningServer; held: Array<Promise<Reply>> }> {
  const server = await start({ maxConnections: 2 });
  upstream.setBehaviour(1, { kind: 'gate' });
  const heads: number[] = [];
  const held = [
    get(server.url, '/v1/call/recording/1.mp3', (s) => heads.push(s)),
    get(server.url, '/v1/call/recording/1.mp3', (s) => heads.push(s)),
  ];
  await expect.poll(() => heads.length, { timeout: 5_000 }).toBe(2);
  return { server, held };
}

/** Connections that send nothing, as a flood of idle clients would. */
interface IdleFlood {
  sockets: Socket[];
  closed: Set<number>;
  stillOpen(): number;
}

/** Waits (at most 10 s) until the server has stopped closing flood connections for half a second. */
async function settled(flood: IdleFlood): Promise<void> {
  let last = -1;
  for (let stableFor = 0, waited = 0; stableFor < 500 && waited < 10_000; waited += 100) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    stableFor = flood.closed.size === last ? stableFor + 100 : 0;
    last = flood.closed.size;
  }
}

async function openIdle(baseUrl: string, count: number): Promise<IdleFlood> {
  const { hostname, port } = new URL(baseUrl);
  const closed = new Set<number>();
  const sockets = await Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        new Promise<Socket>((resolve) => {
          const socket = connect({ host: hostname, port: Number(port) });
          socket.on('error', () => {});
          socket.on('close', () => closed.add(i));
          socket.once('connect', () => resolve(socket));
          socket.once('close', () => resolve(socket));
        }),
    ),
  );
  cleanups.push(() => {
    for (const socket of sockets) socket.destroy();
  });
  return { sockets, closed, stillOpen: () => count - closed.size };
}

describe('a cap on open connections', () => {
  test('at the cap, the longest-idle connection makes room, so a health check and a recording are still served', async () => {
    const logged: Array<{ msg: string; idleClosed?: number }> = [];
    const logger = createLogger({ level: 'warn', destination: { write: (line: string) => void logged.push(JSON.parse(line)) } });
    const server = await start({ maxConnections: 50 }, logger);
    const flood = await openIdle(server.url, 60);
    // Ten connections over the cap: the ten that were idle longest are closed.
    await expect.poll(() => flood.closed.size, { timeout: 5_000 }).toBeGreaterThanOrEqual(10);
    expect([...flood.closed].every((i) => i < 11)).toBe(true);

    const health = await get(server.url, '/healthz');
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body.toString())).toEqual({ status: 'ok' });
    const played = await get(server.url, '/v1/call/recording/1.mp3');
    expect(played.status).toBe(200);
    expect(played.body.equals(upstream.recording(1)!)).toBe(true);
    expect(flood.stillOpen()).toBeLessThanOrEqual(50);
    // The operator hears of it once, not once per connection.
    expect(logged.filter((line) => line.msg.startsWith('connection limit reached'))).toHaveLength(1);
  });

  test('at the cap, of connections answered before, the one idle longest since its last answer makes room, whichever opened first', async () => {
    const server = await start({ maxConnections: 3 });
    const { hostname, port } = new URL(server.url);
    const open = async () => {
      const socket = connect({ host: hostname, port: Number(port) });
      await new Promise((resolve) => socket.once('connect', resolve));
      cleanups.push(() => void socket.destroy());
      return socket;
    };
    // HEAD: the whole answer is its head. The first is a miss (Node's server), the rest memory hits (the door).
    const ask = (socket: Socket) =>
      new Promise<string>((resolve, reject) => {
        let got = '';
        const onData = (chunk: Buffer) => {
          got += chunk.toString('latin1');
          if (!got.includes('\r\n\r\n')) return;
          socket.off('data', onData);
          resolve(got.slice(0, got.indexOf('\r\n')));
        };
        socket.on('data', onData);
        socket.once('error', reject);
        socket.write(`HEAD /v1/call/recording/1.mp3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ACME_KEY}\r\n\r\n`);
      });
    const [a, b, c] = [await open(), await open(), await open()];
    for (const socket of [a, b, c, a]) expect(await ask(socket)).toBe('HTTP/1.1 200 OK');
    const served = await get(server.url, '/healthz');
    expect(served.status).toBe(200);
    await expect.poll(() => b.destroyed || b.readableEnded, { timeout: 5_000 }).toBe(true);
    expect([a, c].map((socket) => socket.readableEnded || socket.destroyed)).toEqual([false, false]);
    expect(await ask(c)).toBe('HTTP/1.1 200 OK');
  });

  test('when every connection has a request in flight, a new one gets a quick JSON 503 and /healthz still answers', async () => {
    const { server, held } = await capAtTwoAnswersHeld();

    const refused = await get(server.url, '/v1/call/recording/2.mp3');
    expect(refused.status).toBe(503);
    expect(refused.headers['content-type']).toBe('application/json');
    expect(refused.headers['retry-after']).toBe('1');
    expect(refused.headers.connection).toBe('close');
    expect(refused.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.parse(refused.body.toString())).toEqual({
      error: 'Service Unavailable',
      message: 'The gateway is at its connection limit; retry shortly',
    });
    expect(upstream.recordingRequests(2)).toHaveLength(0);

    const health = await get(server.url, '/healthz');
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body.toString())).toEqual({ status: 'ok' });

    upstream.release(1);
    for (const reply of await Promise.all(held)) expect(reply.body.equals(upstream.recording(1)!)).toBe(true);
    // Once they are done, the gateway serves new connections again.
    expect((await get(server.url, '/v1/call/recording/2.mp3')).status).toBe(200);
  });
});

describe('a shutdown at the cap', () => {
  test('connections over the cap that never sent a request do not hold the shutdown for its grace period', async () => {
    const { server, held } = await capAtTwoAnswersHeld();
    const silent = await openIdle(server.url, 2);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(silent.stillOpen()).toBe(2);

    const started = performance.now();
    const closed = server.close(8_000);
    setTimeout(() => upstream.release(1), 300);
    for (const reply of await Promise.all(held)) expect(reply.body.equals(upstream.recording(1)!)).toBe(true);
    await closed;
    // 0.7.6 before this kept them, and so the shutdown, for the whole grace period.
    expect(performance.now() - started).toBeLessThan(4_000);
    expect(silent.stillOpen()).toBe(0);
  });
});

describe('clients that stop reading, at the cap', () => {
  const BIG = Buffer.alloc(16 * 1024 * 1024, 7);
  const CHUNK = Buffer.alloc(64 * 1024, 5);
  const CHUNKS = 512;

  /**
   * A server with a 16 MB answer, a streamed 32 MB one and a small one, capped
   * at `maxConnections`; stalled after 300 ms. `accepted` holds its side of
   * each connection, in order: a client that does not read cannot tell that
   * the server closed its connection.
   */
  async function capped(maxConnections: number): Promise<{ baseUrl: string; accepted: Socket[] }> {
    const app = {
      fetch(request: Request): Response {
        const { pathname } = new URL(request.url);
        if (pathname === '/big') return new Response(BIG);
        if (pathname === '/stream') {
          let sent = 0;
          return new Response(
            new ReadableStream({
              pull(controller) {
                if (sent++ === CHUNKS) controller.close();
                else controller.enqueue(CHUNK);
              },
            }),
          );
        }
        return new Response('ok');
      },
    };
    const server = createHttpServer(app, '127.0.0.1', { limits: { ...DEFAULT_CONNECTION_LIMITS, maxConnections }, stalledAfterMs: 300 });
    const accepted: Socket[] = [];
    server.on('connection', (socket: Socket) => accepted.push(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    });
    return { baseUrl: `http://127.0.0.1:${(server.address() as { port: number }).port}`, accepted };
  }

  /** A connection that sends `requests` and never reads a byte of the answers. */
  function neverReading(baseUrl: string, requests: string): Promise<Socket> {
    const { port } = new URL(baseUrl);
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port: Number(port) }, () => {
        socket.write(requests);
        resolve(socket);
      });
      socket.on('error', () => {});
      socket.once('error', reject);
      cleanups.push(() => void socket.destroy());
    });
  }

  test('a new client is served: the connection whose client stopped reading longest makes room', async () => {
    const { baseUrl, accepted } = await capped(4);
    for (let i = 0; i < 4; i++) {
      await neverReading(baseUrl, 'GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await new Promise((resolve) => setTimeout(resolve, 400));
    const served = await get(baseUrl, '/small');
    expect(served.status).toBe(200);
    expect(served.body.toString()).toBe('ok');
    // The first to stall went; the others are still there.
    expect(accepted.slice(0, 4).map((socket) => socket.destroyed)).toEqual([true, false, false, false]);
  });

  test('pipelined requests whose answers are never read do not lock out a new client', async () => {
    const { baseUrl, accepted } = await capped(4);
    const pipelined = 'GET /small-but-many HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(50) + 'GET /big HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(4);
    await Promise.all(Array.from({ length: 4 }, () => neverReading(baseUrl, pipelined)));
    await new Promise((resolve) => setTimeout(resolve, 800));
    const served = await Promise.all(Array.from({ length: 3 }, () => get(baseUrl, '/small')));
    expect(served.map((reply) => reply.status)).toEqual([200, 200, 200]);
    // Each took the place of a connection that stopped reading (or of one of the three, once answered).
    expect(accepted.slice(0, 4).filter((socket) => socket.destroyed).length).toBeGreaterThanOrEqual(1);
  });

  test('a client that reads slowly but steadily is not taken for one that stopped', async () => {
    const { baseUrl, accepted } = await capped(2);
    await neverReading(baseUrl, 'GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    const slow = await neverReading(baseUrl, 'GET /stream HTTP/1.1\r\nHost: x\r\n\r\n');
    // About 4 MB/s: much slower than loopback, fast enough to keep the socket buffers from filling.
    let taken = 0;
    slow.on('data', (chunk: Buffer) => {
      taken += chunk.length;
      if (taken >= 400 * 1024) slow.pause();
    });
    const reading = setInterval(() => {
      taken = 0;
      slow.resume();
    }, 100);
    cleanups.push(() => clearInterval(reading));
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect((await get(baseUrl, '/small')).status).toBe(200);
    expect(accepted.slice(0, 2).map((socket) => socket.destroyed)).toEqual([true, false]);
  });
});

describe('timeouts for slow clients', () => {
  /** Resolves with what the server sent once it closes the connection, or 'still open' after `waitMs`. */
  function untilClosed(socket: Socket, waitMs: number): Promise<string> {
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve('still open'), waitMs);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve(received);
      });
    });
  }

  test('a client that never finishes its headers (slowloris) is answered 408 and cut off after headers_timeout_ms', async () => {
    const server = await start({ headersTimeoutMs: 300, requestTimeoutMs: 1_000 });
    const { sockets } = await openIdle(server.url, 1);
    const slow = sockets[0]!;
    slow.write('GET /healthz HTTP/1.1\r\nHost: gateway\r\n');
    // A header line every 50 ms: the connection is never silent, only never done.
    const drip = setInterval(() => slow.writable && slow.write('X-Drip: 1\r\n'), 50);
    cleanups.push(() => clearInterval(drip));
    // Far more than 300 ms, far less than Node's own 60 s default.
    const received = await untilClosed(slow, 10_000);
    expect(received).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(received).toContain('Content-Type: application/json');
    expect(JSON.parse(received.slice(received.indexOf('\r\n\r\n') + 4))).toEqual({
      error: 'Request Timeout',
      message: 'The request was not received in time',
    });
  });

  test('a request body that never arrives in full is answered 408 after request_timeout_ms, and logged as that 408, not as a gateway error', async () => {
    const logged: Array<{ level: number; msg: string }> = [];
    const logger = createLogger({ level: 'info', destination: { write: (line: string) => void logged.push(JSON.parse(line)) } });
    const server = await start({ headersTimeoutMs: 300, requestTimeoutMs: 600 }, logger);
    const { sockets } = await openIdle(server.url, 1);
    const slow = sockets[0]!;
    slow.write(
      `POST /v1/call/recording/1/signed-url HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer ${ACME_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"ttl_`,
    );
    const received = await untilClosed(slow, 10_000);
    expect(received).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    await expect.poll(() => logged.some((line) => line.msg === 'request'), { timeout: 5_000 }).toBe(true);
    const requestId = /\r\nX-Request-Id: ([^\r]+)\r\n/.exec(received)?.[1];
    expect(logged.find((line) => line.msg === 'request')).toMatchObject({
      method: 'POST',
      route: 'recording',
      status: 408,
      reqId: requestId,
    });
    expect(logged.find((line) => line.msg === 'request')).not.toHaveProperty('aborted');
    expect(logged.filter((line) => line.level >= 40)).toEqual([]);
  });

  test('a connection that never sends a byte is closed after headers_timeout_ms without an answer', async () => {
    const server = await start({ headersTimeoutMs: 300, requestTimeoutMs: 1_000 });
    const { sockets } = await openIdle(server.url, 1);
    expect(await untilClosed(sockets[0]!, 10_000)).toBe('');
  });

  test('a download that takes longer than request_timeout_ms still arrives whole: the timeout covers only the request', async () => {
    const server = await start({ headersTimeoutMs: 200, requestTimeoutMs: 300 });
    const recording = upstream.recording(2)!;
    // About 1.1 s of body, several times the request timeout.
    upstream.setBehaviour(2, { kind: 'slow-body', chunkBytes: Math.ceil(recording.length / 12), intervalMs: 100 });
    const reply = await get(server.url, '/v1/call/recording/2.mp3');
    expect(reply.status).toBe(200);
    expect(reply.body.equals(recording)).toBe(true);
  });
});

describe('a process with few file descriptors', () => {
  /** `recording-gateway serve` in a child allowed `files` open files, as a small container might be. */
  async function serveWithFileLimit(files: number): Promise<{ url: string }> {
    const dir = await makeTempDir();
    cleanups.push(() => removeDir(dir));
    const configPath = await writeGatewayConfig(dir, { upstreamBaseUrl: upstream.baseUrl, cacheDir: path.join(dir, 'cache') });
    const gateway = await startGatewayProcess(configPath, { fileLimit: files });
    cleanups.push(() => stopGatewayProcess(gateway));
    return { url: gateway.url };
  }

  test('300 idle connections to a gateway allowed 256 files do not stop /healthz or a recording from being served', async () => {
    const { url } = await serveWithFileLimit(256);
    const flood = await openIdle(url, 300);
    await settled(flood);

    const health = await get(url, '/healthz');
    expect(health.status).toBe(200);
    const played = await get(url, '/v1/call/recording/3.mp3');
    expect(played.status).toBe(200);
    expect(played.body.equals(upstream.recording(3)!)).toBe(true);
    // The derived cap is 128 (half the limit): the connections idle longest were closed.
    expect(flood.stillOpen()).toBeLessThanOrEqual(128);
  });
});
