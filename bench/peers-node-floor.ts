/**
 * The peers bench's "bare Node" floor (`node:http floor`), run as a process
 * of its own (`node --import tsx bench/peers-node-floor.ts`): the least a
 * caching proxy written in Node must do, so the bench shows how much of the
 * gateway's distance to nginx is Node's own and how much is the gateway's.
 *
 * A plain `node:http` server, Node's keep-alive defaults (keepAliveTimeout
 * 5000, as the gateway), no logging, auth, metrics or limits.
 * `GET /v1/call/recording/{id}.mp3` answers from an in-memory Map when the
 * recording is there; else it fetches it from the upstream over a keep-alive
 * agent, passes the head on, writes each chunk as it arrives, and keeps the
 * whole body once it is complete. A memory hit carries the same header set
 * as the gateway's memory hit (its ETag too) (built per request, a fresh X-Request-Id each
 * time), with `Range: bytes=a-b` answered 206; any other Range gets the whole
 * body. Concurrent misses for one id are not collapsed.
 *
 * With `PEERS_FLOOR_UPSTREAM_CLIENT=raw`, a miss goes to the upstream as the
 * node:net floor's does, over a keep-alive connection written and read raw
 * (bench/peers-upstream-pool.ts): its cold miss is then Node's HTTP server
 * without Node's HTTP client, which splits what the two cost a miss.
 *
 * Env: PEERS_FLOOR_PORT (listens on 127.0.0.1), PEERS_FLOOR_UPSTREAM (the
 * upstream's base URL, `http://127.0.0.1:PORT/v1`), PEERS_FLOOR_KEY (the
 * server key the upstream wants as a Bearer token), PEERS_FLOOR_UPSTREAM_CLIENT.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { etagFor } from '../src/cache/recording-meta.js';
import { sha256Hex } from '../src/sha256.js';
import { floorEnv } from './peers-floor-env.js';
import { headFields, type UpstreamFields, upstreamPool } from './peers-upstream-pool.js';

const RECORDING_PATH = /^\/v1\/call\/recording\/(\d+)\.mp3$/;
const SINGLE_RANGE = /^bytes=(\d+)-(\d+)$/;
const CACHE_CONTROL = 'private, max-age=86400, immutable';
const STATUS_HIT = 'recording-gateway; hit; detail=memory';
const STATUS_MISS = 'recording-gateway; fwd=miss';
const NOT_FOUND = '{"error":"Not Found","message":"No such route"}';

interface Stored {
  body: Buffer;
  contentType: string;
  etag: string | undefined;
  lastModified: string | undefined;
}

function main(): void {
  const { port, upstreamBase, upstreamAuthorization } = floorEnv('peers-node-floor');
  const agent = new http.Agent({ keepAlive: true });
  const stored = new Map<string, Stored>();
  const rawUpstream = process.env.PEERS_FLOOR_UPSTREAM_CLIENT === 'raw' ? upstreamPool(upstreamBase, upstreamAuthorization) : undefined;

  function hit(res: http.ServerResponse, callId: string, recording: Stored, range: string | undefined): void {
    const size = recording.body.length;
    const match = range === undefined ? null : SINGLE_RANGE.exec(range);
    let start = 0;
    let end = size - 1;
    if (match) {
      const from = Number(match[1]);
      const to = Number(match[2]);
      if (from <= to && from < size) {
        start = from;
        end = Math.min(to, size - 1);
      }
    }
    const partial = start !== 0 || end !== size - 1;
    const headers: http.OutgoingHttpHeaders = { 'Content-Type': recording.contentType, 'Accept-Ranges': 'bytes' };
    if (recording.etag !== undefined) headers.ETag = recording.etag;
    if (recording.lastModified !== undefined) headers['Last-Modified'] = recording.lastModified;
    headers['Content-Disposition'] = `inline; filename="call-${callId}.mp3"`;
    headers['Cache-Control'] = CACHE_CONTROL;
    headers.Vary = 'Origin';
    headers['X-Request-Id'] = randomUUID();
    headers['Cache-Status'] = STATUS_HIT;
    if (partial) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    const slice = partial ? recording.body.subarray(start, end + 1) : recording.body;
    headers['Content-Length'] = String(slice.length);
    res.writeHead(partial ? 206 : 200, headers);
    res.end(slice);
  }

  /** The miss's answer head: the upstream's type and validators, `fwd=miss` and its length. */
  function missHeaders({ contentType, etag, lastModified }: UpstreamFields, length: number): http.OutgoingHttpHeaders {
    const headers: http.OutgoingHttpHeaders = { 'Content-Type': contentType };
    if (etag !== undefined) headers.ETag = etag;
    if (lastModified !== undefined) headers['Last-Modified'] = lastModified;
    headers['Cache-Status'] = STATUS_MISS;
    if (Number.isSafeInteger(length)) headers['Content-Length'] = String(length);
    return headers;
  }

  /** What is kept of a recording fetched whole. */
  function storedCopy(body: Buffer, contentType: string, lastModified: string | undefined): Stored {
    // The gateway's ETag (a sha256 digest), so both answer heads are the same size.
    return { body, contentType, etag: etagFor(sha256Hex(body)), lastModified };
  }

  /** A miss over the raw upstream connection (`PEERS_FLOOR_UPSTREAM_CLIENT=raw`). */
  function rawMiss(pool: NonNullable<typeof rawUpstream>, res: http.ServerResponse, callId: string): void {
    let fields: UpstreamFields | undefined;
    pool.fetch(callId, {
      head(status, head, length) {
        if (status !== 200) {
          res.destroy();
          return;
        }
        fields = headFields(head);
        res.writeHead(200, missHeaders(fields, length));
      },
      body(chunk) {
        if (fields !== undefined && !res.destroyed) res.write(chunk);
      },
      end(body) {
        if (fields === undefined) return;
        stored.set(callId, storedCopy(body, fields.contentType, fields.lastModified));
        res.end();
      },
      failed: () => res.destroy(),
    });
  }

  function miss(res: http.ServerResponse, callId: string): void {
    if (rawUpstream) {
      rawMiss(rawUpstream, res, callId);
      return;
    }
    const upstreamReq = http.request(
      `${upstreamBase}/call/recording/${callId}.mp3`,
      { agent, headers: { authorization: upstreamAuthorization } },
      (upstreamRes) => {
        if (upstreamRes.statusCode !== 200) {
          upstreamRes.resume();
          res.writeHead(502, { 'Content-Type': 'application/json' });
          res.end(`{"error":"Bad Gateway","message":"upstream answered ${upstreamRes.statusCode}"}`);
          return;
        }
        const length = Number(upstreamRes.headers['content-length']);
        const contentType = upstreamRes.headers['content-type'] ?? 'audio/mpeg';
        const etag = upstreamRes.headers.etag;
        const lastModified = upstreamRes.headers['last-modified'];
        res.writeHead(200, missHeaders({ contentType, etag, lastModified }, length));
        const chunks: Buffer[] = [];
        let received = 0;
        upstreamRes.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          received += chunk.length;
          if (!res.destroyed) res.write(chunk);
        });
        upstreamRes.once('end', () => {
          if (!upstreamRes.complete || (Number.isSafeInteger(length) && received !== length)) {
            res.destroy();
            return;
          }
          stored.set(callId, storedCopy(Buffer.concat(chunks, received), contentType, lastModified));
          res.end();
        });
        upstreamRes.once('error', () => res.destroy());
      },
    );
    upstreamReq.once('error', (error) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.writeHead(502, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: 'Bad Gateway', message: error.message }));
    });
    upstreamReq.end();
  }

  const server = http.createServer((req, res) => {
    const callId = req.method === 'GET' ? RECORDING_PATH.exec(req.url ?? '')?.[1] : undefined;
    if (callId === undefined) {
      res.writeHead(404, { 'Content-Type': 'application/json', 'Content-Length': String(NOT_FOUND.length) });
      res.end(NOT_FOUND);
      return;
    }
    const recording = stored.get(callId);
    if (recording) hit(res, callId, recording, req.headers.range);
    else miss(res, callId);
  });
  server.keepAliveTimeout = 5_000;
  server.listen(port, '127.0.0.1');
}

main();
