/**
 * A fault on the path between two replicas (README, "How replicas talk to each
 * other": an answer without a valid proof counts as no answer). A TCP proxy
 * sits on gw-2's advertise_url, so gw-1 reaches gw-2 only through it; it
 * flips one byte of each answer, or cuts each answer short, 2000 bytes in. The
 * request that meets the bad answer may fail (as a transfer cut short, never a
 * body that looks whole), but gw-1 does not go back to that peer for that
 * recording: it downloads the recording from the upstream once, stores a good
 * copy and serves it. gw-2's copy is left alone: its files stay, and it stays
 * listed for the cluster, as the fault may lie on this path only.
 */
import { createServer, type Server, type Socket, connect } from 'node:net';
import { createClient } from '@keyv/redis';
import { afterAll, beforeAll, describe, expect, onTestFinished, test } from 'vitest';
import { namespaceFor } from '../dev/gateway-harness.js';
import { eventually, storedRecordingFiles, syntheticRecording } from '../dev/recording-bytes.js';
import { cacheKey } from '../src/cache/recording-meta.js';
import { clusterKeys } from '../src/cluster/cluster-keys.js';
import { ACME_AUTH, answerOf, clusterFor, fakeUpstream, readiness, recordingPath, streamGet, upstreamFetches } from './support/cluster.js';

const KIB = 1024;
/** Where in each answer (its status line counted) the proxy does harm. */
const FAULT_AT = 2000;

type Fault = 'none' | 'flip' | 'cut';

/** What the proxy does to each answer from gw-2, from the next one on. */
let fault: Fault = 'none';
/** gw-2's own port, known once it runs; until then the proxy refuses connections. */
let holderPort: number | undefined;

/**
 * A TCP proxy in front of gw-2. Each request the client sends starts a new
 * answer (HTTP/1.1 without pipelining), counted from its first byte.
 */
function startPathProxy(): Promise<{ server: Server; port: number }> {
  const server = createServer((client: Socket) => {
    client.on('error', () => {});
    if (holderPort === undefined) {
      client.destroy();
      return;
    }
    const holder = connect(holderPort, '127.0.0.1');
    holder.on('error', () => {});
    let answered = 0;
    let cut = false;
    client.on('data', (data: Buffer) => {
      answered = 0;
      holder.write(data);
    });
    holder.on('data', (data: Buffer) => {
      if (cut) return;
      let out = data;
      if (fault !== 'none' && answered <= FAULT_AT && answered + data.length > FAULT_AT) {
        if (fault === 'cut') {
          cut = true;
          client.end(data.subarray(0, FAULT_AT - answered));
          holder.destroy();
          return;
        }
        out = Buffer.from(data);
        out[FAULT_AT - answered]! ^= 1;
      }
      answered += data.length;
      client.write(out);
    });
    holder.on('close', () => client.end());
    client.on('close', () => holder.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      resolve({ server, port: typeof address === 'object' && address ? address.port : 0 });
    });
  });
}

const upstream = fakeUpstream();

let proxy: { server: Server; port: number } | undefined;
beforeAll(async () => {
  proxy = await startPathProxy();
});
afterAll(async () => {
  await new Promise((resolve) => (proxy ? proxy.server.close(resolve) : resolve(undefined)));
});

const cluster = clusterFor(() => upstream().baseUrl, {
  replicas: 2,
  volumes: 'own',
  upstreamYaml: ['timeout_ms: 20000'],
  clusterYaml: ['redis_timeout_ms: 1000'],
  clusterYamlFor: (index) => (index === 1 ? [`advertise_url: http://127.0.0.1:${proxy!.port}`] : []),
});

beforeAll(async () => {
  holderPort = cluster().replicas[1]!.process.port;
  // gw-1 knows gw-2 (at the proxy's address) from one of its heartbeats on.
  expect(await eventually(async () => (await readiness(cluster().urls[0]!)).body.cluster?.peers === 1, 10_000)).toBe(true);
});

async function redisClient() {
  const redis = createClient({ url: cluster().redis.url });
  redis.on('error', () => {});
  await redis.connect();
  return redis;
}

/** The volumes the cluster's Redis lists a copy of recording `id` on. */
async function listedVolumes(id: number): Promise<string[]> {
  const redis = await redisClient();
  onTestFinished(() => redis.destroy());
  const key = cacheKey(namespaceFor(upstream().baseUrl), String(id));
  return Object.keys(await redis.hGetAll(clusterKeys.copies(key))).sort();
}

const volumeOf = (index: number) => String(cluster().replicas[index]!.ready?.volume);

/** gw-2 downloads and stores recording `id`, and the cluster lists its copy. */
async function storedOnGw2(id: number, recording: Buffer): Promise<void> {
  fault = 'none';
  upstream().setRecording(id, recording);
  const onGw2 = await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }));
  expect(onGw2.status).toBe(200);
  expect(onGw2.bytes.equals(recording)).toBe(true);
  const gw2Dir = cluster().replicas[1]!.cacheDir;
  expect(await eventually(async () => (await storedRecordingFiles(gw2Dir)).some((file) => file.path.endsWith(`/${id}.mp3`)))).toBe(true);
  expect(await eventually(async () => (await listedVolumes(id)).includes(volumeOf(1)))).toBe(true);
  expect(upstreamFetches(upstream(), id)).toBe(1);
}

/** What gw-1's client gets: never a body that looks whole but is not the recording. */
async function onGw1(id: number, recording: Buffer) {
  const answer = await streamGet(`${cluster().urls[0]}${recordingPath(id)}`, ACME_AUTH);
  const body = await answer.body;
  if (body.complete && answer.status === 200) expect(body.bytes.equals(recording)).toBe(true);
  return { status: answer.status, cacheStatus: String(answer.headers['cache-status']), ...body };
}

/** After the bad answer: gw-1 serves its own good copy from now on, and gw-2's copy is neither deleted nor unlisted. */
async function afterwards(id: number, recording: Buffer): Promise<void> {
  const again = await onGw1(id, recording);
  expect(again.status).toBe(200);
  expect(again.complete).toBe(true);
  expect(again.bytes.equals(recording)).toBe(true);
  expect(again.cacheStatus).not.toContain('detail=peer');
  expect(upstreamFetches(upstream(), id)).toBe(2);
  const gw1Dir = cluster().replicas[0]!.cacheDir;
  expect(await eventually(async () => (await storedRecordingFiles(gw1Dir)).some((file) => file.path.endsWith(`/${id}.mp3`)))).toBe(true);
  // A hit once its download has been stored (until then a request joins that download): whole, and no new upstream download.
  const servedAsHit = await eventually(async () => {
    const answer = await onGw1(id, recording);
    expect(answer.status).toBe(200);
    expect(answer.complete).toBe(true);
    expect(answer.cacheStatus).not.toContain('detail=peer');
    return answer.cacheStatus.includes('hit');
  });
  expect(servedAsHit).toBe(true);
  expect(upstreamFetches(upstream(), id)).toBe(2);
  // The fault was on the path: gw-2's copy stays on its volume and listed, and gw-2 serves it.
  const gw2Dir = cluster().replicas[1]!.cacheDir;
  expect((await storedRecordingFiles(gw2Dir)).some((file) => file.path.endsWith(`/${id}.mp3`))).toBe(true);
  expect(await listedVolumes(id)).toContain(volumeOf(1));
  const onGw2 = await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }));
  expect(onGw2.cacheStatus).toContain('hit');
  expect(onGw2.bytes.equals(recording)).toBe(true);
}

describe.sequential('a fault on the path to the replica holding a copy: the next source, in the end the upstream, not the same peer again', () => {
  test('one byte flipped in a small copy, asked for while no byte has gone out: the same request gets the recording from the upstream', async () => {
    const id = 9101;
    const recording = syntheticRecording(24 * KIB);
    await storedOnGw2(id, recording);
    fault = 'flip';
    // A conditional request waits for the whole recording: nobody has a byte of gw-2's answer when its trailer fails.
    const first = await answerOf(cluster().at(0, recordingPath(id), { headers: { 'If-None-Match': '"not-this-one"', ...ACME_AUTH } }));
    expect(first.status).toBe(200);
    expect(first.bytes.equals(recording)).toBe(true);
    expect(first.cacheStatus).not.toContain('detail=peer');
    expect(upstreamFetches(upstream(), id)).toBe(2);
    const warned = await cluster().replicas[0]!.process.waitForLog((line) => String(line.msg).includes('passed over for it'), 5_000);
    expect(warned.peer).toBe(`http://127.0.0.1:${proxy!.port}`);
    await afterwards(id, recording);
  }, 30_000);

  test('one byte flipped in a small copy, a plain GET: answered whole from the upstream, or cut short; then served from its own copy', async () => {
    const id = 9102;
    const recording = syntheticRecording(21 * KIB);
    await storedOnGw2(id, recording);
    fault = 'flip';
    const first = await onGw1(id, recording);
    expect(first.status).toBe(200);
    await afterwards(id, recording);
  }, 30_000);

  test('one byte flipped in a larger copy, whose first bytes reach the client: the first answer is cut short, the next is whole', async () => {
    const id = 9103;
    const recording = syntheticRecording(160 * KIB);
    await storedOnGw2(id, recording);
    fault = 'flip';
    const first = await onGw1(id, recording);
    expect(first.status).toBe(200);
    if (first.complete) expect(first.bytes.equals(recording)).toBe(true);
    else expect(first.bytes.length).toBeLessThan(recording.length);
    await afterwards(id, recording);
  }, 30_000);

  test('every answer cut 2000 bytes in: the first answer may be cut short, the next is whole from the upstream', async () => {
    const id = 9104;
    const recording = syntheticRecording(23 * KIB);
    await storedOnGw2(id, recording);
    fault = 'cut';
    const first = await onGw1(id, recording);
    expect(first.status).toBe(200);
    if (!first.complete) expect(first.bytes.length).toBeLessThan(recording.length);
    await afterwards(id, recording);
  }, 30_000);
});
