import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { bytesOf, makeTempDir, removeDir, startGateway, tempFilesIn, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { openFilesUnder } from './support/durability.js';

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway | undefined;
/** Node's warnings, among them "Closing file descriptor N on garbage collection" for a handle nobody closed. */
const warnings: string[] = [];
const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  warnings.length = 0;
  process.on('warning', onWarning);
});

afterEach(async () => {
  process.off('warning', onWarning);
  await gateway?.close();
  gateway = undefined;
  await upstream.close();
  await removeDir(dir);
});

/**
 * This process's open descriptors on recording files of the cache, temporary
 * or stored (Linux /proc; a removed file still open reads "<path> (deleted)").
 * The index's own files are not counted.
 */
function recordingDescriptors(): Promise<string[]> {
  return openFilesUnder(path.join(dir, 'tmp'), path.join(dir, 'recordings'));
}

/**
 * The descriptors still open once the gateway has let go of them, and every
 * one the garbage collector had to close instead. A file is closed when its
 * last reader is done, a moment after the client has every byte, so this
 * waits for that; a leaked descriptor stays open until the wait runs out, or
 * is closed by the garbage collector with a warning.
 */
async function descriptorsLeft(): Promise<string[]> {
  const deadline = Date.now() + 3_000;
  let open = await recordingDescriptors();
  while (open.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    open = await recordingDescriptors();
  }
  const closedByGc = warnings.filter((warning) => /file descriptor|FileHandle/i.test(warning));
  return [...open, ...closedByGc];
}

describe('temporary files and descriptors', () => {
  test('a download that succeeds on its third attempt leaves no temporary file and no open descriptor behind', async () => {
    upstream.setBehaviour(4, { kind: 'reset', afterBytes: 1, times: 2 });
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
    expect(await recordingDescriptors()).toEqual([]);
    const response = await gateway.fetch('/v1/call/recording/4.mp3');
    expect(response.status).toBe(200);
    expect((await bytesOf(response)).equals(upstream.recording(4)!)).toBe(true);
    expect(upstream.recordingRequests(4)).toHaveLength(3);
    await gateway.gateway.downloads.idle();
    expect(await tempFilesIn(dir)).toEqual([]);
    expect(await descriptorsLeft()).toEqual([]);
    // And it was stored: the next answer is a hit.
    const hit = await gateway.fetch('/v1/call/recording/4.mp3');
    expect(hit.headers.get('cache-status')).toContain('hit');
    await bytesOf(hit);
  });

  test('a download that breaks on every attempt leaves no temporary file and no open descriptor behind', async () => {
    upstream.setBehaviour(4, { kind: 'reset', afterBytes: 1 });
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
    const response = await gateway.fetch('/v1/call/recording/4.mp3');
    expect(response.status).toBe(502);
    await response.arrayBuffer();
    await gateway.gateway.downloads.idle();
    expect(await tempFilesIn(dir)).toEqual([]);
    expect(await descriptorsLeft()).toEqual([]);
  });

  test('a large recording streamed from disk closes its file once the client has every byte', async () => {
    gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, cache: { maxMemoryBytes: 64 * 1024 } }));
    await bytesOf(await gateway.fetch('/v1/call/recording/4.mp3'));
    await gateway.gateway.downloads.idle();
    expect(await descriptorsLeft()).toEqual([]);
    const hit = await gateway.fetch('/v1/call/recording/4.mp3');
    expect(hit.headers.get('cache-status')).toContain('detail=disk');
    expect((await bytesOf(hit)).equals(upstream.recording(4)!)).toBe(true);
    expect(await descriptorsLeft()).toEqual([]);
  });
});
