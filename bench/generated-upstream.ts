/**
 * A stand-in for Flyflow that makes up a large MP3-looking recording as it
 * sends it, at a set rate, so the bench process never holds one whole. The
 * bytes are a function of (call id, offset): the same every time, different
 * per recording, so a client's sha256 can be checked against {@link digest}.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

export interface GeneratedUpstream {
  /** `http://127.0.0.1:PORT/v1`, for upstream.base_url. */
  baseUrl: string;
  /** Bytes of every recording. */
  size: number;
  /** GET requests received so far for a call id. */
  requests(callId: string): number;
  /** sha256 (hex) of the body served for a call id. */
  digest(callId: string): string;
  close(): Promise<void>;
}

const CHUNK_BYTES = 64 * 1024;
// Sixteen chunks of noise, cycled; each chunk is stamped with its call id and
// index so no two chunks of the body are equal.
const PATTERN_BYTES = 16 * CHUNK_BYTES;
// An ID3v2.4 tag header with no frames: what the gateway's MP3 check reads.
const ID3_HEADER = Buffer.from([0x49, 0x44, 0x33, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
const RECORDING_PATH = /\/call\/recording\/(\d+)\.mp3$/;

/** Resolves once `res` can take more, or has closed (then false). */
function drained(res: http.ServerResponse): Promise<boolean> {
  return new Promise((resolve) => {
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const done = (open: boolean) => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(open);
    };
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}

export async function startGeneratedUpstream(options: { size: number; bytesPerSecond: number }): Promise<GeneratedUpstream> {
  const { size, bytesPerSecond } = options;
  const pattern = randomBytes(PATTERN_BYTES);
  const counts = new Map<string, number>();
  const digests = new Map<string, string>();

  function chunkAt(callId: string, offset: number): Buffer {
    const length = Math.min(CHUNK_BYTES, size - offset);
    const chunk = Buffer.allocUnsafe(length);
    const from = offset % PATTERN_BYTES;
    pattern.copy(chunk, 0, from, from + length);
    if (offset === 0) ID3_HEADER.copy(chunk);
    else if (length >= 12) {
      chunk.writeUInt32BE(offset / CHUNK_BYTES, 0);
      chunk.write(callId.padStart(8, '0').slice(-8), 4, 'latin1');
    }
    return chunk;
  }

  async function send(callId: string, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    for (let offset = 0; offset < size; offset += CHUNK_BYTES) {
      if (res.destroyed) return;
      const chunk = chunkAt(callId, offset);
      if (!res.write(chunk) && !(await drained(res))) return;
      // Paced against the start, not per chunk, so timer granularity does not add up.
      const aheadMs = ((offset + chunk.length) / bytesPerSecond) * 1000 - (performance.now() - started);
      if (aheadMs >= 2) await sleep(aheadMs);
    }
    res.end();
  }

  const server = http.createServer((req, res) => {
    const callId = RECORDING_PATH.exec(req.url ?? '')?.[1];
    if (req.method !== 'GET' || callId === undefined) {
      res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":"not found"}');
      return;
    }
    counts.set(callId, (counts.get(callId) ?? 0) + 1);
    res.writeHead(200, { 'Content-Type': 'audio/mpeg', 'Content-Length': String(size) });
    send(callId, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    size,
    requests: (callId) => counts.get(callId) ?? 0,
    digest(callId) {
      let digest = digests.get(callId);
      if (digest === undefined) {
        const hash = createHash('sha256');
        for (let offset = 0; offset < size; offset += CHUNK_BYTES) hash.update(chunkAt(callId, offset));
        digest = hash.digest('hex');
        digests.set(callId, digest);
      }
      return digest;
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
