/**
 * A recording too large for the memory tier is sent as it is read, from its
 * file or from a download under way, through one read buffer per answer that
 * is reused once the connection has taken its bytes. Whatever the clients'
 * pace, every byte must arrive as stored: a buffer reused too soon would send
 * later bytes in place of earlier ones.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { type IncomingMessage, request } from 'node:http';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, makeTempDir, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { eventually, openGet, readBody, storedRecordingFiles, syntheticRecording } from '../dev/recording-bytes.js';
import type { CacheEncryptionConfig } from '../src/config/index.js';

/** With a 1 MiB memory tier, recordings over 128 KiB stream from their file. */
const MEMORY_BYTES = 1024 * 1024;
const LARGE = 51;
/** Larger than what loopback sockets buffer, so that a stalled client's bytes wait in Node. */
const LARGE_BYTES = 16 * 1024 * 1024 + 4321;

let upstream: FakeFlyflow;
let dir: string;
let recording: Buffer;
const running: RunningGateway[] = [];

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  recording = syntheticRecording(LARGE_BYTES);
  upstream.setRecording(LARGE, recording);
  dir = await makeTempDir('rg-streamed-');
});

afterEach(async () => {
  upstream.reset();
  for (const gateway of running.splice(0)) await gateway.close();
  await upstream.close();
  await removeDir(dir);
});

async function start(encryption?: CacheEncryptionConfig): Promise<RunningGateway> {
  const gateway = await startGateway(
    testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, cache: { maxMemoryBytes: MEMORY_BYTES, ...(encryption ? { encryption } : {}) } }),
  );
  running.push(gateway);
  return gateway;
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/**
 * Reads a body, stopping for `firstPauseMs` at its first bytes (so that the
 * socket's buffers fill and the gateway's writes wait in Node), then for
 * `pauseMs` after each `everyBytes`.
 */
function readSlowly(
  response: IncomingMessage,
  firstPauseMs: number,
  everyBytes: number,
  pauseMs: number,
): Promise<{ bytes: Buffer; complete: boolean }> {
  let nextPause = 0;
  return readBody(response, (received) => {
    if (received < nextPause) return;
    const ms = nextPause === 0 ? firstPauseMs : pauseMs;
    nextPause = received + everyBytes;
    response.pause();
    setTimeout(() => response.resume(), ms);
  });
}

/** Eight clients at once: four at full speed, four that stall again and again; two of each ask for a range. */
async function eightClients(gateway: RunningGateway): Promise<void> {
  const url = `${gateway.baseUrl}/v1/call/recording/${LARGE}.mp3`;
  const range = { start: 100_001, end: LARGE_BYTES - 70_000 };
  const clients = Array.from({ length: 8 }, async (_, i) => {
    const ranged = i % 4 >= 2;
    const headers: Record<string, string> = { authorization: `Bearer ${ACME_KEY}` };
    if (ranged) headers.range = `bytes=${range.start}-${range.end}`;
    const response = await openGet(url, headers);
    const body = i < 4 ? await readBody(response) : await readSlowly(response, 300, 200_000 + i * 7_919, 15);
    const expected = ranged ? recording.subarray(range.start, range.end + 1) : recording;
    return {
      status: response.statusCode,
      complete: body.complete,
      length: body.bytes.length,
      sha256: sha256(body.bytes),
      expected: sha256(expected),
    };
  });
  for (const client of await Promise.all(clients)) {
    expect(client.complete).toBe(true);
    expect(client.sha256).toBe(client.expected);
    expect([200, 206]).toContain(client.status);
  }
}

async function storedWhole(): Promise<void> {
  expect(await eventually(async () => (await storedRecordingFiles(dir)).some((file) => file.size >= LARGE_BYTES))).toBe(true);
}

describe('a recording streamed from its file', () => {
  test('every client gets every byte as stored, at full speed or stalling, whole or a range', async () => {
    const gateway = await start();
    const first = await gateway.fetch(`/v1/call/recording/${LARGE}.mp3`);
    expect(sha256(Buffer.from(await first.arrayBuffer()))).toBe(sha256(recording));
    await storedWhole();

    await eightClients(gateway);
    expect(upstream.recordingRequests(LARGE)).toHaveLength(1);
  });

  test('the same from an encrypted file', async () => {
    const gateway = await start({ key: randomBytes(32), previousKeys: [] });
    await (await gateway.fetch(`/v1/call/recording/${LARGE}.mp3`)).arrayBuffer();
    await storedWhole();

    await eightClients(gateway);
    expect(upstream.recordingRequests(LARGE)).toHaveLength(1);
  });
});

describe('a recording streamed while it downloads', () => {
  test('clients joining a slow download read it back from the temporary file, every byte as the upstream sent it', async () => {
    // Small upstream chunks: reads of what has arrived are often smaller than Node's write buffer, so writes return true with bytes still waiting.
    upstream.setBehaviour(LARGE, { kind: 'slow-body', chunkBytes: 40_000, intervalMs: 1 });
    const gateway = await start();

    await eightClients(gateway);
    expect(upstream.recordingRequests(LARGE)).toHaveLength(1);
  });
});

/** This process's open descriptors on recordings and temporary files (the gateway runs in the test's process; its index stays open). */
async function openCacheFiles(): Promise<string[]> {
  const fds = await readdir('/proc/self/fd');
  const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
  return targets.filter((target) => target.startsWith(path.join(dir, 'recordings')) || target.startsWith(path.join(dir, 'tmp')));
}

describe('a client that goes away before its answer starts', () => {
  test('leaves no file open once the download it waited for is stored', async () => {
    upstream.setBehaviour(LARGE, { kind: 'slow-head', delayMs: 400 });
    const gateway = await start();
    const gone = new Promise<void>((resolve) => {
      const asking = request(`${gateway.baseUrl}/v1/call/recording/${LARGE}.mp3`, {
        headers: { authorization: `Bearer ${ACME_KEY}` },
        agent: false,
      });
      asking.once('error', () => resolve());
      asking.end();
      // Gone while the gateway still waits for the upstream's head.
      setTimeout(() => {
        asking.destroy();
        resolve();
      }, 100);
    });
    await gone;

    await storedWhole();
    // The answer that never started let go of the download: its file is closed, not left for the GC.
    expect(await eventually(async () => (await openCacheFiles()).length === 0, 2_000)).toBe(true);
    expect(upstream.recordingRequests(LARGE)).toHaveLength(1);
  });
});
