/**
 * Issue 10, points 2 and 5: copies are found, never destroyed, across
 * replicas with their own volumes, also while one sharing a volume has just died; replicas sharing a volume keep its disk
 * budget together, also while Redis is down; and replicas reach each other only with the peer secret.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import { createClient } from '@keyv/redis';
import { afterAll, beforeAll, describe, expect, onTestFinished, test } from 'vitest';
import { ACME_KEY, ACME_SIGNING_SECRET, SERVER_KEY, expectedEtag, namespaceFor } from '../dev/gateway-harness.js';
import { runCliProcess } from '../dev/run-cli.js';
import { loadFixtureRecordings } from '../dev/fake-flyflow.js';
import { eventually, storedRecordingFiles, syntheticRecording } from '../dev/recording-bytes.js';
import { signPeerRequest } from '../src/cluster/peer-auth.js';
import {
  ACME_AUTH,
  ACME_WEBHOOK_TOKEN,
  answerOf,
  type Cluster,
  clusterFor,
  copySettled,
  fakeUpstream,
  metricValue,
  metricsText,
  readiness,
  recordingPath,
  redisProxy,
  streamGet,
  upstreamFetches,
} from './support/cluster.js';

const KIB = 1024;
const PEER_COPY = 'recording-gateway; fwd=uri-miss; detail=peer';
const DISK_BUDGET = 150 * KIB;

const upstream = fakeUpstream();

/** `path size` of every file under `<cacheDir>/recordings`, sorted. */
async function listing(cacheDir: string): Promise<string[]> {
  return (await storedRecordingFiles(cacheDir)).map((file) => `${file.path} ${file.size}`).sort();
}

describe.sequential('replicas with a volume each', () => {
  const cluster = clusterFor(() => upstream().baseUrl, { volumes: 'own' });

  test('each replica announces its own volume and the URL its peers reach it at', () => {
    const replicas = cluster().replicas;
    expect(new Set(replicas.map((replica) => replica.ready?.volume)).size).toBe(replicas.length);
    for (const replica of replicas) expect(replica.ready?.advertise).toBe(replica.url);
  });

  test("a recording stored by A and then asked of B is served from A's copy, with no new upstream download", async () => {
    const id = 8001;
    const recording = syntheticRecording(256 * KIB);
    upstream().setRecording(id, recording);
    const onA = await answerOf(cluster().at(0, recordingPath(id), { headers: ACME_AUTH }));
    expect(onA.status).toBe(200);
    expect(await eventually(() => copySettled(cluster(), 0, id, upstream().baseUrl))).toBe(true);

    const onB = await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }));
    expect(onB.status).toBe(200);
    expect(onB.cacheStatus).toBe(PEER_COPY);
    expect(onB.bytes.equals(recording)).toBe(true);
    // A stored copy's digest is known before its bytes come: the answer carries the ETag a hit would.
    expect(onB.headers.get('etag')).toBe(expectedEtag(recording));
    const onC = await answerOf(cluster().at(2, recordingPath(id), { headers: ACME_AUTH }));
    expect(onC.bytes.equals(recording)).toBe(true);
    expect(upstreamFetches(upstream(), id)).toBe(1);
    // B's bytes came from A, not from Flyflow: its metrics say so.
    const onBMetrics = await metricsText(cluster().urls[1]!);
    expect(metricValue(onBMetrics, 'gateway_served_bytes_total\\{tier="peer"\\}')).toBe(recording.length);
    expect(metricValue(onBMetrics, 'gateway_served_bytes_total\\{tier="upstream"\\}')).toBeUndefined();
  });

  test("a copy damaged on A's volume is not stored on B's: B withdraws it from the cluster's listing, and C then fetches from upstream", async () => {
    const id = 8002;
    // Over the memory tier's entry size (32 MiB by default): A streams it from its file, checking it only as it goes
    // (its last bytes wait for that check), and B checks what it receives against the digest Redis lists.
    const recording = syntheticRecording(33 * 2 ** 20);
    upstream().setRecording(id, recording);
    expect((await answerOf(cluster().at(0, recordingPath(id), { headers: ACME_AUTH }))).status).toBe(200);
    const onA = () => storedRecordingFiles(cluster().replicas[0]!.cacheDir);
    expect(await eventually(() => copySettled(cluster(), 0, id, upstream().baseUrl))).toBe(true);
    const file = (await onA()).find((entry) => entry.path.endsWith(`/${id}.mp3`))!;
    const handle = await open(file.path, 'r+');
    await handle.write(Buffer.from('XXXXXXXX'), 0, 8, 2_000_000);
    await handle.close();

    const onB = await streamGet(`${cluster().urls[1]}${recordingPath(id)}`, ACME_AUTH);
    expect(onB.headers['cache-status']).toBe(PEER_COPY);
    // Its last bytes wait for the digest: B's client gets a transfer cut short, never the damaged copy whole.
    const received = await onB.body;
    expect(received.complete).toBe(false);
    expect(received.bytes.length).toBeLessThan(recording.length);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await storedRecordingFiles(cluster().replicas[1]!.cacheDir)).filter((entry) => entry.path.endsWith(`/${id}.mp3`))).toEqual([]);

    const onC = await answerOf(cluster().at(2, recordingPath(id), { headers: ACME_AUTH }));
    expect(onC.cacheStatus).toContain('fwd=uri-miss');
    expect(onC.cacheStatus).not.toContain('detail=peer');
    expect(onC.bytes.equals(recording)).toBe(true);
    expect(upstreamFetches(upstream(), id)).toBe(2);
  }, 60_000);

  test("a CLI prefetch on A's volume: A serves it from disk, and from then on B gets A's copy, with no new upstream download", async () => {
    const id = 8003;
    const recording = syntheticRecording(100 * KIB);
    upstream().setRecording(id, recording);
    const a = cluster().replicas[0]!;
    const env = {
      FLYFLOW_API_KEY: SERVER_KEY,
      GATEWAY_PEER_SECRET: cluster().peerSecret,
      ACME_SIGNING_SECRET,
      ACME_WEBHOOK_TOKEN,
    };
    const prefetched = await runCliProcess(['--config', a.configPath, 'prefetch', String(id)], { env, timeoutMs: 30_000 });
    expect(prefetched.code).toBe(0);
    expect(upstreamFetches(upstream(), id)).toBe(1);

    const onA = await answerOf(cluster().at(0, recordingPath(id), { headers: ACME_AUTH }));
    expect(onA.cacheStatus).toBe('recording-gateway; hit; detail=disk');
    const onB = await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }));
    expect(onB.cacheStatus).toBe(PEER_COPY);
    expect(onB.bytes.equals(recording)).toBe(true);
    expect(upstreamFetches(upstream(), id)).toBe(1);
  });

  test("a DELETE answered by B while a CLI prefetch downloads on A's volume: the prefetch stores nothing, no replica serves it", async () => {
    const id = 8004;
    const recording = syntheticRecording(100 * KIB);
    upstream().setRecording(id, recording);
    upstream().setBehaviour(id, { kind: 'gate' });
    const a = cluster().replicas[0]!;
    const env = {
      FLYFLOW_API_KEY: SERVER_KEY,
      GATEWAY_PEER_SECRET: cluster().peerSecret,
      ACME_SIGNING_SECRET,
      ACME_WEBHOOK_TOKEN,
    };
    const prefetching = runCliProcess(['--config', a.configPath, 'prefetch', String(id)], { env, timeoutMs: 30_000 });
    expect(await eventually(async () => upstreamFetches(upstream(), id) === 1, 20_000)).toBe(true);

    // B purges for the cluster: every live replica, A included, drops the recording before the 204.
    expect((await cluster().at(1, recordingPath(id), { method: 'DELETE', headers: ACME_AUTH })).status).toBe(204);
    upstream().release(id);
    const prefetched = await prefetching;
    expect(prefetched.code).toBe(1);
    expect(prefetched.stdout).toContain('purged while it downloaded, so not stored');
    expect((await storedRecordingFiles(a.cacheDir)).filter((file) => file.path.endsWith(`/${id}.mp3`))).toEqual([]);

    for (const replica of [0, 1]) {
      const answer = await answerOf(cluster().at(replica, recordingPath(id), { headers: ACME_AUTH }));
      expect(answer.cacheStatus).not.toContain('hit');
      expect(answer.bytes.equals(recording)).toBe(true);
    }
  });

  test("a conditional DELETE on B is judged against the copy on A's volume: a stale If-Match is 412 and keeps it, the current one purges it", async () => {
    const id = 8006;
    const recording = syntheticRecording(64 * KIB);
    upstream().setRecording(id, recording);
    const onA = async () => (await storedRecordingFiles(cluster().replicas[0]!.cacheDir)).some((file) => file.path.endsWith(`/${id}.mp3`));
    expect((await answerOf(cluster().at(0, recordingPath(id), { headers: ACME_AUTH }))).status).toBe(200);
    expect(await eventually(() => copySettled(cluster(), 0, id, upstream().baseUrl))).toBe(true);
    expect(await onA()).toBe(true);

    const stale = await cluster().at(1, recordingPath(id), { method: 'DELETE', headers: { ...ACME_AUTH, 'if-match': '"stale"' } });
    expect(stale.status).toBe(412);
    expect(await onA()).toBe(true);

    const current = await cluster().at(1, recordingPath(id), {
      method: 'DELETE',
      headers: { ...ACME_AUTH, 'if-match': expectedEtag(recording) },
    });
    expect(current.status).toBe(204);
    expect(await onA()).toBe(false);
    expect(upstreamFetches(upstream(), id)).toBe(1);
  });

  test("restarting B and C removes none of A's files and makes nobody download A's recordings again", async () => {
    const ids = [8101, 8102, 8103];
    for (const id of ids) {
      upstream().setRecording(id, syntheticRecording(64 * KIB + id));
      expect((await answerOf(cluster().at(0, recordingPath(id), { headers: ACME_AUTH }))).status).toBe(200);
    }
    const aDir = cluster().replicas[0]!.cacheDir;
    expect(await eventually(async () => (await storedRecordingFiles(aDir)).length >= ids.length + 1)).toBe(true);
    const before = await listing(aDir);

    await cluster().restart(1);
    await cluster().restart(2);

    const after = await listing(aDir);
    expect(before.filter((file) => !after.includes(file))).toEqual([]);
    for (const id of ids) {
      const onA = await answerOf(cluster().at(0, recordingPath(id), { headers: ACME_AUTH }));
      expect(onA.cacheStatus).toContain('hit');
      const onB = await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }));
      expect(onB.status).toBe(200);
      expect(onB.bytes.equals(upstream().recording(id)!)).toBe(true);
      expect(upstreamFetches(upstream(), id)).toBe(1);
    }
  }, 60_000);

  test('`cache purge` with the config of a replica that is down purges nothing and says so: alone it would reach its own volume only', async () => {
    const id = 8010;
    const recording = syntheticRecording(64 * KIB);
    upstream().setRecording(id, recording);
    expect((await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }))).bytes.equals(recording)).toBe(true);
    const c = cluster().replicas[2]!;
    await cluster().kill(2, 'SIGTERM');
    try {
      const env = { FLYFLOW_API_KEY: SERVER_KEY, GATEWAY_PEER_SECRET: cluster().peerSecret, ACME_SIGNING_SECRET, ACME_WEBHOOK_TOKEN };
      const purged = await runCliProcess(['--config', c.configPath, 'cache', 'purge', '--call', String(id)], { env, timeoutMs: 30_000 });
      expect(purged.code).toBe(1);
      expect(purged.stderr).toContain('in a cluster a purge goes through a running replica');
      expect(purged.stderr).toContain('nothing was purged');
      const onB = await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }));
      expect(onB.cacheStatus).toContain('hit');
    } finally {
      await cluster().restart(2);
    }
  }, 60_000);

  test('the internal routes answer only requests signed with the peer secret: no credential, a tenant key, a wrong secret or the secret itself is 401', async () => {
    const namespace = namespaceFor(upstream().baseUrl);
    const id = 8001; // stored on replica 0 by the first test
    const routes: Array<[string, string]> = [
      ['GET', `/internal/v1/recordings/${namespace}/${id}`],
      ['POST', `/internal/v1/purge/${namespace}/999999`],
    ];
    const refused: Array<Record<string, string>> = [
      {},
      { authorization: `Bearer ${ACME_KEY}` },
      { authorization: `Bearer ${cluster().peerSecret.slice(1)}x` },
      { authorization: cluster().peerSecret },
      { authorization: `Bearer ${cluster().peerSecret}` },
    ];
    for (const [method, route] of routes) {
      for (const headers of refused) {
        const response = await cluster().at(0, route, { method, headers });
        expect(response.status, `${method} ${route} with ${JSON.stringify(Object.keys(headers))}`).toBe(401);
        expect(response.headers.get('content-type')).toMatch(/^application\/json/);
        const body = (await response.json()) as Record<string, unknown>;
        expect(Object.keys(body).sort()).toEqual(['error', 'message']);
        expect(JSON.stringify(body)).not.toContain(cluster().peerSecret);
      }
    }

    const peer = (method: string, path: string) => ({
      authorization: signPeerRequest(cluster().peerSecret, { method, path, node: 'gw-test' }).authorization,
    });
    const copy = await answerOf(cluster().at(0, routes[0]![1], { headers: peer('GET', routes[0]![1]) }));
    expect(copy.status).toBe(200);
    // A signed head line (the recording's size and type), its bytes, then a signed trailer (cluster-peer-auth.test.ts).
    const newline = copy.bytes.indexOf(0x0a);
    const headLine = copy.bytes.subarray(0, newline).toString('utf8');
    expect(JSON.parse(headLine.slice(headLine.indexOf(' ') + 1))).toMatchObject({ size: upstream().recording(id)!.length });
    const size = upstream().recording(id)!.length;
    expect(copy.bytes.subarray(newline + 1, newline + 1 + size).equals(upstream().recording(id)!)).toBe(true);
    const purge = await cluster().at(0, routes[1]![1], { method: 'POST', headers: peer('POST', routes[1]![1]) });
    await purge.arrayBuffer();
    expect(purge.status).toBeLessThan(300);

    // A method the route does not take is 405 with its Allow, as on every public route.
    for (const [method, route, allow] of [
      ['POST', routes[0]![1], 'GET, HEAD, OPTIONS'],
      ['GET', routes[1]![1], 'POST, OPTIONS'],
    ] as const) {
      const wrong = await cluster().at(0, route, { method, headers: peer(method, route) });
      expect(wrong.status, `${method} ${route}`).toBe(405);
      expect(wrong.headers.get('allow')).toBe(allow);
      expect(await wrong.json()).toMatchObject({ error: 'Method Not Allowed' });
    }
  });
});

describe.sequential('two replicas sharing a volume, a third with its own', () => {
  const cluster = clusterFor(() => upstream().baseUrl, { volumes: [0, 0, 1] });

  test("one of the two killed a moment ago (still listed until it misses its beats): the third gets the other's copy through it, not from upstream", async () => {
    const [a, b, c] = cluster().replicas;
    expect(a!.ready?.volume).toBe(b!.ready?.volume);
    expect(c!.ready?.volume).not.toBe(a!.ready?.volume);
    await cluster().kill(0, 'SIGKILL');
    const id = 8201;
    const recording = syntheticRecording(256 * KIB);
    upstream().setRecording(id, recording);
    const onB = await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }));
    expect(onB.status).toBe(200);
    expect(await eventually(() => copySettled(cluster(), 1, id, upstream().baseUrl))).toBe(true);

    const onC = await answerOf(cluster().at(2, recordingPath(id), { headers: ACME_AUTH }));
    expect(onC.status).toBe(200);
    expect(onC.cacheStatus).toBe(PEER_COPY);
    expect(onC.bytes.equals(recording)).toBe(true);
    expect(upstreamFetches(upstream(), id)).toBe(1);
  });
});

describe.sequential('replicas with a volume each, the second with a lower cache.max_recording_bytes', () => {
  const cluster = clusterFor(() => upstream().baseUrl, {
    replicas: 2,
    volumes: 'own',
    cacheYamlFor: (index) => (index === 1 ? ['max_recording_bytes: 100KiB'] : []),
  });
  const OVER_LIMIT = { error: 'Bad Gateway', message: 'Recording is larger than cache.max_recording_bytes' };

  test("a recording over B's limit, stored by A: B answers 502 as it would from upstream, and stores nothing", async () => {
    const id = 8301;
    const recording = syntheticRecording(256 * KIB);
    upstream().setRecording(id, recording);
    expect((await answerOf(cluster().at(0, recordingPath(id), { headers: ACME_AUTH }))).status).toBe(200);
    expect(await eventually(() => copySettled(cluster(), 0, id, upstream().baseUrl))).toBe(true);

    for (let attempt = 0; attempt < 2; attempt++) {
      const onB = await cluster().at(1, recordingPath(id), { headers: ACME_AUTH });
      expect(onB.status).toBe(502);
      expect(await onB.json()).toEqual(OVER_LIMIT);
    }
    expect(await storedRecordingFiles(cluster().replicas[1]!.cacheDir)).toEqual([]);
    expect(upstreamFetches(upstream(), id)).toBe(1);
    // A, whose limit is higher, goes on serving it.
    const again = await answerOf(cluster().at(0, recordingPath(id), { headers: ACME_AUTH }));
    expect(again.bytes.equals(recording)).toBe(true);
  });

  test("a recording over B's limit, still downloading on A: B answers 502 rather than stream A's download, and stores nothing", async () => {
    const id = 8302;
    const recording = syntheticRecording(256 * KIB);
    upstream().setRecording(id, recording);
    upstream().setBehaviour(id, { kind: 'gate' });
    const onA = await streamGet(`${cluster().urls[0]}${recordingPath(id)}`, ACME_AUTH);
    expect(onA.status).toBe(200);
    const onB = await cluster().at(1, recordingPath(id), { headers: ACME_AUTH });
    expect(onB.status).toBe(502);
    expect(await onB.json()).toEqual(OVER_LIMIT);
    upstream().release(id);
    const onABody = await onA.body;
    expect(onABody.complete).toBe(true);
    expect(onABody.bytes.equals(recording)).toBe(true);
    expect(await storedRecordingFiles(cluster().replicas[1]!.cacheDir)).toEqual([]);
    expect(upstreamFetches(upstream(), id)).toBe(1);
  });
});

/** Two replicas on `volumes`, only the second with cache.encryption. */
function secondEncrypting(volumes: 'shared' | 'own') {
  return clusterFor(() => upstream().baseUrl, {
    replicas: 2,
    volumes,
    cacheYamlFor: (index) => (index === 1 ? ['encryption: { key_env: CACHE_ENCRYPTION_KEY }'] : []),
    envFor: (index): Record<string, string> => (index === 1 ? { CACHE_ENCRYPTION_KEY: randomBytes(32).toString('base64') } : {}),
  });
}

describe.sequential('replicas sharing one volume, only the second with cache.encryption', () => {
  const cluster = secondEncrypting('shared');
  const conflict = (line: Record<string, unknown>) =>
    String(line.msg).startsWith('cluster: a replica sharing this volume has other cache.encryption keys');

  test("each says, once, that the other's keys make it remove the files the other writes, naming it", async () => {
    const [plain, encrypting] = cluster().replicas;
    const onPlain = await plain!.process.waitForLog(conflict, 15_000);
    expect(onPlain).toMatchObject({ level: 50, peer: encrypting!.nodeId });
    expect(String(onPlain.msg)).toContain('it encrypts the files it writes');
    const onEncrypting = await encrypting!.process.waitForLog(conflict, 15_000);
    expect(onEncrypting).toMatchObject({ level: 50, peer: plain!.nodeId });
    expect(String(onEncrypting.msg)).toContain('it writes files in the clear');
    // Said once, not at every heartbeat (every 2 s).
    await new Promise((resolve) => setTimeout(resolve, 4_500));
    expect(plain!.process.logs.filter(conflict)).toHaveLength(1);
    expect(encrypting!.process.logs.filter(conflict)).toHaveLength(1);
  });
});

describe.sequential('replicas with a volume each, only the second with cache.encryption', () => {
  const cluster = secondEncrypting('own');

  test('say nothing of it: their files are their own', async () => {
    const [plain, encrypting] = cluster().replicas;
    // A heartbeat each (every 2 s) after both were up: each has read the other's.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(plain!.process.logs.length).toBeGreaterThan(0);
    for (const replica of [plain!, encrypting!]) {
      expect(replica.process.logs.some((line) => String(line.msg).includes('other cache.encryption keys'))).toBe(false);
    }
  });
});

describe.sequential('replicas sharing one volume with a 150 KiB disk budget', () => {
  const cluster = clusterFor(() => upstream().baseUrl, {
    volumes: 'shared',
    cacheYaml: ['max_disk_bytes: 150KiB', 'max_recording_bytes: 150KiB'],
  });

  test('the replicas announce one and the same volume', () => {
    const volumes = new Set(cluster().replicas.map((replica) => replica.ready?.volume));
    expect(volumes.size).toBe(1);
    expect([...volumes][0]).toEqual(expect.any(String));
  });

  test('recordings fetched round robin over the replicas: the files on the volume stay within the budget together', async () => {
    const recordings = await loadFixtureRecordings();
    for (let id = 9001; id <= 9008; id++) recordings.set(id, syntheticRecording(40 * KIB + id));
    for (const [id, bytes] of recordings) upstream().setRecording(id, bytes);
    const total = [...recordings.values()].reduce((sum, bytes) => sum + bytes.length, 0);
    expect(total).toBeGreaterThan(2 * DISK_BUDGET);

    for (let pass = 0; pass < 2; pass++) {
      for (const [id, bytes] of recordings) {
        const answer = await answerOf(cluster().get(recordingPath(id), { headers: ACME_AUTH }));
        expect(answer.status).toBe(200);
        expect(answer.bytes.equals(bytes)).toBe(true);
      }
    }

    const [cacheDir] = cluster().cacheDirs;
    let onDisk = 0;
    const settled = await eventually(async () => {
      onDisk = (await storedRecordingFiles(cacheDir!)).reduce((sum, file) => sum + file.size, 0);
      return onDisk <= DISK_BUDGET;
    }, 10_000);
    expect(settled, `${onDisk} bytes on the shared volume`).toBe(true);
    expect(onDisk).toBeGreaterThan(0);
  }, 60_000);

  test('recordings stored one after another by alternating replicas: the volume is never over its budget, not even for a moment', async () => {
    const [cacheDir] = cluster().cacheDirs;
    const redis = createClient({ url: cluster().redis.url });
    redis.on('error', () => {});
    await redis.connect();
    onTestFinished(() => redis.destroy());
    const onDisk = async () => (await storedRecordingFiles(cacheDir!)).reduce((sum, file) => sum + file.size, 0);
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await onDisk().catch(() => 0));
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    })();
    try {
      for (let id = 9101; id <= 9109; id++) {
        const bytes = syntheticRecording(45 * KIB + id);
        upstream().setRecording(id, bytes);
        const answer = await answerOf(cluster().at(id % 3, recordingPath(id), { headers: ACME_AUTH }));
        expect(answer.bytes.equals(bytes)).toBe(true);
        // Stored and listed in Redis (what the next store counts) before the next one starts: each store meets a full volume alone.
        const stored = await eventually(
          async () =>
            (await storedRecordingFiles(cacheDir!)).some((file) => file.path.endsWith(`/${id}.mp3`)) &&
            (await redis.hLen(`rg:copies:${namespaceFor(upstream().baseUrl)}/${id}`)) > 0,
        );
        expect(stored).toBe(true);
        // The sampler may not get a turn on a loaded machine: what is on the volume now counts too.
        peak = Math.max(peak, await onDisk());
      }
    } finally {
      sampling = false;
      await sampler;
    }
    expect(peak).toBeGreaterThan(2 * 45 * KIB);
    expect(peak, `peak ${peak} bytes on the shared volume`).toBeLessThanOrEqual(DISK_BUDGET);
  }, 60_000);
});

// Two fit the budget, three do not (the suites with Redis out of reach).
const RECORDING_BYTES = 60 * KIB;

/** The bytes of the recordings on the replicas' shared volume. */
async function bytesOnVolume(cluster: Cluster): Promise<number> {
  return (await storedRecordingFiles(cluster.cacheDirs[0]!)).reduce((sum, file) => sum + file.size, 0);
}

/** Fetches a new recording through replica `index` and waits until that replica has stored it (answers it as a hit). */
async function storeNewThrough(cluster: Cluster, index: number, id: number): Promise<void> {
  const bytes = syntheticRecording(RECORDING_BYTES);
  upstream().setRecording(id, bytes);
  const answer = await answerOf(cluster.at(index, recordingPath(id), { headers: ACME_AUTH }));
  expect(answer.bytes.equals(bytes)).toBe(true);
  const stored = await eventually(async () => {
    const again = await answerOf(cluster.at(index, recordingPath(id), { headers: ACME_AUTH }));
    return (again.cacheStatus ?? '').includes('hit');
  });
  expect(stored, `${id} stored through replica ${index}`).toBe(true);
}

describe.sequential('two replicas sharing one volume with a 150 KiB disk budget, Redis stopped', () => {
  const cluster = clusterFor(() => upstream().baseUrl, {
    replicas: 2,
    volumes: 'shared',
    cacheYaml: ['max_disk_bytes: 150KiB', 'max_recording_bytes: 100KiB'],
  });
  const onDisk = () => bytesOnVolume(cluster());
  const storeThrough = (index: number, id: number) => storeNewThrough(cluster(), index, id);

  test("recordings stored one after another by alternating replicas: the volume stays within the budget, kept from the volume's own index", async () => {
    await cluster().stopRedis();
    for (let id = 9301; id <= 9306; id++) {
      await storeThrough(id % 2, id);
      expect(await onDisk(), `bytes on the volume once ${id} is stored`).toBeLessThanOrEqual(DISK_BUDGET);
    }
  }, 60_000);

  test('the budget lowered while Redis is down: once Redis is back the volume is brought within it, with no store', async () => {
    const lowered = 100 * KIB;
    for (let id = 9311; id <= 9312; id++) await storeThrough(0, id);
    await cluster().stopRedis();
    for (const replica of cluster().replicas) {
      const config = await readFile(replica.configPath, 'utf8');
      await writeFile(replica.configPath, config.replace('max_disk_bytes: 150KiB', `max_disk_bytes: ${lowered}`));
      await cluster().restart(replica.index);
    }
    expect(await onDisk()).toBeGreaterThan(lowered);

    await cluster().restartRedis();
    let bytes = 0;
    const settled = await eventually(async () => {
      bytes = await onDisk();
      return bytes <= lowered;
    }, 10_000);
    expect(settled, `${bytes} bytes on the volume`).toBe(true);
    expect(bytes).toBeGreaterThan(0);
  }, 60_000);
});

describe.sequential('two replicas sharing one volume with a 150 KiB disk budget, only the second cut off from Redis', () => {
  const proxy = redisProxy();
  let proxyPort = 0;
  beforeAll(async () => {
    proxyPort = await proxy.listen();
  });
  afterAll(() => proxy.close());
  const cluster = clusterFor(() => upstream().baseUrl, {
    replicas: 2,
    volumes: 'shared',
    cacheYaml: ['max_disk_bytes: 150KiB', 'max_recording_bytes: 100KiB'],
    redisUrlFor: (index, url) => (index === 1 ? proxy.urlFor(url, proxyPort) : url),
  });

  test("recordings stored one after another by alternating replicas: the first, judging from Redis, counts the second's stores Redis was not told of", async () => {
    proxy.cut();
    expect(await eventually(async () => (await readiness(cluster().urls[1]!)).body.cluster?.redis === 'unreachable')).toBe(true);
    for (let id = 9321; id <= 9325; id++) {
      await storeNewThrough(cluster(), id % 2, id);
      expect(await bytesOnVolume(cluster()), `bytes on the volume once ${id} is stored`).toBeLessThanOrEqual(DISK_BUDGET);
    }
  }, 60_000);
});
