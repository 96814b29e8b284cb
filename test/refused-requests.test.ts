/**
 * What every error answer says of caching (`no-store`), and the requests
 * refused before any route (by Node's parser or the server's own checks):
 * each gets the request line and the count in the metrics a routed request
 * gets, with the X-Request-Id its answer carried, and nothing of its target
 * that could hold a secret.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, makeTempDir, rawExchange, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { syntheticRecording } from '../dev/recording-bytes.js';
import { capturingLogger } from './support/capturing-logger.js';

const ADMIN_TOKEN = 'admin-token-for-tests-refusals-0123';
const CACHED_ID = 7;
const MISSING_ID = 404_404;

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway;
let lines: Array<Record<string, unknown>>;

beforeAll(async () => {
  upstream = await startFakeFlyflow();
  upstream.setRecording(CACHED_ID, syntheticRecording(20_000));
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
