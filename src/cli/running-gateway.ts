import { request } from 'node:http';
import type { GatewayConfig } from '../config/index.js';
import { ADMIN_PURGE_PATH, type PurgeFilter } from '../admin-api.js';
import { createLocalGrant } from '../auth/local-grant.js';
import { asUrlHost } from '../http/request-host.js';
import { CommandFailure } from './io.js';

/*
 * The CLI's view of a gateway serving the same config: found at the
 * configured listen address, asked over HTTP. "Not running" is an answer,
 * never an error with a stack.
 */

const METRICS_TIMEOUT_MS = 2_000;
/** A purge of a large cache removes every file one by one. */
const PURGE_TIMEOUT_MS = 120_000;
/** Connection errors that mean nothing listens there (or the address does not exist), so no gateway runs. */
const NOT_LISTENING = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EADDRNOTAVAIL', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/** What a running gateway said, or that none answered. */
export type GatewayAnswer<T> =
  | { state: 'not-running'; url: string }
  | { state: 'refused'; url: string; message: string }
  | { state: 'failed'; url: string; status?: number; message: string }
  | { state: 'answered'; url: string; value: T };

/** The gateway's base URL from its listen address; a wildcard address is reached on loopback. */
export function gatewayUrl(config: Pick<GatewayConfig, 'listen'>): string {
  const { host, port } = config.listen;
  const reachable = host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host;
  return `http://${asUrlHost(reachable)}:${port}`;
}

const SET_ADMIN_TOKEN = 'set ADMIN_TOKEN to the admin token the gateway runs with';
const REFUSED_ADMIN_TOKEN = `refused the admin token: ${SET_ADMIN_TOKEN}`;
const WANTS_ADMIN_TOKEN = `wants the admin token: ${SET_ADMIN_TOKEN}`;

interface HttpRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** The longest silence allowed on the connection. */
  timeoutMs: number;
}

/**
 * One HTTP request with node:http: fetch() refuses ports on the WHATWG "bad
 * ports" list (1, 6000, ...), on which an operator may well run a gateway.
 */
function httpRequest(url: string, init: HttpRequest): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: init.method ?? 'GET', headers: init.headers, timeout: init.timeoutMs }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(init.body);
  });
}

/** One request to the gateway at `url` (its base URL, which the answer and its messages name). */
async function ask<T>(
  url: string,
  route: string,
  init: HttpRequest,
  read: (body: string) => T,
  refused: string,
): Promise<GatewayAnswer<T>> {
  let response: { status: number; body: string };
  try {
    response = await httpRequest(`${url}${route}`, init);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && NOT_LISTENING.has(code)) return { state: 'not-running', url };
    const why =
      code === 'ETIMEDOUT'
        ? `did not answer within ${init.timeoutMs / 1000} s`
        : `could not be asked (${typeof code === 'string' ? code : 'connection failed'})`;
    return { state: 'failed', url, message: `the gateway at ${url} ${why}` };
  }
  if (response.status === 401 || response.status === 403) return { state: 'refused', url, message: `the gateway at ${url} ${refused}` };
  if (response.status < 200 || response.status > 299) {
    let detail = '';
    try {
      const message = (JSON.parse(response.body) as { message?: unknown }).message;
      if (typeof message === 'string') detail = `: ${message}`;
    } catch {
      // Not the gateway's JSON error: the status says enough.
    }
    return { state: 'failed', url, status: response.status, message: `the gateway at ${url} answered ${response.status}${detail}` };
  }
  try {
    return { state: 'answered', url, value: read(response.body) };
  } catch {
    return {
      state: 'failed',
      url,
      status: response.status,
      message: `the gateway at ${url} answered something other than a gateway's answer`,
    };
  }
}

/** Requests and cache hits of recordings since the running gateway started, from its /metrics. */
export async function liveHitRatio(config: GatewayConfig): Promise<GatewayAnswer<{ hits: number; total: number }>> {
  const headers: Record<string, string> = config.adminToken ? { Authorization: `Bearer ${config.adminToken}` } : {};
  return ask(
    gatewayUrl(config),
    '/metrics',
    { headers, timeoutMs: METRICS_TIMEOUT_MS },
    (body) => {
      let hits = 0;
      let total = 0;
      for (const line of body.split('\n')) {
        if (!line.startsWith('recording_gateway_requests_total{') || !line.includes('route="recording"')) continue;
        const cache = /cache="([a-z]+)"/.exec(line)?.[1];
        if (cache === 'none') continue;
        const count = Number(line.split(' ').pop());
        total += count;
        if (cache === 'hit') hits += count;
      }
      return { hits, total };
    },
    config.adminToken ? REFUSED_ADMIN_TOKEN : WANTS_ADMIN_TOKEN,
  );
}

/**
 * Asks the running gateway to purge, from every tier of its cache. It
 * authenticates with ADMIN_TOKEN when the config has one, otherwise with a
 * one-time grant left in the cache directory (see routes/admin.ts).
 */
export async function purgeThroughGateway(config: GatewayConfig, filter: PurgeFilter): Promise<GatewayAnswer<{ purged: number }>> {
  const grant = config.adminToken === undefined ? await localGrant(config.cache.dir) : undefined;
  try {
    const body = JSON.stringify({
      ...(filter.callId === undefined ? {} : { call_id: filter.callId }),
      ...(filter.tenant === undefined ? {} : { tenant: filter.tenant }),
      ...(filter.all ? { all: true } : {}),
    });
    const refused = grant
      ? `refused the purge: run this command with the config the gateway runs with (the same cache.dir), or set ADMIN_TOKEN to its admin token`
      : REFUSED_ADMIN_TOKEN;
    return await ask(
      gatewayUrl(config),
      ADMIN_PURGE_PATH,
      {
        method: 'POST',
        headers: {
          Authorization: `Bearer ${grant?.token ?? config.adminToken}`,
          'Content-Type': 'application/json',
          'Content-Length': String(Buffer.byteLength(body)),
        },
        body,
        timeoutMs: PURGE_TIMEOUT_MS,
      },
      (text) => {
        const answer = JSON.parse(text) as { purged?: unknown };
        if (typeof answer.purged !== 'number') throw new TypeError('no purged count');
        return { purged: answer.purged };
      },
      refused,
    );
  } finally {
    await grant?.revoke();
  }
}

async function localGrant(cacheDir: string): ReturnType<typeof createLocalGrant> {
  try {
    return await createLocalGrant(cacheDir);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw new CommandFailure(
      `cannot write to the cache directory ${cacheDir} (${typeof code === 'string' ? code : 'unknown error'}): ` +
        'run this command as the user the gateway runs as, or set ADMIN_TOKEN',
      { cause: error },
    );
  }
}
