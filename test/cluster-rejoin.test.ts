/**
 * A replica that was down while a recording was purged must not answer its
 * old copy once it is back: it is not asked over HTTP while down, and it does
 * not hear the purge message. Its first sync applies the purge; until then
 * it answers from no copy, however slow Redis is to answer that sync.
 */
import { expect, test } from 'vitest';
import { eventually, syntheticRecording } from '../dev/recording-bytes.js';
import { ACME_AUTH, answerOf, clusterFor, fakeUpstream, recordingPath, redisProxyFor } from './support/cluster.js';

const KIB = 1024;
const ID = 41;
const OLD = syntheticRecording(40 * KIB);
const NEW = syntheticRecording(40 * KIB + 7);
/** Each way, between gw-2 and Redis, while it starts again: its sync takes a few round trips of twice this. */
const REDIS_DELAY_MS = 300;
const OTHER_IDS = Array.from({ length: 48 }, (_, i) => 100 + i);

const upstream = fakeUpstream();
const { proxy, redisUrlFor } = redisProxyFor(1);

const cluster = clusterFor(() => upstream().baseUrl, {
  replicas: 2,
  volumes: 'own',
  redisUrlFor,
  // Redis slowed for gw-2 must still answer within its timeout.
  clusterYaml: ['redis_timeout_ms: 5000'],
});

test('a replica restarted after missing a purge answers from no copy until its first sync has applied the purge', async () => {
  const gw = cluster();
  // Copies its sync goes through before the purged one (16 at a time): a sync of several round trips.
  for (const id of OTHER_IDS) {
    upstream().setRecording(id, syntheticRecording(KIB + id));
    expect((await answerOf(gw.at(1, recordingPath(id), { headers: ACME_AUTH }))).status).toBe(200);
  }
  upstream().setRecording(ID, OLD);
  expect(
    await eventually(async () => {
      const answer = await answerOf(gw.at(1, recordingPath(ID), { headers: ACME_AUTH }));
      return answer.bytes.equals(OLD) && (answer.cacheStatus ?? '').includes('hit');
    }),
  ).toBe(true);

  await gw.kill(1, 'SIGKILL');
  upstream().setRecording(ID, NEW);
  // gw-2 cannot confirm: answered once gw-1 stops counting it.
  expect((await gw.at(0, recordingPath(ID), { method: 'DELETE', headers: ACME_AUTH })).status).toBe(204);

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
  expect(
    await eventually(async () => ((await answerOf(gw.at(1, recordingPath(ID), { headers: ACME_AUTH }))).cacheStatus ?? '').includes('hit')),
  ).toBe(true);
}, 90_000);
