/**
 * The peers bench's second floor (`node:net floor`), run as a process of its
 * own (`node --import tsx bench/peers-net-floor.ts`): what Node's sockets
 * alone cost a hit, without Node's HTTP parser and response objects, as the
 * gateway's memory-hit door answers (src/memory-hit-door.ts), and what they
 * alone cost a cold miss. With the `node:http floor` beside it, the bench
 * shows how much of the gateway's distance to nginx Node's sockets and event
 * loop set, and how much is work a Node server may leave out.
 *
 * A bare `net` server. Each request's head is found (its blank line), its
 * request line and Range read; `GET /v1/call/recording/{id}.mp3` of a
 * recording in its Map is answered with the same header set as the
 * gateway's memory hit, built per request (a fresh X-Request-Id, the Date
 * made once a second), `Range: bytes=a-b` with a 206, in one write (head and
 * body corked for a body over 16 KiB). Not a general HTTP server: no log,
 * auth, metrics, limits or timeouts; requests are answered in order, one at
 * a time. A recording not yet held is a miss: its GET goes to the upstream
 * over a keep-alive connection written and read raw (no HTTP client), the
 * head is passed on as the node:http floor's and each chunk as it arrives,
 * and the whole body is kept once it is complete. So its cold miss is the
 * least a Node proxy adds, without Node's HTTP client and server: the bench
 * measures it beside the gateway's and the node:http floor's.
 *
 * Env: as peers-node-floor.ts (PEERS_FLOOR_PORT, PEERS_FLOOR_UPSTREAM, PEERS_FLOOR_KEY).
 */
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { etagFor } from '../src/cache/recording-meta.js';
import { sha256Hex } from '../src/sha256.js';
import { floorEnv } from './peers-floor-env.js';
import { headFields, upstreamPool } from './peers-upstream-pool.js';

const HEAD_END = Buffer.from('\r\n\r\n');
const RECORDING_PATH = /^GET \/v1\/call\/recording\/(\d+)\.mp3 HTTP\/1\.1$/;
const RANGE_FIELD = /\r\nrange:[ \t]*bytes=(\d+)-(\d+)[ \t]*(?:\r\n|$)/i;
const BODY_IN_HEAD_MAX_BYTES = 16 * 1024;
const NOT_FOUND = '{"error":"Not Found","message":"No such route"}';

interface Stored {
  body: Buffer;
  /** Every field but the per-request ones, made once. */
  fields: string;
}

let dateSecond = -1;
let dateLine = '';

function date(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateLine = `Date: ${new Date(now).toUTCString()}\r\n`;
  }
  return dateLine;
}

function answer(socket: net.Socket, status: string, fields: string, body: Buffer): void {
  const head = `HTTP/1.1 ${status}\r\n${fields}X-Request-Id: ${randomUUID()}\r\nContent-Length: ${body.length}\r\n${date()}Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n`;
  if (body.length > BODY_IN_HEAD_MAX_BYTES) {
    socket.cork();
    socket.write(head, 'latin1');
    socket.write(body);
    socket.uncork();
    return;
  }
  const bytes = Buffer.allocUnsafe(Buffer.byteLength(head, 'latin1') + body.length);
  const at = bytes.write(head, 'latin1');
  bytes.set(body, at);
  socket.write(bytes);
}

function hit(socket: net.Socket, recording: Stored, range: RegExpExecArray | null): void {
  const size = recording.body.length;
  if (range) {
    const start = Number(range[1]);
    const end = Math.min(Number(range[2]), size - 1);
    if (start <= end) {
      answer(
        socket,
        '206 Partial Content',
        `${recording.fields}Content-Range: bytes ${start}-${end}/${size}\r\n`,
        recording.body.subarray(start, end + 1),
      );
      return;
    }
  }
  answer(socket, '200 OK', recording.fields, recording.body);
}

/** The stored copy of a recording fetched whole, with the fields of its memory hits. */
function storedCopy(callId: string, head: string, body: Buffer): Stored {
  const { contentType, lastModified } = headFields(head);
  const fields =
    `Content-Type: ${contentType}\r\nAccept-Ranges: bytes\r\n` +
    // The gateway's ETag (a sha256 digest), so both answer heads are the same size.
    `ETag: ${etagFor(sha256Hex(body))}\r\n${lastModified ? `Last-Modified: ${lastModified}\r\n` : ''}` +
    `Content-Disposition: inline; filename="call-${callId}.mp3"\r\nCache-Control: private, max-age=86400, immutable\r\n` +
    'Vary: Origin\r\nCache-Status: recording-gateway; hit; detail=memory\r\n';
  return { body, fields };
}

/** A miss's answer head, as the node:http floor's: the upstream's type, validators and length, and `fwd=miss`. */
function missHead(head: string, length: number): string {
  const { contentType, etag, lastModified } = headFields(head);
  return (
    `HTTP/1.1 200 OK\r\nContent-Type: ${contentType}\r\n` +
    `${etag ? `ETag: ${etag}\r\n` : ''}${lastModified ? `Last-Modified: ${lastModified}\r\n` : ''}` +
    `Cache-Status: recording-gateway; fwd=miss\r\nContent-Length: ${length}\r\n${date()}Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n`
  );
}

function main(): void {
  const { port, upstreamBase, upstreamAuthorization } = floorEnv('peers-net-floor');
  const pool = upstreamPool(upstreamBase, upstreamAuthorization);
  const stored = new Map<string, Stored>();
  const notFound = Buffer.from(NOT_FOUND);
  const server = net.createServer((socket) => {
    let pending: Buffer | undefined;
    let busy = false;
    const serve = (): void => {
      while (pending !== undefined && !busy) {
        const end = pending.indexOf(HEAD_END);
        if (end === -1) return;
        const head = pending.toString('latin1', 0, end);
        pending = end + HEAD_END.length < pending.length ? pending.subarray(end + HEAD_END.length) : undefined;
        const lineEnd = head.indexOf('\r\n');
        const callId = RECORDING_PATH.exec(lineEnd === -1 ? head : head.slice(0, lineEnd))?.[1];
        if (callId === undefined) {
          answer(socket, '404 Not Found', 'Content-Type: application/json\r\n', notFound);
          continue;
        }
        const range = RANGE_FIELD.exec(head);
        const recording = stored.get(callId);
        if (recording) {
          hit(socket, recording, range);
          continue;
        }
        busy = true;
        let upstreamHead: string | undefined;
        pool.fetch(callId, {
          head(status, head, length) {
            if (status !== 200) {
              socket.destroy();
              return;
            }
            upstreamHead = head;
            socket.write(missHead(head, length), 'latin1');
          },
          body(chunk) {
            if (upstreamHead !== undefined) socket.write(chunk);
          },
          end(body) {
            if (upstreamHead === undefined) return;
            stored.set(callId, storedCopy(callId, upstreamHead, body));
            busy = false;
            serve();
          },
          failed: () => socket.destroy(),
        });
      }
    };
    socket.on('data', (chunk: Buffer) => {
      pending = pending ? Buffer.concat([pending, chunk]) : chunk;
      serve();
    });
    socket.on('error', () => socket.destroy());
  });
  server.listen(port, '127.0.0.1');
}

main();
