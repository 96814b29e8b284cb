/**
 * Issue 10, points 2 and 6: Redis trouble degrades, never stops. Redis
 * stopped, paused (SIGSTOP) and restarted under load, and its data flushed:
 * every replica keeps serving, /readyz stays 200 and says so, a replica can
 * start without Redis, the cluster converges once Redis is back, and losing
 * Redis's data never deletes a cached file.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { sha256Hex } from '../src/sha256.js';
import { eventually, storedRecordingFiles, syntheticRecording } from '../dev/recording-bytes.js';
import {
  ACME_AUTH,
  answerOf,
  clusterFor,
  fakeUpstream,
  metricsText,
  metricValue,
  readiness,
  recordingPath,
  upstreamFetches,
  type Replica,
} from './support/cluster.js';

const KIB = 1024;
/** A hang check, not a speed claim: with every Redis call bounded at 250 ms, nothing should come near it. */
const HANG_BOUND_MS = 3_000;
/** Recordings cached before the trouble starts: the "hits" of every load loop. */
const WARM_IDS = [7001, 7002, 7003, 7004, 7005, 7006];

const upstream = fakeUpstream();
const recordings = new Map<number, Buffer>();
let nextColdId = 7100;

/** Registers a new recording with the upstream and returns its id. */
function newRecording(size = 48 * KIB): number {
  const id = nextColdId++;
  const bytes = syntheticRecording(size + (id % 97));
  recordings.set(id, bytes);
  upstream().setRecording(id, bytes);
  return id;
}

beforeAll(() => {
  for (const id of WARM_IDS) {
    const bytes = syntheticRecording(32 * KIB + id);
    recordings.set(id, bytes);
    upstream().setRecording(id, bytes);
  }
});

/** A tenant with a rate limit, so its memory hits ask Redis before they are answered; high enough never to refuse. */
const LIMITED_KEY = 'limited-tenant-key-for-tests-00000000002';
const LIMITED_AUTH = { authorization: `Bearer ${LIMITED_KEY}` };

const cluster = clusterFor(() => upstream().baseUrl, {
  volumes: 'shared',
  moreTenantsYaml: ['- id: limited', `  api_keys: ["sha256:${sha256Hex(LIMITED_KEY)}"]`, '  rate_limit_per_minute: 100000'],
});

beforeAll(async () => {
  for (const [i, id] of WARM_IDS.entries()) {
    const answer = await answerOf(cluster().at(i % 3, recordingPath(id), { headers: ACME_AUTH }));
    expect(answer.status).toBe(200);
  }
});

// Runs before the cluster is stopped: a paused Redis must not outlive a failed test.
afterAll(() => {
  try {
    process.kill(cluster().redis.pid, 'SIGCONT');
  } catch {
    // already gone, or the cluster never started
  }
});

interface LoadResult {
  answers: number;
  /** Every answer that was not a 200 with the recording's exact bytes. */
  wrong: string[];
}

/**
 * GETs over every live replica, round robin, from four clients at once until
 * `stop()`: mostly hits of the warm recordings, every third one a new
 * recording. Bounded: at most `maxAnswers`.
 */
function startLoad(maxAnswers = 3_000): { stop(): Promise<LoadResult>; answered(): number } {
  let stopped = false;
  const result: LoadResult = { answers: 0, wrong: [] };
  async function client(): Promise<void> {
    for (let n = 0; !stopped && result.answers < maxAnswers; n++) {
      const id = n % 3 === 2 ? newRecording() : WARM_IDS[n % WARM_IDS.length]!;
      try {
        const answer = await answerOf(cluster().get(recordingPath(id), { headers: ACME_AUTH, signal: AbortSignal.timeout(HANG_BOUND_MS) }));
        if (answer.status !== 200 || !answer.bytes.equals(recordings.get(id)!)) {
          result.wrong.push(`${id}: ${answer.status} ${answer.cacheStatus} (${answer.bytes.length} bytes)`);
        }
      } catch (error) {
        result.wrong.push(`${id}: ${(error as Error).message}`);
      }
      result.answers++;
    }
  }
  const clients = Promise.all(Array.from({ length: 4 }, client));
  return {
    answered: () => result.answers,
    async stop() {
      stopped = true;
      await clients;
      return result;
    },
  };
}

/** Waits (bounded) until every live replica's /readyz shows `state`; every answer on the way must be 200. */
async function waitForClusterState(state: 'ok' | 'degraded', timeoutMs = 15_000): Promise<void> {
  const notReady: string[] = [];
  const reached = await eventually(async () => {
    const live = cluster().replicas.filter((r) => r.process.child.exitCode === null && r.process.child.signalCode === null);
    const answers = await Promise.all(live.map((r) => readiness(r.url)));
    for (const answer of answers) if (answer.status !== 200) notReady.push(JSON.stringify(answer));
    return answers.every((answer) => answer.body.cluster?.state === state);
  }, timeoutMs);
  expect(notReady).toEqual([]);
  expect(reached, `every replica's /readyz says cluster state ${state}`).toBe(true);
}

/**
 * Sends `request` raw and resets the connection 50 ms later: well within the
 * 250 ms a Redis call may take before the replica gives up on it. A reset,
 * not a FIN: after a FIN Node still writes the answer, which the kernel
 * takes, so it is sent.
 */
function askThenReset(port: number, request: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(request);
      setTimeout(() => {
        socket.resetAndDestroy();
        resolve();
      }, 50);
    });
    socket.once('error', reject);
  });
}

/** Waits (bounded) until `count` answers have been given. */
async function waitForAnswers(load: { answered(): number }, count: number): Promise<void> {
  expect(await eventually(() => load.answered() >= count, 15_000)).toBe(true);
}

/** 30 concurrent cold GETs of one new slow recording over the live replicas: one upstream fetch. */
async function expectOneDownloadForTheCluster(): Promise<void> {
  const id = newRecording(512 * KIB);
  upstream().setBehaviour(id, { kind: 'slow-body', chunkBytes: 64 * KIB, intervalMs: 25 });
  const answers = await Promise.all(Array.from({ length: 30 }, () => answerOf(cluster().get(recordingPath(id), { headers: ACME_AUTH }))));
  expect(answers.filter((answer) => answer.status !== 200 || !answer.bytes.equals(recordings.get(id)!))).toEqual([]);
  expect(upstreamFetches(upstream(), id)).toBe(1);
}

/** Every file under `<cache>/recordings` of every cache directory, with its size. */
async function cachedFiles(): Promise<string[]> {
  const listings = await Promise.all(cluster().cacheDirs.map((dir) => storedRecordingFiles(dir)));
  return listings
    .flat()
    .map((file) => `${file.path} ${file.size}`)
    .sort();
}

describe.sequential('a cluster of three replicas when Redis is in trouble', () => {
  test('a healthy cluster: /readyz says ok, Redis up and two peers on every replica, and /metrics agrees', async () => {
    const settled = await eventually(async () => {
      const answers = await Promise.all(cluster().urls.map((url) => readiness(url)));
      return answers.every((answer) => answer.body.cluster?.peers === 2);
    });
    expect(settled).toBe(true);
    for (const url of cluster().urls) {
      const { status, body } = await readiness(url);
      expect(status).toBe(200);
      expect(body).toEqual({ status: 'ready', cluster: { state: 'ok', redis: 'up', peers: 2 } });
      const metrics = await metricsText(url);
      expect(metricValue(metrics, 'gateway_cluster_redis_up')).toBe(1);
      expect(metricValue(metrics, 'gateway_cluster_peers')).toBe(2);
    }
  });

  test('Redis stopped under load: every answer stays right, /readyz stays 200 and says degraded, a new replica starts, and after a restart of Redis the cluster converges and downloads once again', async () => {
    const load = startLoad();
    let redisDown = false;
    let late: Replica | undefined;
    try {
      await waitForAnswers(load, 30);
      await cluster().stopRedis();
      redisDown = true;
      const atStop = load.answered();
      await waitForClusterState('degraded');
      for (const url of cluster().urls) {
        expect((await readiness(url)).body.cluster).toMatchObject({ state: 'degraded', redis: 'unreachable' });
        expect(metricValue(await metricsText(url), 'gateway_cluster_redis_up')).toBe(0);
      }

      // Still caching on its volume: a new recording becomes a hit (once stored; until then a request joins its download).
      const id = newRecording();
      expect((await answerOf(cluster().at(0, recordingPath(id), { headers: ACME_AUTH }))).status).toBe(200);
      const cached = await eventually(async () => {
        const again = await answerOf(cluster().at(0, recordingPath(id), { headers: ACME_AUTH }));
        return again.bytes.equals(recordings.get(id)!) && (again.cacheStatus ?? '').includes('hit');
      });
      expect(cached).toBe(true);
      expect(upstreamFetches(upstream(), id)).toBe(1);

      // A replica can start while Redis is down.
      late = await cluster().addReplica({ waitForClusterReady: false });
      const lateAnswer = await answerOf(fetch(`${late.url}${recordingPath(WARM_IDS[0]!)}`, { headers: ACME_AUTH }));
      expect(lateAnswer.status).toBe(200);
      expect(lateAnswer.bytes.equals(recordings.get(WARM_IDS[0]!)!)).toBe(true);
      expect(await readiness(late.url)).toMatchObject({ status: 200, body: { cluster: { state: 'degraded', redis: 'unreachable' } } });
      await waitForAnswers(load, atStop + 60);

      await cluster().restartRedis();
      redisDown = false;
      await waitForClusterState('ok');
      for (const url of cluster().urls) {
        expect((await readiness(url)).body.cluster).toMatchObject({ state: 'ok', redis: 'up' });
        expect(metricValue(await metricsText(url), 'gateway_cluster_redis_up')).toBe(1);
      }
      await expectOneDownloadForTheCluster();
    } finally {
      await load.stop();
      // Whatever failed above, the next tests get a running Redis and the three replicas they expect.
      if (redisDown) await cluster().restartRedis();
      if (late) await cluster().kill(late.index, 'SIGKILL');
    }
    expect((await load.stop()).wrong).toEqual([]);
  }, 60_000);

  test('Redis paused with SIGSTOP: hits and misses are still answered on every replica, and SIGCONT restores the cluster', async () => {
    const { pid } = cluster().redis;
    process.kill(pid, 'SIGSTOP');
    try {
      for (const index of [0, 1, 2]) {
        const id = newRecording();
        for (const wanted of [id, WARM_IDS[index]!]) {
          const answer = await answerOf(
            cluster().at(index, recordingPath(wanted), { headers: ACME_AUTH, signal: AbortSignal.timeout(HANG_BOUND_MS) }),
          );
          expect(answer.status).toBe(200);
          expect(answer.bytes.equals(recordings.get(wanted)!)).toBe(true);
        }
        const ready = await fetch(`${cluster().urls[index]}/readyz`, { signal: AbortSignal.timeout(HANG_BOUND_MS) });
        expect(ready.status).toBe(200);
        await ready.arrayBuffer();
      }
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await waitForClusterState('ok');
    await expectOneDownloadForTheCluster();
  }, 60_000);

  // Every path: the memory hit answered before the app, a disk hit the app answers, and another route of the app.
  test('a client that leaves while Redis, paused, holds its rate-limit check gets nothing written and is logged as aborted', async () => {
    const id = newRecording();
    const onDisk = newRecording();
    const replica = cluster().replicas[0]!;
    const hit = (index: number, wanted: number, tier: string) =>
      eventually(async () => {
        const answer = await answerOf(cluster().at(index, recordingPath(wanted), { headers: LIMITED_AUTH }));
        return answer.status === 200 && (answer.cacheStatus ?? '').includes(`detail=${tier}`);
      });
    expect(await hit(0, id, 'memory')).toBe(true);
    // Stored by gw-2 on the shared volume: gw-1 has it on disk only, and answers it through the app.
    expect(await hit(1, onDisk, 'memory')).toBe(true);
    const port = Number(new URL(replica.url).port);
    const signedUrlPath = `/v1/call/recording/${id}/signed-url`;
    const { pid } = cluster().redis;
    process.kill(pid, 'SIGSTOP');
    try {
      await Promise.all([
        askThenReset(port, `GET ${recordingPath(id)} HTTP/1.1\r\nHost: gateway\r\nAuthorization: ${LIMITED_AUTH.authorization}\r\n\r\n`),
        askThenReset(
          port,
          `GET ${recordingPath(onDisk)} HTTP/1.1\r\nHost: gateway\r\nAuthorization: ${LIMITED_AUTH.authorization}\r\n\r\n`,
        ),
        askThenReset(
          port,
          `POST ${signedUrlPath} HTTP/1.1\r\nHost: gateway\r\nAuthorization: ${LIMITED_AUTH.authorization}\r\nContent-Length: 0\r\n\r\n`,
        ),
      ]);
      const logged = (path: string) =>
        replica.process.logs.find((line) => line.path === path && line.tenant === 'limited' && line.aborted === true);
      const paths = [recordingPath(id), recordingPath(onDisk), signedUrlPath];
      expect(await eventually(() => paths.every((path) => logged(path) !== undefined), 5_000)).toBe(true);
      // Nothing was written to them: no bytes counted as served.
      expect(logged(recordingPath(id))).toMatchObject({ route: 'recording', cache: 'hit', bytes: 0 });
      expect(logged(recordingPath(onDisk))).toMatchObject({ route: 'recording', cache: 'hit', bytes: 0 });
      expect(logged(signedUrlPath)).toMatchObject({ route: 'recording', bytes: 0 });
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await waitForClusterState('ok');
  }, 30_000);

  test("Redis's data flushed: no cached file is deleted, hits go on, and a replica restarted afterwards serves the volume's recordings as hits", async () => {
    const before = await cachedFiles();
    expect(before.length).toBeGreaterThanOrEqual(WARM_IDS.length);
    const fetchesBefore = upstream().recordingRequests().length;

    await cluster().flushRedis();
    for (const [i, id] of WARM_IDS.entries()) {
      const answer = await answerOf(cluster().at(i % 3, recordingPath(id), { headers: ACME_AUTH }));
      expect(answer.status).toBe(200);
      expect(answer.cacheStatus).toContain('hit');
      expect(answer.bytes.equals(recordings.get(id)!)).toBe(true);
    }

    await cluster().restart(2);
    // Its copies are answered once its first sync has checked them against purges made while it was down.
    expect(await eventually(async () => (await readiness(cluster().urls[2]!)).body.cluster?.state === 'ok')).toBe(true);
    for (const id of WARM_IDS) {
      const answer = await answerOf(cluster().at(2, recordingPath(id), { headers: ACME_AUTH }));
      expect(answer.status).toBe(200);
      expect(answer.cacheStatus).toContain('hit');
      expect(answer.bytes.equals(recordings.get(id)!)).toBe(true);
    }
    expect(upstream().recordingRequests().length).toBe(fetchesBefore);
    const after = await cachedFiles();
    expect(before.filter((file) => !after.includes(file))).toEqual([]);
  }, 60_000);
});
