import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AppDeps, createApp } from '../src/app.js';
import { systemClock } from '../src/clock.js';
import { silentLogger } from '../src/logger.js';
import {
  CALL_ID_PATTERN,
  decimalsUpTo,
  type OpenApiDocument,
  openApiDocument,
  PEER_RECORDING_ROUTE_PATH,
  RECORDING_FILE_PATH,
  RECORDING_INFO_PATH,
  RECORDING_PEAKS_PATH,
  SIGNED_URL_ROUTE_PATH,
} from '../src/openapi/openapi-document.js';
import { loadFixtureCatalog, startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { makeTempDir, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';

type Json = Record<string, unknown>;

/** Hono registers the recording routes as one wildcard per method; these are the documented routes each one serves. */
const WILDCARD_ROUTES: Record<string, string[]> = {
  'GET /v1/call/recording/*': [`GET ${RECORDING_FILE_PATH}`, `HEAD ${RECORDING_FILE_PATH}`],
  'DELETE /v1/call/recording/*': [`DELETE ${RECORDING_FILE_PATH}`],
  'POST /v1/call/recording/*': [`POST ${SIGNED_URL_ROUTE_PATH}`],
};
const OPERATION_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);

/** An app with every route, the cluster's too; building it touches none of its dependencies. */
function appWithEveryRoute() {
  const deps = {
    logger: silentLogger(),
    clock: systemClock,
    metrics: {},
    tenants: { anyAllowedOrigin: new Set<string>(), all: [] },
    readiness: [],
    admin: {},
    webhooks: {},
    maxAgeSeconds: 60,
    peer: { peerSecret: 'unused', volume: 'unused', recordings: {}, downloads: {}, volumeHeader: 'X-Volume' },
  } as unknown as AppDeps;
  return createApp(deps);
}

/** "GET /v1/..." for every route the app answers, with Hono's `:param` written as OpenAPI's `{param}`. */
function registeredOperations(): Set<string> {
  const operations = new Set<string>();
  for (const { method, path } of appWithEveryRoute().routes) {
    if (!OPERATION_METHODS.has(method)) continue; // middleware, preflight and the 405 catch-alls
    const route = `${method} ${path}`;
    if (path.includes('*')) {
      const documented = WILDCARD_ROUTES[route];
      expect(documented, `wildcard route ${route} has no documented paths in WILDCARD_ROUTES`).toBeDefined();
      for (const operation of documented ?? []) operations.add(operation);
      continue;
    }
    const documented = path.replace(/:callId\b/g, '{id}').replace(/:(\w+)/g, '{$1}');
    operations.add(`${method} ${documented}`);
    // Hono answers HEAD through every GET route.
    if (method === 'GET') operations.add(`HEAD ${documented}`);
  }
  return operations;
}

function documentedOperations(document: OpenApiDocument): Set<string> {
  const operations = new Set<string>();
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of Object.keys(item)) operations.add(`${method.toUpperCase()} ${path}`);
  }
  return operations;
}

/** Follows a local `$ref` ("#/components/..."), once or more. */
function resolve(document: OpenApiDocument, value: Json): Json {
  let current = value;
  for (let depth = 0; depth < 8 && typeof current.$ref === 'string'; depth++) {
    const parts = (current.$ref as string).replace(/^#\//, '').split('/');
    current = parts.reduce<Json>((node, key) => node[key] as Json, document as unknown as Json);
  }
  return current;
}

const SCHEMA_ID = 'https://recording-gateway.test/openapi.json';

/**
 * Checks a real answer against the document: its status is documented for
 * the operation, every header the document requires is there, and a JSON body
 * validates against the documented schema.
 */
function checkAnswer(
  document: OpenApiDocument,
  ajv: Ajv2020,
  path: string,
  method: string,
  answer: { status: number; headers: Headers; body: string },
): void {
  const operation = document.paths[path]?.[method.toLowerCase()];
  expect(operation, `${method} ${path} is documented`).toBeDefined();
  const responses = (operation as Json).responses as Record<string, Json>;
  const documented = responses[String(answer.status)];
  expect(documented, `${method} ${path} documents status ${answer.status}`).toBeDefined();
  const response = resolve(document, documented as Json);
  for (const [name, header] of Object.entries((response.headers ?? {}) as Record<string, Json>)) {
    if (resolve(document, header).required === true) {
      expect(answer.headers.has(name), `${method} ${path} ${answer.status} carries ${name}`).toBe(true);
    }
  }
  const content = response.content as Record<string, { schema: Json }> | undefined;
  const contentType = answer.headers.get('content-type')?.split(';')[0];
  if (content === undefined) {
    expect(answer.body).toBe('');
    return;
  }
  if (method === 'HEAD') return;
  expect(Object.keys(content), `${method} ${path} ${answer.status} documents ${contentType}`).toContain(contentType);
  if (contentType !== 'application/json') return;
  const { schema } = content[contentType] ?? { schema: {} };
  const validate = typeof schema.$ref === 'string' ? ajv.getSchema(`${SCHEMA_ID}${schema.$ref}`) : ajv.compile(schema);
  expect(validate, `schema for ${method} ${path} ${answer.status}`).toBeDefined();
  const valid = validate?.(JSON.parse(answer.body));
  expect(validate?.errors ?? null, `${method} ${path} ${answer.status} body ${answer.body}`).toBeNull();
  expect(valid).toBe(true);
}

async function answerOf(response: Response) {
  return { status: response.status, headers: response.headers, body: await response.text() };
}

describe('GET /openapi.json', () => {
  let flyflow: FakeFlyflow;
  let gateway: RunningGateway;
  let dir: string;
  let served: OpenApiDocument;
  let ajv: Ajv2020;
  let callId: number;

  beforeAll(async () => {
    dir = await makeTempDir('rg-openapi-');
    flyflow = await startFakeFlyflow();
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: flyflow.baseUrl }));
    const [first] = await loadFixtureCatalog();
    if (!first) throw new Error('no fixture recordings');
    callId = first.id;
    const response = await fetch(`${gateway.baseUrl}/openapi.json`);
    served = (await response.json()) as OpenApiDocument;
    ajv = new Ajv2020({ strict: false, allErrors: true });
    ajv.addSchema({ $id: SCHEMA_ID, components: { schemas: served.components.schemas } });
  });

  afterAll(async () => {
    await gateway?.close();
    await flyflow?.close();
    if (dir) await removeDir(dir);
  });

  it('is served to anyone as cacheable JSON, the document built in code', async () => {
    const response = await fetch(`${gateway.baseUrl}/openapi.json`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expect(response.headers.get('cache-control')).toBe('public, max-age=300');
    expect(await response.json()).toEqual(JSON.parse(JSON.stringify(openApiDocument)));
    expect(served.info.version).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('is a valid OpenAPI 3.1 document', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(served) as unknown as Json);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.1');
    // Every $ref points at something that exists.
    expect(() => validator.resolveRefs()).not.toThrow();
  });

  it('documents every registered route, and no route the app does not have', () => {
    const registered = registeredOperations();
    const documented = documentedOperations(served);
    // Hono answers HEAD through GET: a documented HEAD needs a registered GET.
    for (const operation of documented) {
      if (operation.startsWith('HEAD ')) expect(registered, operation).toContain(operation.replace('HEAD ', 'GET '));
    }
    const withoutHead = (operations: Set<string>) => [...operations].filter((operation) => !operation.startsWith('HEAD ')).sort();
    expect(withoutHead(documented)).toEqual(withoutHead(registered));
    expect(documented).toContain(`GET ${PEER_RECORDING_ROUTE_PATH}`);
  });

  it("matches the gateway's real answers for a recording", async () => {
    const path = `/v1/call/recording/${callId}.mp3`;
    const whole = await gateway.fetch(path);
    expect(whole.status).toBe(200);
    checkAnswer(served, ajv, RECORDING_FILE_PATH, 'GET', { ...(await answerOf(whole)), body: '' });

    // A conditional request waits for the whole recording, so it has the ETag even before the copy is stored.
    const validated = await gateway.fetch(path, { headers: { 'if-none-match': '"another"' } });
    expect(validated.status).toBe(200);
    checkAnswer(served, ajv, RECORDING_FILE_PATH, 'GET', { ...(await answerOf(validated)), body: '' });
    const etag = validated.headers.get('etag');
    expect(etag).toBeTruthy();

    const head = await gateway.fetch(path, { method: 'HEAD' });
    expect(head.status).toBe(200);
    checkAnswer(served, ajv, RECORDING_FILE_PATH, 'HEAD', await answerOf(head));

    const partial = await gateway.fetch(path, { headers: { range: 'bytes=0-99' } });
    expect(partial.status).toBe(206);
    checkAnswer(served, ajv, RECORDING_FILE_PATH, 'GET', { ...(await answerOf(partial)), body: '' });

    const unchanged = await gateway.fetch(path, { headers: { 'if-none-match': etag ?? '' } });
    expect(unchanged.status).toBe(304);
    checkAnswer(served, ajv, RECORDING_FILE_PATH, 'GET', await answerOf(unchanged));

    const beyond = await gateway.fetch(path, { headers: { range: 'bytes=999999999-' } });
    expect(beyond.status).toBe(416);
    checkAnswer(served, ajv, RECORDING_FILE_PATH, 'GET', await answerOf(beyond));
  });

  it("matches the gateway's real error answers", async () => {
    const anonymous = await fetch(`${gateway.baseUrl}/v1/call/recording/${callId}.mp3`);
    expect(anonymous.status).toBe(401);
    checkAnswer(served, ajv, RECORDING_FILE_PATH, 'GET', await answerOf(anonymous));

    const missing = await gateway.fetch('/v1/call/recording/987654321.mp3');
    expect(missing.status).toBe(404);
    checkAnswer(served, ajv, RECORDING_FILE_PATH, 'GET', await answerOf(missing));

    const badId = await gateway.fetch('/v1/call/recording/01.mp3');
    expect(badId.status).toBe(400);
    checkAnswer(served, ajv, RECORDING_FILE_PATH, 'GET', await answerOf(badId));
  });

  it("matches the gateway's real answers for a signed URL and the recording it opens", async () => {
    const minted = await gateway.fetch(`/v1/call/recording/${callId}/signed-url`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ttl_seconds: 120 }),
    });
    expect(minted.status).toBe(200);
    const mintedAnswer = await answerOf(minted);
    checkAnswer(served, ajv, SIGNED_URL_ROUTE_PATH, 'POST', mintedAnswer);

    const { url } = JSON.parse(mintedAnswer.body) as { url: string };
    const viaSignature = await gateway.fetch(url);
    expect(viaSignature.status).toBe(200);
    checkAnswer(served, ajv, RECORDING_FILE_PATH, 'GET', { ...(await answerOf(viaSignature)), body: '' });
  });

  it("matches the gateway's real answers for a recording's info.json and peaks.json", async () => {
    for (const [path, documented] of [
      [`/v1/call/recording/${callId}/info.json`, RECORDING_INFO_PATH],
      [`/v1/call/recording/${callId}/peaks.json?points=50`, RECORDING_PEAKS_PATH],
    ] as const) {
      const answer = await gateway.fetch(path);
      expect(answer.status).toBe(200);
      const whole = await answerOf(answer);
      checkAnswer(served, ajv, documented, 'GET', whole);

      const head = await gateway.fetch(path, { method: 'HEAD' });
      expect(head.status).toBe(200);
      checkAnswer(served, ajv, documented, 'HEAD', await answerOf(head));

      const unchanged = await gateway.fetch(path, { headers: { 'if-none-match': answer.headers.get('etag') ?? '' } });
      expect(unchanged.status).toBe(304);
      checkAnswer(served, ajv, documented, 'GET', await answerOf(unchanged));

      const anonymous = await fetch(`${gateway.baseUrl}${path}`);
      expect(anonymous.status).toBe(401);
      checkAnswer(served, ajv, documented, 'GET', await answerOf(anonymous));

      const missing = await gateway.fetch(path.replace(`/${callId}/`, '/987654321/'));
      expect(missing.status).toBe(404);
      checkAnswer(served, ajv, documented, 'GET', await answerOf(missing));
    }
    const badPoints = await gateway.fetch(`/v1/call/recording/${callId}/peaks.json?points=0`);
    expect(badPoints.status).toBe(400);
    checkAnswer(served, ajv, RECORDING_PEAKS_PATH, 'GET', await answerOf(badPoints));
  });

  it("matches the gateway's real answers for /healthz and /readyz", async () => {
    const healthz = await fetch(`${gateway.baseUrl}/healthz`);
    checkAnswer(served, ajv, '/healthz', 'GET', await answerOf(healthz));
    const readyz = await fetch(`${gateway.baseUrl}/readyz`);
    expect(readyz.status).toBe(200);
    checkAnswer(served, ajv, '/readyz', 'GET', await answerOf(readyz));
    const openapi = await fetch(`${gateway.baseUrl}/openapi.json`);
    checkAnswer(served, ajv, '/openapi.json', 'GET', await answerOf(openapi));
  });

  it('documents the signed-URL body the gateway takes: ttl_seconds and kid, no other field', async () => {
    const validate = ajv.getSchema(`${SCHEMA_ID}#/components/schemas/SignedUrlRequest`)!;
    const bodies: Array<[Record<string, unknown>, number]> = [
      [{}, 200],
      [{ ttl_seconds: 60 }, 200],
      [{ kid: 'k2' }, 200],
      [{ ttl_seconds: 60, kid: 'k1' }, 200],
      [{ x: 1 }, 400],
      [{ kid: 2 }, 400],
      [{ ttl_seconds: 0 }, 400],
    ];
    for (const [body, status] of bodies) {
      const minted = await gateway.fetch(`/v1/call/recording/${callId}/signed-url`, { method: 'POST', body: JSON.stringify(body) });
      const answer = await answerOf(minted);
      expect(answer.status, JSON.stringify(body)).toBe(status);
      checkAnswer(served, ajv, SIGNED_URL_ROUTE_PATH, 'POST', answer);
      expect(validate(body), `the document on ${JSON.stringify(body)}`).toBe(status === 200);
    }
  });

  it('validates the readiness schema with and without a cluster', () => {
    const ready = ajv.getSchema(`${SCHEMA_ID}#/components/schemas/Ready`);
    expect(ready?.({ status: 'ready', cluster: { state: 'degraded', redis: 'unreachable', peers: 0 } })).toBe(true);
    expect(ready?.({ status: 'ready', cluster: { state: 'degraded' } })).toBe(false);
  });
});

describe('the call id in the document', () => {
  it('is a pattern for exactly the decimals 1 to max, no sign, no leading zero', () => {
    for (const max of ['1', '7', '10', '19', '20', '99', '100', '909', '1000', '1234', '9007']) {
      const pattern = new RegExp(decimalsUpTo(max));
      for (let n = 0; n <= 12_000; n++) {
        expect(pattern.test(String(n)), `${n} against ${max}`).toBe(n >= 1 && n <= Number(max));
        expect(pattern.test(`0${n}`)).toBe(false);
      }
    }
  });

  it("states the contract's range: up to 9007199254740991", () => {
    const pattern = new RegExp(CALL_ID_PATTERN);
    for (const id of ['1', '900719925474099', '8999999999999999', '9007199254740990', '9007199254740991']) {
      expect(pattern.test(id), id).toBe(true);
    }
    for (const id of ['0', '01', '-1', '+1', '1.0', '9007199254740992', '9007199254741000', '9999999999999999', '10000000000000000']) {
      expect(pattern.test(id), id).toBe(false);
    }
  });

  it('HEAD of a recording lists neither Range, If-Range nor 416: HEAD ignores Range', () => {
    const head = (openApiDocument.paths[RECORDING_FILE_PATH] as Record<string, Json>).head as Json;
    const parameters = JSON.stringify(head.parameters);
    expect(parameters).not.toContain('/Range');
    expect(parameters).not.toContain('IfRange');
    expect(Object.keys(head.responses as Json)).not.toContain('416');
    const get = (openApiDocument.paths[RECORDING_FILE_PATH] as Record<string, Json>).get as Json;
    expect(Object.keys(get.responses as Json)).toContain('416');
    expect(JSON.stringify(get.parameters)).toContain('IfRange');
  });

  it('lists every conditional header each recording operation honours', () => {
    const operations = openApiDocument.paths[RECORDING_FILE_PATH] as Record<string, Json>;
    const components = (openApiDocument.components as Json).parameters as Record<string, Json>;
    const headerNames = (method: string) =>
      ((operations[method] as Json).parameters as Json[])
        .map((parameter) => (typeof parameter.$ref === 'string' ? components[parameter.$ref.split('/').pop()!]! : parameter))
        .filter((parameter) => parameter.in === 'header')
        .map((parameter) => parameter.name)
        .sort();
    const dates = ['If-Modified-Since', 'If-Unmodified-Since'];
    expect(headerNames('get')).toEqual(['If-Match', 'If-None-Match', 'If-Range', 'Range', ...dates].sort());
    expect(headerNames('head')).toEqual(['If-Match', 'If-None-Match', ...dates].sort());
    expect(headerNames('delete')).toEqual(['If-Match', 'If-None-Match', 'If-Unmodified-Since']);
  });
});
