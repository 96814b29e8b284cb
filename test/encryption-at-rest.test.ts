import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { readFile, readdir, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  bytesOf,
  makeTempDir,
  namespaceFor,
  removeDir,
  startGateway,
  tempFilesIn,
  testConfig,
  type RunningGateway,
} from '../dev/gateway-harness.js';
import { eventually, openGet, readBody, syntheticRecording } from '../dev/recording-bytes.js';
import { sidecarPath } from '../src/cache/disk-store.js';
import { HEADER_BYTES, TAG_BYTES } from '../src/cache/encryption/chunk-format.js';
import { keyIdOf } from '../src/cache/encryption/keyring.js';
import type { CacheEncryptionConfig } from '../src/config/index.js';
import { createLogger } from '../src/logger.js';
import { runCliInProcess } from './support/run-cli-in-process.js';

const CHUNK = 64 * 1024;
const STRIDE = CHUNK + TAG_BYTES;
/** With a 1 MiB memory tier, recordings over 128 KiB stream from their file. */
const MEMORY_BYTES = 1024 * 1024;
const SMALL = 1;
const LARGE = 40;
const keyA = randomBytes(32);
const keyB = randomBytes(32);
const onlyA: CacheEncryptionConfig = { key: keyA, previousKeys: [] };

let upstream: FakeFlyflow;
let dir: string;
let logLines: string[];
const running: RunningGateway[] = [];

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  upstream.setRecording(LARGE, syntheticRecording(5 * CHUNK + 12_345));
  dir = await makeTempDir('rg-enc-at-rest-');
  logLines = [];
});

afterEach(async () => {
  for (const gateway of running.splice(0)) await gateway.close();
  await upstream.close();
  await removeDir(dir);
  // Whatever a test did (damage, rotation, an unknown key), no key reached a log line.
  const logs = logLines.join('\n');
  for (const key of [keyA, keyB]) {
    for (const encoding of ['base64', 'base64url', 'hex'] as const) expect(logs).not.toContain(key.toString(encoding));
  }
});

/** A gateway on the cache directory, encrypting with `encryption` (null: in the clear). */
async function start(encryption: CacheEncryptionConfig | null = onlyA, maxMemoryBytes = MEMORY_BYTES): Promise<RunningGateway> {
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logLines.push(...chunk.toString().split('\n').filter(Boolean));
      callback();
    },
  });
  const gateway = await startGateway(
    testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, cache: { maxMemoryBytes, ...(encryption ? { encryption } : {}) } }),
    { logger: createLogger({ destination, level: 'info' }) },
  );
  running.push(gateway);
  return gateway;
}

async function stop(gateway: RunningGateway): Promise<void> {
  running.splice(running.indexOf(gateway), 1);
  await gateway.close();
}

/** GET a recording; waits until what it started is stored and analysed (the analysis reads the file too). */
async function download(
  gateway: RunningGateway,
  id: number,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const response = await gateway.fetch(`/v1/call/recording/${id}.mp3`, { headers });
  const body = await bytesOf(response);
  await gateway.gateway.downloads.idle();
  await gateway.gateway.analyser.idle();
  return { status: response.status, headers: response.headers, body };
}

function storedPath(id: number): string {
  return path.join(dir, 'recordings', namespaceFor(upstream.baseUrl), `${id}.mp3`);
}

/** Every file under the cache directory: recordings, temporary files, sidecars, the index. */
async function everyFile(): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

/** The files under the cache directory that hold any 64-byte run of `plaintext` (sampled so that no run is skipped). */
async function filesHoldingPlaintext(...recordings: Buffer[]): Promise<string[]> {
  const found: string[] = [];
  for (const file of await everyFile()) {
    const bytes = await readFile(file).catch(() => Buffer.alloc(0));
    const holds = recordings.some((plaintext) => {
      for (let at = 0; at + 64 <= plaintext.length; at += 61) if (bytes.includes(plaintext.subarray(at, at + 64))) return true;
      return false;
    });
    if (holds) found.push(path.relative(dir, file));
  }
  return found;
}

async function flipByte(file: string, at: number): Promise<void> {
  const bytes = await readFile(file);
  bytes[at] = bytes[at]! ^ 0x5a;
  await writeFile(file, bytes);
}

async function headerKeyId(file: string): Promise<string> {
  return (await readFile(file)).subarray(8, 16).toString('hex');
}

describe('encryption at rest', () => {
  test('no byte of a recording is on disk in the clear; disk hits answer the exact bytes, whole and by range', async () => {
    const small = upstream.recording(SMALL)!;
    const large = upstream.recording(LARGE)!;
    const first = await start();
    expect((await download(first, SMALL)).body.equals(small)).toBe(true);
    expect((await download(first, LARGE)).body.equals(large)).toBe(true);
    // Peaks are decoded on their first request, which writes the sidecar.
    expect((await first.fetch(`/v1/call/recording/${SMALL}/peaks.json`)).status).toBe(200);
    await stop(first);
    expect(existsSync(storedPath(SMALL)) && existsSync(storedPath(LARGE))).toBe(true);
    expect(await filesHoldingPlaintext(small, large)).toEqual([]);
    // The waveform peaks kept beside the recording are encrypted too.
    const peaksFile = sidecarPath(dir, namespaceFor(upstream.baseUrl), String(SMALL), 'peaks');
    const peaksBefore = await readFile(peaksFile);
    expect(peaksBefore.subarray(0, 7).toString('latin1')).toBe('RGENC1\n');

    // A restarted gateway has nothing in memory: every answer below comes from the encrypted files.
    const second = await start();
    const smallHit = await download(second, SMALL);
    expect(smallHit.headers.get('cache-status')).toBe('recording-gateway; hit; detail=disk');
    expect(smallHit.body.equals(small)).toBe(true);
    const largeHit = await download(second, LARGE);
    expect(largeHit.headers.get('cache-status')).toBe('recording-gateway; hit; detail=disk');
    expect(largeHit.body.equals(large)).toBe(true);
    const ranges: Array<[string, number, number]> = [
      ['bytes=0-0', 0, 1],
      [`bytes=${CHUNK - 10}-${CHUNK + 9}`, CHUNK - 10, CHUNK + 10],
      [`bytes=${2 * CHUNK - 1}-${3 * CHUNK}`, 2 * CHUNK - 1, 3 * CHUNK + 1],
      ['bytes=-1', large.length - 1, large.length],
      [`bytes=${large.length - 70_000}-`, large.length - 70_000, large.length],
    ];
    for (const [range, start, end] of ranges) {
      const partial = await download(second, LARGE, { range });
      expect(partial.status, range).toBe(206);
      expect(partial.headers.get('cache-status'), range).toBe('recording-gateway; hit; detail=disk');
      expect(partial.headers.get('content-range'), range).toBe(`bytes ${start}-${end - 1}/${large.length}`);
      expect(partial.body.equals(large.subarray(start, end)), range).toBe(true);
    }
    const peaks = await second.fetch(`/v1/call/recording/${SMALL}/peaks.json?points=100`);
    expect(peaks.status).toBe(200);
    expect(((await peaks.json()) as { version: number }).version).toBe(2);
    // Read back and decrypted, not analysed and written again.
    expect((await readFile(peaksFile)).equals(peaksBefore)).toBe(true);
    expect(second.gateway.analyser.counts.decodes).toBe(0);
    expect(upstream.recordingRequests()).toHaveLength(2);
    expect(await filesHoldingPlaintext(small, large)).toEqual([]);
  });

  test('a download in progress leaves no plaintext in its temporary file, and a joiner streams it exactly', async () => {
    const id = 41;
    const recording = syntheticRecording(10 * CHUNK);
    upstream.setRecording(id, recording);
    upstream.setBehaviour(id, { kind: 'gate' });
    const gateway = await start();
    const headers = { authorization: `Bearer ${ACME_KEY}` };
    const url = `${gateway.baseUrl}/v1/call/recording/${id}.mp3`;
    const first = await openGet(url, headers);
    const firstBody = readBody(first);
    // The gate lets a quarter through: two full chunks and more must be on disk before we look.
    const tempBig = async () => {
      for (const name of await tempFilesIn(dir)) {
        const file = (await everyFile()).find((candidate) => path.basename(candidate) === name);
        if (file && (await readFile(file).catch(() => Buffer.alloc(0))).length >= HEADER_BYTES + 2 * STRIDE) return true;
      }
      return false;
    };
    expect(await eventually(tempBig, 10_000)).toBe(true);
    expect(await filesHoldingPlaintext(recording)).toEqual([]);
    const joiner = await openGet(url, headers);
    expect(joiner.headers['cache-status']).toContain('collapsed');
    const joinerBody = readBody(joiner);
    upstream.release(id);
    for (const body of [await firstBody, await joinerBody]) {
      expect(body.complete).toBe(true);
      expect(body.bytes.equals(recording)).toBe(true);
    }
    await gateway.gateway.downloads.idle();
    expect(await filesHoldingPlaintext(recording)).toEqual([]);
    expect(upstream.recordingRequests(id)).toHaveLength(1);
  });

  test('an edited byte in a stored file is never served: the stream is cut short, then the recording is fetched again', async () => {
    const large = upstream.recording(LARGE)!;
    const gateway = await start();
    await download(gateway, LARGE);
    await flipByte(storedPath(LARGE), HEADER_BYTES + 3 * STRIDE + 7);

    const damaged = await readBody(
      await openGet(`${gateway.baseUrl}/v1/call/recording/${LARGE}.mp3`, { authorization: `Bearer ${ACME_KEY}` }),
    );
    expect(damaged.complete).toBe(false);
    expect(damaged.bytes.length).toBeLessThan(large.length);
    // What did arrive is the authenticated beginning, not the damaged chunk.
    expect(large.subarray(0, damaged.bytes.length).equals(damaged.bytes)).toBe(true);
    expect(damaged.bytes.length).toBeLessThanOrEqual(3 * CHUNK);
    expect(upstream.recordingRequests(LARGE)).toHaveLength(1);

    const refetched = await download(gateway, LARGE);
    expect(refetched.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    expect(refetched.body.equals(large)).toBe(true);
    expect(upstream.recordingRequests(LARGE)).toHaveLength(2);
    // The file was replaced by a good one: the next request is a hit with the exact bytes.
    const hit = await download(gateway, LARGE);
    expect(hit.headers.get('cache-status')).toBe('recording-gateway; hit; detail=disk');
    expect(hit.body.equals(large)).toBe(true);
    expect(upstream.recordingRequests(LARGE)).toHaveLength(2);
    expect(logLines.some((line) => line.includes('cached recording is damaged'))).toBe(true);
  });

  test('an edited byte in a small stored file is caught before it is served or kept in memory', async () => {
    const small = upstream.recording(SMALL)!;
    const before = await start();
    await download(before, SMALL);
    await stop(before);
    await flipByte(storedPath(SMALL), HEADER_BYTES + 100);

    const after = await start();
    const response = await download(after, SMALL);
    expect(response.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    expect(response.body.equals(small)).toBe(true);
    expect(upstream.recordingRequests(SMALL)).toHaveLength(2);
    const hit = await download(after, SMALL);
    expect(hit.body.equals(small)).toBe(true);
    expect(upstream.recordingRequests(SMALL)).toHaveLength(2);
  });

  test.each([
    ['inside a chunk', (size: number) => size - 1000],
    ['at a chunk boundary', () => HEADER_BYTES + 3 * STRIDE],
  ])('a stored file cut short (%s) is fetched again, never served short', async (_where, cutTo) => {
    const large = upstream.recording(LARGE)!;
    const gateway = await start();
    await download(gateway, LARGE);
    const file = storedPath(LARGE);
    const size = (await readFile(file)).length;
    await truncate(file, cutTo(size));
    const response = await download(gateway, LARGE);
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    expect(response.body.equals(large)).toBe(true);
    expect(upstream.recordingRequests(LARGE)).toHaveLength(2);
    expect((await readFile(file)).length).toBe(size);
  });

  test('after a key rotation files under the previous key are still served; once that key is gone they are fetched again', async () => {
    const large = upstream.recording(LARGE)!;
    const small = upstream.recording(SMALL)!;
    const withA = await start(onlyA);
    await download(withA, LARGE);
    await stop(withA);
    expect(await headerKeyId(storedPath(LARGE))).toBe(keyIdOf(keyA).toString('hex'));

    const rotated = await start({ key: keyB, previousKeys: [keyA] });
    const hit = await download(rotated, LARGE);
    expect(hit.headers.get('cache-status')).toBe('recording-gateway; hit; detail=disk');
    expect(hit.body.equals(large)).toBe(true);
    expect(upstream.recordingRequests(LARGE)).toHaveLength(1);
    await download(rotated, SMALL);
    await stop(rotated);
    expect(await headerKeyId(storedPath(SMALL))).toBe(keyIdOf(keyB).toString('hex'));

    const onlyB = await start({ key: keyB, previousKeys: [] });
    const refetched = await download(onlyB, LARGE);
    expect(refetched.body.equals(large)).toBe(true);
    expect(upstream.recordingRequests(LARGE)).toHaveLength(2);
    const smallHit = await download(onlyB, SMALL);
    expect(smallHit.headers.get('cache-status')).toBe('recording-gateway; hit; detail=disk');
    expect(smallHit.body.equals(small)).toBe(true);
    expect(upstream.recordingRequests(SMALL)).toHaveLength(1);
    expect(await headerKeyId(storedPath(LARGE))).toBe(keyIdOf(keyB).toString('hex'));
    const unknownKeyLines = logLines.filter((line) => line.includes('"keyId"'));
    expect(unknownKeyLines).toHaveLength(1);
    expect(unknownKeyLines[0]).toContain(keyIdOf(keyA).toString('hex'));
  });

  test('turned on over a cache in the clear, the clear files are removed at start-up; turned off, encrypted files are fetched again', async () => {
    const small = upstream.recording(SMALL)!;
    const large = upstream.recording(LARGE)!;
    const plain = await start(null);
    await download(plain, SMALL);
    await download(plain, LARGE);
    await stop(plain);
    // The detector sees plaintext when it is there.
    expect((await filesHoldingPlaintext(small, large)).sort()).toEqual(
      [path.relative(dir, storedPath(LARGE)), path.relative(dir, storedPath(SMALL))].sort(),
    );

    const encrypted = await start(onlyA);
    // Nobody asks for them: they go anyway.
    expect(await eventually(async () => (await filesHoldingPlaintext(small, large)).length === 0)).toBe(true);
    expect(existsSync(storedPath(SMALL)) || existsSync(storedPath(LARGE))).toBe(false);
    expect((await download(encrypted, LARGE)).body.equals(large)).toBe(true);
    expect((await download(encrypted, SMALL)).body.equals(small)).toBe(true);
    expect(upstream.recordingRequests()).toHaveLength(4);
    await stop(encrypted);
    expect(await filesHoldingPlaintext(small, large)).toEqual([]);

    const plainAgain = await start(null);
    expect((await download(plainAgain, LARGE)).body.equals(large)).toBe(true);
    expect((await download(plainAgain, SMALL)).body.equals(small)).toBe(true);
    expect(upstream.recordingRequests()).toHaveLength(6);
  });

  test('turned on over a cache in the clear, a peaks sidecar in the clear is removed at start-up, even beside a recording the keys read', async () => {
    const peaksFile = sidecarPath(dir, namespaceFor(upstream.baseUrl), String(SMALL), 'peaks');
    const plain = await start(null);
    await download(plain, SMALL);
    expect((await plain.fetch(`/v1/call/recording/${SMALL}/peaks.json`)).status).toBe(200);
    await stop(plain);
    const clearPeaks = await readFile(peaksFile);
    expect(clearPeaks.subarray(0, 8).toString('latin1')).toBe('RGPEAKS1');

    // With encryption the clear recording goes (its sidecar with it); fetched again, it is stored encrypted, with no sidecar yet.
    const encrypted = await start(onlyA);
    expect(await eventually(() => !existsSync(storedPath(SMALL)))).toBe(true);
    expect(existsSync(peaksFile)).toBe(false);
    await download(encrypted, SMALL);
    await stop(encrypted);
    expect((await readFile(storedPath(SMALL))).subarray(0, 7).toString('latin1')).toBe('RGENC1\n');
    // What a replica without the key, or a crash mid-change, can leave: the clear sidecar beside the encrypted recording.
    await writeFile(peaksFile, clearPeaks);
    const recordingBefore = await readFile(storedPath(SMALL));

    logLines = [];
    const restarted = await start(onlyA);
    // Nobody asks for the peaks: the sidecar goes anyway, and the recording, which the keys read, stays.
    expect(await eventually(() => !existsSync(peaksFile))).toBe(true);
    expect((await readFile(storedPath(SMALL))).equals(recordingBefore)).toBe(true);
    expect(logLines.some((line) => line.includes('"sidecars":1') && line.includes('"recordings":0'))).toBe(true);
    const hit = await download(restarted, SMALL);
    expect(hit.headers.get('cache-status')).toBe('recording-gateway; hit; detail=disk');
    expect(upstream.recordingRequests(SMALL)).toHaveLength(2);

    // Asked for, the peaks are decoded again and kept encrypted, never again in the clear.
    const peaks = await restarted.fetch(`/v1/call/recording/${SMALL}/peaks.json?points=100`);
    expect(peaks.status).toBe(200);
    expect(((await peaks.json()) as { length: number }).length).toBe(100);
    expect((await readFile(peaksFile)).subarray(0, 7).toString('latin1')).toBe('RGENC1\n');
    const everything = await Promise.all((await everyFile()).map((file) => readFile(file).catch(() => Buffer.alloc(0))));
    expect(everything.filter((bytes) => bytes.includes('RGPEAKS1', 0, 'latin1'))).toEqual([]);
  });
});

describe('a small recording on disk only (after a restart), asked for by range', () => {
  /** The default memory tier: recordings up to 4 MiB (an eighth) are read whole and kept in memory. */
  const DEFAULT_MEMORY_BYTES = 32 * 1024 * 1024;
  const MEDIUM = 42;
  /** 24 chunks and a bit: well under the 4 MiB a memory entry may take. */
  const MEDIUM_SIZE = 24 * CHUNK + 4321;
  const MIDDLE = 12 * CHUNK + 1000;
  const HIT_DISK = 'recording-gateway; hit; detail=disk';
  const HIT_MEMORY = 'recording-gateway; hit; detail=memory';

  /**
   * Bytes this process passed through read(2) and its kin (Linux's rchar,
   * summed over the process's threads, libuv's file reads included): unlike
   * read_bytes it counts a read the page cache answered. Vitest runs each test
   * file in a process of its own (pool: forks), so nothing else reads here meanwhile.
   */
  function bytesReadSoFar(): number {
    return Number(/^rchar: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
  }

  /** The recording stored by one gateway, then a fresh one on the same cache directory, with nothing in memory. */
  async function restartedWithMedium(encryption: CacheEncryptionConfig | null): Promise<{ gateway: RunningGateway; recording: Buffer }> {
    const recording = syntheticRecording(MEDIUM_SIZE);
    upstream.setRecording(MEDIUM, recording);
    const first = await start(encryption, DEFAULT_MEMORY_BYTES);
    expect((await download(first, MEDIUM)).body.equals(recording)).toBe(true);
    await stop(first);
    return { gateway: await start(encryption, DEFAULT_MEMORY_BYTES), recording };
  }

  test('encrypted: a 100-byte range decrypts its chunk from the file, and the copy is not read whole nor kept in memory', async () => {
    const { gateway, recording } = await restartedWithMedium(onlyA);
    const range = `bytes=${MIDDLE}-${MIDDLE + 99}`;
    const before = bytesReadSoFar();
    const partial = await download(gateway, MEDIUM, { range });
    const read = bytesReadSoFar() - before;
    expect(partial.status).toBe(206);
    expect(partial.headers.get('cache-status')).toBe(HIT_DISK);
    expect(partial.headers.get('content-range')).toBe(`bytes ${MIDDLE}-${MIDDLE + 99}/${MEDIUM_SIZE}`);
    expect(partial.body.equals(recording.subarray(MIDDLE, MIDDLE + 100))).toBe(true);
    // One sealed chunk, the file's header and the HTTP exchange: nowhere near the 1.5 MB file (read whole: over 24 chunks).
    expect(read).toBeLessThan(2 * STRIDE);

    // Not promoted: Safari's probe, HEAD and a revalidation are answered from the file too, reading no more than a chunk each.
    const etag = partial.headers.get('etag')!;
    const requests: Array<Record<string, string>> = [
      { range: 'bytes=0-1' },
      { 'if-none-match': etag },
      { range: `bytes=${MEDIUM_SIZE - 10}-` },
    ];
    for (const headers of requests) {
      const at = bytesReadSoFar();
      const answer = await download(gateway, MEDIUM, headers);
      expect(bytesReadSoFar() - at, JSON.stringify(headers)).toBeLessThan(2 * STRIDE);
      expect(answer.headers.get('cache-status'), JSON.stringify(headers)).toBe(HIT_DISK);
    }
    const beforeHead = bytesReadSoFar();
    const head = await gateway.fetch(`/v1/call/recording/${MEDIUM}.mp3`, { method: 'HEAD' });
    expect(bytesReadSoFar() - beforeHead).toBeLessThan(2 * STRIDE);
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(MEDIUM_SIZE));
    expect(head.headers.get('cache-status')).toBe(HIT_DISK);
    const notModified = await download(gateway, MEDIUM, { 'if-none-match': etag, range });
    expect(notModified.status).toBe(304);
    expect(notModified.headers.get('etag')).toBe(etag);
    expect((await download(gateway, MEDIUM, { range })).headers.get('cache-status')).toBe(HIT_DISK);
    expect(upstream.recordingRequests(MEDIUM)).toHaveLength(1);
  });

  test.each([
    ['bytes=0-', 206],
    ['bytes=0-1,1-', 206],
    ['bytes=5-2', 200],
    [undefined, 200],
  ])('encrypted: a request whose answer is the whole body (Range %s) reads it whole and keeps it in memory', async (range, status) => {
    const { gateway, recording } = await restartedWithMedium(onlyA);
    const whole = await download(gateway, MEDIUM, range === undefined ? {} : { range });
    expect(whole.status).toBe(status);
    expect(whole.headers.get('cache-status')).toBe(HIT_DISK);
    expect(whole.body.equals(recording)).toBe(true);
    const next = await download(gateway, MEDIUM, { range: `bytes=${MIDDLE}-${MIDDLE + 99}` });
    expect(next.headers.get('cache-status')).toBe(HIT_MEMORY);
    expect(next.body.equals(recording.subarray(MIDDLE, MIDDLE + 100))).toBe(true);
  });

  test('in the clear: a 100-byte range still reads the small copy whole, checks it and keeps it in memory', async () => {
    const { gateway, recording } = await restartedWithMedium(null);
    const range = `bytes=${MIDDLE}-${MIDDLE + 99}`;
    const partial = await download(gateway, MEDIUM, { range });
    expect(partial.status).toBe(206);
    expect(partial.headers.get('cache-status')).toBe(HIT_DISK);
    expect(partial.body.equals(recording.subarray(MIDDLE, MIDDLE + 100))).toBe(true);
    const next = await download(gateway, MEDIUM, { range: 'bytes=0-1' });
    expect(next.headers.get('cache-status')).toBe(HIT_MEMORY);
    expect(next.body.equals(recording.subarray(0, 2))).toBe(true);
  });

  test("encrypted: a copy of the wrong size (another recording's file in its place) is fetched again on a range, never served", async () => {
    const other = syntheticRecording(MEDIUM_SIZE - 2 * CHUNK);
    upstream.setRecording(SMALL, other);
    const { gateway, recording } = await restartedWithMedium(onlyA);
    await download(gateway, SMALL);
    await stop(gateway);
    // Encrypted under the same key: every chunk of it authenticates, only the size tells.
    await writeFile(storedPath(MEDIUM), await readFile(storedPath(SMALL)));
    const restarted = await start(onlyA, DEFAULT_MEMORY_BYTES);
    const range = `bytes=${MIDDLE}-${MIDDLE + 99}`;
    const partial = await download(restarted, MEDIUM, { range });
    expect(partial.status).toBe(206);
    expect(partial.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    expect(partial.body.equals(recording.subarray(MIDDLE, MIDDLE + 100))).toBe(true);
    expect(upstream.recordingRequests(MEDIUM)).toHaveLength(2);
  });

  test('encrypted: an edited byte in the chunk a range starts in is caught before the head goes out; the range is fetched again and answered exactly', async () => {
    const { gateway, recording } = await restartedWithMedium(onlyA);
    await flipByte(storedPath(MEDIUM), HEADER_BYTES + 100);
    const partial = await download(gateway, MEDIUM, { range: 'bytes=0-99' });
    expect(partial.status).toBe(206);
    expect(partial.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    expect(partial.body.equals(recording.subarray(0, 100))).toBe(true);
    expect(upstream.recordingRequests(MEDIUM)).toHaveLength(2);
    // The copy fetched again took the damaged one's place.
    const hit = await download(gateway, MEDIUM, { range: `bytes=${MIDDLE}-${MIDDLE + 99}` });
    expect(hit.headers.get('cache-status')).toBe(HIT_MEMORY);
    expect(hit.body.equals(recording.subarray(MIDDLE, MIDDLE + 100))).toBe(true);
    expect(upstream.recordingRequests(MEDIUM)).toHaveLength(2);
  });
});

describe('cache verify with encryption', () => {
  async function writeConfig(): Promise<string> {
    const configPath = path.join(dir, 'gateway.yaml');
    await writeFile(
      configPath,
      [
        'listen: { host: 127.0.0.1, port: 1 }',
        `upstream: { base_url: "${upstream.baseUrl}" }`,
        `cache: { dir: ${JSON.stringify(path.join(dir, 'cache'))}, max_memory_bytes: 1MiB, encryption: { key_env: CACHE_ENCRYPTION_KEY } }`,
        'tenants:',
        '  - id: acme',
        `    api_keys: ["sha256:${'0'.repeat(64)}"]`,
      ].join('\n'),
    );
    return configPath;
  }

  test('passes an intact encrypted cache, finds and removes an edited file (exit 1), and refuses to run without the key', async () => {
    const configPath = await writeConfig();
    const env = { FLYFLOW_API_KEY: 'flyflow-server-key-for-tests-000000', CACHE_ENCRYPTION_KEY: keyA.toString('base64') };
    const prefetch = await runCliInProcess(['--config', configPath, 'prefetch', String(SMALL), String(LARGE)], { cwd: dir, env });
    expect(prefetch.code).toBe(0);
    const cacheDir = path.join(dir, 'cache');
    const large = path.join(cacheDir, 'recordings', namespaceFor(upstream.baseUrl), `${LARGE}.mp3`);
    expect((await readFile(large)).subarray(0, 7).toString('latin1')).toBe('RGENC1\n');

    const clean = await runCliInProcess(['--config', configPath, 'cache', 'verify'], { cwd: dir, env });
    expect(clean.code).toBe(0);
    expect(clean.stdout).toContain('verified 2 recordings: 2 intact, 0 removed');

    await flipByte(large, HEADER_BYTES + 4 * STRIDE + 3);
    const withoutKey = await runCliInProcess(['--config', configPath, 'cache', 'verify'], {
      cwd: dir,
      env: { FLYFLOW_API_KEY: env.FLYFLOW_API_KEY },
    });
    expect(withoutKey.code).toBe(1);
    expect(withoutKey.stderr).toContain('cache.encryption is set but its key could not be read');
    expect(existsSync(large)).toBe(true);

    const damaged = await runCliInProcess(['--config', configPath, 'cache', 'verify', '--json'], { cwd: dir, env });
    expect(damaged.code).toBe(1);
    expect(JSON.parse(damaged.stdout)).toMatchObject({
      checked: 2,
      intact: 1,
      removed: [{ call_id: LARGE, problem: expect.stringContaining('failed decryption') }],
    });
    expect(existsSync(large)).toBe(false);
    for (const output of [prefetch, clean, withoutKey, damaged]) {
      expect(output.stdout + output.stderr).not.toContain(keyA.toString('base64'));
    }
  });
});

describe('CLI commands that remove cache files, while a configured key cannot be read', () => {
  const SERVER = 'flyflow-server-key-for-tests-000000';
  const configPath = () => path.join(dir, 'gateway.yaml');
  const cacheDir = () => path.join(dir, 'cache');
  const run = (args: string[], env: Record<string, string>) =>
    runCliInProcess(['--config', configPath(), ...args], { cwd: dir, env: { FLYFLOW_API_KEY: SERVER, ...env } });

  async function writeConfig(encryption: string): Promise<void> {
    await writeFile(
      configPath(),
      [
        'listen: { host: 127.0.0.1, port: 1 }',
        `upstream: { base_url: "${upstream.baseUrl}" }`,
        `cache: { dir: ${JSON.stringify(cacheDir())}, max_memory_bytes: 1MiB, encryption: ${encryption} }`,
        'tenants:',
        '  - id: acme',
        `    api_keys: ["sha256:${'0'.repeat(64)}"]`,
      ].join('\n'),
    );
  }

  /** Path and content of every recording and sidecar file: what a removal would change. */
  async function cachedFiles(): Promise<Map<string, string>> {
    const files = new Map<string, string>();
    for (const folder of ['recordings', 'sidecars']) {
      const entries = await readdir(path.join(cacheDir(), folder), { recursive: true, withFileTypes: true }).catch(() => []);
      for (const entry of entries.filter((each) => each.isFile())) {
        const file = path.join(entry.parentPath, entry.name);
        files.set(path.relative(cacheDir(), file), (await readFile(file)).toString('base64'));
      }
    }
    return files;
  }

  /** Two recordings prefetched under keyA, then the config rotated to keyB with keyA as the previous key. */
  async function cacheUnderPreviousKey(previousKeys: string): Promise<Map<string, string>> {
    await writeConfig('{ key_env: CACHE_ENCRYPTION_KEY }');
    const prefetch = await run(['prefetch', String(SMALL), String(LARGE)], { CACHE_ENCRYPTION_KEY: keyA.toString('base64') });
    expect(prefetch.code).toBe(0);
    await writeConfig(`{ key_env: CACHE_ENCRYPTION_KEY, ${previousKeys} }`);
    const files = await cachedFiles();
    expect([...files.keys()]).toEqual(
      expect.arrayContaining([
        path.join('recordings', namespaceFor(upstream.baseUrl), `${SMALL}.mp3`),
        path.join('recordings', namespaceFor(upstream.baseUrl), `${LARGE}.mp3`),
      ]),
    );
    return files;
  }

  function expectNoKeyIn(...outputs: Array<{ stdout: string; stderr: string }>): void {
    for (const output of outputs) {
      for (const key of [keyA, keyB]) expect(output.stdout + output.stderr).not.toContain(key.toString('base64'));
    }
  }

  test('cache verify with previous_keys_env naming an unset variable removes nothing and says which; with it set, the old files verify intact', async () => {
    const before = await cacheUnderPreviousKey('previous_keys_env: OLD_KEYS');
    const current = { CACHE_ENCRYPTION_KEY: keyB.toString('base64') };

    for (const json of [[], ['--json']]) {
      const refused = await run(['cache', 'verify', ...json], current);
      expect(refused.code).toBe(1);
      expect(refused.stdout).toBe('');
      expect(refused.stderr).toBe(
        'error: cache verify did nothing: cache.encryption is set but its previous keys could not be read, and files under a missing key cannot be told from damaged ones: cache.encryption.previous_keys_env: environment variable OLD_KEYS is not set (it holds the previous cache encryption keys, comma-separated); set it as the gateway has it and run it again',
      );
      expect(await cachedFiles()).toEqual(before);
      expectNoKeyIn(refused);
    }

    const verified = await run(['cache', 'verify'], { ...current, OLD_KEYS: keyA.toString('base64') });
    expect(verified.stderr).toBe('');
    expect(verified.stdout).toBe('verified 2 recordings: 2 intact, 0 removed');
    expect(verified.code).toBe(0);
    expect(await cachedFiles()).toEqual(before);
    expectNoKeyIn(verified);
  });

  test('cache verify without the current key, or with a malformed one, removes nothing and names the variable, never the value', async () => {
    const before = await cacheUnderPreviousKey('previous_keys_env: OLD_KEYS');
    const previous = { OLD_KEYS: keyA.toString('base64') };

    const unset = await run(['cache', 'verify'], previous);
    expect(unset.code).toBe(1);
    expect(unset.stderr).toBe(
      'error: cache verify did nothing: cache.encryption is set but its key could not be read, and files under a missing key cannot be told from damaged ones: cache.encryption.key_env: environment variable CACHE_ENCRYPTION_KEY is not set (it holds the cache encryption key); set it as the gateway has it and run it again',
    );
    expect(await cachedFiles()).toEqual(before);

    const short = randomBytes(16).toString('base64');
    const malformed = await run(['cache', 'verify'], { ...previous, CACHE_ENCRYPTION_KEY: short });
    expect(malformed.code).toBe(1);
    expect(malformed.stderr).toContain(
      'cache.encryption.key_env: the secret in environment variable CACHE_ENCRYPTION_KEY decodes to 16 bytes, shorter than the 32 an AES-256 key needs',
    );
    // The advice is to set the key the gateway has, not to generate a new one.
    expect(malformed.stderr).not.toContain('openssl');
    expect(malformed.stderr).not.toContain(short);
    expect(await cachedFiles()).toEqual(before);

    const neither = await run(['cache', 'verify'], {});
    expect(neither.code).toBe(1);
    expect(neither.stderr).toContain('its key and its previous keys could not be read');
    expect(neither.stderr).toContain(
      'cache.encryption.key_env: environment variable CACHE_ENCRYPTION_KEY is not set (it holds the cache encryption key) and cache.encryption.previous_keys_env: environment variable OLD_KEYS is not set',
    );
    expect(neither.stderr).toContain('set them as the gateway has them');
    expect(await cachedFiles()).toEqual(before);
    expectNoKeyIn(unset, malformed, neither);
  });

  test('with previous_keys_file unreadable, prefetch refuses and changes nothing, cache stats answers, and a purge still deletes', async () => {
    const before = await cacheUnderPreviousKey('previous_keys_file: old-keys');
    const current = { CACHE_ENCRYPTION_KEY: keyB.toString('base64') };
    const missingFile =
      'cache.encryption.previous_keys_file: file old-keys does not exist (it holds the previous cache encryption keys, comma-separated)';
    const requests = upstream.recordingRequests().length;

    const verify = await run(['cache', 'verify'], current);
    expect(verify.code).toBe(1);
    expect(verify.stderr).toContain(missingFile);

    const prefetch = await run(['prefetch', String(SMALL), '7'], current);
    expect(prefetch.code).toBe(1);
    expect(prefetch.stderr).toBe(`error: ${configPath()}: ${missingFile}`);
    expect(upstream.recordingRequests()).toHaveLength(requests);
    expect(await cachedFiles()).toEqual(before);

    const stats = await run(['cache', 'stats', '--json'], current);
    expect(stats.code).toBe(0);
    expect(JSON.parse(stats.stdout)).toMatchObject({ recordings: 2 });

    // Deleting needs no key: personal data must always be removable. No gateway
    // listens on port 1, so the CLI removes the files itself.
    const purged = await run(['cache', 'purge', '--all'], current);
    expect(purged.stderr).toBe('');
    expect(purged.stdout).toBe('purged 2 recordings');
    expect(purged.code).toBe(0);
    expect([...(await cachedFiles()).keys()].filter((file) => file.endsWith('.mp3') || file.endsWith('.peaks'))).toEqual([]);
    expectNoKeyIn(verify, prefetch, stats, purged);
  });
});
