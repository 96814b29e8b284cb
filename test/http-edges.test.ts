/**
 * The edges of HTTP a picky client meets: the right method answered 405 with
 * the route's own `Allow`, bodies over a route's limit answered 413, a
 * request without exactly one Host answered 400, all in the JSON error shape,
 * and a preflight that lets a browser send every conditional header.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  ACME_ORIGIN,
  makeTempDir,
  rawExchange,
  rawRequest,
  removeDir,
  startGateway,
  testConfig,
  type RunningGateway,
} from '../dev/gateway-harness.js';
import { syntheticRecording } from '../dev/recording-bytes.js';

/** The answers one after the other in what a connection received (latin1), each by its Content-Length. */
function answersIn(received: string): Array<{ status: string; body: Buffer }> {
  const answers: Array<{ status: string; body: Buffer }> = [];
  for (let at = 0; at < received.length; ) {
    const headEnd = received.indexOf('\r\n\r\n', at);
    if (headEnd === -1) throw new Error(`an incomplete head at byte ${at}: ${JSON.stringify(received.slice(at, at + 80))}`);
    const head = received.slice(at, headEnd);
    const length = Number(/\r\nContent-Length: (\d+)/i.exec(head)?.[1] ?? 0);
    answers.push({
      status: /^HTTP\/1\.1 (\d{3} [^\r]*)/.exec(head)?.[1] ?? head.slice(0, 40),
      body: Buffer.from(received.slice(headEnd + 4, headEnd + 4 + length), 'latin1'),
    });
    at = headEnd + 4 + length;
  }
  return answers;
}

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway;

beforeAll(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
});

afterAll(async () => {
  await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

describe('CONNECT, which Node hands the server apart from every other method', () => {
  test.each([
    ['an authority-form target', 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n'],
    ['a recording path', 'CONNECT /v1/call/recording/1.mp3 HTTP/1.1\r\nHost: gw.example\r\n\r\n'],
  ])('is answered a JSON 405 with Allow, not a connection closed unanswered: %s', async (_, head) => {
    const answer = await rawExchange(gateway.baseUrl, head);
    expect(answer.startsWith('HTTP/1.1 405 Method Not Allowed\r\n')).toBe(true);
    expect(answer).toContain('\r\nAllow: GET, HEAD, POST, DELETE, OPTIONS\r\n');
    expect(answer).toContain('\r\nContent-Type: application/json\r\n');
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toEqual({
      error: 'Method Not Allowed',
      message: 'CONNECT is not served: the gateway is no forward proxy',
    });
  });
});

describe("a method the route does not take is 405 with that route's Allow", () => {
  test.each([
    ['POST', '/v1/call/recording/1.mp3', 'GET, HEAD, DELETE, OPTIONS'],
    ['PUT', '/v1/call/recording/1.mp3', 'GET, HEAD, DELETE, OPTIONS'],
    ['GET', '/v1/call/recording/1/signed-url', 'POST, OPTIONS'],
    ['DELETE', '/v1/call/recording/1/signed-url', 'POST, OPTIONS'],
    ['PUT', '/v1/call/recording/1/signed-url', 'POST, OPTIONS'],
    ['POST', '/healthz', 'GET, HEAD, OPTIONS'],
    ['DELETE', '/readyz', 'GET, HEAD, OPTIONS'],
    ['PUT', '/metrics', 'GET, HEAD, OPTIONS'],
    ['GET', '/v1/webhooks/flyflow/acme', 'POST, OPTIONS'],
    ['GET', '/admin/cache/purge', 'POST, OPTIONS'],
  ])('%s %s', async (method, path, allow) => {
    const response = await gateway.fetch(path, { method });
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe(allow);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(await response.json()).toMatchObject({ error: 'Method Not Allowed' });
    expect(upstream.requests).toHaveLength(0);
  });

  test.each([
    ['/v1/call/recording/1.mp3', 'GET, HEAD, DELETE, OPTIONS'],
    ['/v1/call/recording/1/signed-url', 'POST, OPTIONS'],
    ['/v1/call/recording/1/info.json', 'GET, HEAD, OPTIONS'],
    ['/v1/call/recording/1/peaks.json', 'GET, HEAD, OPTIONS'],
    ['/healthz', 'GET, HEAD, OPTIONS'],
    ['/v1/webhooks/flyflow/acme', 'POST, OPTIONS'],
  ])('a plain OPTIONS (no Origin) on %s is 204 with the same Allow', async (path, allow) => {
    const response = await gateway.fetch(path, { method: 'OPTIONS' });
    expect(response.status).toBe(204);
    expect(response.headers.get('allow')).toBe(allow);
    expect(upstream.requests).toHaveLength(0);
  });

  test.each([
    '/v1/call/recording/01.mp3',
    '/v1/call/recording/0.mp3',
    '/v1/call/recording/abc.mp3',
    '/v1/call/recording/%31.mp3',
    '/v1/call/recording/01/signed-url',
    '/v1/call/recording/01/info.json',
    '/v1/call/recording/0/peaks.json',
  ])('a bad id is no route path: a plain OPTIONS or another method on %s gets the 400 a GET gets', async (path) => {
    const get = await rawRequest(gateway.baseUrl, path);
    expect(get.status).toBe(400);
    for (const method of ['OPTIONS', 'PUT']) {
      const answer = await rawRequest(gateway.baseUrl, path, { method });
      expect(answer.status, method).toBe(400);
      expect(answer.headers.allow, method).toBeUndefined();
      expect(answer.headers['content-type'], method).toBe('application/json');
      expect(JSON.parse(answer.body.toString()), method).toEqual(JSON.parse(get.body.toString()));
    }
    expect(upstream.requests).toHaveLength(0);
  });

  test('a preflight (with Origin) on a bad id is still answered, so the browser sends the request and can read its 400', async () => {
    const path = '/v1/call/recording/01.mp3';
    const preflight = await rawRequest(gateway.baseUrl, path, {
      method: 'OPTIONS',
      headers: { origin: ACME_ORIGIN, 'access-control-request-method': 'GET' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers['access-control-allow-origin']).toBe(ACME_ORIGIN);
    const get = await rawRequest(gateway.baseUrl, path, { headers: { origin: ACME_ORIGIN } });
    expect(get.status).toBe(400);
    expect(get.headers['access-control-allow-origin']).toBe(ACME_ORIGIN);
  });

  test('a path that is no recording route stays a 400 about the id', async () => {
    const response = await gateway.fetch('/v1/call/recording/1/other', { method: 'PUT' });
    expect(response.status).toBe(400);
  });
});

describe("a body over the route's limit", () => {
  test('is 413 Content Too Large in the JSON shape', async () => {
    const response = await gateway.fetch('/v1/call/recording/1/signed-url', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ttl_seconds: 60, padding: 'x'.repeat(8 * 1024) }),
    });
    expect(response.status).toBe(413);
    expect(await response.json()).toMatchObject({ error: 'Content Too Large' });
  });
});

describe('a request without exactly one Host', () => {
  test('is 400 in the JSON shape when Host is missing', async () => {
    const answer = await rawExchange(gateway.baseUrl, 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toContain('application/json');
    expect(answer).toContain('"message":"Missing Host header"');
    expect(answer).toMatch(/\r\nX-Request-Id: [0-9a-f-]{36}\r\n/);
  });

  test('is 400 in the JSON shape when Host is sent twice', async () => {
    const answer = await rawExchange(
      gateway.baseUrl,
      'GET /healthz HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n',
    );
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toContain('"message":"More than one Host header"');
    // The caller's own id, as on every answer.
    expect(
      await rawExchange(gateway.baseUrl, 'GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nX-Request-Id: caller-id-42\r\n\r\n'),
    ).toContain('\r\nX-Request-Id: caller-id-42\r\n');
  });

  test('one Host is served as usual, and HTTP/1.0 needs none', async () => {
    expect(await rawExchange(gateway.baseUrl, 'GET /healthz HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n')).toMatch(
      /^HTTP\/1\.1 200 /,
    );
    expect(await rawExchange(gateway.baseUrl, 'GET /healthz HTTP/1.0\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
  });
});

describe('a head of more than 1000 fields', () => {
  const padding = (fields: number) => Array.from({ length: fields }, (_, i) => `X-Pad-${i}: a\r\n`).join('');

  test('is refused whole with a JSON 431, not served with the fields past the 1000th dropped', async () => {
    const healthz = (fields: number) => `GET /healthz HTTP/1.1\r\nHost: gw.example\r\n${padding(fields)}Connection: close\r\n\r\n`;
    // Host, the padding and Connection: 1000 fields, then 1001.
    expect(await rawExchange(gateway.baseUrl, healthz(998))).toMatch(/^HTTP\/1\.1 200 /);
    const refused = await rawExchange(gateway.baseUrl, healthz(999));
    expect(refused).toMatch(/^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
    expect(refused).toContain('\r\nConnection: close\r\n');
    expect(refused).toContain('{"error":"Request Header Fields Too Large","message":"More than 1000 header fields"}');
    // A second Host past the 1000th field, in a head well under 16 KB: not taken for one Host.
    const twoHosts = await rawExchange(gateway.baseUrl, `GET /healthz HTTP/1.1\r\nHost: a\r\n${'X: a\r\n'.repeat(1500)}Host: b\r\n\r\n`);
    expect(twoHosts).toMatch(/^HTTP\/1\.1 431 /);
  });

  test('so a conditional DELETE with its If-Match past the 1000th field deletes nothing', async () => {
    const id = 4290;
    upstream.setRecording(id, syntheticRecording(8 * 1024));
    const path = `/v1/call/recording/${id}.mp3`;
    await (await gateway.fetch(path)).arrayBuffer();
    await gateway.gateway.downloads.idle();
    const conditionalDelete = `DELETE ${path} HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer ${ACME_KEY}\r\n${padding(998)}If-Match: "not-its-etag"\r\nConnection: close\r\n\r\n`;
    expect(await rawExchange(gateway.baseUrl, conditionalDelete)).toMatch(/^HTTP\/1\.1 431 /);
    const after = await gateway.fetch(path, { method: 'HEAD' });
    expect(after.headers.get('cache-status')).toContain('; hit');
    expect(upstream.recordingRequests(id)).toHaveLength(1);
  });
});

describe('requests the HTTP layer refuses or answers before the routes', () => {
  test('an expectation other than 100-continue is 417 in the JSON shape, with a request id', async () => {
    const answer = await rawExchange(
      gateway.baseUrl,
      'GET /healthz HTTP/1.1\r\nHost: gw.example\r\nExpect: foo\r\nConnection: close\r\n\r\n',
    );
    expect(answer).toMatch(/^HTTP\/1\.1 417 Expectation Failed\r\n/);
    expect(answer).toContain('Content-Type: application/json');
    expect(answer).toMatch(/\r\nX-Request-Id: [0-9a-f-]{36}\r\n/);
    expect(answer).toContain('{"error":"Expectation Failed","message":"The only expectation served is \\"100-continue\\""}');
  });

  test('Expect: 100-continue still gets its 100 and then the answer', async () => {
    const answer = await rawExchange(
      gateway.baseUrl,
      'GET /healthz HTTP/1.1\r\nHost: gw.example\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n',
    );
    expect(answer).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
  });

  test('Expect: 100-continue pipelined behind another request: its 100 never lands inside the answer before it', async () => {
    const id = 4242;
    const recording = syntheticRecording(256 * 1024);
    upstream.setRecording(id, recording);
    const get = `GET /v1/call/recording/${id}.mp3 HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer ${ACME_KEY}\r\n`;
    expect(await rawExchange(gateway.baseUrl, `${get}Connection: close\r\n\r\n`)).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    // Content-Length: 0 takes the first past the memory-hit door, so Node's own server answers both.
    for (const first of [`${get}\r\n`, `${get}Content-Length: 0\r\n\r\n`]) {
      // The second a memory hit too, answered at once, while the first answer is still being written.
      const answers = await rawExchange(
        gateway.baseUrl,
        `${first}${get}Range: bytes=0-1\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
      );
      const headEnd = answers.indexOf('\r\n\r\n') + 4;
      expect(answers.slice(0, headEnd)).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\nContent-Length: 262144\r\n/);
      const body = Buffer.from(answers.slice(headEnd, headEnd + recording.length), 'latin1');
      expect(body.equals(recording), "the first answer's body, byte for byte").toBe(true);
      // A 100 after the answer before it, ahead of its own, is as RFC 9110 15.2 has it.
      const second = answers.slice(headEnd + recording.length).replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '');
      expect(second).toMatch(/^HTTP\/1\.1 206 Partial Content\r\n/);
      expect(second.slice(second.indexOf('\r\n\r\n') + 4)).toBe(recording.subarray(0, 2).toString('latin1'));
    }
  });

  test('a request the parser refuses, pipelined behind two others, is refused after both answers', async () => {
    const id = 4243;
    const recording = syntheticRecording(192 * 1024);
    upstream.setRecording(id, recording);
    const get = `GET /v1/call/recording/${id}.mp3 HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer ${ACME_KEY}\r\n`;
    expect(await rawExchange(gateway.baseUrl, `${get}Connection: close\r\n\r\n`)).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    // Content-Length: 0 takes the first past the memory-hit door: Node's parser reads all three.
    // The second a miss, answered once the upstream has: its answer is still to come as the first ends.
    const missing = `GET /v1/call/recording/${id + 1}.mp3 HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer ${ACME_KEY}\r\n`;
    upstream.setRecording(id + 1, recording);
    const answers = answersIn(
      await rawExchange(gateway.baseUrl, `${get}Content-Length: 0\r\n\r\n${missing}Range: bytes=0-1\r\n\r\nGET /a\tb HTTP/1.1\r\n\r\n`),
    );
    expect(answers.map((answer) => answer.status)).toEqual(['200 OK', '206 Partial Content', '400 Bad Request']);
    expect(answers[0]!.body.equals(recording)).toBe(true);
    expect(answers[1]!.body.equals(recording.subarray(0, 2))).toBe(true);
    expect(JSON.parse(answers[2]!.body.toString())).toEqual({ error: 'Bad Request', message: 'Malformed HTTP request' });
  });

  test("a refusal waits for a miss queued behind a memory hit answered on Node's path", async () => {
    const id = 4250;
    const recording = syntheticRecording(2 * 1024);
    upstream.setRecording(id, recording);
    upstream.setRecording(id + 1, recording);
    upstream.setBehaviour(id + 1, { kind: 'slow-head', delayMs: 300 });
    const get = (callId: number) =>
      `GET /v1/call/recording/${callId}.mp3 HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer ${ACME_KEY}\r\n`;
    expect(await rawExchange(gateway.baseUrl, `${get(id)}Connection: close\r\n\r\n`)).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    // The hit's 2 KiB are with the kernel at once; the miss behind it waits 300 ms for its upstream.
    const answers = answersIn(
      await rawExchange(gateway.baseUrl, `${get(id)}Content-Length: 0\r\n\r\n${get(id + 1)}\r\nGET /a\tb HTTP/1.1\r\n\r\n`),
    );
    expect(answers.map((answer) => answer.status)).toEqual(['200 OK', '200 OK', '400 Bad Request']);
    expect(answers[0]!.body.equals(recording) && answers[1]!.body.equals(recording)).toBe(true);
  });

  test('a client that resets its connection right after a CONNECT leaves no uncaught error behind (0.7.1 ended the process)', async () => {
    const uncaught: Error[] = [];
    const monitor = (error: Error) => uncaught.push(error);
    process.on('uncaughtExceptionMonitor', monitor);
    try {
      const { port } = new URL(gateway.baseUrl);
      for (let i = 0; i < 5; i++) {
        const socket = connect(Number(port), '127.0.0.1');
        socket.on('error', () => {});
        await new Promise((resolve) => socket.once('connect', resolve));
        socket.write('CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n');
        socket.resetAndDestroy();
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect((await gateway.fetch('/healthz')).status).toBe(200);
      expect(uncaught.map((error) => error.message)).toEqual([]);
    } finally {
      process.off('uncaughtExceptionMonitor', monitor);
    }
  });

  test('CONNECT pipelined behind a miss or a hit is refused after its whole answer, not in its place', async () => {
    const id = 4252;
    // Large enough that the miss's answer is written in parts, each after the connection drained.
    const recording = syntheticRecording(1024 * 1024);
    upstream.setRecording(id, recording);
    upstream.setBehaviour(id, { kind: 'slow-head', delayMs: 300 });
    const get = `GET /v1/call/recording/${id}.mp3 HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer ${ACME_KEY}\r\n`;
    // A miss, a memory hit on Node's path (Content-Length: 0 takes it past the memory-hit door), a memory hit the door answers.
    for (const first of [`${get}\r\n`, `${get}Content-Length: 0\r\n\r\n`, `${get}\r\n`]) {
      const answers = answersIn(await rawExchange(gateway.baseUrl, `${first}CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n`));
      expect(answers.map((answer) => answer.status)).toEqual(['200 OK', '405 Method Not Allowed']);
      expect(answers[0]!.body.equals(recording)).toBe(true);
    }
  });

  test('a body the parser refuses, of a request queued behind a miss, is refused once the miss is answered, not at the request timeout', async () => {
    const id = 4246;
    const recording = syntheticRecording(16 * 1024);
    upstream.setRecording(id, recording);
    upstream.setBehaviour(id, { kind: 'slow-head', delayMs: 300 });
    const answers = answersIn(
      await rawExchange(
        gateway.baseUrl,
        `GET /v1/call/recording/${id}.mp3 HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer ${ACME_KEY}\r\n\r\n` +
          `POST /v1/call/recording/${id}/signed-url HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer ${ACME_KEY}\r\n` +
          'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n',
      ),
    );
    expect(answers.map((answer) => answer.status)).toEqual(['200 OK', '400 Bad Request']);
    // Before the request timeout's 408: rawExchange gives up after 5 s.
    expect(answers[0]!.body.equals(recording)).toBe(true);
  });

  test('OPTIONS * is about the server: 204 with every method some route takes; GET * stays a 400', async () => {
    const options = await rawExchange(gateway.baseUrl, 'OPTIONS * HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n');
    expect(options).toMatch(/^HTTP\/1\.1 204 No Content\r\n/);
    expect(options).toContain('\r\nAllow: GET, HEAD, POST, DELETE, OPTIONS\r\n');
    const get = await rawExchange(gateway.baseUrl, 'GET * HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n');
    expect(get).toMatch(/^HTTP\/1\.1 400 /);
    expect(get).toContain('"message":"Malformed request target"');
    expect(get).toMatch(/\r\nX-Request-Id: [0-9a-f-]{36}\r\n/);
  });

  test.each([
    ['ftp://gw.example/healthz', 'another scheme'],
    ['http:///healthz', 'an empty host (RFC 9110 4.2.1)'],
    ['https://:8080/healthz', 'a port and no host'],
    ['http://gw.example:99999/healthz', 'a port out of range'],
    ['http://[::1/healthz', 'an IPv6 address left open'],
  ])('an absolute-form target %s (%s) is 400 in the JSON shape, with a request id', async (target) => {
    const answer = await rawExchange(gateway.baseUrl, `GET ${target} HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toContain('{"error":"Bad Request","message":"Malformed request target"}');
    expect(answer).toMatch(/\r\nX-Request-Id: [0-9a-f-]{36}\r\n/);
  });

  test('an absolute-form target without a path is served as its origin\'s "/" (RFC 9112 3.2.2)', async () => {
    const answer = await rawExchange(
      gateway.baseUrl,
      'GET http://gw.example?x=1 HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n',
    );
    expect(answer).toMatch(/^HTTP\/1\.1 404 /);
    expect(answer).toContain('"message":"No such route"');
  });

  test('an HTTP/1.0 request with Transfer-Encoding is answered, then its connection closed (RFC 9112 6.1)', async () => {
    const faulty = 'GET /healthz HTTP/1.0\r\nHost: gw.example\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n';
    const behind = 'GET /healthz HTTP/1.1\r\nHost: gw.example\r\nX-Request-Id: smuggled-behind\r\n\r\n';
    const received = await rawExchange(gateway.baseUrl, faulty + behind);
    const answers = answersIn(received);
    expect(answers.map((answer) => answer.status)).toEqual(['200 OK']);
    expect(received).toContain('\r\nConnection: close\r\n');
    expect(received).not.toContain('smuggled-behind');
  });

  test('an HTTP/1.0 request that asks for keep-alive, without Transfer-Encoding, keeps its connection', async () => {
    const first = 'GET /healthz HTTP/1.0\r\nHost: gw.example\r\nConnection: keep-alive\r\n\r\n';
    const second = 'GET /healthz HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n';
    expect(answersIn(await rawExchange(gateway.baseUrl, first + second)).map((answer) => answer.status)).toEqual(['200 OK', '200 OK']);
  });

  test.each(['HTTP', 'Http', 'hTTPs'])(
    'an absolute-form target with the scheme written %s is served as in lower case (RFC 3986 3.1)',
    async (scheme) => {
      const target = `${scheme}://gw.example/v1/call/recording/1.mp3`;
      const answer = await rawExchange(
        gateway.baseUrl,
        `GET ${target} HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer ${ACME_KEY}\r\nRange: bytes=0-1\r\nConnection: close\r\n\r\n`,
      );
      expect(answer).toMatch(/^HTTP\/1\.1 206 /);
    },
  );

  test.each([
    ['/v1/call/recording/1.mp3#part', 'after the path'],
    ['/v1/call/recording/1.mp3?cb=1#part', 'after the query'],
    ['http://gw.example/v1/call/recording/1.mp3#part', 'in absolute form'],
  ])('a target with a fragment (%s, %s) is 400: a request target has none (RFC 9112 3.2)', async (target) => {
    const answer = await rawExchange(
      gateway.baseUrl,
      `GET ${target} HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer ${ACME_KEY}\r\nConnection: close\r\n\r\n`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toContain('"message":"Malformed request target"');
  });

  test.each([
    [
      'a request line longer than the header limit',
      `GET /v1/call/recording/1.mp3?cb=${'a'.repeat(17_000)} HTTP/1.1\r\nHost: gw.example\r\n\r\n`,
      '414 URI Too Long',
    ],
    [
      'a short request line with too many header bytes',
      `GET /healthz HTTP/1.1\r\nHost: gw.example\r\nX-Pad: ${'a'.repeat(17_000)}\r\n\r\n`,
      '431 Request Header Fields Too Large',
    ],
    ['a method nobody knows', 'FOO /healthz HTTP/1.1\r\nHost: gw.example\r\n\r\n', '501 Not Implemented'],
    ['bytes that are no request line', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n', '400 Bad Request'],
    ['an HTTP version other than 1.0 and 1.1', 'GET /healthz HTTP/9.9\r\nHost: gw.example\r\n\r\n', '505 HTTP Version Not Supported'],
    [
      'HTTP/2.0 in a request line, which Node parses as 1.x',
      'GET /healthz HTTP/2.0\r\nHost: gw.example\r\n\r\n',
      '505 HTTP Version Not Supported',
    ],
    [
      'HTTP/0.9 in a request line, which Node parses as well',
      'GET /healthz HTTP/0.9\r\nHost: gw.example\r\n\r\n',
      '505 HTTP Version Not Supported',
    ],
    [
      "HTTP/2's connection preface (prior knowledge), which this HTTP/1.1 server cannot speak",
      'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
      '505 HTTP Version Not Supported',
    ],
    [
      'an HTTP/1.1 request line ending in a bare LF, which is malformed, not another version',
      'GET /healthz HTTP/1.1\nHost: x\n\n',
      '400 Bad Request',
    ],
    ['an HTTP/1.0 request line ending in a bare LF', 'GET /healthz HTTP/1.0\n\n', '400 Bad Request'],
    ['an HTTP/1.1 version followed by a space', 'GET /healthz HTTP/1.1 \r\nHost: x\r\n\r\n', '400 Bad Request'],
    [
      'a version token with two digits for the major version, which is no HTTP-version',
      'GET /healthz HTTP/01.1\r\nHost: x\r\n\r\n',
      '400 Bad Request',
    ],
    ['a version token with two digits for the minor version', 'GET /healthz HTTP/1.10\r\nHost: x\r\n\r\n', '400 Bad Request'],
    ['another version followed by a space', 'GET /healthz HTTP/9.9 \r\nHost: x\r\n\r\n', '400 Bad Request'],
    [
      "a higher minor version of HTTP/1, which Node's parser refuses",
      'GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n',
      '505 HTTP Version Not Supported',
    ],
    ['a bare LF after another version, still that version', 'GET /healthz HTTP/9.9\nHost: x\n\n', '505 HTTP Version Not Supported'],
    ['PRI as the method of an HTTP/1.1 request ending in a bare LF', 'PRI /healthz HTTP/1.1\nHost: gw.example\n\n', '501 Not Implemented'],
    [
      'PRI as the method of an HTTP/1.1 request, which is no preface',
      'PRI /healthz HTTP/1.1\r\nHost: gw.example\r\n\r\n',
      '501 Not Implemented',
    ],
  ])('%s', async (_name, head, status) => {
    const answer = await rawExchange(gateway.baseUrl, head);
    expect(answer.startsWith(`HTTP/1.1 ${status}\r\n`)).toBe(true);
    expect(answer).toContain('Content-Type: application/json');
    // The parser refused the headers too: a new id, not the caller's.
    expect(answer).toMatch(/\r\nX-Request-Id: [0-9a-f-]{36}\r\n/);
    // RFC 9110 6.6.1: every 4xx from a server with a clock has a Date.
    expect(answer).toMatch(/\r\nDate: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n/);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Record<string, string>;
    expect(Object.keys(body).sort()).toEqual(['error', 'message']);
    expect(body.error).toBe(status.slice(4));
  });
});

describe('a refused request pipelined behind a valid one (RFC 9112 9.3.2: answers in request order)', () => {
  test.each([
    ['an HTTP version other than 1.0 and 1.1', 'GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n', '505 HTTP Version Not Supported'],
    ['a header line without a colon', 'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n', '400 Bad Request'],
    [
      'headers over the limit',
      `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(20_000)}\r\n\r\n`,
      '431 Request Header Fields Too Large',
    ],
  ])('%s: the valid one is answered first, then the refusal', async (_name, refused, status) => {
    const answer = await rawExchange(gateway.baseUrl, `GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n${refused}`);
    const statusLines = [...answer.matchAll(/HTTP\/1\.1 (\d{3} [^\r]*)\r\n/g)].map((match) => match[1]);
    expect(statusLines).toEqual(['200 OK', status]);
    expect(answer).toContain('{"status":"ok"}');
  });

  test('behind a recording still streaming, the refusal waits for its last byte', async () => {
    const recording = await gateway.fetch('/v1/call/recording/3.mp3', { headers: { authorization: `Bearer ${ACME_KEY}` } });
    const size = (await recording.arrayBuffer()).byteLength;
    const answer = await rawExchange(
      gateway.baseUrl,
      `GET /v1/call/recording/3.mp3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ACME_KEY}\r\n\r\nGET /healthz HTTP/9.9\r\nHost: x\r\n\r\n`,
    );
    expect(answer.startsWith('HTTP/1.1 200 OK\r\n')).toBe(true);
    const refusal = answer.lastIndexOf('HTTP/1.1 505 ');
    const bodyStart = answer.indexOf('\r\n\r\n') + 4;
    expect(refusal - bodyStart).toBe(size);
  });
});

/**
 * Sends `head`, then `later` in a packet of its own while the answer is still
 * unread, and only then reads: all that came back, and whether the connection
 * ended in a reset.
 */
function exchangeReadingLate(head: string, later: string): Promise<{ received: Buffer; reset: boolean }> {
  const { hostname, port } = new URL(gateway.baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => {
      socket.write(head);
      setTimeout(() => socket.write(later), 50);
      setTimeout(() => socket.resume(), 150);
    });
    socket.pause();
    const chunks: Buffer[] = [];
    let reset = false;
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => {
      reset = true;
    });
    socket.on('close', () => resolve({ received: Buffer.concat(chunks), reset }));
    socket.setTimeout(10_000, () => reject(new Error('no end in 10 s')));
  });
}

function bodyAfterHead(received: Buffer): Buffer {
  return received.subarray(received.indexOf('\r\n\r\n') + 4);
}

describe('a connection closed after its last answer (RFC 9112 9.6)', () => {
  const LARGE_ID = 9_001;
  const large = syntheticRecording(900_000);
  const authorization = `Authorization: Bearer ${ACME_KEY}\r\n`;

  beforeAll(async () => {
    upstream.setRecording(LARGE_ID, large);
    const warm = await gateway.fetch(`/v1/call/recording/${LARGE_ID}.mp3`, { headers: { authorization: `Bearer ${ACME_KEY}` } });
    expect((await warm.arrayBuffer()).byteLength).toBe(large.length);
  });

  test.each([
    [
      'HTTP/1.1 with Connection: close',
      `GET /v1/call/recording/${LARGE_ID}.mp3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${authorization}\r\n`,
    ],
    ['HTTP/1.0', `GET /v1/call/recording/${LARGE_ID}.mp3 HTTP/1.0\r\n${authorization}\r\n`],
  ])('%s: a stray CRLF sent while the client has not read the answer yet does not cut it short', async (_name, head) => {
    const { received, reset } = await exchangeReadingLate(head, '\r\n');
    expect(reset).toBe(false);
    expect(received.subarray(0, 17).toString()).toBe('HTTP/1.1 200 OK\r\n');
    expect(bodyAfterHead(received).equals(large)).toBe(true);
  });

  test('bytes after a request that asked to close are ignored, not refused, and its answer is whole', async () => {
    const { received, reset } = await exchangeReadingLate(
      `GET /v1/call/recording/${LARGE_ID}.mp3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${authorization}\r\n`,
      'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
    );
    expect(reset).toBe(false);
    expect(bodyAfterHead(received).equals(large)).toBe(true);
  });

  test.each([
    ['Connection: close', 'HTTP/1.1', 'Host: x\r\nConnection: close\r\n'],
    ['HTTP/1.0', 'HTTP/1.0', ''],
  ])('a request pipelined behind one with %s is not answered, nor refused in its place', async (_name, version, closing) => {
    const ranged = (range: string, extra: string, protocol = 'HTTP/1.1') =>
      `GET /v1/call/recording/1.mp3 ${protocol}\r\n${extra}${authorization}Range: bytes=${range}\r\n\r\n`;
    const answer = await rawExchange(
      gateway.baseUrl,
      ranged('0-1', 'Host: x\r\n') + ranged('2-3', closing, version) + ranged('4-5', 'Host: x\r\n'),
    );
    const statusLines = [...answer.matchAll(/HTTP\/1\.1 (\d{3} [^\r]*)\r\n/g)].map((match) => match[1]);
    expect(statusLines).toEqual(['206 Partial Content', '206 Partial Content']);
    expect([...answer.matchAll(/Content-Range: (bytes \d+-\d+)\//g)].map((match) => match[1])).toEqual(['bytes 0-1', 'bytes 2-3']);
  });
});

describe('credentials', () => {
  test('a route that needs the API key does not suggest a signed URL when none is sent', async () => {
    const response = await gateway.fetch('/v1/call/recording/1.mp3', { method: 'DELETE', headers: { authorization: '' } });
    expect(response.status).toBe(401);
    const { message } = (await response.json()) as { message: string };
    expect(message).toContain('Authorization: Bearer');
    expect(message).not.toContain('or a signed URL');
  });
});

describe('CORS preflight', () => {
  test('a preflight keeps its answer: CORS headers, and no Allow', async () => {
    const response = await gateway.fetch('/v1/call/recording/1.mp3', {
      method: 'OPTIONS',
      headers: { origin: ACME_ORIGIN, 'access-control-request-method': 'GET' },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get('access-control-allow-methods')).toBe('GET, HEAD, POST, DELETE');
    expect(response.headers.get('allow')).toBeNull();
  });

  test('lets a browser send every conditional header the gateway honours', async () => {
    const response = await gateway.fetch('/v1/call/recording/1.mp3', {
      method: 'OPTIONS',
      headers: { origin: ACME_ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': 'if-match' },
    });
    const allowed = (response.headers.get('access-control-allow-headers') ?? '').toLowerCase().split(/\s*,\s*/);
    for (const header of ['range', 'if-range', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since', 'authorization']) {
      expect(allowed).toContain(header);
    }
  });
});

describe('HEAD carries the header fields GET would (RFC 9110 9.3.2)', () => {
  const acme = { authorization: `Bearer ${ACME_KEY}` };
  test.each([
    ['/healthz', {}],
    ['/readyz', {}],
    ['/openapi.json', {}],
    ['/metrics', {}],
    ['a 404 route', { path: '/no/such/route' }],
    ['a 400 id', { path: '/v1/call/recording/01.mp3' }],
    ['a 401 answer', { path: '/v1/call/recording/1.mp3' }],
    ['a 412 answer', { path: '/v1/call/recording/1.mp3', headers: { ...acme, 'if-match': '"other"' } }],
    ['a recording', { path: '/v1/call/recording/1.mp3', headers: acme }],
  ] as const)(
    '%s: Content-Length, the length of the body GET gets',
    async (name, options: { path?: string; headers?: Record<string, string> }) => {
      const path = options.path ?? name;
      const headers = options.headers ?? {};
      const get = await gateway.fetch(path, { headers });
      const body = Buffer.from(await get.arrayBuffer());
      const head = await gateway.fetch(path, { method: 'HEAD', headers });
      expect(head.status).toBe(get.status);
      expect((await head.arrayBuffer()).byteLength).toBe(0);
      // /metrics grows between the two requests; its head still says what a GET would have sent then.
      if (path === '/metrics') expect(Number(head.headers.get('content-length'))).toBeGreaterThan(0);
      else expect(head.headers.get('content-length')).toBe(String(body.length));
      expect(head.headers.get('content-type')).toBe(get.headers.get('content-type'));
    },
  );
});
