/**
 * A recording too large for the memory tier is sent as it is read, from its
 * file or from a download under way, through one read buffer per answer that
 * is reused once the connection has taken its bytes. Whatever the clients'
 * pace, every byte must arrive as stored: a buffer reused too soon would send
 * later bytes in place of earlier ones.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { ACME_KEY, type RunningGateway } from '../dev/gateway-harness.js';
import { askThenLeave, eventually, openGet, readBody, storedRecordingFiles, syntheticRecording } from '../dev/recording-bytes.js';
import type { CacheEncryptionConfig } from '../src/config/index.js';
import { sha256Hex as sha256 } from '../src/sha256.js';
import { openFilesUnder } from './support/durability.js';
import { gatewayPerTest } from './support/gateway-per-test.js';

/** With a 1 MiB memory tier, recordings over 128 KiB stream from their file. */
const MEMORY_BYTES = 1024 * 1024;
const LARGE = 51;
/** Larger than what loopback sockets buffer, so that a stalled client's bytes wait in Node. */
const LARGE_BYTES = 16 * 1024 * 1024 + 4321;
const recording = syntheticRecording(LARGE_BYTES);

const bed = gatewayPerTest('rg-streamed-', (upstream) => upstream.setRecording(LARGE, recording));

function start(encryption?: CacheEncryptionConfig): Promise<RunningGateway> {
  return bed.start({ cache: { maxMemoryBytes: MEMORY_BYTES, ...(encryption ? { encryption } : {}) } });
}

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
  expect(await eventually(async () => (await storedRecordingFiles(bed.dir)).some((file) => file.size >= LARGE_BYTES))).toBe(true);
}

describe('a recording streamed from its file', () => {
  test('every client gets every byte as stored, at full speed or stalling, whole or a range', async () => {
    const gateway = await start();
    const first = await gateway.fetch(`/v1/call/recording/${LARGE}.mp3`);
    expect(sha256(Buffer.from(await first.arrayBuffer()))).toBe(sha256(recording));
    await storedWhole();

    await eightClients(gateway);
    expect(bed.upstream.recordingRequests(LARGE)).toHaveLength(1);
  });

  test('the same from an encrypted file', async () => {
    const gateway = await start({ key: randomBytes(32), previousKeys: [] });
    await (await gateway.fetch(`/v1/call/recording/${LARGE}.mp3`)).arrayBuffer();
    await storedWhole();

    await eightClients(gateway);
    expect(bed.upstream.recordingRequests(LARGE)).toHaveLength(1);
  });
});

describe('a recording streamed while it downloads', () => {
  test('clients joining a slow download read it back from the temporary file, every byte as the upstream sent it', async () => {
    // Small upstream chunks: reads of what has arrived are often smaller than Node's write buffer, so writes return true with bytes still waiting.
    bed.upstream.setBehaviour(LARGE, { kind: 'slow-body', chunkBytes: 40_000, intervalMs: 1 });
    const gateway = await start();

    await eightClients(gateway);
    expect(bed.upstream.recordingRequests(LARGE)).toHaveLength(1);
  });
});

describe('a client that goes away before its answer starts', () => {
  test('leaves no file open once the download it waited for is stored', async () => {
    bed.upstream.setBehaviour(LARGE, { kind: 'slow-head', delayMs: 400 });
    const gateway = await start();
    // Gone while the gateway still waits for the upstream's head.
    await askThenLeave(
      `${gateway.baseUrl}/v1/call/recording/${LARGE}.mp3`,
      { authorization: `Bearer ${ACME_KEY}` },
      () => bed.upstream.recordingRequests(LARGE).length === 1,
    );

    await storedWhole();
    // The answer that never started let go of the download: its file is closed, not left for the GC.
    expect(
      await eventually(async () => (await openFilesUnder(path.join(bed.dir, 'recordings'), path.join(bed.dir, 'tmp'))).length === 0, 2_000),
    ).toBe(true);
    expect(bed.upstream.recordingRequests(LARGE)).toHaveLength(1);
  });
});
