/**
 * Replicas whose wall clocks differ, within the 60 s the README allows for
 * peer requests, still agree on who is in the cluster: heartbeats are stamped
 * and judged by Redis's clock, not a replica's. gw-2 runs 30 s behind gw-1.
 */
import { expect, test } from 'vitest';
import { eventually, syntheticRecording } from '../dev/recording-bytes.js';
import {
  ACME_AUTH,
  answerOf,
  clockOffsetEnv,
  clusterFor,
  copySettled,
  fakeUpstream,
  readiness,
  recordingPath,
  upstreamFetches,
} from './support/cluster.js';

const KIB = 1024;
const PEER_COPY = 'recording-gateway; fwd=uri-miss; detail=peer';
const CLOCK_OFFSET_MS = -30_000;
/** Two heartbeats (2 s each) and then some: each replica has read the other's beat. */
const BOTH_BEATEN_MS = 6_000;

const upstream = fakeUpstream();
const cluster = clusterFor(() => upstream().baseUrl, {
  replicas: 2,
  volumes: 'own',
  envFor: (index) => (index === 1 ? clockOffsetEnv(CLOCK_OFFSET_MS) : {}),
});

test('each replica counts the other as a member although their clocks are 30 s apart', async () => {
  const gw = cluster();
  for (const url of gw.urls) {
    expect(await eventually(async () => (await readiness(url)).body.cluster?.peers === 1, BOTH_BEATEN_MS)).toBe(true);
  }
});

test('a copy the replica with the slow clock holds is fetched from it, not from the upstream again', async () => {
  const gw = cluster();
  const id = 1;
  const recording = syntheticRecording(40 * KIB);
  upstream().setRecording(id, recording);
  expect((await answerOf(gw.at(1, recordingPath(id), { headers: ACME_AUTH }))).status).toBe(200);
  // Stored, listed and its download lease let go: gw-1 can only get it from gw-2's copy or the upstream.
  expect(await eventually(() => copySettled(gw, 1, id, upstream().baseUrl))).toBe(true);

  const onGw1 = await answerOf(gw.at(0, recordingPath(id), { headers: ACME_AUTH }));
  expect(onGw1.status).toBe(200);
  expect(onGw1.cacheStatus).toBe(PEER_COPY);
  expect(onGw1.bytes.equals(recording)).toBe(true);
  expect(upstreamFetches(upstream(), id)).toBe(1);
});
