import { createHash, createHmac } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { upstreamNamespace } from '../src/auth/tenants.js';
import { sha256Hex } from '../src/sha256.js';
import type { Clock } from '../src/clock.js';
import type { GatewayConfig, TenantConfig } from '../src/config/index.js';
import { createGateway, type Gateway, type GatewayOptions } from '../src/gateway.js';
import { createHttpServer } from '../src/server.js';
import type { Server } from 'node:http';
import type { Logger } from '../src/logger.js';

export const SERVER_KEY = 'flyflow-server-key-for-tests-000000';
export const ACME_KEY = 'acme-tenant-key-for-tests-0000000001';
export const ACME_SIGNING_SECRET = 'acme-signing-secret-k1-0123456789';
export const ACME_SIGNING_SECRET_K2 = 'acme-signing-secret-k2-9876543210';
export const ACME_ORIGIN = 'https://app.acme.example';

/** The namespace the test tenant (server key) stores under for that upstream. */
export function namespaceFor(upstreamBaseUrl: string): string {
  return upstreamNamespace(upstreamBaseUrl, SERVER_KEY);
}

/** A tenant in the test config, with its API key in clear so tests can use it. */
export function testTenant(id: string, apiKey: string, extra: Partial<TenantConfig> = {}): TenantConfig {
  return {
    id,
    apiKeyDigests: [sha256Hex(apiKey)],
    signingKeys: [],
    allowedOrigins: [],
    maxSignedUrlTtlSeconds: 3600,
    ...extra,
  };
}

/**
 * The query of a URL signed for acme with k1: the contract's formula written
 * out here, not borrowed from the gateway's code.
 */
export function signedQuery(id: number, exp: number): string {
  const sig = createHmac('sha256', ACME_SIGNING_SECRET).update(`v1\nacme\n${id}\n${exp}`).digest('base64url');
  return `tenant=acme&exp=${exp}&kid=k1&sig=${sig}`;
}

export function acmeTenant(extra: Partial<TenantConfig> = {}): TenantConfig {
  return testTenant('acme', ACME_KEY, {
    signingKeys: [
      { kid: 'k1', secret: ACME_SIGNING_SECRET },
      { kid: 'k2', secret: ACME_SIGNING_SECRET_K2 },
    ],
    allowedOrigins: [ACME_ORIGIN],
    ...extra,
  });
}

export async function makeTempDir(prefix = 'rg-test-'): Promise<string> {
  return mkdtemp(path.join(tmpdir(), prefix));
}

export interface TestConfigOptions {
  dir: string;
  upstreamBaseUrl: string;
  tenants?: TenantConfig[];
  cache?: Partial<GatewayConfig['cache']>;
  upstream?: Partial<GatewayConfig['upstream']>;
  webhooks?: Partial<GatewayConfig['webhooks']>;
  publicBaseUrl?: string;
}

export function testConfig(options: TestConfigOptions): GatewayConfig {
  return {
    listen: { host: '127.0.0.1', port: 0, headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5_000 },
    ...(options.publicBaseUrl ? { publicBaseUrl: options.publicBaseUrl } : {}),
    upstream: {
      baseUrl: options.upstreamBaseUrl,
      apiKey: SERVER_KEY,
      timeoutMs: 5_000,
      bodyIdleTimeoutMs: 2_000,
      maxConcurrentDownloads: 16,
      circuitBreaker: { failureThreshold: 5, cooldownSeconds: 30 },
      ...options.upstream,
    },
    cache: {
      dir: options.dir,
      maxDiskBytes: 1024 ** 3,
      maxMemoryBytes: 64 * 1024 ** 2,
      maxRecordingBytes: 64 * 1024 ** 2,
      index: { kind: 'sqlite' },
      notFoundTtlSeconds: 30,
      maxAgeSeconds: 86_400,
      ...options.cache,
    },
    webhooks: { rateLimitPerMinute: 120, maxQueuedPrefetches: 100, ...options.webhooks },
    tenants: options.tenants ?? [acmeTenant()],
  };
}

/** A gateway served over real HTTP on 127.0.0.1. */
export interface RunningGateway {
  gateway: Gateway;
  baseUrl: string;
  /** GET (or another method) against the gateway, with the acme key unless headers say otherwise. */
  fetch(pathOrUrl: string, init?: RequestInit): Promise<Response>;
  close(): Promise<void>;
}

export async function startGateway(
  config: GatewayConfig,
  options: {
    clock?: Clock;
    logger?: Logger;
    webhookPrefetch?: GatewayOptions['webhookPrefetch'];
    audit?: GatewayOptions['audit'];
    retentionSweepIntervalMs?: number;
  } = {},
): Promise<RunningGateway> {
  const gateway = await createGateway({
    config,
    ...options,
    upstream: { maxAttempts: 3, initialBackoffMs: 10 },
    webhookPrefetch: { attempts: 6, firstDelayMs: 50, ...options.webhookPrefetch },
  });
  const server = await new Promise<Server>((resolve) => {
    const started = createHttpServer(gateway.app, '127.0.0.1', {
      wrapListener: gateway.answeringMemoryHitsFirst,
      memoryHits: gateway.memoryHits,
      report: gateway.report,
    });
    started.listen(0, '127.0.0.1', () => resolve(started));
  });
  const { port } = server.address() as AddressInfo;
  const baseUrl = `http://127.0.0.1:${port}`;
  return {
    gateway,
    baseUrl,
    fetch(pathOrUrl, init = {}) {
      const url = pathOrUrl.startsWith('http') ? pathOrUrl : `${baseUrl}${pathOrUrl}`;
      const headers = new Headers(init.headers);
      if (!headers.has('authorization') && !url.includes('sig=')) headers.set('authorization', `Bearer ${ACME_KEY}`);
      return fetch(url, { ...init, headers });
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await gateway.close();
    },
  };
}

/** Files under the cache's tmp/ folder: a finished test must leave none. */
export async function tempFilesIn(dir: string): Promise<string[]> {
  const entries = await readdir(path.join(dir, 'tmp'), { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((entry) => entry.isFile()).map((entry) => entry.name);
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export { manualClock } from './manual-clock.js';

/** A request whose path is sent byte for byte, as a hostile client would (fetch() would normalise it). */
export async function rawRequest(
  baseUrl: string,
  rawPath: string,
  options: { method?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; headers: import('node:http').IncomingHttpHeaders; body: Buffer }> {
  const { request } = await import('node:http');
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, method: options.method ?? 'GET', path: rawPath, headers: options.headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Sends `head` byte for byte on a new connection and resolves with all that comes back, once the server ends the connection. */
export function rawExchange(baseUrl: string, head: string): Promise<string> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(head));
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
    });
    socket.on('end', () => resolve(received));
    socket.on('error', reject);
    socket.setTimeout(5_000, () => socket.destroy(new Error('no answer in 5 s')));
  });
}

/** The ETag the gateway must send for these bytes: their sha256, base64url, quoted. */
export function expectedEtag(bytes: Buffer): string {
  return `"${createHash('sha256').update(bytes).digest('base64url')}"`;
}

/** The whole body of a response, as bytes. */
export async function bytesOf(response: Response): Promise<Buffer> {
  return Buffer.from(await response.arrayBuffer());
}
