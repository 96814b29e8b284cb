import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  SERVER_KEY,
  makeTempDir,
  rawExchange,
  removeDir,
  startGateway,
  testConfig,
  type RunningGateway,
} from '../dev/gateway-harness.js';
import { manualClock } from '../dev/manual-clock.js';
import { startGatewayProcess, writeGatewayConfig } from '../dev/gateway-process.js';
import { createLogger, type Logger } from '../src/logger.js';
import { RedisLink } from '../src/cluster/redis-link.js';
import { RedisUnavailableError } from '../src/redis-unavailable.js';
import { createRedisIndex } from '../src/cache/redis-index.js';
import { startRedisServer } from './support/redis-server.js';
import { runCliInProcess } from './support/run-cli-in-process.js';

const WARN = 40;
const STACK_FRAME = '    at ';

let upstream: FakeFlyflow;
let dir: string | undefined;
let gateway: RunningGateway | undefined;

beforeAll(async () => {
  upstream = await startFakeFlyflow();
});
afterAll(async () => {
  await upstream.close();
});
afterEach(async () => {
  await gateway?.close();
  gateway = undefined;
  if (dir) await removeDir(dir);
  dir = undefined;
  upstream.reset();
});

/** A logger whose raw output lines a test can read. */
function capturingLogger(level: string): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      callback();
    },
  });
  return { logger: createLogger({ destination, level }), lines };
}

async function start(level: string, upstreamBaseUrl = upstream.baseUrl): Promise<string[]> {
  dir = await makeTempDir();
  const { logger, lines } = capturingLogger(level);
  gateway = await startGateway(testConfig({ dir, upstreamBaseUrl }), { logger });
  return lines;
}

async function failOnce(id: number, expectedStatus: number): Promise<void> {
  const response = await gateway!.fetch(`/v1/call/recording/${id}.mp3`);
  expect(response.status).toBe(expectedStatus);
  await response.arrayBuffer();
  await gateway!.gateway.downloads.idle();
}

/** The request lines among `lines`, waiting for `count` of them (each is written once its answer has been sent). */
async function waitForRequestLines(lines: string[], count: number): Promise<string[]> {
  const requestLines = () => lines.filter((line) => (JSON.parse(line) as { msg: string }).msg === 'request');
  for (let attempt = 0; attempt < 100 && requestLines().length < count; attempt++) await new Promise((resolve) => setTimeout(resolve, 10));
  return requestLines();
}

const warnings = (lines: string[]) => lines.filter((line) => (JSON.parse(line) as { level: number }).level >= WARN);

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('logs of upstream failures', () => {
  test('an upstream 500 is one warning line naming the error, without a stack trace', async () => {
    const lines = await start('info');
    upstream.setBehaviour(1, { kind: 'status', status: 500 });
    await failOnce(1, 502);
    const warned = warnings(lines);
    expect(warned).toHaveLength(1);
    expect(warned[0]).not.toContain(STACK_FRAME);
    expect(JSON.parse(warned[0]!)).toMatchObject({ err: { type: 'UpstreamOutageError', message: 'Upstream answered 500', status: 502 } });
  });

  test('an unreachable upstream is one warning line with the connection error code, without a stack trace', async () => {
    const lines = await start('info', `http://127.0.0.1:${await closedPort()}/v1`);
    await failOnce(2, 502);
    const warned = warnings(lines);
    expect(warned).toHaveLength(1);
    expect(warned[0]).not.toContain(STACK_FRAME);
    expect(warned[0]).toContain('"code":"ECONNREFUSED"');
  });

  test('a body cut short is one warning line, its causes named, without a stack trace', async () => {
    const lines = await start('info');
    upstream.setBehaviour(3, { kind: 'truncate', afterBytes: 1000 });
    const response = await gateway!.fetch('/v1/call/recording/3.mp3');
    await response.arrayBuffer().catch(() => {});
    await gateway!.gateway.downloads.idle();
    const warned = warnings(lines);
    expect(warned).toHaveLength(1);
    expect(warned[0]).not.toContain(STACK_FRAME);
    expect(JSON.parse(warned[0]!)).toMatchObject({ err: { type: 'RetryableUpstreamError', cause: { type: 'Error', code: 'ECONNRESET' } } });
  });

  test('at debug level the same failure carries its stack, for whoever is debugging', async () => {
    const lines = await start('debug');
    upstream.setBehaviour(1, { kind: 'status', status: 500 });
    await failOnce(1, 502);
    const warned = warnings(lines);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toContain(STACK_FRAME);
  });
});

describe('the request line', () => {
  test.each([
    [
      'percent-encoded',
      '/v1/call/recording/4.mp3%3Ftenant=acme&exp=9999999999&kid=k1&sig=AAAAsecretSignatureAAAA',
      '/v1/call/recording/…',
      400,
    ],
    ['encoded twice', '/v1/call/recording/4.mp3%253Ftenant%253Dacme%2526sig%253DAAAAsecretSignatureAAAA', '/v1/call/recording/…', 400],
    ['after an encoded #', '/v1/call/recording/4.mp3%23tenant=acme&sig=AAAAsecretSignatureAAAA', '/v1/call/recording/…', 400],
    ['written into the path', '/x/tenant=acme&exp=9999999999&kid=k1&sig=AAAAsecretSignatureAAAA', '/…', 404],
    ['as a segment of its own', '/v1/call/recording/4.mp3/AAAAsecretSignatureAAAA', '/v1/call/recording/…', 400],
  ])('a signed-URL query %s is cut from the logged path, as a real query is', async (_how, target, logged, status) => {
    const lines = await start('info');
    const response = await gateway!.fetch(target);
    expect(response.status).toBe(status);
    await response.arrayBuffer();
    const requestLines = await waitForRequestLines(lines, 1);
    expect(JSON.parse(requestLines[0]!)).toMatchObject({ path: logged, status });
    expect(lines.join('\n')).not.toContain('secretSignature');
  });

  test.each([
    ['after &', '/v1/webhooks/flyflow/acme&token=SECRETwebhookTOKEN0001', '/v1/webhooks/flyflow/…'],
    ['after ;', '/v1/webhooks/flyflow/acme;token=SECRETwebhookTOKEN0001', '/v1/webhooks/flyflow/…'],
    ['after =', '/v1/webhooks/flyflow/acmetoken=SECRETwebhookTOKEN0001', '/v1/webhooks/flyflow/…'],
    ['after ,', '/v1/webhooks/flyflow/acme,token:SECRETwebhookTOKEN0001', '/v1/webhooks/flyflow/…'],
    ['after an encoded ?', '/v1/webhooks/flyflow/acme%3Ftoken=SECRETwebhookTOKEN0001', '/v1/webhooks/flyflow/…'],
    ['as a segment after the tenant', '/v1/webhooks/flyflow/acme/SECRETwebhookTOKEN0001', '/v1/webhooks/flyflow/…'],
    ['in place of the tenant', '/v1/webhooks/flyflow/SECRETwebhookTOKEN0001', '/v1/webhooks/flyflow/…'],
  ])('a webhook token written into the path %s never reaches the log', async (_how, target, logged) => {
    const lines = await start('info');
    const response = await gateway!.fetch(target, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    expect(response.status).toBeGreaterThanOrEqual(400);
    await response.arrayBuffer();
    const requestLines = await waitForRequestLines(lines, 1);
    expect(JSON.parse(requestLines[0]!)).toMatchObject({ path: logged });
    expect(lines.join('\n')).not.toContain('SECRETwebhookTOKEN');
  });

  test("a request line's time is the gateway clock's reading as the answer ends, as an audit line's is", async () => {
    dir = await makeTempDir();
    const { logger, lines } = capturingLogger('info');
    const clock = manualClock(Date.UTC(2026, 0, 2, 3, 4, 5, 678));
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }), { logger, clock });
    const response = await fetch(`${gateway.baseUrl}/v1/call/recording/4.mp3`);
    expect(response.status).toBe(401);
    const [line] = await waitForRequestLines(lines, 1);
    expect(JSON.parse(line!)).toMatchObject({ time: Date.UTC(2026, 0, 2, 3, 4, 5, 678), status: 401 });
  });

  test('a path a credential vouched for, or made only of our words and ids, is logged whole', async () => {
    dir = await makeTempDir();
    const { logger, lines } = capturingLogger('info');
    const config = testConfig({ dir, upstreamBaseUrl: upstream.baseUrl });
    config.tenants[0]!.webhookToken = 'SECRETwebhookTOKEN0003';
    gateway = await startGateway(config, { logger });
    const webhook = await gateway.fetch(`/v1/webhooks/flyflow/${config.tenants[0]!.id}?token=SECRETwebhookTOKEN0003`, {
      method: 'POST',
      body: '{"event_type":"call.completed","call_id":4}',
      headers: { 'content-type': 'application/json' },
    });
    expect(webhook.status).toBeLessThan(300);
    const unauthenticated = await fetch(`${gateway.baseUrl}/v1/call/recording/4.mp3`);
    expect(unauthenticated.status).toBe(401);
    const requestLines = (await waitForRequestLines(lines, 2)).map((line) => JSON.parse(line) as { path: string });
    expect(requestLines.map((line) => line.path)).toEqual([`/v1/webhooks/flyflow/${config.tenants[0]!.id}`, '/v1/call/recording/4.mp3']);
    expect(lines.join('\n')).not.toContain('SECRETwebhookTOKEN');
  });

  test.each([
    ['POST', 'http://hook:SECRETwebhookTOKEN0002@gw.example/v1/webhooks/flyflow/acme?token=SECRETwebhookTOKEN0002'],
    ['GET', 'http://u:SECRETwebhookTOKEN0002@gw.example/healthz'],
    ['GET', 'https://SECRETwebhookTOKEN0002@gw.example/v1/call/recording/4.mp3'],
  ])('an absolute-form %s target carrying credentials is 400 and neither the target nor its secret is logged', async (method, target) => {
    const lines = await start('info');
    const body = method === 'POST' ? '{"event_type":"call.completed","call_id":4}' : '';
    const answer = await rawExchange(
      gateway!.baseUrl,
      `${method} ${target} HTTP/1.1\r\nHost: gw.example\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toContain('"error":"Bad Request"');
    expect(answer).toMatch(/\r\nX-Request-Id: [0-9a-f-]{36}\r\n/);
    expect(answer).not.toContain('SECRETwebhookTOKEN');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(lines.join('\n')).not.toContain('SECRETwebhookTOKEN');
    expect(lines.join('\n')).not.toContain('"level":50');
  });

  test.each(['gw.123', '1.2.3.4.5', 'xn--a', '999.1.1.1'])(
    'Host %s, which looks plain but no URL can be made of, is 400 before any route: a webhook token in the query is not logged',
    async (host) => {
      const lines = await start('info');
      const body = '{"event_type":"call.completed","call_id":4}';
      for (const target of ['/v1/webhooks/flyflow/acme?token=SECRETwebhookTOKEN0003', '/v1/call/recording/4/signed-url']) {
        const answer = await rawExchange(
          gateway!.baseUrl,
          `POST ${target} HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${ACME_KEY}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
        );
        expect(answer).toMatch(/^HTTP\/1\.1 400 /);
        expect(answer).toContain('{"error":"Bad Request","message":"Invalid Host header"}');
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(lines.join('\n')).not.toContain('SECRETwebhookTOKEN');
      expect(lines.join('\n')).not.toContain('"level":50');
    },
  );

  test.each(['"', '{', '}', '|', '^', '`', '<', '>', "'", '[', ']'])(
    'a path holding %s, which Node lets through, is logged as valid JSON, cut there',
    async (char) => {
      const lines = await start('info');
      const target = `/v1/call/recording/4.mp3${char}sig=AAAAsecretSignatureAAAA`;
      const answer = await rawExchange(
        gateway!.baseUrl,
        `GET ${target} HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer ${ACME_KEY}\r\nConnection: close\r\n\r\n`,
      );
      expect(answer).toMatch(/^HTTP\/1\.1 4\d\d /);
      const [line] = await waitForRequestLines(lines, 1);
      const logged = (JSON.parse(line!) as { path: string }).path;
      // Cut where the route's own characters end: before the character itself, whoever asked.
      expect(logged).toMatch(/^\/v1\/call\/recording\/(?:4\.mp3)?…$/);
      expect(lines.join('\n')).not.toContain('secretSignature');
    },
  );

  test('a route path is logged as it is', async () => {
    const lines = await start('info');
    const response = await gateway!.fetch('/v1/call/recording/4.mp3?tenant=acme&sig=AAAAsecretSignatureAAAA');
    await response.arrayBuffer();
    const requestLines = await waitForRequestLines(lines, 1);
    expect(JSON.parse(requestLines[0]!)).toMatchObject({ path: '/v1/call/recording/4.mp3' });
    expect(lines.join('\n')).not.toContain('secretSignature');
  });
});

describe('the error serializer', () => {
  test('a bug (an error without a code) keeps its stack at every level, so it can be found', () => {
    const { logger, lines } = capturingLogger('info');
    logger.error({ err: new TypeError("Cannot read properties of undefined (reading 'size')") }, 'unexpected error');
    expect(JSON.parse(lines[0]!)).toMatchObject({ err: { type: 'TypeError', stack: expect.stringContaining(STACK_FRAME) } });
  });

  test('a system error is its type, code and message on one line', () => {
    const { logger, lines } = capturingLogger('info');
    const error = Object.assign(new Error("EACCES: permission denied, open '/var/cache/x'"), { code: 'EACCES' });
    logger.warn({ err: error }, 'cache disk failing');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!).err).toEqual({ type: 'Error', code: 'EACCES', message: "EACCES: permission denied, open '/var/cache/x'" });
  });

  test('a stalled cluster Redis is an expected failure: its warning has no stack', () => {
    const { logger, lines } = capturingLogger('info');
    logger.warn({ err: new RedisUnavailableError('redis: 127.0.0.1:6379 did not answer within 250 ms') }, 'cluster: redis unreachable');
    expect(JSON.parse(lines[0]!).err).toEqual({
      type: 'Error',
      code: 'ERR_REDIS_UNAVAILABLE',
      message: 'redis: 127.0.0.1:6379 did not answer within 250 ms',
    });
  });

  test('raising the level to debug at run time brings stacks back', () => {
    const { logger, lines } = capturingLogger('info');
    const error = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    logger.warn({ err: error }, 'first');
    logger.level = 'debug';
    logger.warn({ err: error }, 'second');
    expect(lines[0]).not.toContain(STACK_FRAME);
    expect(lines[1]).toContain(STACK_FRAME);
  });
});

describe('LOG_LEVEL and LOG_FORMAT', () => {
  test.each([
    ['LOG_LEVEL', 'verbose', 'error: LOG_LEVEL: "verbose" is not a log level; use one of trace, debug, info, warn, error, fatal, silent'],
    ['LOG_FORMAT', 'fancy', 'error: LOG_FORMAT: "fancy" is not a log format; use json (the default) or pretty'],
  ])('a %s the logger does not know stops serve with one line naming the variable and what it takes', async (variable, value, message) => {
    dir = await makeTempDir();
    const configPath = await writeGatewayConfig(dir, { upstreamBaseUrl: upstream.baseUrl, cacheDir: path.join(dir, 'cache') });
    const { code, stderr } = await runCliInProcess(['--config', configPath, 'serve'], {
      cwd: dir,
      env: { FLYFLOW_API_KEY: SERVER_KEY, [variable]: value },
    });
    expect(code).toBe(1);
    expect(stderr).toBe(message);
  });

  test('LOG_LEVEL=DEBUG, as operators often write it, turns debug on: a warning carries its stack', async () => {
    dir = await makeTempDir();
    const cacheDir = path.join(dir, 'cache');
    await mkdir(cacheDir);
    // A damaged index: the gateway warns (an expected failure, whose stack shows only at debug) and starts.
    await writeFile(path.join(cacheDir, 'index.sqlite'), 'not a sqlite database'.repeat(10));
    const configPath = await writeGatewayConfig(dir, { upstreamBaseUrl: upstream.baseUrl, cacheDir });
    const child = await startGatewayProcess(configPath, { env: { LOG_LEVEL: 'DEBUG' } });
    try {
      const warning = await child.waitForLog((line) => line.level === WARN && String(line.msg).includes('is damaged'));
      expect((warning.err as { stack?: string }).stack).toContain(STACK_FRAME);
    } finally {
      child.child.kill('SIGTERM');
      await child.exited;
    }
  });
});

describe('request lines on standard output, as the gateway process writes them', () => {
  test('an ASCII line and a cut path (`…`) arrive whole, in the order answered', async () => {
    dir = await makeTempDir();
    const configPath = await writeGatewayConfig(dir, { upstreamBaseUrl: upstream.baseUrl, cacheDir: path.join(dir, 'cache') });
    const child = await startGatewayProcess(configPath);
    try {
      const targets = [
        '/v1/call/recording/1.mp3',
        '/v1/call/recording/4.mp3%3Ftenant=acme&sig=AAAAsecretSignatureAAAA',
        '/v1/call/recording/1.mp3',
      ];
      for (const [i, target] of targets.entries()) {
        const headers = { authorization: `Bearer ${ACME_KEY}`, range: 'bytes=0-1', 'x-request-id': `stdout-line-${i}` };
        const response = await fetch(`${child.url}${target}`, { headers });
        await response.arrayBuffer();
      }
      await child.waitForLog((line) => line.reqId === 'stdout-line-2');
      const requestLines = child.logs.filter((line) => line.msg === 'request').map((line) => [line.reqId, line.path, line.status]);
      expect(requestLines).toEqual([
        ['stdout-line-0', '/v1/call/recording/1.mp3', 206],
        ['stdout-line-1', '/v1/call/recording/…', 400],
        ['stdout-line-2', '/v1/call/recording/1.mp3', 206],
      ]);
    } finally {
      child.child.kill('SIGTERM');
      await child.exited;
    }
  });
});

describe('expected Redis failures are one line, without a stack', () => {
  test('a cluster Redis that refuses the password: one warning, the password masked', async () => {
    const password = 'right-password-0123456789';
    const redis = await startRedisServer({ args: ['--requirepass', password] });
    const { logger, lines } = capturingLogger('info');
    const link = new RedisLink({ url: `redis://:wrong-password-9876543210@127.0.0.1:${redis.port}/0`, timeoutMs: 1_000, logger });
    try {
      expect(await link.check()).toBe(false);
      const warning = lines.map((line) => JSON.parse(line) as Record<string, unknown>).find((line) => line.level === WARN);
      expect(warning?.err).toMatchObject({ code: 'ERR_REDIS_UNAVAILABLE', message: expect.stringMatching(/WRONGPASS/) });
      expect(JSON.stringify(warning)).not.toContain('"stack"');
      expect(lines.join('\n')).not.toContain('wrong-password');
    } finally {
      link.close();
      await redis.stop();
    }
  });

  test('a stalled Redis index: "cannot read … did not answer" is logged without a stack', async () => {
    const redis = await startRedisServer();
    const index = createRedisIndex(redis.url, { operationTimeoutMs: 200 });
    try {
      await index.ping();
      process.kill(redis.pid, 'SIGSTOP');
      const failures = await Promise.all([
        index.get('ns/1').catch((error: unknown) => error),
        index.ping().catch((error: unknown) => error),
      ]);
      process.kill(redis.pid, 'SIGCONT');
      const { logger, lines } = capturingLogger('info');
      for (const err of failures) logger.warn({ err }, 'index lookup failed; treating as a miss');
      expect(lines).toHaveLength(2);
      expect(JSON.parse(lines[0]!).err).toMatchObject({
        code: 'ERR_REDIS_UNAVAILABLE',
        message: expect.stringMatching(/cannot read ns\/1: .*did not answer within 200 ms/),
      });
      for (const line of lines) expect(line).not.toContain('"stack"');
    } finally {
      process.kill(redis.pid, 'SIGCONT');
      await index.close();
      await redis.stop();
    }
  });
});
