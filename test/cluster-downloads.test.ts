/**
 * Issue 10, point 1: one upstream download per recording for the whole
 * cluster, whichever replica each client reaches, and a replica killed
 * mid-download leaves no client with a complete-looking short body.
 */
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { describe, expect, test } from 'vitest';
import { syntheticRecording } from '../dev/recording-bytes.js';
import {
  ACME_AUTH,
  answerOf,
  clusterFor,
  fakeUpstream,
  metricsText,
  metricValue,
  recordingPath,
  streamGet,
  upstreamFetches,
  type Cluster,
} from './support/cluster.js';

const MIB = 2 ** 20;
const MISS = 'recording-gateway; fwd=uri-miss';
const PEER_JOIN = 'recording-gateway; fwd=uri-miss; collapsed; detail=peer';

const upstream = fakeUpstream();

/** A client streams a slow download from replica 0; once 1 MiB has reached it, replica `joiner` joins that same download. */
async function lateJoinerOnAnotherReplica(cluster: Cluster, id: number, joiner: number): Promise<void> {
  const recording = syntheticRecording(8 * MIB);
  upstream().setRecording(id, recording);
  upstream().setBehaviour(id, { kind: 'slow-body', chunkBytes: 256 * 1024, intervalMs: 50 });

  const first = await streamGet(`${cluster.urls[0]}${recordingPath(id)}`, ACME_AUTH);
  expect(first.status).toBe(200);
  expect(first.headers['cache-status']).toBe(MISS);
  await first.reached(MIB);
  const late = await answerOf(cluster.at(joiner, recordingPath(id), { headers: ACME_AUTH }));

  expect(late.status).toBe(200);
  expect(late.cacheStatus).toBe(PEER_JOIN);
  expect(late.bytes.equals(recording)).toBe(true);
  expect((await first.body).bytes.equals(recording)).toBe(true);
  expect(upstreamFetches(upstream(), id)).toBe(1);
}

/** 100 concurrent cold GETs round robin over the replicas, for a recording that takes a moment to download. */
async function hundredColdRequests(cluster: Cluster, id: number): Promise<void> {
  const recording = syntheticRecording(MIB);
  upstream().setRecording(id, recording);
  upstream().setBehaviour(id, { kind: 'slow-body', chunkBytes: 64 * 1024, intervalMs: 20 });
  const upstreamRequestsBefore = await upstreamRequestsCounted(cluster);

  const answers = await Promise.all(Array.from({ length: 100 }, () => answerOf(cluster.get(recordingPath(id), { headers: ACME_AUTH }))));

  expect(answers.map((answer) => answer.status)).toEqual(Array(100).fill(200));
  expect(answers.filter((answer) => !answer.bytes.equals(recording))).toHaveLength(0);
  expect(upstreamFetches(upstream(), id)).toBe(1);
  // Exactly one request started the download; every other one joined it or found the copy.
  expect(answers.filter((answer) => answer.cacheStatus === MISS)).toHaveLength(1);
  // The replicas that streamed it from another one asked the upstream nothing, and their metrics say so.
  expect((await upstreamRequestsCounted(cluster)) - upstreamRequestsBefore).toBe(1);
}

/** The upstream requests that got a recording's head, as every replica's /metrics counts them, summed. */
async function upstreamRequestsCounted(cluster: Cluster): Promise<number> {
  const counts = await Promise.all(
    cluster.urls.map(
      async (url) => metricValue(await metricsText(url), 'gateway_upstream_request_duration_seconds_count', 'outcome="ok"') ?? 0,
    ),
  );
  return counts.reduce((sum, count) => sum + count, 0);
}

/** A GET read as it arrives and hashed, so 50 MB bodies are never held whole. */
function digestOf(url: string, headers: Record<string, string>): Promise<{ status: number; length: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false }, (response) => {
      const hash = createHash('sha256');
      let length = 0;
      response.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        length += chunk.length;
      });
      response.once('end', () => resolve({ status: response.statusCode ?? 0, length, sha256: hash.digest('hex') }));
      response.once('error', reject);
    });
    req.once('error', reject);
    req.end();
  });
}

describe.sequential('a cluster of three replicas on one shared volume', () => {
  const cluster = clusterFor(() => upstream().baseUrl, { volumes: 'shared' });

  test('100 concurrent cold requests spread over the replicas cost one upstream download, and all get the exact bytes', async () => {
    await hundredColdRequests(cluster(), 5001);
  });

  test('a late joiner on another replica streams the download under way (collapsed; detail=peer)', async () => {
    await lateJoinerOnAnotherReplica(cluster(), 5011, 1);
  });

  test("an upstream that refuses a download refuses it once for the cluster: every replica's clients get the holder's 502", async () => {
    const id = 5021;
    upstream().setRecording(id, syntheticRecording(64 * 1024));
    // Flyflow takes a moment, then rejects the key: no retry, and nothing another replica could do better.
    upstream().setBehaviour(id, { kind: 'status', status: 401, delayMs: 800 });
    const answers = await Promise.all(
      [0, 1, 2, 0, 1, 2].map((replica) => answerOf(cluster().at(replica, recordingPath(id), { headers: ACME_AUTH }))),
    );
    expect(answers.map((answer) => answer.status)).toEqual(Array(6).fill(502));
    const bodies = new Set(answers.map((answer) => answer.bytes.toString()));
    expect(bodies.size).toBe(1);
    expect(JSON.parse([...bodies][0]!)).toMatchObject({ error: 'Bad Gateway' });
    expect(upstreamFetches(upstream(), id)).toBe(1);
  });
});

describe.sequential('a cluster of three replicas with one volume each', () => {
  const cluster = clusterFor(() => upstream().baseUrl, { volumes: 'own' });

  test('100 concurrent cold requests spread over the replicas cost one upstream download, and all get the exact bytes', async () => {
    await hundredColdRequests(cluster(), 5101);
  });

  test('30 concurrent full and range requests for a slow 50 MB recording over three replicas: one upstream download, every byte right', async () => {
    const id = 5102;
    const size = 50 * MIB;
    const recording = syntheticRecording(size);
    const sha256 = createHash('sha256').update(recording).digest('hex');
    upstream().setRecording(id, recording);
    upstream().setBehaviour(id, { kind: 'slow-body', chunkBytes: MIB, intervalMs: 40 });

    // Every third request is a full GET; the others are ranges spread over
    // the file, some bounded and some open to its end.
    const ranges = Array.from({ length: 30 }, (_, i) => {
      if (i % 3 === 0) return undefined;
      const start = Math.floor((i / 30) * (size - 300 * 1024));
      return i % 3 === 1 ? { start, end: start + 256 * 1024 - 1 } : { start: size - 64 * 1024 - i * 1024, end: size - 1 };
    });
    const answers = await Promise.all(
      ranges.map(async (range, i) => {
        const url = `${cluster().urls[i % 3]}${recordingPath(id)}`;
        if (!range) return { range, full: await digestOf(url, ACME_AUTH) };
        const headers = { ...ACME_AUTH, range: `bytes=${range.start}-${range.end === size - 1 ? '' : range.end}` };
        return { range, part: await answerOf(fetch(url, { headers })) };
      }),
    );

    for (const { range, full, part } of answers) {
      if (!range) {
        expect(full).toEqual({ status: 200, length: size, sha256 });
        continue;
      }
      expect(part!.status).toBe(206);
      expect(part!.headers.get('content-range')).toBe(`bytes ${range.start}-${range.end}/${size}`);
      expect(part!.bytes.equals(recording.subarray(range.start, range.end + 1))).toBe(true);
    }
    expect(upstreamFetches(upstream(), id)).toBe(1);
  }, 60_000);

  test('a late joiner on another replica streams the download under way (collapsed; detail=peer)', async () => {
    await lateJoinerOnAnotherReplica(cluster(), 5103, 2);
  });

  test('a body that breaks while another replica streams it: the waiting clients of both replicas get it whole from a new download', async () => {
    const id = 5105;
    const recording = syntheticRecording(2 * MIB);
    upstream().setRecording(id, recording);
    upstream().setBehaviour(id, { kind: 'reset', afterBytes: 256 * 1024, pauseMs: 400, times: 1 });
    // Conditional requests wait for the whole recording: neither client has a byte when it breaks.
    const waiting = { 'If-None-Match': '"not-this-one"', ...ACME_AUTH };
    const onA = answerOf(cluster().at(0, recordingPath(id), { headers: waiting }));
    await new Promise((resolve) => setTimeout(resolve, 150));
    const onC = answerOf(cluster().at(2, recordingPath(id), { headers: waiting }));
    for (const answer of await Promise.all([onA, onC])) {
      expect(answer.status).toBe(200);
      expect(answer.bytes.equals(recording)).toBe(true);
    }
    expect(upstreamFetches(upstream(), id)).toBeLessThanOrEqual(3);
  }, 30_000);

  // Last in this block: it kills replica 0 for good.
  test('the replica that owns a download is killed with SIGKILL: the other replicas cut their clients short, and the next request downloads it once more', async () => {
    const id = 5104;
    const size = 8 * MIB;
    const recording = syntheticRecording(size);
    upstream().setRecording(id, recording);
    upstream().setBehaviour(id, { kind: 'slow-body', chunkBytes: 128 * 1024, intervalMs: 50 });

    const owner = await streamGet(`${cluster().urls[0]}${recordingPath(id)}`, ACME_AUTH);
    expect(owner.headers['cache-status']).toBe(MISS);
    await owner.reached(512 * 1024);
    const joiners = [await streamGet(`${cluster().urls[1]}${recordingPath(id)}`, ACME_AUTH)];
    joiners.push(await streamGet(`${cluster().urls[2]}${recordingPath(id)}`, ACME_AUTH));
    for (const joiner of joiners) {
      expect(joiner.status).toBe(200);
      expect(joiner.headers['cache-status']).toBe(PEER_JOIN);
      await joiner.reached(256 * 1024);
    }
    expect(upstreamFetches(upstream(), id)).toBe(1);

    await cluster().kill(0, 'SIGKILL');
    upstream().setBehaviour(id, undefined);

    for (const joiner of joiners) {
      const cut = await joiner.body;
      // Content-Length promised the whole recording; the body stops short of it, so no client can take it for whole.
      expect(joiner.headers['content-length']).toBe(String(size));
      expect(cut.complete).toBe(false);
      expect(cut.bytes.length).toBeLessThan(size);
      expect(cut.bytes.equals(recording.subarray(0, cut.bytes.length))).toBe(true);
    }
    expect((await owner.body).complete).toBe(false);

    const again = await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }));
    expect(again.status).toBe(200);
    expect(again.bytes.equals(recording)).toBe(true);
    expect(upstreamFetches(upstream(), id)).toBe(2);
    const onTheOther = await answerOf(cluster().at(2, recordingPath(id), { headers: ACME_AUTH }));
    expect(onTheOther.bytes.equals(recording)).toBe(true);
    expect(upstreamFetches(upstream(), id)).toBe(2);
  }, 60_000);
});
