import { readdirSync } from 'node:fs';
import type { Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { syntheticRecording } from '../dev/recording-bytes.js';
import {
  ACME_KEY,
  ACME_ORIGIN,
  acmeTenant,
  expectedEtag,
  makeTempDir,
  manualClock,
  removeDir,
  signedQuery,
  testConfig,
} from '../dev/gateway-harness.js';
import type { GatewayConfig } from '../src/config/index.js';
import { createGateway, type Gateway } from '../src/gateway.js';
import { bytesWaiting } from '../src/http/handle-write.js';
import type { MemoryHits } from '../src/routes/memory-hits.js';
import { createHttpServer, type ConnectionLimits } from '../src/server.js';
import { capturingLogger } from './support/capturing-logger.js';
import { closeServer, exchange, type Listening, listen, normalise, serverHasRead, statusesOf, wholeAnswers } from './support/raw-http.js';
import { startRedisServer, type RunningRedis } from './support/redis-server.js';

/*
 * The memory-hit door (src/memory-hit-door.ts) answers plain memory hits from
 * a connection's bytes, before Node's parser, and hands everything else to
 * Node. Its promise: the bytes a client receives are those a server without
 * the door sends, apart from Date (and a generated X-Request-Id, and the
 * rate-limit tokens left). Two servers on one gateway, real TCP, raw bytes.
 */

const REC = '/v1/call/recording/1.mp3';
/** Too big for the memory tier (an eighth of max_memory_bytes): a disk hit, which the door must hand over. */
const DISK_REC = '/v1/call/recording/4.mp3';
/** Not upstream: a remembered 404 once warmed. */
const ABSENT_REC = '/v1/call/recording/77.mp3';
const AUTH = `Authorization: Bearer ${ACME_KEY}\r\n`;
const RID = 'X-Request-Id: door-test-0001\r\n';

const opened: Server[] = [];

/** Listens, and closes the server after all tests. */
async function listenTracked(server: Server): Promise<Listening> {
  opened.push(server);
  return listen(server);
}

/** The door's hits, counted: what the door answered itself. */
function countingHits(hits: MemoryHits, counter: { n: number }): MemoryHits {
  return {
    prepare(...args) {
      const hit = hits.prepare(...args);
      if (hit) counter.n++;
      return hit;
    },
    unanswered: (...args) => hits.unanswered(...args),
  };
}

/** The gateway's server, with the door (`memoryHits`) or without. */
function serverFor(gateway: Gateway, options: { door?: MemoryHits; limits?: ConnectionLimits; stalledAfterMs?: number }) {
  return createHttpServer(gateway.app, '127.0.0.1', {
    wrapListener: gateway.answeringMemoryHitsFirst,
    ...(options.door ? { memoryHits: options.door } : {}),
    ...(options.limits ? { limits: options.limits } : {}),
    ...(options.stalledAfterMs ? { stalledAfterMs: options.stalledAfterMs } : {}),
  });
}

/** A request head for the main recording, with the acme key and a fixed request id unless `lines` say otherwise. */
function head(lines = '', target = REC, method = 'GET', withAuth = true): string {
  return `${method} ${target} HTTP/1.1\r\nHost: gw.test\r\n${withAuth ? AUTH : ''}${RID}${lines}\r\n`;
}

/** Open descriptors of this process: what a leaked or held file shows as. */
const openFiles = () => readdirSync('/proc/self/fd').length;

/** A connected client that reads nothing until resumed, destroyed after the test. */
async function pausedClient(to: Listening): Promise<Socket> {
  const socket = connect(to.base.port, '127.0.0.1');
  socket.on('error', () => {});
  cleanups.push(() => void socket.destroy());
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.pause();
  return socket;
}

/** A client that sends `bytes` to `to` in one write and reads nothing, once the server has read them (at most `ms` waited). */
async function nonReadingClient(to: Listening, bytes: string, ms?: number): Promise<Socket> {
  const socket = await pausedClient(to);
  socket.write(bytes, 'latin1');
  await serverHasRead(to, socket, bytes.length, ms);
  return socket;
}

// ---------------------------------------------------------------- the shared bed

const clock = manualClock();
const doorHits = { n: 0 };
let upstream: FakeFlyflow;
let dir: string;
let gateway: Gateway;
let withDoor: Listening;
let withoutDoor: Listening;
const cleanups: Array<() => Promise<void> | void> = [];

function configFor(cacheDir: string, extra: Partial<GatewayConfig> = {}, rateLimitPerMinute = 1_000_000_000): GatewayConfig {
  return {
    ...testConfig({
      dir: cacheDir,
      upstreamBaseUrl: upstream.baseUrl,
      tenants: [acmeTenant({ rateLimitPerMinute })],
      cache: { maxMemoryBytes: 512 * 1024 },
    }),
    ...extra,
  };
}

/** Fetches each target once through `to` and waits until the memory tier holds `REC`. */
async function warm(gw: Gateway, to: Listening): Promise<void> {
  for (const target of [REC, DISK_REC, ABSENT_REC]) await exchange(to, [head('', target)]);
  await gw.downloads.idle();
  const namespace = gw.tenants.byApiKey(ACME_KEY)!.namespace;
  for (let i = 0; i < 200 && !gw.recordings.findInMemory(namespace, '1'); i++) await sleep(10);
  expect(gw.recordings.findInMemory(namespace, '1')).toBeDefined();
  expect(gw.recordings.findInMemory(namespace, '4')).toBeUndefined();
}

beforeAll(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  gateway = await createGateway({ config: configFor(dir), clock });
  withDoor = await listenTracked(serverFor(gateway, { door: countingHits(gateway.memoryHits, doorHits) }));
  withoutDoor = await listenTracked(serverFor(gateway, {}));
  await warm(gateway, withoutDoor);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  for (const server of opened) await closeServer(server);
  await gateway?.close();
  await upstream?.close();
  await removeDir(dir);
});

/** Sends `parts` to both servers; the normalised bytes must be equal. Returns the door's, and how many requests the door answered itself. */
async function sameFromBoth(parts: readonly string[], methods?: readonly string[]): Promise<{ bytes: string; byDoor: number }> {
  const before = doorHits.n;
  const door = await exchange(withDoor, parts, methods);
  const byDoor = doorHits.n - before;
  const node = await exchange(withoutDoor, [parts.join('')], methods);
  expect(normalise(door)).toBe(normalise(node));
  return { bytes: door, byDoor };
}

// ---------------------------------------------------------------- 1. corpus

const etag = () => expectedEtag(upstream.recording(1)!);
const signed = () => `${REC}?${signedQuery(1, Math.floor(clock.now() / 1000) + 120)}`;

/** [name, request bytes, answered by the door]. */
const CORPUS: Array<[string, () => string, boolean]> = [
  ['a whole GET', () => head(), true],
  ['the Safari probe', () => head('Range: bytes=0-1\r\n'), true],
  ['a suffix range', () => head('Range: bytes=-500\r\n'), true],
  // The door copies a body of up to 64 bytes by hand, a longer one as a view: both sides of that line, mid-file.
  ['64 bytes mid-file', () => head('Range: bytes=1000-1063\r\n'), true],
  ['65 bytes mid-file', () => head('Range: bytes=1000-1064\r\n'), true],
  ['an open range', () => head('Range: bytes=1000-\r\n'), true],
  ['two ranges, answered whole', () => head('Range: bytes=0-1,5-9\r\n'), true],
  ['a HEAD', () => head('', REC, 'HEAD'), true],
  ['a HEAD with a range', () => head('Range: bytes=0-1\r\n', REC, 'HEAD'), true],
  ['If-None-Match: 304', () => head(`If-None-Match: ${etag()}\r\n`), true],
  ['If-Modified-Since in the future: 304', () => head('If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n'), true],
  ['If-Range that matches', () => head(`Range: bytes=0-9\r\nIf-Range: ${etag()}\r\n`), true],
  ['If-Range that does not', () => head('Range: bytes=0-9\r\nIf-Range: "other"\r\n'), true],
  ['a signed URL', () => head('Range: bytes=0-1\r\n', signed(), 'GET', false), true],
  ['an allowed Origin', () => head(`Origin: ${ACME_ORIGIN}\r\nRange: bytes=0-1\r\n`), true],
  ['another Origin', () => head('Origin: https://elsewhere.example\r\n'), true],
  ['Connection: keep-alive', () => head('Connection: keep-alive\r\n'), true],
  ['Connection: Keep-Alive', () => head('Connection: Keep-Alive\r\nRange: bytes=2-3\r\n'), true],
  [
    'lowercase names',
    () => `GET ${REC} HTTP/1.1\r\nhost: gw.test\r\nauthorization: Bearer ${ACME_KEY}\r\nrange: bytes=0-1\r\n${RID}\r\n`,
    true,
  ],
  [
    'UPPERCASE names',
    () => `GET ${REC} HTTP/1.1\r\nHOST: gw.test\r\nAUTHORIZATION: Bearer ${ACME_KEY}\r\nRANGE: bytes=0-1\r\n${RID}\r\n`,
    true,
  ],
  ['OWS around a value', () => head('Range:    bytes=0-1   \r\n'), true],
  ['tabs around a value', () => head('Range:\tbytes=0-1\t\r\n'), true],
  ['no space after the colon', () => head('Range:bytes=0-1\r\n'), true],
  ['an empty header value', () => head('X-Empty:\r\nRange: bytes=0-1\r\n'), true],
  ['a field named __proto__', () => head('__proto__: x\r\nconstructor: y\r\nRange: bytes=0-1\r\n'), true],
  ['a field no hit reads, twice', () => head('Accept: */*\r\nAccept: audio/*\r\nRange: bytes=0-1\r\n'), true],
  ['mixed-case names', () => head('rAnGe: bytes=0-1\r\nuSER-aGENT: x\r\n'), true],
  ['names one character off known ones', () => head('Rangf: bytes=0-1\r\nHosts: x\r\nContent-Lengthy: 5\r\nExpecu: x\r\n'), true],
  ['a plain query', () => head('Range: bytes=0-1\r\n', `${REC}?a=b`), true],
  ['a malformed X-Request-Id', () => `GET ${REC} HTTP/1.1\r\nHost: gw.test\r\n${AUTH}X-Request-Id: a b\r\n\r\n`, true],
  ['If-None-Match: *', () => head('If-None-Match: *\r\n'), true],
  ['a HEAD with If-None-Match: 304', () => head(`If-None-Match: W/${etag()}\r\n`, REC, 'HEAD'), true],
  ['If-Range with a date', () => head('Range: bytes=0-9\r\nIf-Range: Fri, 01 Jan 2100 00:00:00 GMT\r\n'), true],
  ['If-Unmodified-Since in the past: 412', () => head('If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n'), false],
  ['a Host with a port', () => head('Range: bytes=0-1\r\n').replace('Host: gw.test', 'Host: gw.test:8080'), true],
  ["an upper-case Host, the app's to judge", () => head('Range: bytes=0-1\r\n').replace('Host: gw.test', 'Host: GW.test'), false],
  ["a Host with port 80, the app's to judge", () => head('Range: bytes=0-1\r\n').replace('Host: gw.test', 'Host: gw.test:80'), false],
  ['a Host the app refuses', () => head('Range: bytes=0-1\r\n').replace('Host: gw.test', 'Host: gw.test:99999'), false],
  [
    'a lowercase bearer scheme',
    () => head('Range: bytes=0-1\r\n', REC, 'GET', false).replace(RID, `${RID}Authorization: bearer ${ACME_KEY}\r\n`),
    true,
  ],
  ['a signed URL and a key', () => head('Range: bytes=0-1\r\n', signed()), true],
  ['an empty query', () => head('Range: bytes=0-1\r\n', `${REC}?`), true],
  ['Origin: null', () => head('Origin: null\r\nRange: bytes=0-1\r\n'), true],
  ['Accept-Encoding: gzip', () => head('Accept-Encoding: gzip, br\r\n'), true],
  ['Keep-Alive and TE', () => head('Connection: keep-alive\r\nKeep-Alive: 300\r\nTE: trailers\r\nRange: bytes=0-1\r\n'), true],
  // Node's parser (llhttp) reads Proxy-Connection as Connection (it closes after the answer to `close`): Node's to judge.
  ['Proxy-Connection: keep-alive', () => head('Proxy-Connection: keep-alive\r\nRange: bytes=0-1\r\n'), false],
  ['Proxy-Connection: close', () => head('Proxy-Connection: close\r\nRange: bytes=0-1\r\n'), false],
  ['a 128-character request id', () => head('Range: bytes=0-1\r\n').replace(RID, `X-Request-Id: ${'r'.repeat(128)}\r\n`), true],
  ['64 header lines', () => head(`${Array.from({ length: 60 }, (_, i) => `X-H${i}: ${i}\r\n`).join('')}Range: bytes=0-1\r\n`), true],
  // A request for a recording without a valid credential: the app's 401, made by the door.
  ['an expired signed URL: 401', () => head('', `${REC}?${signedQuery(1, Math.floor(clock.now() / 1000) - 1)}`, 'GET', false), true],
  ['a wrong key: 401', () => head('', REC, 'GET', false).replace(RID, `${RID}Authorization: Bearer wrong-key-0000000000000000\r\n`), true],
  ['no credential: 401', () => head('', REC, 'GET', false), true],
  ['no credential, HEAD: 401', () => head('', REC, 'HEAD', false), true],
  ['no credential, an allowed Origin: 401', () => head(`Origin: ${ACME_ORIGIN}\r\n`, REC, 'GET', false), true],
  ['no credential, a recording not in memory: 401', () => head('', ABSENT_REC, 'GET', false), true],
  ['an empty Authorization: 401', () => head('', REC, 'GET', false).replace(RID, `${RID}Authorization:\r\n`), true],
  // What the door must hand over.
  ['70 header lines', () => head(`${Array.from({ length: 66 }, (_, i) => `X-H${i}: ${i}\r\n`).join('')}Range: bytes=0-1\r\n`), false],
  ['Connection: close, keep-alive', () => head('Connection: close, keep-alive\r\n'), false],
  ['Connection twice', () => head('Connection: keep-alive\r\nConnection: keep-alive\r\nRange: bytes=0-1\r\n'), false],
  ['a fragment in the target', () => head('Range: bytes=0-1\r\n', `${REC}#t=1`), false],
  ['a trailing slash', () => head('', `${REC}/`), false],
  ['a dot segment', () => head('', '/v1/call/recording/../recording/1.mp3'), false],
  ['a NUL in a value', () => head('X-Nul: a\x00b\r\nRange: bytes=0-1\r\n'), false],
  ['a DEL in a value', () => head('X-Del: a\x7fb\r\nRange: bytes=0-1\r\n'), false],
  ['Upgrade without Connection', () => head('Upgrade: h2c\r\nRange: bytes=0-1\r\n'), false],
  ['a failed If-Match: 412', () => head('If-Match: "other"\r\n'), false],
  ['an unsatisfiable range: 416', () => head('Range: bytes=999999-\r\n'), false],
  ['a disk hit', () => head('Range: bytes=0-1\r\n', DISK_REC), false],
  ['a remembered 404', () => head('', ABSENT_REC), false],
  ['a leading zero in the id: 400', () => head('', '/v1/call/recording/01.mp3'), false],
  ['a duplicate Range', () => head('Range: bytes=0-1\r\nRange: bytes=2-3\r\n'), false],
  ['a duplicate Range in another case', () => head('Range: bytes=0-1\r\nrANGE: bytes=2-3\r\n'), false],
  ['TRANSFER-ENCODING in upper case with its body', () => `${head('TRANSFER-ENCODING: chunked\r\n')}0\r\n\r\n`, false],
  ['a duplicate Authorization', () => head(AUTH), false],
  ['a duplicate Host', () => head('Host: other.test\r\n'), false],
  ['no Host', () => `GET ${REC} HTTP/1.1\r\n${AUTH}${RID}\r\n`, false],
  ['an empty Host', () => `GET ${REC} HTTP/1.1\r\nHost:\r\n${AUTH}${RID}\r\n`, true],
  ['HTTP/1.0', () => head().replace('HTTP/1.1', 'HTTP/1.0'), false],
  ['HTTP/1.0 with keep-alive', () => head('Connection: keep-alive\r\n').replace('HTTP/1.1', 'HTTP/1.0'), false],
  ['Connection: close', () => head('Connection: close\r\nRange: bytes=0-1\r\n'), false],
  ['Connection: keep-alive, Upgrade', () => head('Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n'), false],
  ['Content-Length: 0', () => head('Content-Length: 0\r\n'), false],
  ['Transfer-Encoding: chunked with its body', () => `${head('Transfer-Encoding: chunked\r\n')}0\r\n\r\n`, false],
  ['Expect: 100-continue', () => head('Expect: 100-continue\r\nRange: bytes=0-1\r\n'), false],
  ['Expect: something else', () => head('Expect: teapot\r\n'), false],
  ['an obs-fold', () => head('X-Folded: a\r\n b\r\nRange: bytes=0-1\r\n'), false],
  ['bare LF line ends', () => head('Range: bytes=0-1\r\n').replaceAll('\r\n', '\n'), false],
  ['a bare LF in one line', () => head('Range: bytes=0-1\nX-After: 1\r\n'), false],
  ['a leading CRLF', () => `\r\n${head('Range: bytes=0-1\r\n')}`, false],
  ['a byte over 0x7f in a value', () => head('User-Agent: caf\xe9\r\nRange: bytes=0-1\r\n'), false],
  ['a 9 KB header', () => head(`X-Pad: ${'a'.repeat(9 * 1024)}\r\nRange: bytes=0-1\r\n`), false],
  ['a space before the colon', () => head('Range : bytes=0-1\r\n'), false],
  ['an absolute-form target', () => head('Range: bytes=0-1\r\n', `http://gw.test${REC}`), false],
  ['a %-encoded target', () => head('', '/v1/call/recording/%31.mp3'), false],
  ['odd characters in the query', () => head('Range: bytes=0-1\r\n', `${REC}?a=[1]&b={2}|^`), false],
  ['a lowercase method', () => head().replace(/^GET/, 'get'), false],
  ['HTTP/1.1 in lowercase', () => head().replace('HTTP/1.1', 'http/1.1'), false],
  ['two spaces in the request line', () => head().replace(`GET ${REC}`, `GET  ${REC}`), false],
];

describe('the same bytes with and without the door', () => {
  test.each(CORPUS)('%s', async (_name, request, door) => {
    const { bytes, byDoor } = await sameFromBoth([request()]);
    // The corpus must exercise the door: these are answered without Node's parser, the others by it.
    expect(byDoor, `answered by the door: ${JSON.stringify(bytes.slice(0, 80))}`).toBe(door ? 1 : 0);
  });

  test.each(['gw.test:99999', 'gw test', '[::1', 'gw/test', '%zz', 'gw.123', '1.2.3.4.5', 'xn--a'])(
    'Host %j, which the app cannot make a URL of: 400 on every path, a hit or a 401 alike',
    async (host) => {
      for (const to of [withDoor, withoutDoor]) {
        for (const request of [head('Range: bytes=0-1\r\n'), head('', REC, 'GET', false)]) {
          const answer = await exchange(to, [request.replace('Host: gw.test', `Host: ${host}`)]);
          expect(answer.split('\r\n')[0], answer).toBe('HTTP/1.1 400 Bad Request');
        }
      }
    },
  );

  test("on a server named by an IPv6 address, an empty Host is the server's own name to the app too: a hit and /healthz are 200", async () => {
    const named = await listenTracked(
      createHttpServer(gateway.app, '::1', { wrapListener: gateway.answeringMemoryHitsFirst, memoryHits: gateway.memoryHits }),
    );
    for (const request of [head('Range: bytes=0-1\r\n'), 'GET /healthz HTTP/1.1\r\nHost: gw.test\r\n\r\n']) {
      const answer = await exchange(named, [request.replace('Host: gw.test', 'Host:')]);
      expect(answer.split('\r\n')[0], answer).toMatch(/^HTTP\/1\.1 20[06] /);
    }
  });

  test('the comparison sees a door that changes one byte of one header', async () => {
    const broken: MemoryHits = {
      prepare(...args) {
        const hit = gateway.memoryHits.prepare(...args);
        if (hit) hit.answer.headers['Cache-Status'] = `${hit.answer.headers['Cache-Status']} `;
        return hit;
      },
      unanswered: gateway.memoryHits.unanswered,
    };
    const brokenDoor = await listenTracked(serverFor(gateway, { door: broken }));
    const request = head('Range: bytes=0-1\r\n');
    const fromBroken = await exchange(brokenDoor, [request]);
    expect(normalise(fromBroken)).not.toBe(normalise(await exchange(withoutDoor, [request])));
  });
});

// ---------------------------------------------------------------- 2. split reads

describe('a request split over two reads', () => {
  const cases: Array<[string, () => string[], string[]]> = [
    ['the Safari probe', () => [head('Range: bytes=0-1\r\n')], ['GET']],
    ['a HEAD', () => [head('', REC, 'HEAD')], ['HEAD']],
    ['a signed URL', () => [head('Range: bytes=0-1\r\n', signed(), 'GET', false)], ['GET']],
    [
      'a hit, a request for Node, a hit',
      () => [head('Range: bytes=0-1\r\n'), head('Range: bytes=999999-\r\n'), head('Range: bytes=2-3\r\n')],
      ['GET', 'GET', 'GET'],
    ],
  ];

  test.each(cases)('%s: the same answers, in order, wherever it is split', async (_name, requests, methods) => {
    const bytes = requests().join('');
    const reference = normalise(await exchange(withoutDoor, [bytes], methods));
    expect(statusesOf(reference)).toHaveLength(methods.length);
    for (let at = 1; at < bytes.length; at++) {
      const door = await exchange(withDoor, [bytes.slice(0, at), bytes.slice(at)], methods);
      expect(normalise(door), `split at ${at}`).toBe(reference);
    }
  });
});

// ---------------------------------------------------------------- 3. pipelining

describe('pipelined requests', () => {
  test('50 hits, a disk hit, 10 hits in one write: every answer, in order, as without the door', async () => {
    const hits = (from: number, n: number) => Array.from({ length: n }, (_, i) => head(`Range: bytes=${from + i}-${from + i + 9}\r\n`));
    const requests = [...hits(0, 50), head('Range: bytes=0-9\r\n', DISK_REC), ...hits(100, 10)];
    const { bytes, byDoor } = await sameFromBoth(
      [requests.join('')],
      requests.map(() => 'GET'),
    );
    expect(statusesOf(bytes)).toEqual(requests.map(() => 206));
    // The door answered the first 50; from the disk hit on, the connection is Node's.
    expect(byDoor).toBe(50);
  });

  test('info.json requests pipelined behind answers the client has not taken fetch nothing until their turn', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => 9_300 + i);
    for (const id of ids) upstream.setRecording(id, upstream.recording(1)!);
    // Disk hits first, more than the kernel's buffers hold: the answers after them wait for a client that does not read.
    const requests = head('', DISK_REC).repeat(100) + ids.map((id) => head('', `/v1/call/recording/${id}/info.json`)).join('');
    await nonReadingClient(withoutDoor, requests);
    await sleep(300);
    // 0.7.2 before this started a download for each of them at once.
    expect(ids.filter((id) => upstream.recordingRequests(id).length > 0)).toEqual([]);
  });

  test('disk hits pipelined, then the client resets: the answer Node never started is closed, its file not left open', async () => {
    // The answer behind the first, queued, never gets the connection.
    const before = openFiles();
    const twoHits = head('', DISK_REC).repeat(2);
    for (const to of [withoutDoor, withDoor]) {
      for (let i = 0; i < 10; i++) {
        const socket = connect(to.base.port, '127.0.0.1');
        socket.on('error', () => {});
        await new Promise((resolve) => socket.once('connect', resolve));
        const closed = new Promise((resolve) => socket.once('close', resolve));
        socket.write(twoHits);
        await serverHasRead(to, socket, twoHits.length);
        socket.resetAndDestroy();
        await closed;
      }
    }
    await sleep(100);
    // 0.7.1 left a file open for most of them, until the garbage collector closed it.
    expect(openFiles() - before).toBeLessThan(5);
  });

  test('200 disk hits pipelined by a client that reads nothing hold one open file, not 200: each is looked up in its turn', async () => {
    const before = openFiles();
    const socket = await nonReadingClient(withoutDoor, head('', DISK_REC).repeat(200));
    await sleep(200);
    // 0.7.2 before this opened every one of them at once.
    expect(openFiles() - before).toBeLessThan(10);
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.resetAndDestroy();
    await closed;
    await sleep(100);
    expect(openFiles() - before).toBeLessThan(5);
  });

  test("requests waiting behind an answer the client has not taken are not overwritten by another connection's reads", async () => {
    // The door reads every connection into one shared buffer: what a connection keeps past a read must be its own copy.
    const count = 1_000;
    const pipeline = Array.from({ length: count }, () => head()).join('');
    // The answers (23 KB each) fill the kernel's buffers long before the last: the rest of the pipeline waits in the door.
    const socket = await nonReadingClient(withDoor, pipeline, 300);
    // Another connection's reads fill the shared buffer from its start on, over where the waiting requests were read.
    const other = head('Range: bytes=5-6\r\n').replace(RID, 'X-Request-Id: other-connection\r\n');
    const probes = Array.from({ length: 400 }, () => 'GET');
    expect(statusesOf(await exchange(withDoor, [other.repeat(probes.length)], probes))).toEqual(probes.map(() => 206));
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.resume();
    const methods = Array.from({ length: count }, () => 'GET');
    for (let waited = 0; waited < 10_000 && wholeAnswers(received, methods).statuses.length < count; waited += 20) await sleep(20);
    const { statuses } = wholeAnswers(received, methods);
    expect(statuses).toEqual(methods.map(() => 200));
    expect(received.match(/\r\nX-Request-Id: door-test-0001\r\n/g)).toHaveLength(count);
  });

  test('while a client that sent nothing more has not taken an answer, the door reads on; once it sends more, its reads stop', async () => {
    const socket = await pausedClient(withDoor);
    const request = head();
    const serverSide = () => withDoor.accepted.get(socket.localPort ?? -1);
    // One request at a time, nothing pipelined, until an answer (23 KB each) waits for the client: the kernel's buffers are full.
    let sent = 0;
    const answerWaits = () => {
      const server = serverSide();
      return server !== undefined && bytesWaiting(server) > 0;
    };
    while (!answerWaits() && sent < 2_000) {
      socket.write(request);
      sent++;
      await serverHasRead(withDoor, socket, sent * request.length);
    }
    expect(answerWaits()).toBe(true);
    // 0.7.2 stopped the connection's reads here, and started them again once the client had taken the answer.
    socket.write(request);
    const readBeforeProbes = (sent + 1) * request.length;
    await serverHasRead(withDoor, socket, readBeforeProbes);
    expect(serverSide()!.bytesRead).toBe(readBeforeProbes);
    // That was the last read until the client has taken the answer: what it sends now waits in the kernel.
    const probes = head('Range: bytes=0-1\r\n').repeat(2_000);
    socket.write(probes);
    await sleep(300);
    expect(serverSide()!.bytesRead).toBe(readBeforeProbes);
    let received = 0;
    socket.on('data', (chunk: Buffer) => (received += chunk.length));
    socket.resume();
    // Once it reads, every answer comes.
    await serverHasRead(withDoor, socket, readBeforeProbes + probes.length, 10_000);
    expect(serverSide()!.bytesRead).toBe(readBeforeProbes + probes.length);
    expect(received).toBeGreaterThan((sent + 1) * 23_000);
  });

  test('a line that is no request, behind a hit: judged on its own bytes, as on a connection of its own (400)', async () => {
    // 0.5.2 judged it from the whole packet, whose first line was the hit's, and said 501 (unknown method).
    const door = await exchange(withDoor, [`${head()}GARBAGE\r\n\r\n`], ['GET', 'GET']);
    const alone = await exchange(withoutDoor, ['GARBAGE\r\n\r\n']);
    expect(statusesOf(door)).toEqual([200, 400]);
    const refusal = (bytes: string) => normalise(bytes.slice(bytes.lastIndexOf('HTTP/1.1 ')));
    expect(refusal(door)).toBe(refusal(alone));
  });
});

// ---------------------------------------------------------------- 4. rate limits

describe('rate limits through the door', () => {
  /** A gateway whose acme tenant may make 3 requests a minute, served with and without the door. */
  async function limitedBed(extra: Partial<GatewayConfig> = {}) {
    const limitedClock = manualClock();
    const cacheDir = await makeTempDir();
    const limited = await createGateway({ config: configFor(cacheDir, extra, 3), clock: limitedClock });
    cleanups.push(() => removeDir(cacheDir));
    cleanups.push(() => limited.close());
    const door = await listenTracked(serverFor(limited, { door: limited.memoryHits }));
    const plain = await listenTracked(serverFor(limited, {}));
    cleanups.push(() => closeServer(door.server));
    cleanups.push(() => closeServer(plain.server));
    return { limited, limitedClock, door, plain };
  }

  async function fivePipelined(bed: Awaited<ReturnType<typeof limitedBed>>): Promise<void> {
    // Warming takes tokens: a full bucket again a minute later.
    await warm(bed.limited, bed.plain);
    bed.limitedClock.advance(60_000);
    const five = Array.from({ length: 5 }, (_, i) => head(`Range: bytes=${i}-${i + 1}\r\n`)).join('');
    const methods = ['GET', 'GET', 'GET', 'GET', 'GET'];
    const door = await exchange(bed.door, [five], methods);
    bed.limitedClock.advance(60_000);
    const plain = await exchange(bed.plain, [five], methods);
    expect(statusesOf(door)).toEqual([206, 206, 206, 429, 429]);
    // Tokens left and reset included.
    expect(normalise(door, true)).toBe(normalise(plain, true));
  }

  test('in memory: 3 answered, then 429s, byte for byte as without the door', async () => {
    await fivePipelined(await limitedBed());
  });

  describe('with a Redis rate-limit store (cluster mode)', () => {
    let redis: RunningRedis;
    beforeAll(async () => {
      redis = await startRedisServer();
    });
    afterAll(async () => {
      await redis?.stop();
    });

    test('3 answered, then 429s, byte for byte as without the door', async () => {
      const bed = await limitedBed({
        cluster: { redisUrl: redis.url, nodeId: 'gw-door', peerSecret: 'peer-secret-for-door-tests-0123456789', redisTimeoutMs: 1_000 },
      });
      await bed.limited.joinCluster(`http://127.0.0.1:${bed.door.base.port}`);
      await fivePipelined(bed);
    });

    test('while Redis holds the rate-limit check, the door reads on (a client that resets is seen at once), up to 64 KiB, then stops', async () => {
      // A Redis of its own: the test before used up the limited tenant's tokens, and its replica is still listed.
      const ownRedis = await startRedisServer();
      cleanups.push(() => ownRedis.stop());
      const cacheDir = await makeTempDir();
      const cluster = {
        redisUrl: ownRedis.url,
        nodeId: 'gw-door-2',
        peerSecret: 'peer-secret-for-door-tests-0123456789',
        redisTimeoutMs: 5_000,
      };
      const gw = await createGateway({ config: configFor(cacheDir, { cluster }), clock: manualClock() });
      cleanups.push(() => removeDir(cacheDir));
      cleanups.push(() => gw.close());
      const bed = { door: await listenTracked(serverFor(gw, { door: gw.memoryHits })), plain: await listenTracked(serverFor(gw, {})) };
      cleanups.push(() => closeServer(bed.door.server));
      cleanups.push(() => closeServer(bed.plain.server));
      await gw.joinCluster(`http://127.0.0.1:${bed.door.base.port}`);
      await warm(gw, bed.plain);
      const probe = head('Range: bytes=0-1\r\n');
      const socket = connect(bed.door.base.port, '127.0.0.1');
      socket.on('error', () => {});
      cleanups.push(() => void socket.destroy());
      await new Promise((resolve) => socket.once('connect', resolve));
      process.kill(ownRedis.pid, 'SIGSTOP');
      try {
        socket.write(probe);
        await serverHasRead(bed.door, socket, probe.length);
        // About 220 KB more, while the first request's check waits.
        socket.write(probe.repeat(1_500));
        await sleep(300);
        const read = bed.door.accepted.get(socket.localPort ?? -1)!.bytesRead - probe.length;
        // Read on until what waits (the first request included) passed 64 KiB: at most one read of 64 KiB past it.
        expect(read).toBeGreaterThanOrEqual(64 * 1024 - probe.length);
        expect(read).toBeLessThanOrEqual(2 * 64 * 1024);
      } finally {
        process.kill(ownRedis.pid, 'SIGCONT');
      }
    });
  });
});

// ---------------------------------------------------------------- 5. connections

describe('a connection the door holds', () => {
  const SHORT: ConnectionLimits = { headersTimeoutMs: 300, requestTimeoutMs: 1_000, keepAliveTimeoutMs: 300 };

  async function serving(limits: ConnectionLimits, door = true, stalledAfterMs?: number): Promise<Listening> {
    const to = await listenTracked(
      serverFor(gateway, { ...(door ? { door: gateway.memoryHits } : {}), limits, ...(stalledAfterMs ? { stalledAfterMs } : {}) }),
    );
    cleanups.push(() => closeServer(to.server));
    return to;
  }

  /** Sends `bytes` (then ends its side, if `halfClose`) and resolves with all that came back once the server closes; bounded. */
  async function untilClosed(to: Listening, bytes: string, halfClose = false): Promise<string> {
    const socket = connect(to.base.port, '127.0.0.1');
    socket.on('error', () => {});
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    const closed = new Promise<string>((resolve) => socket.once('close', () => resolve('[closed]')));
    socket.once('connect', () => {
      if (bytes) socket.write(bytes, 'latin1');
      if (halfClose) socket.end();
    });
    const how = await Promise.race([closed, sleep(10_000, '[still open]')]);
    socket.destroy();
    return `${received}${how}`;
  }

  test('one that never sends a byte is closed after headers_timeout_ms, unanswered', async () => {
    expect(await untilClosed(await serving(SHORT), '')).toBe('[closed]');
  });

  test('after an answered hit, one left idle is closed after keep_alive_timeout_ms, as without the door', async () => {
    const request = head('Range: bytes=0-1\r\n');
    const door = await untilClosed(await serving(SHORT), request);
    expect(door).toMatch(/^HTTP\/1\.1 206 Partial Content\r\n[\s\S]*\r\nKeep-Alive: timeout=0\r\n\r\n..\[closed\]$/);
    expect(normalise(door)).toBe(normalise(await untilClosed(await serving(SHORT, false), request)));
  });

  test('a connection that goes on asking is not closed: the keep-alive limit counts from its last answer', async () => {
    // 300 ms + Node's 1 s grace: six probes 400 ms apart span 2 s, more than the limit, on one connection.
    const to = await serving(SHORT);
    const socket = connect(to.base.port, '127.0.0.1');
    socket.on('error', () => {});
    let received = '';
    let closed = false;
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.once('close', () => (closed = true));
    const probe = head('Range: bytes=0-1\r\n');
    const answered = () => received.split('HTTP/1.1 206 Partial Content\r\n').length - 1;
    for (let i = 1; i <= 6; i++) {
      socket.write(probe, 'latin1');
      for (let wait = 0; wait < 200 && answered() < i && !closed; wait++) await sleep(10);
      expect(answered(), `answer ${i}`).toBe(i);
      await sleep(400);
    }
    expect(closed).toBe(false);
    // Left idle now, it is closed after the limit.
    for (let wait = 0; wait < 500 && !closed; wait++) await sleep(10);
    expect(closed).toBe(true);
    expect(answered()).toBe(6);
  });

  test('after an answered hit, the keep-alive limit holds even where the headers timeout is longer', async () => {
    // 300 ms + Node's 1 s grace after the answer, not the 8 s a connection that sends nothing gets.
    const to = await serving({ headersTimeoutMs: 8_000, requestTimeoutMs: 9_000, keepAliveTimeoutMs: 300 });
    const started = Date.now();
    const door = await untilClosed(to, head('Range: bytes=0-1\r\n'));
    expect(door).toMatch(/^HTTP\/1\.1 206 Partial Content\r\n[\s\S]*\[closed\]$/);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  test('after an answered hit, a head that never completes is closed by the keep-alive timer, unanswered, as without the door', async () => {
    // Node's keep-alive timer (300 ms + its 1 s grace) runs until a request's head is in, before the headers timeout (2 s) could answer 408.
    const limits = { ...SHORT, headersTimeoutMs: 2_000, requestTimeoutMs: 3_000 };
    const request = `${head('Range: bytes=0-1\r\n')}GET /v1/call/rec`;
    const door = await untilClosed(await serving(limits), request);
    expect(door).not.toContain('408');
    expect(normalise(door)).toBe(normalise(await untilClosed(await serving(limits, false), request)));
  });

  test('a client that half-closes after its request gets its answer, then the server ends the connection', async () => {
    const limits = { ...SHORT, keepAliveTimeoutMs: 60_000 };
    // 40 whole GETs: the door still waits for the client to take its answers when the client's end arrives.
    const request = head().repeat(40) + head('', REC, 'HEAD');
    const methods = [...Array.from({ length: 40 }, () => 'GET'), 'HEAD'];
    const door = await untilClosed(await serving(limits), request, true);
    expect(wholeAnswers(door, methods).statuses).toEqual(methods.map(() => 200));
    expect(door.endsWith('[closed]')).toBe(true);
    expect(normalise(door)).toBe(normalise(await untilClosed(await serving(limits, false), request, true)));
  });

  test('server.close() closes idle door connections at once, not after the keep-alive timeout', async () => {
    const to = await serving({ headersTimeoutMs: 60_000, requestTimeoutMs: 60_000, keepAliveTimeoutMs: 60_000 });
    const silent = untilClosed(to, '');
    const answered = untilClosed(to, head('Range: bytes=0-1\r\n'));
    // Both connected, and the hit answered (an unanswered one would be closed as idle too, before its request is read).
    const hitAnswered = () => to.accepted.size === 2 && [...to.accepted.values()].some((socket) => socket.bytesWritten > 0);
    for (let i = 0; i < 500 && !hitAnswered(); i++) await sleep(2);
    await new Promise<void>((resolve) => to.server.close(() => resolve()));
    expect(await silent).toBe('[closed]');
    expect(await answered).toMatch(/^HTTP\/1\.1 206 [\s\S]*\[closed\]$/);
  });

  /**
   * A door server capped at one connection, and a client on it that sends
   * whole GETs (23 KB answers), each once the server read the one before (so
   * the door reads whole heads only), and never reads: until the server stops reading.
   */
  async function neverReading(stalledAfterMs: number) {
    const answered = { n: 0 };
    const door = countingHits(gateway.memoryHits, answered);
    const to = await listenTracked(serverFor(gateway, { door, limits: { ...SHORT, maxConnections: 1 }, stalledAfterMs }));
    cleanups.push(() => closeServer(to.server));
    const socket = await pausedClient(to);
    const one = head();
    let sent = 0;
    let readAll = true;
    for (let i = 0; i < 3_000 && readAll; i++) {
      socket.write(one);
      sent += one.length;
      await serverHasRead(to, socket, sent, 300);
      readAll = to.accepted.get(socket.localPort ?? -1)!.bytesRead >= sent;
    }
    // It stopped reading once the kernel's buffers were full of answers: a few MB, not the 69 MB 3000 answers make.
    expect(readAll).toBe(false);
    expect(answered.n).toBeLessThan(1_000);
    return { to, answered, accepted: to.accepted.get(socket.localPort ?? -1)! };
  }

  test('a client that pipelines hits and never reads: the door stops reading, and the connection cap still lets a new client in', async () => {
    const { to, answered, accepted } = await neverReading(300);
    const stoppedAt = accepted.bytesRead;
    await sleep(100);
    expect(accepted.bytesRead).toBe(stoppedAt);
    expect(accepted.destroyed).toBe(false);
    // The stalled connection makes room for a new client, whose hit the door answers.
    const before = answered.n;
    expect(await exchange(to, [head('Range: bytes=0-1\r\n')])).toMatch(
      /^HTTP\/1\.1 206 Partial Content\r\n[\s\S]*\r\n\r\n\[body 2 bytes \w+ "ID"\]\[open\]$/,
    );
    expect(answered.n).toBe(before + 1);
    expect(accepted.destroyed).toBe(true);
  });

  test('at the cap, a client reading a large door answer slowly but steadily is not taken for one that stopped', async () => {
    // 16 MB in one write, read at about 1.6 MB/s: the answer waits in the handle's queue for seconds, moving all along.
    const bigId = 61;
    const bigBytes = 16 * 1024 * 1024;
    upstream.setRecording(bigId, syntheticRecording(bigBytes));
    const cacheDir = await makeTempDir();
    cleanups.push(() => removeDir(cacheDir));
    const big = await createGateway({
      config: testConfig({
        dir: cacheDir,
        upstreamBaseUrl: upstream.baseUrl,
        tenants: [acmeTenant()],
        cache: { maxMemoryBytes: 128 * 1024 * 1024 },
      }),
      clock,
    });
    cleanups.push(() => big.close());
    const target = `/v1/call/recording/${bigId}.mp3`;
    const warmer = await listenTracked(serverFor(big, {}));
    cleanups.push(() => closeServer(warmer.server));
    await exchange(warmer, [head('', target)]);
    const namespace = big.tenants.byApiKey(ACME_KEY)!.namespace;
    for (let i = 0; i < 300 && !big.recordings.findInMemory(namespace, String(bigId)); i++) await sleep(10);
    expect(big.recordings.findInMemory(namespace, String(bigId))).toBeDefined();

    const answered = { n: 0 };
    const to = await listenTracked(
      serverFor(big, { door: countingHits(big.memoryHits, answered), limits: { ...SHORT, maxConnections: 1 }, stalledAfterMs: 300 }),
    );
    cleanups.push(() => closeServer(to.server));
    const reader = await pausedClient(to);
    reader.write(head('', target));
    await serverHasRead(to, reader, head('', target).length);
    const accepted = to.accepted.get(reader.localPort ?? -1)!;
    let received = 0;
    let budget = 0;
    reader.on('data', (chunk: Buffer) => {
      received += chunk.length;
      budget -= chunk.length;
      if (budget <= 0) reader.pause();
    });
    const steadily = setInterval(() => {
      budget = 32 * 1024;
      reader.resume();
    }, 20);
    cleanups.push(() => clearInterval(steadily));
    await sleep(1_200);
    // Still under way, past the stall limit four times over, and read from all along.
    expect(answered.n).toBe(1);
    expect(bytesWaiting(accepted)).toBeGreaterThan(0);
    expect(received).toBeGreaterThan(1024 * 1024);
    // 0.7.6 before this counted the write whole when handed over, saw no progress, and closed the reader.
    const refused = await exchange(to, [head('Range: bytes=0-1\r\n')]);
    expect(refused).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n/);
    expect(accepted.destroyed).toBe(false);
  });

  test("at the cap, a door answer in flight counts as busy: a new client gets Node's 503, not the door", async () => {
    // Not yet taken for a client that stopped reading.
    const { to, answered, accepted } = await neverReading(60_000);
    const before = answered.n;
    const refused = await exchange(to, [head('Range: bytes=0-1\r\n')]);
    expect(refused).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n[\s\S]*\r\nConnection: close\r\n[\s\S]*\[end\]$/);
    expect(answered.n).toBe(before);
    expect(accepted.destroyed).toBe(false);
  });
});

// ---------------------------------------------------------------- 6. logs and metrics

describe('what a door-answered hit leaves in the log and the metrics', () => {
  /** A gateway of its own whose log lines are kept, with a server with the door and one without, the recording warmed. */
  async function loggedBed() {
    const { logger, lines } = capturingLogger();
    const cacheDir = await makeTempDir();
    cleanups.push(() => removeDir(cacheDir));
    const logged = await createGateway({ config: configFor(cacheDir), clock: manualClock(), logger });
    cleanups.push(() => logged.close());
    const door = await listenTracked(serverFor(logged, { door: logged.memoryHits }));
    const plain = await listenTracked(serverFor(logged, {}));
    // The app alone, without the door or Node-level memory hits: what both must look like.
    const appAlone = await listenTracked(createHttpServer(logged.app, '127.0.0.1'));
    cleanups.push(() => closeServer(door.server));
    cleanups.push(() => closeServer(plain.server));
    cleanups.push(() => closeServer(appAlone.server));
    await warm(logged, plain);
    const requestLines = () => lines.filter((line) => line.msg === 'request' && line.route === 'recording');
    return { door, plain, appAlone, requestLines };
  }

  test.each([
    // [name, request, its line, counters moved: requests (and served bytes)]
    ['a hit', head('Range: bytes=0-1\r\n'), { status: 206, cache: 'hit', bytes: 2, tenant: 'acme' }, 2],
    ['a 401', head('', REC, 'GET', false), { status: 401, cache: 'none', bytes: 0, tenant: undefined }, 1],
  ])(
    '%s: the same request line and the same counters as without the door, and as the app alone',
    async (_name, request, expected, moved) => {
      const { door, plain, appAlone, requestLines } = await loggedBed();
      /** The request and byte counters of recordings, from /metrics. */
      const counters = async (): Promise<Map<string, number>> => {
        const text = await (await fetch(`http://127.0.0.1:${plain.base.port}/metrics`)).text();
        const found = new Map<string, number>();
        for (const line of text.split('\n')) {
          const match = /^(recording_gateway_(?:requests_total\{route="recording"|served_bytes_total)[^ ]*) (\d+)$/.exec(line);
          if (match) found.set(match[1]!, Number(match[2]));
        }
        return found;
      };

      /** The request through `to`: its log line (without the time) and how the counters moved. */
      const oneRequest = async (to: Listening) => {
        const before = await counters();
        const count = requestLines().length;
        await exchange(to, [request]);
        for (let i = 0; i < 200 && requestLines().length === count; i++) await sleep(5);
        const after = await counters();
        const moved = [...after]
          .filter(([name, value]) => value !== (before.get(name) ?? 0))
          .map(([name, value]) => [name, value - (before.get(name) ?? 0)]);
        const { time: _time, ...line } = requestLines().at(-1)!;
        return { line, moved, lines: requestLines().length - count };
      };

      const byDoor = await oneRequest(door);
      const byNode = await oneRequest(plain);
      const byApp = await oneRequest(appAlone);
      expect(byDoor.lines).toBe(1);
      // A 401's line has no tenant field: undefined, as `expected` says.
      expect({ ...byDoor.line, tenant: byDoor.line.tenant }).toMatchObject({ reqId: 'door-test-0001', ...expected });
      expect(byDoor).toEqual(byNode);
      expect(byDoor).toEqual(byApp);
      expect(byDoor.moved).toHaveLength(moved);
    },
  );

  test('answers cut short when the connection is closed under them are logged aborted, as without the door', async () => {
    const { door, plain, requestLines } = await loggedBed();

    /** 400 whole GETs (9 MB of answers, more than the kernel buffers) from a client that reads none, then every connection closed: how many of them were logged aborted. */
    const abortedWhenCut = async (to: Listening): Promise<number> => {
      const count = requestLines().length;
      const socket = connect(to.base.port, '127.0.0.1');
      socket.on('error', () => {});
      socket.pause();
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write(head().repeat(400), 'latin1');
      await sleep(200);
      to.server.closeAllConnections();
      for (let i = 0; i < 200 && requestLines().length === count; i++) await sleep(5);
      await sleep(50);
      socket.destroy();
      return requestLines()
        .slice(count)
        .filter((line) => line.aborted === true).length;
    };
    expect(await abortedWhenCut(plain)).toBeGreaterThan(0);
    expect(await abortedWhenCut(door)).toBeGreaterThan(0);
  });

  test('every request read behind an answer the client never took gets its line when the client leaves: aborted, status null', async () => {
    const { door, requestLines } = await loggedBed();
    const before = requestLines().length;
    const request = head();
    const socket = await pausedClient(door);
    // 400 whole GETs in one write: 9 MB of answers, more than the kernel buffers, so most wait behind one the client never takes.
    socket.write(request.repeat(400), 'latin1');
    const accepted = () => door.accepted.get(socket.localPort ?? -1);
    let bytesRead = -1;
    for (let i = 0; i < 100 && accepted()?.bytesRead !== bytesRead; i++) {
      bytesRead = accepted()?.bytesRead ?? -1;
      await sleep(50);
    }
    const read = Math.floor(bytesRead / request.length);
    const closed = new Promise((resolve) => accepted()!.once('close', resolve));
    socket.resetAndDestroy();
    await closed;
    const lines = requestLines().slice(before);
    // 0.7.6 before this logged only those answered and the one cut: the rest, read and never answered, had no line.
    expect(lines).toHaveLength(read);
    const sent = lines.filter((line) => line.aborted === undefined);
    const unanswered = lines.filter((line) => line.status === null);
    expect(sent.length).toBeGreaterThan(0);
    expect(unanswered.length).toBeGreaterThan(100);
    expect(sent.length + unanswered.length).toBeGreaterThanOrEqual(read - 1);
    for (const line of unanswered) {
      expect(line).toMatchObject({ aborted: true, bytes: 0, tenant: 'acme', callId: '1', path: REC, cache: 'hit' });
    }
  });

  test('requests the door would not answer, read behind such an answer, get their lines too, and what follows them', async () => {
    const { door, requestLines } = await loggedBed();
    const before = requestLines().length;
    const unusual = [
      `POST /v1/call/recording/1/signed-url HTTP/1.1\r\nHost: gw.test\r\n${AUTH}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`,
      head('Connection: close\r\n'),
      head(AUTH),
      head('', REC, 'DELETE'),
    ];
    const pipeline = head().repeat(300) + unusual.join('') + head().repeat(20);
    const socket = await pausedClient(door);
    socket.write(pipeline, 'latin1');
    await serverHasRead(door, socket, pipeline.length);
    const accepted = door.accepted.get(socket.localPort ?? -1)!;
    const closed = new Promise((resolve) => accepted.once('close', resolve));
    socket.resetAndDestroy();
    await closed;
    const lines = requestLines().slice(before);
    // 0.7.6 before this stopped at the POST: the requests from it on had no line.
    expect(lines).toHaveLength(300 + unusual.length + 20);
    const tail = lines.slice(300);
    expect(tail.map((line) => [line.method, line.status, line.aborted])).toEqual([
      ['POST', null, true],
      ['GET', null, true],
      ['GET', null, true],
      ['DELETE', null, true],
      ...Array.from({ length: 20 }, () => ['GET', null, true]),
    ]);
    // Two credentials vouch for nothing, as the app would have it.
    expect(tail[2]!.path).toBe(REC);
    expect(tail[2]!.tenant).toBeUndefined();
  });
});
