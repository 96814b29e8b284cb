/**
 * A replica that was down while a recording was purged must not answer its
 * old copy once it is back: it is not asked over HTTP while down, and it does
 * not hear the purge message. Its first sync applies the purge; until then
 * it answers from no copy, however slow Redis is to answer that sync.
 */
import { expect, test } from 'vitest';
import { syntheticRecording } from '../dev/recording-bytes.js';
import {
  ACME_AUTH,
  answerOf,
  clusterFor,
  fakeUpstream,
  hitsWith,
  purgedWhileReplicaIsDown,
  recordingPath,
  redisProxyFor,
} from './support/cluster.js';

const KIB = 1024;
const ID = 41;
const OLD = syntheticRecording(40 * KIB);
const NEW = syntheticRecording(40 * KIB + 7);
/** Each way, between gw-2 and Redis, while it starts again: its sync takes a few round trips of twice this. */
const REDIS_DELAY_MS = 300;
const OTHER_IDS = Array.from({ length: 64 }, (_, i) => 100 + i);
/** Past gw-2's redis_timeout_ms (5 s): its calls fail, and it counts Redis as out. */
const BREAKING_DELAY_MS = 6_000;

const upstream = fakeUpstream();
const { proxy, redisUrlFor } = redisProxyFor(1);

const cluster = clusterFor(() => upstream().baseUrl, {
  replicas: 2,
  volumes: 'own',
  redisUrlFor,
  // Redis slowed for gw-2 must still answer within its timeout.
  clusterYaml: ['redis_timeout_ms: 5000'],
});

/**
 * gw-2 holds `old` for `id` as a hit, behind copies its sync goes through
 * first (16 at a time: a sync of several round trips); it is killed, and
 * `id` purged on gw-1 (the upstream then has `fresh`).
 */
async function purgedWhileGw2IsDown(id: number, old: Buffer, fresh: Buffer): Promise<void> {
  const gw = cluster();
  for (const other of OTHER_IDS) {
    upstream().setRecording(other, syntheticRecording(KIB + other));
    expect((await answerOf(gw.at(1, recordingPath(other), { headers: ACME_AUTH }))).status).toBe(200);
  }
  // gw-2 cannot confirm: answered once gw-1 stops counting it.
  await purgedWhileReplicaIsDown(gw, upstream(), { index: 1, id, old, fresh, signal: 'SIGKILL' });
}

function gw2HitsAgain(id: number, fresh: Buffer): Promise<boolean> {
  return hitsWith(cluster(), 1, id, fresh, 20_000);
}

test('a replica restarted after missing a purge answers from no copy until its first sync has applied the purge', async () => {
  const gw = cluster();
  await purgedWhileGw2IsDown(ID, OLD, NEW);

  proxy.delay(REDIS_DELAY_MS);
  try {
    await gw.restart(1);
    // Right after it says it is ready, while its sync still waits on Redis.
    const first = await answerOf(gw.at(1, recordingPath(ID), { headers: ACME_AUTH }));
    expect(first.status).toBe(200);
    expect(first.bytes.equals(NEW), `gw-2 just restarted: ${first.cacheStatus}`).toBe(true);
    expect(first.cacheStatus).not.toContain('hit');
  } finally {
    proxy.delay(0);
  }
  // Once synced, its copies are answered again (the new one, fetched just now).
  expect(await gw2HitsAgain(ID, NEW)).toBe(true);
}, 90_000);

test('a first sync that Redis breaks off is run again once Redis answers: no purged copy is answered meanwhile', async () => {
  const gw = cluster();
  const [id, old, fresh] = [42, syntheticRecording(40 * KIB + 11), syntheticRecording(40 * KIB + 13)];
  await purgedWhileGw2IsDown(id, old, fresh);

  proxy.delay(REDIS_DELAY_MS);
  const answers: string[] = [];
  try {
    const replica = await gw.restart(1);
    // Slower than redis_timeout_ms while its sync goes through the copies before `id`: the sync fails.
    proxy.delay(BREAKING_DELAY_MS);
    await replica.process.waitForLog((line) => String(line.msg).startsWith('cluster: redis unreachable'), 20_000);
    proxy.delay(REDIS_DELAY_MS);
    // Asked only now, so that no earlier miss has replaced the old copy.
    const until = Date.now() + 6_000;
    while (Date.now() < until) {
      const answer = await answerOf(gw.at(1, recordingPath(id), { headers: ACME_AUTH }));
      answers.push(answer.bytes.equals(old) ? 'old' : answer.bytes.equals(fresh) ? 'fresh' : `status ${answer.status}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    proxy.delay(0);
  }
  expect(answers.length).toBeGreaterThan(5);
  expect(answers.filter((answer) => answer !== 'fresh')).toEqual([]);
  expect(await gw2HitsAgain(id, fresh)).toBe(true);
}, 120_000);
