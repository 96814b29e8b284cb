/**
 * Purge is authoritative even for a replica that lost its own link to Redis
 * while the others kept theirs: once the others stop counting it as a member,
 * a purge cannot reach it, so it must not answer from its stored copies. The
 * same holds for one that cannot reach Redis from the moment it starts: it
 * knows no live replica, and asks those its volume remembers.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { eventually, syntheticRecording } from '../dev/recording-bytes.js';
import {
  ACME_AUTH,
  answerOf,
  clusterFor,
  fakeUpstream,
  hitsWith,
  purgedWhileReplicaIsDown,
  readiness,
  recordingPath,
  redisProxyFor,
} from './support/cluster.js';

const KIB = 1024;
const ID = 2;
const OLD = syntheticRecording(40 * KIB);
const NEW = syntheticRecording(40 * KIB + 7);
/** The membership TTL is 10 s (five 2 s heartbeats); the others drop a silent replica within a beat after. */
const DROPPED_WITHIN_MS = 20_000;
/** Longer than the TTL, with time for a replica to ask the others (a check every 500 ms). */
const PAST_TTL_MS = 12_000;

const upstream = fakeUpstream();

const { proxy, redisUrlFor } = redisProxyFor(1);

beforeAll(() => {
  upstream().setRecording(ID, OLD);
});

const cluster = clusterFor(() => upstream().baseUrl, {
  replicas: 2,
  volumes: 'own',
  redisUrlFor,
});

// Runs before the cluster is stopped: a paused Redis must not outlive a failed test.
afterAll(() => {
  try {
    process.kill(cluster().redis.pid, 'SIGCONT');
  } catch {
    // already gone, or the cluster never started
  }
});

test('a replica that lost its own Redis link past the membership TTL answers from the upstream, not its stale copy, after a purge elsewhere', async () => {
  const gw = cluster();
  // Both replicas hold the old copy, in memory.
  for (const index of [0, 1]) {
    expect(
      await eventually(async () => {
        const answer = await answerOf(gw.at(index, recordingPath(ID), { headers: ACME_AUTH }));
        return answer.status === 200 && answer.bytes.equals(OLD) && (answer.cacheStatus ?? '').includes('detail=memory');
      }),
    ).toBe(true);
  }

  expect(await eventually(async () => (await readiness(gw.urls[0]!)).body.cluster?.peers === 1)).toBe(true);
  proxy.cut();
  expect(await eventually(async () => (await readiness(gw.urls[1]!)).body.cluster?.state === 'degraded')).toBe(true);
  // gw-1 still reaches Redis, and stops counting gw-2 once its heartbeat has expired.
  expect(
    await eventually(async () => {
      const { body } = await readiness(gw.urls[0]!);
      return body.cluster?.state === 'ok' && body.cluster?.peers === 0;
    }, DROPPED_WITHIN_MS),
  ).toBe(true);

  upstream().setRecording(ID, NEW);
  expect((await gw.at(0, recordingPath(ID), { method: 'DELETE', headers: ACME_AUTH })).status).toBe(204);

  const after = await answerOf(gw.at(1, recordingPath(ID), { headers: ACME_AUTH }));
  expect(after.status).toBe(200);
  expect(after.cacheStatus).not.toContain('hit');
  expect(after.bytes.equals(NEW)).toBe(true);
  const head = await gw.at(1, recordingPath(ID), { method: 'HEAD', headers: ACME_AUTH });
  expect(head.headers.get('cache-status')).not.toContain('hit');

  // Back in the cluster: the missed purge is applied, and its copies are answered again.
  proxy.mend();
  expect(
    await eventually(async () => {
      const answer = await answerOf(gw.at(1, recordingPath(ID), { headers: ACME_AUTH }));
      return answer.status === 200 && answer.bytes.equals(NEW) && (answer.cacheStatus ?? '').includes('hit');
    }, DROPPED_WITHIN_MS),
  ).toBe(true);
  const last = await answerOf(gw.at(1, recordingPath(ID), { headers: ACME_AUTH }));
  expect(last.bytes.equals(NEW)).toBe(true);
}, 90_000);

test('Redis paused for every replica past the membership TTL: stored copies are still answered as hits on every replica', async () => {
  const gw = cluster();
  for (const index of [0, 1]) {
    expect(
      await eventually(
        async () => (await answerOf(gw.at(index, recordingPath(ID), { headers: ACME_AUTH }))).cacheStatus?.includes('hit') === true,
        DROPPED_WITHIN_MS,
      ),
    ).toBe(true);
  }
  process.kill(gw.redis.pid, 'SIGSTOP');
  try {
    for (const index of [0, 1])
      expect(await eventually(async () => (await readiness(gw.urls[index]!)).body.cluster?.state === 'degraded')).toBe(true);
    // Past the TTL and the replicas' look at each other.
    await new Promise((resolve) => setTimeout(resolve, PAST_TTL_MS));
    for (const index of [0, 1]) {
      const answer = await answerOf(gw.at(index, recordingPath(ID), { headers: ACME_AUTH }));
      expect(answer.status).toBe(200);
      expect(answer.cacheStatus).toContain('hit');
      expect(answer.bytes.equals(NEW)).toBe(true);
    }
  } finally {
    process.kill(gw.redis.pid, 'SIGCONT');
  }
}, 90_000);

/**
 * gw-2 holds `old` for `id` as a hit and remembers gw-1 in its volume's
 * `cluster-peers.json`; it is stopped, and `id` purged on gw-1 (the upstream
 * then has `fresh`).
 */
async function purgedWhileGw2IsStopped(id: number, old: Buffer, fresh: Buffer): Promise<void> {
  const gw = cluster();
  for (const url of gw.urls)
    expect(await eventually(async () => (await readiness(url)).body.cluster?.state === 'ok', DROPPED_WITHIN_MS)).toBe(true);
  await purgedWhileReplicaIsDown(gw, upstream(), { index: 1, id, old, fresh, signal: 'SIGTERM' });
  expect(await readFile(path.join(gw.replicas[1]!.cacheDir, 'cluster-peers.json'), 'utf8')).toContain(`"url":"${gw.urls[0]}"`);
}

test('a replica that cannot reach Redis from its start asks the replicas its volume remembers: one reaches Redis, so the copy purged while it was away is not answered', async () => {
  const gw = cluster();
  const [id, fresh] = [3, syntheticRecording(40 * KIB + 13)];
  await purgedWhileGw2IsStopped(id, syntheticRecording(40 * KIB + 11), fresh);

  // gw-2 cannot reach Redis from its start: it knows no live replica.
  proxy.cut();
  try {
    await gw.restart(1);
    expect((await readiness(gw.urls[1]!)).body.cluster).toMatchObject({ state: 'degraded', redis: 'unreachable' });
    for (let i = 0; i < 3; i++) {
      const answer = await answerOf(gw.at(1, recordingPath(id), { headers: ACME_AUTH }));
      expect(answer.status).toBe(200);
      expect(answer.bytes.equals(fresh), `answer ${i}: ${answer.cacheStatus}`).toBe(true);
      expect(answer.cacheStatus).not.toContain('hit');
    }
    // What it stores since its start: gw-1, which it remembers, reaches Redis, so a purge there (which
    // cannot reach gw-2, never counted as a member) may drop it at any time; gw-2 answers from no copy.
    const [later, laterOld, laterFresh] = [5, syntheticRecording(40 * KIB + 23), syntheticRecording(40 * KIB + 29)];
    upstream().setRecording(later, laterOld);
    expect((await answerOf(gw.at(1, recordingPath(later), { headers: ACME_AUTH }))).bytes.equals(laterOld)).toBe(true);
    upstream().setRecording(later, laterFresh);
    expect((await gw.at(0, recordingPath(later), { method: 'DELETE', headers: ACME_AUTH })).status).toBe(204);
    const afterPurge = await answerOf(gw.at(1, recordingPath(later), { headers: ACME_AUTH }));
    expect(afterPurge.bytes.equals(laterFresh), `after the purge: ${afterPurge.cacheStatus}`).toBe(true);
  } finally {
    proxy.mend();
  }
  // Once it reaches Redis, it rejoins and syncs, and answers from its copies again.
  expect(await hitsWith(gw, 1, id, fresh, DROPPED_WITHIN_MS)).toBe(true);
}, 90_000);

test('a replica started again during an outage of Redis for everyone answers from none of its old copies until it has synced: a purge may have been made while it was down', async () => {
  const gw = cluster();
  const [id, fresh] = [4, syntheticRecording(40 * KIB + 19)];
  await purgedWhileGw2IsStopped(id, syntheticRecording(40 * KIB + 17), fresh);

  process.kill(gw.redis.pid, 'SIGSTOP');
  try {
    expect(await eventually(async () => (await readiness(gw.urls[0]!)).body.cluster?.redis === 'unreachable')).toBe(true);
    // gw-1, up throughout, says Redis is out for it too: it cannot vouch for a purge made while gw-2 was down.
    await gw.restart(1);
    // Long after it has asked gw-1 (a first request before that would only find its old copies held back).
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    for (let i = 0; i < 3; i++) {
      const answer = await answerOf(gw.at(1, recordingPath(id), { headers: ACME_AUTH }));
      expect(answer.status).toBe(200);
      expect(answer.bytes.equals(fresh), `answer ${i}: ${answer.cacheStatus}`).toBe(true);
    }
  } finally {
    process.kill(gw.redis.pid, 'SIGCONT');
  }
  expect(await hitsWith(gw, 1, id, fresh, DROPPED_WITHIN_MS)).toBe(true);
}, 90_000);
