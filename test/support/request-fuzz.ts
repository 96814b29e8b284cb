/**
 * Random but reproducible hostile requests for the gateway: a seeded PRNG
 * drives methods, raw request targets, credentials and conditional headers,
 * so a failing seed replays the same requests.
 */
import { createHmac } from 'node:crypto';
import { request, type Agent, type IncomingHttpHeaders } from 'node:http';
import { ACME_KEY, ACME_ORIGIN, ACME_SIGNING_SECRET } from '../../dev/gateway-harness.js';

/** mulberry32: tiny, fast, and the same sequence for the same seed on every platform. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface FuzzRequest {
  method: string;
  /** The request target exactly as sent. */
  target: string;
  headers: Record<string, string>;
  /** The call id when the target is a canonical recording path (what alone may reach upstream). */
  validId: string | undefined;
}

export interface FuzzResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

const METHODS = ['GET', 'GET', 'GET', 'HEAD', 'HEAD', 'POST', 'DELETE', 'PUT', 'OPTIONS', 'PATCH'];
const PREFIX = '/v1/call/recording/';
/** Fixture ids (cached), unknown ids (404 upstream) and the largest id the contract allows. */
const VALID_IDS = ['1', '2', '3', '4', '5', '17', '123456', '9007199254740991'];
const BAD_IDS = [
  '0',
  '00',
  '01',
  '-1',
  '+1',
  '1e3',
  '1.0',
  '0x1F',
  '1_000',
  '9007199254740992',
  '99999999999999999999',
  '',
  'abc',
  'null',
  'undefined',
  'NaN',
  'Infinity',
  '%31',
  '1%00',
  '%2e%2e',
  '..',
  '.',
  '1;2',
  '1,2',
  "1'",
  '"1"',
];
const SPECIAL_TARGETS = [
  '/',
  '*',
  '/healthz',
  '/readyz',
  '/metrics',
  '/v1',
  '/v1/',
  '/v1/call',
  '/v1/call/recording',
  PREFIX,
  `${PREFIX}../recording/1.mp3`,
  `${PREFIX}%2e%2e/1.mp3`,
  `${PREFIX}%2E%2E%2F1.mp3`,
  `${PREFIX}1.mp3/..`,
  `${PREFIX}1.mp3/../2.mp3`,
  '/v1/call/../call/recording/1.mp3',
  '/v1//call/recording/1.mp3',
  `${PREFIX}/1.mp3`,
  `${PREFIX}1%2Fmp3`,
  `${PREFIX}1%2emp3`,
  `${PREFIX}1.mp3%00`,
  `${PREFIX}1.MP3`,
  `${PREFIX}1.mp3.mp3`,
  `${PREFIX}1/signed-url/x`,
  '/%',
  '/%zz',
  '/%C0%AF',
  '/%ff%fe',
  `${PREFIX}%`,
  `${PREFIX}1.mp3%`,
  '/v1/webhooks/flyflow/acme',
  '/v1/webhooks/flyflow/..',
  '//evil.example/v1/call/recording/1.mp3',
  'http://evil.example/v1/call/recording/../recording/1.mp3',
  '/\\..\\1.mp3',
];
const RANGES = [
  'bytes=0-0',
  'bytes=0-99',
  'bytes=-1',
  'bytes=-500',
  'bytes=100-',
  'bytes=5-1',
  'bytes=0-0,5-9',
  'bytes=999999999-',
  'bytes=-0',
  'bytes=',
  'bytes',
  'items=0-1',
  'bytes=a-b',
  'bytes=0-99999999999999999999',
  'bytes=-9007199254740993',
  'bytes= 0 - 1 ',
  'BYTES=0-1',
  'bytes=0-1;x',
];
const ENTITY_TAGS = ['*', '"x"', 'W/"x"', '"', '""', 'W/', '"a", "b"', ', ,', 'Wed, 01 Jan 2025 00:00:00 GMT', 'yesterday', '-1'];
const ORIGINS = [ACME_ORIGIN, 'https://evil.example', 'null', `${ACME_ORIGIN}.evil.example`, `${ACME_ORIGIN}/`, '*', ''];
const PRINTABLE = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i)).join('');

/** A generator of reproducible random requests. */
export function requestFuzzer(seed: number, nowSeconds: () => number) {
  const random = seededRandom(seed);
  const int = (max: number) => Math.floor(random() * max);
  const chance = (p: number) => random() < p;
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  const text = (length: number, alphabet = PRINTABLE) => Array.from({ length }, () => alphabet[int(alphabet.length)]).join('');
  const headerText = (length: number) => text(length, ` ${PRINTABLE}`).trim() || 'x';

  function percentEncodeSome(value: string): string {
    return [...value].map((char) => (chance(0.3) ? `%${char.charCodeAt(0).toString(16).padStart(2, '0')}` : char)).join('');
  }

  function target(): { path: string; validId: string | undefined } {
    const roll = random();
    if (roll < 0.35) {
      const id = pick(VALID_IDS);
      return { path: `${PREFIX}${id}.mp3`, validId: id };
    }
    if (roll < 0.45) return { path: `${PREFIX}${pick(VALID_IDS)}/signed-url`, validId: undefined };
    if (roll < 0.55) return { path: `${PREFIX}${pick(BAD_IDS)}.mp3`, validId: undefined };
    if (roll < 0.65) return { path: pick(SPECIAL_TARGETS), validId: undefined };
    if (roll < 0.75) return { path: percentEncodeSome(`${PREFIX}${pick(VALID_IDS)}.mp3`), validId: undefined };
    if (roll < 0.85) return { path: `${chance(0.5) ? PREFIX : '/'}${text(1 + int(200))}`, validId: undefined };
    // Very long: ids, segments and dot-segments up to 8 KB (Node's own header limit is 16 KB).
    const length = 500 + int(7_500);
    const long = pick<() => { path: string; validId: string | undefined }>([
      () => ({ path: `${PREFIX}${'9'.repeat(length)}.mp3`, validId: undefined }),
      () => ({ path: `${PREFIX}${'1'.repeat(length)}.mp3`, validId: undefined }),
      () => ({ path: `/${'a/'.repeat(length / 2)}`, validId: undefined }),
      () => ({ path: `${PREFIX}${'../'.repeat(length / 3)}1.mp3`, validId: undefined }),
      // A valid path with a huge query string: the query is ignored, the id is valid.
      () => ({ path: `${PREFIX}2.mp3?${'x'.repeat(length)}`, validId: '2' }),
    ]);
    return long();
  }

  function query(id: string | undefined): string {
    if (!chance(0.4)) return '';
    const params: string[] = [];
    const exp = chance(0.7) ? nowSeconds() + 300 : pick([0, 1, nowSeconds() - 10, -5, 1e13, 2 ** 53]);
    if (id !== undefined && chance(0.3)) {
      // A genuine signature for this id, so the signed-URL path is exercised too.
      const sig = createHmac('sha256', ACME_SIGNING_SECRET).update(`v1\nacme\n${id}\n${exp}`).digest('base64url');
      params.push('tenant=acme', `exp=${exp}`, 'kid=k1', `sig=${chance(0.8) ? sig : `${sig}A`}`);
    } else {
      if (chance(0.7)) params.push(`tenant=${pick(['acme', 'nobody', '', '%00', 'acme%0a', text(1 + int(20))])}`);
      if (chance(0.7)) params.push(`exp=${pick([String(exp), '', 'abc', '1e9', '-1', '0x10', '%31'])}`);
      if (chance(0.7)) params.push(`kid=${pick(['k1', 'k2', 'kx', '', '../k1', text(1 + int(10))])}`);
      if (chance(0.7)) params.push(`sig=${pick(['', 'AAAA', '%zz', text(43, 'ABCDEFabcdef0123456789-_'), text(1 + int(100))])}`);
    }
    if (chance(0.3)) params.push(pick(['cb=1', 'a', '=', '&&', 'tenant=acme&tenant=evil', `x=${text(1 + int(50))}`]));
    return `?${params.join('&')}`;
  }

  return function next(): FuzzRequest {
    const method = pick(METHODS);
    const { path, validId } = target();
    const headers: Record<string, string> = {};
    const auth = random();
    if (auth < 0.45) headers.authorization = `Bearer ${ACME_KEY}`;
    else if (auth < 0.55)
      headers.authorization = pick([
        'Bearer',
        'Bearer ',
        'Basic YWNtZTpwdw==',
        `bearer ${ACME_KEY}`,
        `Bearer  ${ACME_KEY}  `,
        'Bearer wrong',
      ]);
    else if (auth < 0.65) headers.authorization = headerText(1 + int(chance(0.1) ? 4_000 : 100));
    if (chance(0.3)) headers.range = chance(0.7) ? pick(RANGES) : headerText(1 + int(60));
    if (chance(0.15)) headers['if-range'] = chance(0.7) ? pick(ENTITY_TAGS) : headerText(1 + int(60));
    if (chance(0.15)) headers['if-none-match'] = chance(0.7) ? pick(ENTITY_TAGS) : headerText(1 + int(60));
    if (chance(0.2)) headers.origin = chance(0.8) ? pick(ORIGINS) : headerText(1 + int(60));
    for (const name of Object.keys(headers)) if (headers[name] === '') delete headers[name];
    return { method, target: `${path}${query(validId)}`, headers, validId: method === 'GET' || method === 'HEAD' ? validId : undefined };
  };
}

/** Sends one request with its target byte for byte; rejects after `timeoutMs` so a hang names its request. */
export function sendRaw(baseUrl: string, fuzz: FuzzRequest, agent: Agent, timeoutMs = 5_000): Promise<FuzzResponse> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, method: fuzz.method, path: fuzz.target, headers: fuzz.headers, agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.once('error', reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.once('error', reject);
    req.end();
  });
}

/** What is wrong with one answer under the contract, or undefined when nothing is. */
export function contractViolation(fuzz: FuzzRequest, response: FuzzResponse): string | undefined {
  if (response.status >= 500) return `status ${response.status}`;
  const bodiless = fuzz.method === 'HEAD' || response.status === 204 || response.status === 304;
  if (bodiless)
    return response.body.length === 0 ? undefined : `a ${response.status} to ${fuzz.method} with a ${response.body.length}-byte body`;
  if (response.status < 400) return undefined;
  const type = response.headers['content-type'] ?? '';
  if (!type.startsWith('application/json')) return `error ${response.status} with Content-Type ${JSON.stringify(type)}`;
  let body: unknown;
  try {
    body = JSON.parse(response.body.toString('utf8'));
  } catch {
    return `error ${response.status} whose body is not JSON: ${JSON.stringify(response.body.toString('utf8').slice(0, 200))}`;
  }
  const shape = body as Record<string, unknown>;
  const keys = body !== null && typeof body === 'object' ? Object.keys(shape).sort().join(',') : '';
  if (keys !== 'error,message' || typeof shape.error !== 'string' || typeof shape.message !== 'string') {
    return `error ${response.status} not in the {error, message} shape: ${response.body.toString('utf8').slice(0, 200)}`;
  }
  return undefined;
}
