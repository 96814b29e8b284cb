/**
 * `npm run demo`: everything on loopback, no network needed.
 *
 *   sample Flyflow upstream (dev/fixtures MP3s)  <-  gateway  <-  player app
 *
 * The player app stands in for a tenant's product: a page on its own origin and
 * a backend that keeps the tenant API key and hands the page signed URLs. Keys
 * and secrets are random per run and live only in this process (and the banner).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getRequestListener } from '@hono/node-server';
import { sha256Hex } from '../src/sha256.js';
import { parseConfig } from '../src/config/index.js';
import { createGateway, type Gateway } from '../src/gateway.js';
import { silentLogger } from '../src/logger.js';
import { loadFixtureCatalog, startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { createPlayerBackend } from './demo/player-server.js';

export const DEMO_GATEWAY_PORT = 8080;
export const DEMO_PLAYER_PORT = 8081;
export const DEMO_UPSTREAM_PORT = 8090;
export const DEMO_TENANT = 'demo';
const DEMO_KID = 'demo-k1';
/** Signed URLs for the page; a reload mints fresh ones. */
const PLAYER_URL_TTL_SECONDS = 900;
/** The signed URL printed for curl; the tenant's maximum (the config default). */
const BANNER_URL_TTL_SECONDS = 3600;
const STATIC_DIR = join(dirname(fileURLToPath(import.meta.url)), 'demo');

export interface DemoOptions {
  /** Default 8080; 0 picks a free port. */
  gatewayPort?: number;
  /** Default 8081; 0 picks a free port. */
  playerPort?: number;
  /** Default 8090, or a free port when that one is taken; 0 picks a free port. */
  upstreamPort?: number;
  /** No banner and no request log (tests). */
  quiet?: boolean;
}

export interface Demo {
  /** `http://127.0.0.1:PORT`, no trailing slash. */
  gatewayUrl: string;
  /** The player page, `http://127.0.0.1:PORT/`. */
  playerUrl: string;
  /** The sample Flyflow's base URL, `http://127.0.0.1:PORT/v1`. */
  upstreamUrl: string;
  /** The demo tenant's API key (random per run). */
  tenantKey: string;
  /** Stops every server and removes the temporary cache. */
  stop(): Promise<void>;
}

/** Starts the sample upstream, the gateway and the player app on 127.0.0.1. */
export async function startDemo(options: DemoOptions = {}): Promise<Demo> {
  const parts: Running = {};
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= stopAll(parts));
  try {
    const serverKey = secret('flyflow_demo_');
    parts.upstream = await startFakeFlyflow({ apiKeys: [serverKey], port: options.upstreamPort ?? DEMO_UPSTREAM_PORT }).catch(
      (error: unknown) => {
        // Nobody types the upstream's address, so any free port will do.
        if (options.upstreamPort === undefined && errorCode(error) === 'EADDRINUSE') return startFakeFlyflow({ apiKeys: [serverKey] });
        throw new Error(`demo upstream: cannot listen on 127.0.0.1:${options.upstreamPort}: ${listenHint(error, 'DEMO_UPSTREAM_PORT')}`, {
          cause: error,
        });
      },
    );
    const upstream = parts.upstream;

    // Both listen before either is wired: the gateway needs the player's origin
    // (CORS) and the player needs the gateway's URL.
    const gatewayServer = await listen(options.gatewayPort ?? DEMO_GATEWAY_PORT, 'gateway', 'DEMO_GATEWAY_PORT');
    parts.gatewayServer = gatewayServer;
    const answerGateway = answeredOnceWired(gatewayServer);
    const playerServer = await listen(options.playerPort ?? DEMO_PLAYER_PORT, 'player', 'DEMO_PLAYER_PORT');
    parts.playerServer = playerServer;
    const answerPlayer = answeredOnceWired(playerServer);
    const gatewayPort = (gatewayServer.address() as AddressInfo).port;
    const playerPort = (playerServer.address() as AddressInfo).port;
    const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
    const playerOrigins = [`http://127.0.0.1:${playerPort}`, `http://localhost:${playerPort}`];

    const cacheDir = await mkdtemp(join(tmpdir(), 'recording-gateway-demo-'));
    parts.cacheDir = cacheDir;
    const tenantKey = secret('demo_');
    // The same snake_case shape as config/gateway.yaml, validated by the real loader.
    const config = parseConfig(
      {
        listen: { host: '127.0.0.1', port: gatewayPort },
        public_base_url: gatewayUrl,
        upstream: { base_url: upstream.baseUrl, api_key_env: 'DEMO_FLYFLOW_API_KEY', timeout_ms: 10_000 },
        cache: { dir: cacheDir, max_disk_bytes: '256MiB', max_memory_bytes: '32MiB', max_recording_bytes: '64MiB' },
        tenants: [
          {
            id: DEMO_TENANT,
            api_keys: [`sha256:${sha256Hex(tenantKey)}`],
            signing_keys: [{ kid: DEMO_KID, secret_env: 'DEMO_SIGNING_SECRET' }],
            allowed_origins: playerOrigins,
          },
        ],
      },
      { env: { DEMO_FLYFLOW_API_KEY: serverKey, DEMO_SIGNING_SECRET: secret('') }, cwd: process.cwd() },
    );
    const gateway = await createGateway({ config, logger: silentLogger() });
    parts.gateway = gateway;
    let logRequests = false; // from the banner on
    // Memory hits first, then the app, as `npm start` answers (without its Host check and connection cap, which a demo on loopback does not need).
    const listener = gateway.answeringMemoryHitsFirst(getRequestListener(gateway.app.fetch));
    answerGateway((request: IncomingMessage, response: ServerResponse) => {
      if (logRequests) response.once('finish', () => logRequest(request, response));
      listener(request, response);
    });

    const catalog = await loadFixtureCatalog();
    answerPlayer(createPlayerBackend({ gatewayUrl, tenantKey, catalog, ttlSeconds: PLAYER_URL_TTL_SECONDS, staticDir: STATIC_DIR }));

    const demo: Demo = { gatewayUrl, playerUrl: `http://127.0.0.1:${playerPort}/`, upstreamUrl: upstream.baseUrl, tenantKey, stop };
    if (!options.quiet) {
      console.log(banner(demo, await mintForBanner(gatewayUrl, tenantKey), catalog.length));
      logRequests = true;
    }
    return demo;
  } catch (error) {
    await stop();
    throw error;
  }
}

interface Running {
  upstream?: FakeFlyflow;
  gatewayServer?: Server;
  playerServer?: Server;
  gateway?: Gateway;
  cacheDir?: string;
}

/** Front to back: no new requests first, then the gateway's downloads finish, then what they need. */
async function stopAll(parts: Running): Promise<void> {
  const step = (work: Promise<unknown> | undefined) => work?.catch(() => {});
  await Promise.all([
    step(parts.playerServer && closeServer(parts.playerServer)),
    step(parts.gatewayServer && closeServer(parts.gatewayServer)),
  ]);
  await step(parts.gateway?.close());
  await Promise.all([
    step(parts.upstream?.close()),
    step(parts.cacheDir === undefined ? undefined : rm(parts.cacheDir, { recursive: true, force: true })),
  ]);
}

function secret(prefix: string): string {
  return `${prefix}${randomBytes(24).toString('base64url')}`;
}

function errorCode(error: unknown): unknown {
  return (error as { code?: unknown } | null)?.code;
}

function listenHint(error: unknown, envName: string): string {
  return errorCode(error) === 'EADDRINUSE' ? `the port is in use; set ${envName} to another port (0 picks a free one)` : String(error);
}

/** A bare http.Server on 127.0.0.1; its request handler is attached once everything it needs exists. */
async function listen(port: number, name: string, envName: string): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', (error) => {
      reject(new Error(`demo ${name}: cannot listen on 127.0.0.1:${port}: ${listenHint(error, envName)}`, { cause: error }));
    });
    server.listen(port, '127.0.0.1', () => resolveListen());
  });
  server.on('clientError', (_error, socket) => socket.destroy());
  return server;
}

/**
 * Requests to `server` wait until it is given its listener, then are answered
 * in order: a browser that opens the page while the demo starts gets it,
 * where a server with no listener yet would leave it hanging.
 */
function answeredOnceWired(server: Server): (listener: RequestListener) => void {
  const waiting: Array<[IncomingMessage, ServerResponse]> = [];
  let wired: RequestListener | undefined;
  server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    if (wired) wired(request, response);
    else waiting.push([request, response]);
  });
  return (listener) => {
    wired = listener;
    for (const [request, response] of waiting.splice(0)) listener(request, response);
  };
}

/** Closes a server, dropping keep-alive and streaming connections (a browser holds some open). */
function closeServer(server: Server): Promise<void> {
  return new Promise((resolveClose) => {
    server.close(() => resolveClose());
    server.closeAllConnections();
  });
}

async function mintForBanner(gatewayUrl: string, tenantKey: string): Promise<string> {
  const response = await fetch(`${gatewayUrl}/v1/call/recording/4/signed-url`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${tenantKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ ttl_seconds: BANNER_URL_TTL_SECONDS }),
  });
  if (!response.ok) throw new Error(`demo: the gateway answered ${response.status} to the signed-URL request`);
  return ((await response.json()) as { url: string }).url;
}

/** One line per gateway answer, so seeks in the player show up as range requests. */
/** One line per answer, from what went out: status, credential kind, range and Cache-Status. */
function logRequest(request: IncomingMessage, response: ServerResponse): void {
  const url = new URL(request.url ?? '/', 'http://demo');
  const credential = url.searchParams.has('sig') ? 'signed URL' : request.headers.authorization ? 'API key' : 'no credential';
  const range = request.headers.range;
  const cacheStatus = sentHeader(response, 'cache-status')?.replace(/^recording-gateway; /, '');
  const details = [credential, range, cacheStatus && `cache: ${cacheStatus}`].filter(Boolean).join(', ');
  const time = new Date().toTimeString().slice(0, 8);
  console.log(`${time}  gateway  ${response.statusCode} ${request.method} ${url.pathname}  (${details})`);
}

/**
 * A header of an answer already sent. Headers given to writeHead (as the
 * gateway's hot paths do) are not kept for getHeader, so the head Node wrote
 * is read instead; a demo may lean on that internal.
 */
function sentHeader(response: ServerResponse, name: string): string | undefined {
  const kept = response.getHeader(name);
  if (kept !== undefined) return String(kept);
  const head = (response as unknown as { _header?: unknown })._header;
  return typeof head === 'string' ? new RegExp(`^${name}: (.*)$`, 'im').exec(head)?.[1]?.trim() : undefined;
}

function banner(demo: Demo, signedUrl: string, count: number): string {
  const key = demo.tenantKey;
  const rec = (id: number) => `${demo.gatewayUrl}/v1/call/recording/${id}.mp3`;
  return `
recording-gateway demo: everything runs on 127.0.0.1, no network needed.

  Player page (open it):   ${demo.playerUrl}
  Gateway:                 ${demo.gatewayUrl}
  Sample Flyflow upstream: ${demo.upstreamUrl}  (call IDs 1-${count})

  Tenant "${DEMO_TENANT}", API key (random for this run, kept in memory only):
    ${key}

Try it with curl:

  # Download a recording with the tenant API key (the first request fetches from upstream)
  curl -sS -H 'Authorization: Bearer ${key}' -o call-1.mp3 ${rec(1)}

  # A byte range: 206 Partial Content, with no second upstream request (see Cache-Status)
  curl -sS -D - -o /dev/null -H 'Authorization: Bearer ${key}' -H 'Range: bytes=0-1023' ${rec(1)}

  # Headers only
  curl -sS -I -H 'Authorization: Bearer ${key}' ${rec(4)}

  # Mint a signed URL, as a tenant backend does for <audio src>
  curl -sS -X POST -H 'Authorization: Bearer ${key}' -H 'Content-Type: application/json' -d '{"ttl_seconds": 600}' ${demo.gatewayUrl}/v1/call/recording/4/signed-url

  # Use a signed URL: no key needed (this one is valid for ${BANNER_URL_TTL_SECONDS / 60} minutes)
  curl -sS -D - -o /dev/null '${signedUrl}'

Requests the gateway answers are logged below. Press Ctrl-C to stop.
`;
}

/** Reads DEMO_*_PORT; undefined when unset so the defaults apply. */
function portFromEnv(name: string): number | undefined {
  const value = process.env[name];
  if (value === undefined || value === '') return undefined;
  if (!/^\d+$/.test(value) || Number(value) > 65_535) throw new Error(`${name}=${JSON.stringify(value)} is not a port number (0-65535)`);
  return Number(value);
}

async function main(): Promise<void> {
  const demo = await startDemo({
    gatewayPort: portFromEnv('DEMO_GATEWAY_PORT'),
    playerPort: portFromEnv('DEMO_PLAYER_PORT'),
    upstreamPort: portFromEnv('DEMO_UPSTREAM_PORT'),
  });
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) process.exit(1); // a second Ctrl-C: stop waiting
    stopping = true;
    console.log(`\n${signal}: stopping the demo…`);
    demo.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    console.error(`npm run demo: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  });
}
