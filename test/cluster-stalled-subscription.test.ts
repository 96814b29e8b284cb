/**
 * A purge answered while a replica's HTTP path is broken (a wrong
 * advertise_url) counts on Redis's purge message reaching it. A replica whose
 * subscription stalled without its connection closing must not go on
 * answering the purged copy: it notices the silence (its own beacons go
 * unheard), connects again, and while it cannot hear it answers from no copy.
 */
import { expect, test } from 'vitest';
import { eventually, syntheticRecording } from '../dev/recording-bytes.js';
import { ACME_AUTH, answerOf, clusterFor, fakeUpstream, readiness, recordingPath, redisProxyFor } from './support/cluster.js';

const KIB = 1024;
const OLD = syntheticRecording(40 * KIB);
const NEW = syntheticRecording(40 * KIB + 7);
/** A purge waits up to 14 s for a replica that never confirms; the replica stops trusting its copies within 8 s of its last event. */
const PURGE_GUARD_MS = 20_000;
const RECOVERY_MS = 20_000;
const STALLED = 'cluster: the subscription to redis events stalled (its beacon went unheard); connecting it again until it hears';
const HEARS_AGAIN = 'cluster: the subscription to redis events hears again';

const upstream = fakeUpstream();
const { proxy, redisUrlFor } = redisProxyFor(1);

// gw-2 reaches Redis through the proxy, and advertises a port nobody listens on: no purge reaches it over HTTP.
const cluster = clusterFor(() => upstream().baseUrl, {
  replicas: 2,
  volumes: 'own',
  redisUrlFor,
  clusterYamlFor: (index) => (index === 1 ? ['advertise_url: http://127.0.0.1:9'] : []),
});

async function holdsAsHit(index: number, id: number, bytes: Buffer): Promise<boolean> {
  const answer = await answerOf(cluster().at(index, recordingPath(id), { headers: ACME_AUTH }));
  return answer.status === 200 && answer.bytes.equals(bytes) && (answer.cacheStatus ?? '').includes('hit');
}

async function purgeWhileGw2IsDeaf(id: number): Promise<void> {
  const gw = cluster();
  upstream().setRecording(id, OLD);
  expect(await eventually(() => holdsAsHit(1, id, OLD))).toBe(true);
  expect(await eventually(async () => (await readiness(gw.urls[0]!)).body.cluster?.peers === 1)).toBe(true);

  proxy.stallSubscriptions();
  upstream().setRecording(id, NEW);
  const purge = await gw.at(0, recordingPath(id), { method: 'DELETE', headers: ACME_AUTH });
  expect(purge.status).toBe(204);
}

test(
  'a replica deaf to purge messages (subscription stalled, HTTP unreachable) does not answer the purged copy, and answers its copies again once it hears',
  async () => {
    const id = 31;
    await purgeWhileGw2IsDeaf(id);
    try {
      const after = await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }));
      expect(after.status).toBe(200);
      expect(after.bytes.equals(NEW)).toBe(true);
      expect(after.cacheStatus).not.toContain('hit');
      expect((await readiness(cluster().urls[1]!)).body.cluster?.state).toBe('degraded');
    } finally {
      proxy.mendSubscriptions();
    }
    expect(await eventually(() => holdsAsHit(1, id, NEW), RECOVERY_MS)).toBe(true);
    expect((await readiness(cluster().urls[1]!)).body.cluster?.state).toBe('ok');
    const said = cluster().replicas[1]!.process.logs.map((line) => line.msg);
    expect(said).toContain(STALLED);
  },
  PURGE_GUARD_MS + RECOVERY_MS + 30_000,
);

test(
  'a subscription that stalls once is made again: the purge message reaches the replica over the new connection',
  async () => {
    const id = 32;
    const gw = cluster();
    const heardAgain = () => gw.replicas[1]!.process.logs.filter((line) => line.msg === HEARS_AGAIN).length;
    const heardBefore = heardAgain();
    upstream().setRecording(id, OLD);
    expect(await eventually(() => holdsAsHit(1, id, OLD))).toBe(true);
    // Only the connection it has now stalls; the next one it makes goes through.
    proxy.stallSubscriptions();
    proxy.mendSubscriptions();
    upstream().setRecording(id, NEW);
    expect((await gw.at(0, recordingPath(id), { method: 'DELETE', headers: ACME_AUTH })).status).toBe(204);
    // The 204 took about 12 s (no confirmation over HTTP); the new connection was made within a few.
    expect(heardAgain()).toBeGreaterThan(heardBefore);
    const after = await answerOf(gw.at(1, recordingPath(id), { headers: ACME_AUTH }));
    expect(after.bytes.equals(NEW)).toBe(true);
    expect(after.cacheStatus).not.toContain('hit');
  },
  PURGE_GUARD_MS + 30_000,
);
