/**
 * A fake Flyflow upstream on a real loopback socket: `GET {base}/call/recording/{id}.mp3`
 * with `base = http://127.0.0.1:<port>/v1`. Used by the integration tests and by
 * `npm run demo`, so it must never need the network and never hang a test run.
 */
import { readFile } from 'node:fs/promises';
import { STATUS_CODES, createServer } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export interface ReceivedRequest {
  method: string;
  /** Path and query exactly as received. */
  url: string;
  headers: IncomingHttpHeaders;
  /** The call ID, when the path is a recording path with an integer ID. */
  id?: number;
}

export type Behaviour =
  /** JSON error with that status, after `delayMs` (default none); after `times` requests (default: forever) answers normally again. */
  | { kind: 'status'; status: number; times?: number; delayMs?: number }
  /** 200 text/html, like a captive portal or a maintenance page. */
  | { kind: 'html' }
  /** 200 audio/mpeg whose bytes are neither an ID3 tag nor an MPEG frame sync. */
  | { kind: 'not-mp3' }
  /** Waits before sending the head, then answers normally. */
  | { kind: 'slow-head'; delayMs: number }
  /** Sends the head at once, then `chunkBytes` every `intervalMs`. */
  | { kind: 'slow-body'; chunkBytes: number; intervalMs: number }
  /** Declares the full Content-Length, sends `afterBytes` of the body, then destroys the socket. */
  | { kind: 'truncate'; afterBytes: number }
  /**
   * Like truncate but the socket is reset (TCP RST), `pauseMs` after the
   * bytes (default at once), and only for `times` requests (default: forever).
   */
  | { kind: 'reset'; afterBytes: number; times?: number; pauseMs?: number }
  /** 200 with chunked transfer encoding and no Content-Length. */
  | { kind: 'no-content-length' }
  /**
   * 200 framed by the connection only (neither Content-Length nor chunks), as
   * an HTTP/1.0 server sends it: the body, or its first `afterBytes`, then the
   * close (a TCP reset with `reset`).
   */
  | { kind: 'close-delimited'; afterBytes?: number; reset?: boolean }
  /** Redirects (302 unless `status` says otherwise) to `location`, an absolute URL. */
  | { kind: 'redirect'; location: string; status?: number }
  /**
   * Sends the head and the first quarter of the body, then holds the rest until
   * `release(id)`. The gate is a latch: once released, later requests for that
   * ID pass too, until `setBehaviour(id, { kind: 'gate' })` closes it again.
   */
  | { kind: 'gate' };

export interface FakeFlyflowOptions {
  /** Recordings by call ID. Default: the fixtures listed in `dev/fixtures/recordings.json`. */
  recordings?: Map<number, Buffer>;
  /** Accepted Bearer keys. If given, any other request gets 401; if omitted, every request is accepted. */
  apiKeys?: string[];
  /** Port to listen on (on 127.0.0.1). Default 0: any free port. */
  port?: number;
  /** `Last-Modified` on normal answers; `null` leaves the header out. Default {@link FIXTURE_LAST_MODIFIED}. */
  lastModified?: string | null;
  /** Extra headers on every normal answer, e.g. a `Set-Cookie` the gateway must not pass on. */
  headers?: Record<string, string>;
  /** `Content-Type` of normal answers. Default `audio/mpeg`. */
  contentType?: string;
}

export interface FakeFlyflow {
  /** `http://127.0.0.1:PORT/v1` */
  readonly baseUrl: string;
  /** `http://127.0.0.1:PORT` */
  readonly origin: string;
  /** Every request received, in order. */
  readonly requests: ReceivedRequest[];
  /** Requests for recording paths (any method; the gateway should only send GET), optionally for one ID. */
  recordingRequests(id?: number): ReceivedRequest[];
  setRecording(id: number, bytes: Buffer): void;
  recording(id: number): Buffer | undefined;
  /** Sets or (with `undefined`) clears the behaviour for one ID. Replacing a gate releases what it held. */
  setBehaviour(id: number, behaviour: Behaviour | undefined): void;
  /** Opens the gate for `id`: held responses finish, later ones are not held. */
  release(id: number): void;
  /** Clears requests and behaviours and opens every gate; keeps the recordings. */
  reset(): void;
  /** Connections open to it now, idle keep-alive ones included. */
  openConnections(): number;
  /** Closes the server, destroying open sockets, so hung responses never keep a test alive. */
  close(): Promise<void>;
}

export interface FixtureRecording {
  id: number;
  file: string;
  title: string;
  duration_seconds: number;
}

/** Absolute path of `dev/fixtures`. */
export const FIXTURE_DIR: string = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** The fixed `Last-Modified` the fake sends on normal answers. */
export const FIXTURE_LAST_MODIFIED = 'Wed, 01 Jan 2025 00:00:00 GMT';

/** The catalogue in `dev/fixtures/recordings.json` (IDs, titles, durations). */
export async function loadFixtureCatalog(): Promise<FixtureRecording[]> {
  const text = await readFile(join(FIXTURE_DIR, 'recordings.json'), 'utf8');
  return JSON.parse(text) as FixtureRecording[];
}

/** The fixture MP3s by call ID. */
export async function loadFixtureRecordings(): Promise<Map<number, Buffer>> {
  const catalog = await loadFixtureCatalog();
  const entries = await Promise.all(catalog.map(async (r) => [r.id, await readFile(join(FIXTURE_DIR, r.file))] as const));
  return new Map(entries);
}

const RECORDING_PATH = /^\/v1\/call\/recording\/([^/]*)\.mp3$/;
const NOT_MP3 = Buffer.from('RIFF? no. This is plainly not an MP3 file.\n'.repeat(64));
const HTML = '<html><head><title>Maintenance</title></head><body><h1>Back soon</h1></body></html>\n';
const DEFAULT_MESSAGES: Record<number, string> = {
  400: 'Invalid call ID',
  401: 'Invalid API key',
  404: 'Recording not found',
  500: 'Internal server error',
};

interface ActiveBehaviour {
  behaviour: Behaviour;
  /** Requests left before the behaviour lapses; Infinity when it has no `times`. */
  remaining: number;
}

interface Gate {
  open: boolean;
  waiters: Set<() => void>;
}

/** Starts a fake Flyflow on 127.0.0.1 and resolves once it listens. */
export async function startFakeFlyflow(options: FakeFlyflowOptions = {}): Promise<FakeFlyflow> {
  const recordings = new Map(options.recordings ?? (await loadFixtureRecordings()));
  const apiKeys = options.apiKeys ? new Set(options.apiKeys) : undefined;
  const lastModified = options.lastModified === undefined ? FIXTURE_LAST_MODIFIED : options.lastModified;
  const extraHeaders = { ...options.headers };
  const audioType = options.contentType ?? 'audio/mpeg';
  const requests: ReceivedRequest[] = [];
  const behaviours = new Map<number, ActiveBehaviour>();
  const gates = new Map<number, Gate>();
  const sockets = new Set<Socket>();

  function openGate(id: number): void {
    const gate = gates.get(id);
    if (!gate) return;
    gate.open = true;
    for (const wake of gate.waiters) wake();
    gate.waiters.clear();
  }

  /** The behaviour for this request, counting down `times`. */
  function takeBehaviour(id: number): Behaviour | undefined {
    const active = behaviours.get(id);
    if (!active) return undefined;
    if (active.remaining <= 0) {
      behaviours.delete(id);
      return undefined;
    }
    if (--active.remaining <= 0) behaviours.delete(id);
    return active.behaviour;
  }

  function sendJson(res: ServerResponse, status: number, message?: string): void {
    const body = JSON.stringify({
      error: STATUS_CODES[status] ?? 'Error',
      message: message ?? DEFAULT_MESSAGES[status] ?? STATUS_CODES[status] ?? 'Error',
    });
    res.writeHead(status, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(res.req.method === 'HEAD' ? undefined : body);
  }

  function audioHead(res: ServerResponse, length: number | undefined): void {
    const headers: Record<string, string | number> = { ...extraHeaders, 'Content-Type': audioType };
    if (length !== undefined) headers['Content-Length'] = length;
    if (lastModified !== null) headers['Last-Modified'] = lastModified;
    res.writeHead(200, headers);
  }

  /** Resolves once `chunk` is handed to the kernel, or at once if the response is gone. */
  function write(res: ServerResponse, chunk: Buffer): Promise<void> {
    if (res.destroyed || chunk.length === 0) return Promise.resolve();
    return new Promise((resolve) => res.write(chunk, () => resolve()));
  }

  /** Sleeps unless the response closes first (finished, client gone, or close()); true if it ran its course. */
  async function pause(res: ServerResponse, signal: AbortSignal, ms: number): Promise<boolean> {
    try {
      await sleep(ms, undefined, { signal });
      return !res.destroyed;
    } catch {
      return false;
    }
  }

  async function serveRecording(req: IncomingMessage, res: ServerResponse, id: number): Promise<void> {
    const behaviour = takeBehaviour(id);
    // One signal per response, aborted when it closes: close() destroys the
    // sockets, so every pending sleep ends with the server.
    const closed = new AbortController();
    res.once('close', () => closed.abort());

    switch (behaviour?.kind) {
      case 'status':
        if (behaviour.delayMs !== undefined && !(await pause(res, closed.signal, behaviour.delayMs))) return;
        return sendJson(res, behaviour.status);
      case 'html':
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': Buffer.byteLength(HTML) });
        res.end(req.method === 'HEAD' ? undefined : HTML);
        return;
      case 'not-mp3':
        audioHead(res, NOT_MP3.length);
        res.end(req.method === 'HEAD' ? undefined : NOT_MP3);
        return;
      case 'redirect': {
        const body = JSON.stringify({ location: behaviour.location });
        res.writeHead(behaviour.status ?? 302, {
          Location: behaviour.location,
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(body),
        });
        res.end(req.method === 'HEAD' ? undefined : body);
        return;
      }
      case 'slow-head':
        if (!(await pause(res, closed.signal, behaviour.delayMs))) return;
        break;
    }

    const bytes = recordings.get(id);
    if (!bytes) return sendJson(res, 404);
    if (req.method === 'HEAD') {
      audioHead(res, bytes.length);
      res.end();
      return;
    }

    switch (behaviour?.kind) {
      case 'slow-body': {
        audioHead(res, bytes.length);
        res.flushHeaders();
        const step = Math.max(1, behaviour.chunkBytes);
        for (let at = 0; at < bytes.length; at += step) {
          if (at > 0 && !(await pause(res, closed.signal, behaviour.intervalMs))) return;
          await write(res, bytes.subarray(at, at + step));
        }
        res.end();
        return;
      }
      case 'truncate':
      case 'reset': {
        audioHead(res, bytes.length);
        res.flushHeaders();
        await write(res, bytes.subarray(0, Math.min(behaviour.afterBytes, bytes.length - 1)));
        if (behaviour.kind === 'reset' && behaviour.pauseMs && !(await pause(res, closed.signal, behaviour.pauseMs))) return;
        if (behaviour.kind === 'reset') res.socket?.resetAndDestroy();
        else res.socket?.destroy();
        return;
      }
      case 'close-delimited': {
        res.useChunkedEncodingByDefault = false;
        audioHead(res, undefined);
        await write(res, bytes.subarray(0, behaviour.afterBytes ?? bytes.length));
        // The reset a moment after the bytes, so that they reach the client before it.
        if (behaviour.reset) {
          if (await pause(res, closed.signal, 30)) res.socket?.resetAndDestroy();
        } else res.end();
        return;
      }
      case 'no-content-length': {
        audioHead(res, undefined);
        const half = Math.ceil(bytes.length / 2);
        await write(res, bytes.subarray(0, half));
        res.end(bytes.subarray(half));
        return;
      }
      case 'gate': {
        const gate = gates.get(id);
        audioHead(res, bytes.length);
        const quarter = Math.floor(bytes.length / 4);
        await write(res, bytes.subarray(0, quarter));
        if (gate && !gate.open) {
          await new Promise<void>((resolve) => {
            gate.waiters.add(resolve);
            res.once('close', resolve);
          });
        }
        if (res.destroyed) return;
        res.end(bytes.subarray(quarter));
        return;
      }
    }

    audioHead(res, bytes.length);
    res.end(bytes);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const path = url.split('?', 1)[0] ?? '/';
    const match = RECORDING_PATH.exec(path);
    const rawId = match?.[1];
    const id = rawId !== undefined && /^[0-9]+$/.test(rawId) ? Number(rawId) : undefined;
    const received: ReceivedRequest = { method: req.method ?? 'GET', url, headers: { ...req.headers } };
    if (id !== undefined && Number.isSafeInteger(id)) received.id = id;
    requests.push(received);
    // Nobody reads request bodies here; drain them so keep-alive sockets stay usable.
    req.resume();

    if (apiKeys) {
      const auth = req.headers.authorization ?? '';
      const key = auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : undefined;
      if (key === undefined || !apiKeys.has(key)) return sendJson(res, 401);
    }
    if (!match) return sendJson(res, 404, 'Not found');
    if (received.id === undefined) return sendJson(res, 400);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return sendJson(res, 405);
    }
    await serveRecording(req, res, received.id);
  }

  const server = createServer((req, res) => {
    // A write to a socket a test destroyed must never become an uncaught error.
    res.on('error', () => {});
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent && !res.destroyed) {
        sendJson(res, 500, error instanceof Error ? error.message : String(error));
      } else {
        res.destroy();
      }
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_error, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  let closing: Promise<void> | undefined;

  return {
    baseUrl: `${origin}/v1`,
    origin,
    requests,
    recordingRequests(id?: number) {
      return requests.filter((r) => RECORDING_PATH.test(r.url.split('?', 1)[0] ?? '') && (id === undefined || r.id === id));
    },
    setRecording(id, bytes) {
      recordings.set(id, bytes);
    },
    recording(id) {
      return recordings.get(id);
    },
    setBehaviour(id, behaviour) {
      openGate(id);
      gates.delete(id);
      if (!behaviour) {
        behaviours.delete(id);
        return;
      }
      const times = 'times' in behaviour && behaviour.times !== undefined ? behaviour.times : Infinity;
      behaviours.set(id, { behaviour, remaining: times });
      if (behaviour.kind === 'gate') gates.set(id, { open: false, waiters: new Set() });
    },
    release(id) {
      openGate(id);
    },
    reset() {
      requests.length = 0;
      for (const id of gates.keys()) openGate(id);
      gates.clear();
      behaviours.clear();
    },
    openConnections() {
      return sockets.size;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const id of gates.keys()) openGate(id);
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
