/**
 * The one upstream the peers bench puts the gateway, nginx and Varnish in
 * front of, run as a process of its own (`node --import tsx
 * bench/peers-upstream.ts`): a plain origin as a caching proxy expects one,
 * with Content-Length, a strong ETag, Last-Modified and Accept-Ranges, and
 * single byte ranges honoured. Every recording id answers with the same real
 * MP3 bytes (dev/fixtures/call-4.mp3 repeated to PEERS_UPSTREAM_SIZE bytes).
 *
 * Requests must carry `Authorization: Bearer $PEERS_UPSTREAM_KEY`, so a peer
 * that forgets to inject the key gets 401s, not a silently open origin.
 * `GET /__bench/requests` answers `{"recordingGets":N}`, for hit checks.
 * Prints `{"port":N}` on stdout once it listens on 127.0.0.1.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import parseRange from 'range-parser';

const RECORDING_PATH = /^\/v1\/call\/recording\/(\d+)\.mp3$/;
const LAST_MODIFIED = 'Wed, 01 Jan 2025 00:00:00 GMT';
const SEED = new URL('../dev/fixtures/call-4.mp3', import.meta.url);

function recordingBytes(size: number): Buffer {
  const seed = readFileSync(SEED);
  const out = Buffer.allocUnsafe(size);
  for (let at = 0; at < size; at += seed.length) seed.copy(out, at, 0, Math.min(seed.length, size - at));
  return out;
}

function main(): void {
  const size = Number(process.env.PEERS_UPSTREAM_SIZE);
  const key = process.env.PEERS_UPSTREAM_KEY;
  if (!Number.isSafeInteger(size) || size <= 0 || !key) {
    throw new Error('peers-upstream: PEERS_UPSTREAM_SIZE (bytes) and PEERS_UPSTREAM_KEY must be set');
  }
  const body = recordingBytes(size);
  const expectedAuthorization = `Bearer ${key}`;
  let recordingGets = 0;

  const server = http.createServer((req, res) => {
    if (req.url === '/__bench/requests') {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ recordingGets }));
      return;
    }
    const callId = RECORDING_PATH.exec(req.url ?? '')?.[1];
    if (callId === undefined || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":"not found"}');
      return;
    }
    if (req.headers.authorization !== expectedAuthorization) {
      res.writeHead(401, { 'Content-Type': 'application/json' }).end('{"error":"unauthorized"}');
      return;
    }
    if (req.method === 'GET') recordingGets++;
    const headers: http.OutgoingHttpHeaders = {
      'Content-Type': 'audio/mpeg',
      ETag: `"rec-${callId}"`,
      'Last-Modified': LAST_MODIFIED,
      'Accept-Ranges': 'bytes',
    };
    const ranges = req.headers.range === undefined ? undefined : parseRange(size, req.headers.range, { combine: true });
    if (ranges === -1) {
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}` }).end();
      return;
    }
    // Malformed or multi-range: answer the whole body, as RFC 9110 section 14.2 allows.
    const single = Array.isArray(ranges) && ranges.length === 1 ? ranges[0] : undefined;
    const part = single ? body.subarray(single.start, single.end + 1) : body;
    if (single) headers['Content-Range'] = `bytes ${single.start}-${single.end}/${size}`;
    headers['Content-Length'] = String(part.length);
    res.writeHead(single ? 206 : 200, headers);
    res.end(req.method === 'HEAD' ? undefined : part);
  });
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address() as AddressInfo;
    process.stdout.write(`${JSON.stringify({ port })}\n`);
  });
}

main();
