/**
 * The validators of a cold answer: the ETag for every request that joins a
 * download once all its bytes are in (however far its fsync and store have
 * got), and the same Last-Modified cold as warm when the upstream sends none.
 */
import { open } from 'node:fs/promises';
import { devNull } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  bytesOf,
  expectedEtag,
  makeTempDir,
  manualClock,
  removeDir,
  startGateway,
  testConfig,
  type RunningGateway,
} from '../dev/gateway-harness.js';

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway;

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
});

afterEach(async () => {
  await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

type HandleMethod = 'sync' | 'write';

/**
 * Holds the calls of one FileHandle method that `matches` picks (in this
 * process, where the gateway runs) until `release`: a slow disk at exactly
 * one step of a download. `held` resolves once such a call is waiting.
 */
async function holdFileHandle(method: HandleMethod, matches: (args: unknown[]) => boolean) {
  const probe = await open(devNull, 'r');
  const prototype = Object.getPrototypeOf(probe) as Record<HandleMethod, (...args: unknown[]) => Promise<unknown>>;
  await probe.close();
  const original = prototype[method];
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let reached!: () => void;
  const held = new Promise<void>((resolve) => (reached = resolve));
  prototype[method] = function heldCall(this: unknown, ...args: unknown[]) {
    if (!matches(args)) return original.apply(this, args);
    reached();
    return gate.then(() => original.apply(this, args));
  };
  return {
    held,
    release() {
      prototype[method] = original;
      release();
    },
  };
}

async function joinersCounted(): Promise<number> {
  const text = await gateway.gateway.metrics.registry.metrics();
  return Number(/^recording_gateway_download_joiners_total (\d+)/m.exec(text)?.[1] ?? 0);
}

describe('a request that joins a download once every byte is in carries the ETag', () => {
  test('while the file is still being made durable (its fsync) and stored', async () => {
    const recording = upstream.recording(4)!;
    const fsync = await holdFileHandle('sync', () => true);
    try {
      const cold = await gateway.fetch('/v1/call/recording/4.mp3');
      expect(Buffer.from(await bytesOf(cold))).toEqual(recording);
      await fsync.held;
      for (const method of ['HEAD', 'GET']) {
        const joined = await gateway.fetch('/v1/call/recording/4.mp3', { method });
        const body = await bytesOf(joined);
        expect({
          method,
          status: joined.status,
          etag: joined.headers.get('etag'),
          cacheStatus: joined.headers.get('cache-status'),
        }).toEqual({
          method,
          status: 200,
          etag: expectedEtag(recording),
          cacheStatus: 'recording-gateway; fwd=uri-miss; collapsed',
        });
        expect(body.length).toBe(method === 'HEAD' ? 0 : recording.length);
      }
    } finally {
      fsync.release();
    }
    expect(upstream.recordingRequests(4)).toHaveLength(1);
  });

  test('while its last bytes are still being written, before the digest is computed: it waits for the digest', async () => {
    const recording = upstream.recording(4)!;
    // FileHandle.write(buffer, offset, length, position): the write that ends the file.
    const lastWrite = await holdFileHandle('write', ([, , length, position]) => Number(position) + Number(length) === recording.length);
    try {
      const cold = await gateway.fetch('/v1/call/recording/4.mp3');
      expect(Buffer.from(await bytesOf(cold))).toEqual(recording);
      await lastWrite.held;
      const joining = gateway.fetch('/v1/call/recording/4.mp3', { method: 'HEAD' });
      while ((await joinersCounted()) < 1) await new Promise((resolve) => setTimeout(resolve, 5));
      lastWrite.release();
      const joined = await joining;
      expect(joined.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss; collapsed');
      expect(joined.headers.get('etag')).toBe(expectedEtag(recording));
    } finally {
      lastWrite.release();
    }
  });
});

describe('without an upstream Last-Modified', () => {
  test('a cold answer carries when the gateway fetched it, the same date its warm answers carry', async () => {
    const undated = await startFakeFlyflow({ lastModified: null });
    const clock = manualClock(Date.UTC(2026, 10, 30, 12, 0, 0, 250));
    const fetchedAt = new Date(clock.now()).toUTCString();
    const gatewayDir = path.join(dir, 'undated');
    const undatedGateway = await startGateway(testConfig({ dir: gatewayDir, upstreamBaseUrl: undated.baseUrl }), { clock });
    try {
      // The upstream holds the body after its first quarter: the download is stored seconds after its head came.
      undated.setBehaviour(4, { kind: 'gate' });
      const cold = await undatedGateway.fetch('/v1/call/recording/4.mp3');
      expect(cold.headers.get('etag')).toBeNull();
      expect(cold.headers.get('last-modified')).toBe(fetchedAt);
      clock.advance(5_000);
      undated.release(4);
      await bytesOf(cold);
      await undatedGateway.gateway.downloads.idle();
      clock.advance(5_000);
      const warm = await undatedGateway.fetch('/v1/call/recording/4.mp3', {
        headers: { 'if-unmodified-since': new Date(clock.now()).toUTCString() },
      });
      await bytesOf(warm);
      expect(warm.status).toBe(200);
      expect(warm.headers.get('cache-status')).toMatch(/hit/);
      expect(warm.headers.get('last-modified')).toBe(fetchedAt);
      const resumed = await undatedGateway.fetch('/v1/call/recording/4.mp3', { headers: { range: 'bytes=0-9', 'if-range': fetchedAt } });
      await bytesOf(resumed);
      expect(resumed.status).toBe(206);
    } finally {
      await undatedGateway.close();
      await undated.close();
    }
  });
});
