/**
 * What every error answer says of caching (`no-store`), and the requests
 * refused before any route (by Node's parser or the server's own checks):
 * each gets the request line and the count in the metrics a routed request
 * gets, with the X-Request-Id its answer carried, and nothing of its target
 * that could hold a secret.
 */
import type { Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, makeTempDir, rawExchange, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { syntheticRecording } from '../dev/recording-bytes.js';
import { createGateway } from '../src/gateway.js';
import { createHttpServer, DEFAULT_CONNECTION_LIMITS } from '../src/server.js';
import { capturingLogger } from './support/capturing-logger.js';

const ADMIN_TOKEN = 'admin-token-for-tests-refusals-0123';
const CACHED_ID = 7;
const UNFETCHED_ID = 9;
const MISSING_ID = 404_404;

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway;
let lines: Array<Record<string, unknown>>;

beforeAll(async () => {
  upstream = await startFakeFlyflow();
  upstream.setRecording(CACHED_ID, syntheticRecording(20_000));
  upstream.setRecording(UNFETCHED_ID, syntheticRecording(20_000));
  dir = await makeTempDir();
  const captured = capturingLogger();
  lines = captured.lines;
  gateway = await startGateway(
    { ...testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }), adminToken: ADMIN_TOKEN },
    { logger: captured.logger },
  );
  const cached = await gateway.fetch(`/v1/call/recording/${CACHED_ID}.mp3`);
  expect(cached.status).toBe(200);
  await cached.arrayBuffer();
  await gateway.gateway.downloads.idle();
});

afterAll(async () => {
  await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

beforeEach(() => {
  lines.length = 0;
});

/** The head of a raw answer, its header fields by lower-case name, and its status code. */
function headOf(answer: string): { status: number; fields: Map<string, string> } {
  const [statusLine = '', ...fieldLines] = answer.slice(0, answer.indexOf('\r\n\r\n')).split('\r\n');
  const fields = new Map(
    fieldLines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]),
  );
  return { status: Number(statusLine.split(' ')[1]), fields };
}

/** The request line logged with `requestId`, once it is written. */
async function requestLineFor(requestId: string): Promise<Record<string, unknown>> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const line = lines.find((logged) => logged.msg === 'request' && logged.reqId === requestId);
    if (line) return line;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no request line with reqId ${requestId} among ${JSON.stringify(lines)}`);
}

async function refusedCount(status: number): Promise<number> {
  const metrics = await (await gateway.fetch('/metrics', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
  const pattern = new RegExp(
    `^recording_gateway_requests_total\\{(?=.*route="other")(?=.*status="${status}")(?=.*tenant="none")[^}]*\\} (\\d+)$`,
  );
  return metrics.split('\n').reduce((sum, line) => sum + Number(pattern.exec(line)?.[1] ?? 0), 0);
}

describe('every error answer says Cache-Control: no-store (a 404 is cacheable by default, RFC 9110 15.1)', () => {
  test.each([
    ['a recording without a credential (401)', `/v1/call/recording/${CACHED_ID}.mp3`, { authorization: '' }, 401],
    [
      'a cached recording with a wrong key, answered by the memory-hit path (401)',
      `/v1/call/recording/${CACHED_ID}.mp3`,
      { authorization: 'Bearer not-a-key-of-anyone-000000000' },
      401,
    ],
    ['a recording Flyflow does not have (404)', `/v1/call/recording/${MISSING_ID}.mp3`, {}, 404],
    ['a path no route has (404)', '/v1/nothing-here', {}, 404],
    ['a range past the end of a cached recording (416)', `/v1/call/recording/${CACHED_ID}.mp3`, { range: 'bytes=900000-' }, 416],
  ])('%s', async (_what, path, headers, status) => {
    const response = await gateway.fetch(path, { headers });
    expect(response.status).toBe(status);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(response.headers.get('cache-control')).toBe('no-store');
    await response.arrayBuffer();
  });

  test.each([
    ['refused before any route: no Host (400)', `GET /v1/call/recording/${CACHED_ID}.mp3 HTTP/1.1\r\n\r\n`, 400],
    [
      'refused by the parser: a malformed header line (400)',
      `GET /v1/call/recording/${CACHED_ID}.mp3 HTTP/1.1\r\nHost: gw\r\nno colon here\r\n\r\n`,
      400,
    ],
    ['CONNECT (405)', 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n', 405],
  ])('%s', async (_what, head, status) => {
    const answer = headOf(await rawExchange(gateway.baseUrl, head));
    expect(answer.status).toBe(status);
    expect(answer.fields.get('cache-control')).toBe('no-store');
  });
});

describe('a request refused before any route is logged and counted as a routed one is', () => {
  test('no Host: its line has the X-Request-Id it was answered with, its method and path, no tenant; and it is counted', async () => {
    const before = await refusedCount(400);
    const answer = headOf(await rawExchange(gateway.baseUrl, `GET /v1/call/recording/${CACHED_ID}.mp3 HTTP/1.1\r\n\r\n`));
    expect(answer.status).toBe(400);
    const line = await requestLineFor(answer.fields.get('x-request-id')!);
    expect(line).toMatchObject({
      method: 'GET',
      path: `/v1/call/recording/${CACHED_ID}.mp3`,
      route: 'other',
      status: 400,
      cache: 'none',
      bytes: 0,
    });
    expect(line).not.toHaveProperty('tenant');
    expect(await refusedCount(400)).toBe(before + 1);
  });

  test("refused by Node's parser: a line with the new request id the raw answer carried, the query cut", async () => {
    const answer = await rawExchange(
      gateway.baseUrl,
      `HEAD /v1/call/recording/${CACHED_ID}.mp3?tenant=acme&sig=SECRETsignatureVALUE HTTP/1.1\r\nHost: gw\r\nno colon here\r\n\r\n`,
    );
    const { status, fields } = headOf(answer);
    expect(status).toBe(400);
    const line = await requestLineFor(fields.get('x-request-id')!);
    expect(line).toMatchObject({ method: 'HEAD', path: `/v1/call/recording/${CACHED_ID}.mp3`, route: 'other', status: 400 });
    expect(JSON.stringify(lines)).not.toContain('SECRETsignature');
  });

  test('credentials in an absolute-form target never reach the line: the path shows none of it', async () => {
    const answer = headOf(
      await rawExchange(
        gateway.baseUrl,
        'GET http://user:SECRETpassword@gw/v1/call/recording/7.mp3 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n',
      ),
    );
    expect(answer.status).toBe(400);
    const line = await requestLineFor(answer.fields.get('x-request-id')!);
    expect(line).toMatchObject({ method: 'GET', path: '/…', status: 400 });
    expect(JSON.stringify(lines)).not.toContain('SECRETpassword');
  });

  test('a method Node does not know is logged as "-", never as the bytes sent', async () => {
    const answer = headOf(await rawExchange(gateway.baseUrl, 'FROB\u00e9"X /v1/call/recording/7.mp3 HTTP/1.1\r\nHost: gw\r\n\r\n'));
    expect(answer.status).toBe(400);
    const line = await requestLineFor(answer.fields.get('x-request-id')!);
    expect(line).toMatchObject({ method: '-', route: 'other', status: 400 });
  });

  test('a request pipelined behind a hit and refused by the parser is logged after the hit, with its own id', async () => {
    const answer = await rawExchange(
      gateway.baseUrl,
      `GET /v1/call/recording/${CACHED_ID}.mp3 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${ACME_KEY}\r\n\r\n` +
        `GET /v1/call/recording/${CACHED_ID}.mp3 HTTP/1.1\r\nHost: gw\r\nno colon here\r\n\r\n`,
    );
    const refusal = answer.slice(answer.lastIndexOf('HTTP/1.1 '));
    const { status, fields } = headOf(refusal);
    expect(status).toBe(400);
    const line = await requestLineFor(fields.get('x-request-id')!);
    expect(line).toMatchObject({ path: `/v1/call/recording/${CACHED_ID}.mp3`, status: 400, route: 'other' });
    const requestLines = lines.filter((logged) => logged.msg === 'request');
    expect(requestLines.map((logged) => logged.status)).toEqual([200, 400]);
    expect(requestLines[0]).toMatchObject({ tenant: 'acme', route: 'recording' });
  });
});

describe("a body Node's parser refuses after its route took the request", () => {
  test("the route's line says what the client got: the refusal's status and X-Request-Id", async () => {
    const answer = await rawExchange(
      gateway.baseUrl,
      'GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Request-Id: routed-request-0001\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
    );
    const { status, fields } = headOf(answer);
    expect(status).toBe(400);
    const refusalId = fields.get('x-request-id')!;
    const line = await requestLineFor(refusalId);
    expect(line).toMatchObject({ route: 'healthz', status: 400 });
    expect(line).not.toHaveProperty('aborted');
    expect(lines.filter((logged) => logged.msg === 'request')).toHaveLength(1);
  });

  test('on a cold miss, its line counts no body bytes: none went out', async () => {
    const answer = await rawExchange(
      gateway.baseUrl,
      `GET /v1/call/recording/${UNFETCHED_ID}.mp3 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${ACME_KEY}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`,
    );
    const { status, fields } = headOf(answer);
    expect(status).toBe(400);
    expect(await requestLineFor(fields.get('x-request-id')!)).toMatchObject({ route: 'recording', status: 400, bytes: 0 });
    await gateway.gateway.downloads.idle();
  });
});

describe('what the HTTP adapter refused without an id or a line is refused before it, with both', () => {
  test.each([
    ['a backslash in the path', `GET /v1\\call/recording/${CACHED_ID}.mp3 HTTP/1.1\r\nHost: gw\r\n\r\n`, 'Malformed request target'],
    ['a backslash in an absolute-form path', 'GET http://gw/x\\y HTTP/1.1\r\nHost: gw\r\n\r\n', 'Malformed request target'],
    ['a percent-encoded Host', 'GET /healthz HTTP/1.1\r\nHost: ex%41mple.com\r\n\r\n', 'Invalid Host header'],
    ['an international Host', 'GET /healthz HTTP/1.1\r\nHost: b\u00fccher.example\r\n\r\n', 'Invalid Host header'],
  ])('%s: 400 with its X-Request-Id, logged and counted', async (_what, head, message) => {
    const before = await refusedCount(400);
    const answer = await rawExchange(gateway.baseUrl, head.replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n'));
    const { status, fields } = headOf(answer);
    expect(status).toBe(400);
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toEqual({ error: 'Bad Request', message });
    const line = await requestLineFor(fields.get('x-request-id')!);
    expect(line).toMatchObject({ method: 'GET', route: 'other', status: 400 });
    expect(await refusedCount(400)).toBe(before + 1);
  });

  test('a Host with an empty port (RFC 3986 3.2.3) is served as the same Host without it', async () => {
    const answer = await rawExchange(gateway.baseUrl, 'GET /healthz HTTP/1.1\r\nHost: gw.example:\r\nConnection: close\r\n\r\n');
    expect(headOf(answer).status).toBe(200);
  });
});

describe('a refusal that waits for a long answer before it', () => {
  const SLOW_ID = 31;
  const SLOW_IDS = [SLOW_ID, 32, 33, 34];
  let slowUpstream: FakeFlyflow;
  let slowDir: string;
  let server: Server;
  let closeGateway: () => Promise<void>;
  let baseUrl: string;
  let slowLines: Array<Record<string, unknown>>;

  beforeAll(async () => {
    slowUpstream = await startFakeFlyflow();
    for (const id of SLOW_IDS) {
      slowUpstream.setRecording(id, syntheticRecording(6_000));
      // About 1 s for the first, which its client waits for; 3 s for the others, which their clients leave.
      slowUpstream.setBehaviour(id, { kind: 'slow-body', chunkBytes: id === SLOW_ID ? 1_000 : 400, intervalMs: 200 });
    }
    slowDir = await makeTempDir();
    const captured = capturingLogger();
    slowLines = captured.lines;
    const slow = await createGateway({
      config: testConfig({ dir: slowDir, upstreamBaseUrl: slowUpstream.baseUrl }),
      logger: captured.logger,
    });
    closeGateway = () => slow.close();
    server = createHttpServer(slow.app, '127.0.0.1', {
      wrapListener: slow.answeringMemoryHitsFirst,
      memoryHits: slow.memoryHits,
      report: slow.report,
      limits: { ...DEFAULT_CONNECTION_LIMITS, headersTimeoutMs: 200, requestTimeoutMs: 400 },
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  beforeEach(() => {
    slowLines.length = 0;
  });

  /** Writes `bytes` on a new connection, then closes it after `leaveAfterMs`, reading nothing of what came. */
  async function sendThenLeave(bytes: string, leaveAfterMs: number): Promise<void> {
    const { port } = new URL(baseUrl);
    const socket = connect(Number(port), '127.0.0.1', () => socket.write(bytes));
    socket.on('error', () => {});
    await new Promise((resolve) => setTimeout(resolve, leaveAfterMs));
    socket.destroy();
  }

  /** The request lines, once `count` are written, and a little longer: a line too many would show by then. */
  async function slowRequestLines(count: number): Promise<Array<Record<string, unknown>>> {
    const requestLines = () => slowLines.filter((logged) => logged.msg === 'request');
    for (let attempt = 0; attempt < 300 && requestLines().length < count; attempt++)
      await new Promise((resolve) => setTimeout(resolve, 10));
    await new Promise((resolve) => setTimeout(resolve, 300));
    return requestLines();
  }

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await closeGateway();
    await slowUpstream.close();
    await removeDir(slowDir);
  });

  test('outlasting the headers timeout, it is still one line, after the answer before it: no second refusal for a timeout', async () => {
    const received = await rawExchange(
      baseUrl,
      `GET /v1/call/recording/${SLOW_ID}.mp3 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${ACME_KEY}\r\n\r\nFROB /q HTTP/1.1\r\nHost: gw\r\n\r\n`,
    );
    expect(received.startsWith('HTTP/1.1 200 OK\r\n')).toBe(true);
    const refusal = headOf(received.slice(received.lastIndexOf('HTTP/1.1 ')));
    expect(refusal.status).toBe(501);
    // Past another headers timeout: a second refusal would have been logged by then.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const requestLines = slowLines.filter((logged) => logged.msg === 'request');
    expect(requestLines.map((logged) => [logged.status, logged.route])).toEqual([
      [200, 'recording'],
      [501, 'other'],
    ]);
    expect(requestLines[1]!.reqId).toBe(refusal.fields.get('x-request-id'));
  });

  test("a body that does not arrive in time: the route's line says the 408 and its X-Request-Id", async () => {
    const received = await rawExchange(
      baseUrl,
      `POST /v1/call/recording/${SLOW_ID}/signed-url HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${ACME_KEY}\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{}`,
    );
    const { status, fields } = headOf(received);
    expect(status).toBe(408);
    const refusalId = fields.get('x-request-id')!;
    let line: Record<string, unknown> | undefined;
    for (let attempt = 0; attempt < 100 && line === undefined; attempt++) {
      line = slowLines.find((logged) => logged.msg === 'request' && logged.reqId === refusalId);
      if (line === undefined) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(line).toMatchObject({ route: 'recording', status: 408, tenant: 'acme' });
  });
  test('its client leaving first: the refusal, never sent, is logged after the answer before it', async () => {
    await sendThenLeave(
      `GET /v1/call/recording/32.mp3 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${ACME_KEY}\r\n\r\nFROB /q HTTP/1.1\r\nHost: gw\r\n\r\n`,
      300,
    );
    const requestLines = await slowRequestLines(2);
    expect(requestLines.map((logged) => [logged.route, logged.status])).toEqual([
      ['recording', 200],
      ['other', null],
    ]);
  });

  test("a body refused while its request waits, the client leaving first: only its route's line, no other", async () => {
    await sendThenLeave(
      `GET /v1/call/recording/33.mp3 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${ACME_KEY}\r\n\r\n` +
        `POST /v1/call/recording/33/signed-url HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${ACME_KEY}\r\nX-Request-Id: waiting-post-0001\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{}`,
      700,
    );
    const requestLines = await slowRequestLines(2);
    expect(requestLines.map((logged) => [logged.method, logged.route, logged.status])).toEqual([
      ['GET', 'recording', 200],
      ['POST', 'recording', null],
    ]);
    expect(requestLines[1]!.reqId).toBe('waiting-post-0001');
  });

  test('a valid request queued behind the answer, its client leaving first, is logged with no status: none was sent', async () => {
    await sendThenLeave(
      `GET /v1/call/recording/34.mp3 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${ACME_KEY}\r\n\r\nGET /healthz HTTP/1.1\r\nHost: gw\r\nX-Request-Id: queued-health-0001\r\n\r\n`,
      300,
    );
    const requestLines = await slowRequestLines(2);
    expect(requestLines.find((logged) => logged.reqId === 'queued-health-0001')).toMatchObject({ status: null, aborted: true });
  });
});
