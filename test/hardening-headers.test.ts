/**
 * No request header value, whatever its length or content, may cost more than
 * linear time (README, "Hostile header values"). Node refuses a header section over 16 KB
 * (its default `maxHeaderSize`, which the gateway keeps) with a 431, so over
 * HTTP the hostile values go up to that limit, and one past it; the parsing
 * functions themselves are also driven with 64 KB values.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, makeTempDir, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { bearerToken } from '../src/auth/bearer.js';
import { evaluatePreconditions, parseEntityTagList, rangeIsApplicable } from '../src/http/conditional.js';
import { decideRange } from '../src/http/range.js';

/** A run of optional whitespace with one other character after it: what made the old trimming regex quadratic. */
const spaces = (length: number) => ' '.repeat(length);
const tabs = (length: number) => '\t'.repeat(length);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/**
 * Milliseconds one run of `work` needs: the fastest of several, after warm-up
 * runs, since other load on the machine can only add time, never remove it.
 */
function cost(work: () => unknown, runs = 7): number {
  for (let i = 0; i < 3; i++) work();
  let fastest = Infinity;
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    work();
    fastest = Math.min(fastest, performance.now() - started);
  }
  return fastest;
}

describe('parsing a 64 KB header value takes linear time', () => {
  const SIZE = 64 * 1024;
  const validators = { etag: '"abc"', lastModified: new Date('2025-01-01T00:00:00Z') };
  const hostile: Array<[string, () => unknown]> = [
    ['Range with spaces inside', () => decideRange(`bytes=0-1${spaces(SIZE)}x`, 1000)],
    ['Range with spaces in a list element', () => decideRange(`bytes=0-1,${spaces(SIZE)}x`, 1000)],
    ['Range with 64 K-digit positions', () => decideRange(`bytes=${'9'.repeat(SIZE)}-${'9'.repeat(SIZE - 1)}`, 1000)],
    ['Range with a 64 K-digit suffix', () => decideRange(`bytes=-${'9'.repeat(SIZE)}`, 1000)],
    ['Range with 16 K ranges', () => decideRange(`bytes=${'0-1,'.repeat(SIZE / 4)}`, 1000)],
    ['Range with 64 K empty elements', () => decideRange(`bytes=0-1${','.repeat(SIZE)}`, 1000)],
    ['If-Range with spaces inside', () => rangeIsApplicable(`"a"${spaces(SIZE)}x`, validators)],
    ['If-Match with spaces inside', () => evaluatePreconditions({ method: 'GET', ifMatch: `"a"${spaces(SIZE)}x` }, validators)],
    ['If-None-Match with spaces inside', () => evaluatePreconditions({ method: 'GET', ifNoneMatch: `"a"${spaces(SIZE)}x` }, validators)],
    ['If-None-Match with 16 K tags', () => evaluatePreconditions({ method: 'GET', ifNoneMatch: '"a",'.repeat(SIZE / 4) }, validators)],
    ['If-None-Match of quotes only', () => parseEntityTagList('"'.repeat(SIZE))],
    [
      'If-Modified-Since with spaces inside',
      () => evaluatePreconditions({ method: 'GET', ifModifiedSince: `Sat${spaces(SIZE)}x` }, validators),
    ],
    [
      'If-Unmodified-Since with tabs inside',
      () => evaluatePreconditions({ method: 'GET', ifUnmodifiedSince: `Sat${tabs(SIZE)}x` }, validators),
    ],
    ['Authorization with spaces around the token', () => bearerToken(`Bearer ${spaces(SIZE)}${'a'.repeat(SIZE)}${spaces(SIZE)}\u0001`)],
  ];

  // Linear work on 64 KB takes well under a millisecond; the quadratic
  // trimming regex took seconds here. 10 ms leaves room for a busy machine.
  test.each(hostile)('%s is parsed in a few milliseconds, so one request cannot stall the others', (_name, work) => {
    expect(cost(work)).toBeLessThan(10);
  });
});

interface Answer {
  status: number;
  contentType: string | undefined;
  body: Buffer;
  ms: number;
}

/** One request over a fresh connection, timed from sending to the last byte of the answer. */
function timedGet(baseUrl: string, path: string, headers: Record<string, string>): Promise<Answer> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(`${baseUrl}${path}`, { method: 'GET', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          contentType: res.headers['content-type'],
          body: Buffer.concat(chunks),
          ms: performance.now() - started,
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('hostile header values over HTTP are answered as fast as a normal request', () => {
  // Node's default limit is 16 KB for the whole header section; 15,000
  // characters of one value stay under it with the other headers.
  const AT_LIMIT = 15_000;
  const RUNS = 9;
  // Generous: a normal request takes a few milliseconds on loopback, the
  // quadratic regex cost hundreds per request at this size.
  const ALLOWED_EXTRA_MS = 20;
  const PATH = '/v1/call/recording/1.mp3';
  let upstream: FakeFlyflow;
  let dir: string;
  let gateway: RunningGateway;
  let recording: Buffer;

  beforeAll(async () => {
    upstream = await startFakeFlyflow();
    dir = await makeTempDir('rg-headers-');
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
    recording = upstream.recording(1)!;
    // Cached first, so every request below is a hit and times only the gateway.
    const first = await gateway.fetch(PATH);
    expect(first.status).toBe(200);
    await first.arrayBuffer();
    await gateway.gateway.downloads.idle();
  });

  afterAll(async () => {
    await gateway?.close();
    await upstream?.close();
    await removeDir(dir);
  });

  /** Alternates normal and hostile requests so that both see the same machine load; returns both medians. */
  async function compare(hostile: Record<string, string>, check: (answer: Answer) => void): Promise<{ normal: number; hostile: number }> {
    const normal: number[] = [];
    const slow: number[] = [];
    const auth = { authorization: `Bearer ${ACME_KEY}` };
    for (let run = 0; run < RUNS; run++) {
      const plain = await timedGet(gateway.baseUrl, PATH, auth);
      expect(plain.status).toBe(200);
      normal.push(plain.ms);
      const answer = await timedGet(gateway.baseUrl, PATH, { ...auth, ...hostile });
      check(answer);
      slow.push(answer.ms);
    }
    return { normal: median(normal), hostile: median(slow) };
  }

  const wholeBody = (answer: Answer) => {
    expect(answer.status).toBe(200);
    expect(answer.body.equals(recording)).toBe(true);
  };

  test.each<[string, Record<string, string>, (answer: Answer) => void]>([
    ['Range', { range: `bytes=0-1${spaces(AT_LIMIT)}x` }, wholeBody],
    ['If-Range', { range: 'bytes=0-1', 'if-range': `"a"${spaces(AT_LIMIT)}x` }, wholeBody],
    ['If-Match', { 'if-match': `"a"${spaces(AT_LIMIT)}x` }, (answer) => expect(answer.status).toBe(412)],
    ['If-None-Match', { 'if-none-match': `"a"${spaces(AT_LIMIT)}x` }, wholeBody],
    ['If-Modified-Since', { 'if-modified-since': `Sat${spaces(AT_LIMIT)}x` }, wholeBody],
    ['If-Unmodified-Since', { 'if-unmodified-since': `Sat${tabs(AT_LIMIT)}x` }, wholeBody],
    ['X-Request-Id', { 'x-request-id': 'a'.repeat(AT_LIMIT) }, wholeBody],
    ['Origin', { origin: `https://${'a'.repeat(AT_LIMIT)}` }, wholeBody],
    [
      'Authorization',
      { authorization: `Bearer ${spaces(AT_LIMIT / 2)}${'a'.repeat(AT_LIMIT / 2)} x` },
      (answer) => expect(answer.status).toBe(401),
    ],
  ])('a 15 KB hostile %s value is answered correctly within milliseconds of a normal request', async (_name, headers, check) => {
    const { normal, hostile } = await compare(headers, check);
    expect(hostile).toBeLessThan(normal + ALLOWED_EXTRA_MS);
  });

  test('a 64 KB header value is refused with a JSON 431 as fast as a normal request is answered', async () => {
    const { normal, hostile } = await compare({ range: `bytes=0-1${spaces(64 * 1024)}x` }, (answer) => {
      expect(answer.status).toBe(431);
      expect(answer.contentType).toBe('application/json');
      expect(JSON.parse(answer.body.toString())).toEqual({ error: 'Request Header Fields Too Large', message: expect.any(String) });
    });
    expect(hostile).toBeLessThan(normal + ALLOWED_EXTRA_MS);
  });
});
