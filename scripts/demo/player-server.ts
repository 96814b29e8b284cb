/**
 * The demo's "tenant app": a frontend page plus the tiny backend behind it.
 * The backend holds the tenant API key and trades it, per page load, for
 * signed URLs from the gateway; the browser only ever sees those URLs, which
 * is how a real tenant keeps its key off the client (contract section 3).
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { join } from 'node:path';

/** One entry of the catalogue the backend lists (the fixtures' `recordings.json` shape). */
export interface CatalogEntry {
  id: number;
  title: string;
  duration_seconds: number;
}

export interface PlayerBackendOptions {
  /** The gateway's base URL as browsers reach it, e.g. `http://127.0.0.1:8080`. */
  gatewayUrl: string;
  /** The demo tenant's API key; used server-side only. */
  tenantKey: string;
  catalog: readonly CatalogEntry[];
  /** Validity of the signed URLs handed to the page. */
  ttlSeconds: number;
  /** Folder holding player.html, player.css and player.js. */
  staticDir: string;
}

/** What `GET /api/recordings` answers. */
export interface RecordingsResponse {
  gateway: string;
  recordings: (CatalogEntry & { url: string; expires_at: number })[];
}

interface StaticFile {
  type: string;
  body: Buffer;
}

const STATIC_FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'player.html', type: 'text/html; charset=utf-8' },
  '/player.css': { file: 'player.css', type: 'text/css; charset=utf-8' },
  '/player.js': { file: 'player.js', type: 'text/javascript; charset=utf-8' },
};

/** Builds the request listener of the player app. The static files are read once, here. */
export function createPlayerBackend(options: PlayerBackendOptions): RequestListener {
  const { gatewayUrl, tenantKey, catalog, ttlSeconds } = options;
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1)
    throw new RangeError(`player: ttlSeconds must be a positive integer, got ${ttlSeconds}`);
  const files = new Map<string, StaticFile>(
    Object.entries(STATIC_FILES).map(([path, { file, type }]) => [path, { type, body: readFileSync(join(options.staticDir, file)) }]),
  );
  // The page may talk to its own origin and play media from the gateway, nothing else:
  // a visible guarantee that the demo needs no network and loads nothing from outside.
  const gatewayOrigin = new URL(gatewayUrl).origin;
  const securityHeaders = {
    'Content-Security-Policy': [
      "default-src 'none'",
      "script-src 'self'",
      "style-src 'self'",
      `media-src ${gatewayOrigin}`,
      `connect-src 'self' ${gatewayOrigin}`,
      'img-src data:',
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join('; '),
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
  };

  async function mintSignedUrl(id: number): Promise<{ url: string; expires_at: number }> {
    const response = await fetch(`${gatewayUrl}/v1/call/recording/${id}/signed-url`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${tenantKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ ttl_seconds: ttlSeconds }),
    });
    const body = (await response.json().catch(() => ({}))) as { url?: unknown; expires_at?: unknown; message?: unknown };
    if (!response.ok || typeof body.url !== 'string' || typeof body.expires_at !== 'number') {
      const detail = typeof body.message === 'string' ? `: ${body.message}` : '';
      throw new Error(`the gateway answered ${response.status} when asked for a signed URL for call ${id}${detail}`);
    }
    return { url: body.url, expires_at: body.expires_at };
  }

  async function recordings(res: ServerResponse): Promise<void> {
    let payload: RecordingsResponse;
    try {
      const signed = await Promise.all(catalog.map((entry) => mintSignedUrl(entry.id)));
      payload = {
        gateway: gatewayUrl,
        recordings: catalog.map(({ id, title, duration_seconds }, i) => ({ id, title, duration_seconds, ...signed[i]! })),
      };
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      return sendJson(res, 502, { error: 'Bad Gateway', message });
    }
    sendJson(res, 200, payload);
  }

  return function playerBackend(req: IncomingMessage, res: ServerResponse): void {
    res.on('error', () => {});
    const path = new URL(req.url ?? '/', 'http://player.invalid').pathname;
    const method = req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      sendJson(res, 405, { error: 'Method Not Allowed', message: 'Only GET and HEAD' });
      return;
    }
    if (path === '/api/recordings') {
      void recordings(res);
      return;
    }
    const file = files.get(path === '/index.html' ? '/' : path);
    if (!file) {
      sendJson(res, 404, { error: 'Not Found', message: 'No such page' });
      return;
    }
    res.writeHead(200, {
      ...securityHeaders,
      'Content-Type': file.type,
      'Content-Length': file.body.length,
      'Cache-Control': 'no-cache',
    });
    res.end(method === 'HEAD' ? undefined : file.body);
  };
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    // Signed URLs are short-lived credentials: never let anything store them.
    'Cache-Control': 'no-store',
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
