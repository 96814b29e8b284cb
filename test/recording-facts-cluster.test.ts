/**
 * info.json and peaks.json in a cluster: the facts travel with the copy's
 * metadata, the peaks sidecar lives on the volume beside the copy, a replica
 * with a volume of its own analyses the copy it took from another replica,
 * and a purge removes every volume's sidecar.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { namespaceFor } from '../dev/gateway-harness.js';
import { eventually } from '../dev/recording-bytes.js';
import { ACME_AUTH, clusterFor, fakeUpstream, recordingPath, upstreamFetches, type Cluster } from './support/cluster.js';

const upstream = fakeUpstream();

function sidecarOn(cacheDir: string, id: number): string {
  return path.join(cacheDir, 'sidecars', namespaceFor(upstream().baseUrl), `${id}.peaks`);
}

async function json(cluster: Cluster, replica: number, pathAndQuery: string): Promise<unknown> {
  const response = await cluster.at(replica, pathAndQuery, { headers: ACME_AUTH });
  expect(response.status, `${pathAndQuery} on replica ${replica}`).toBe(200);
  return response.json();
}

/** Upstream ids of their own per block, so the blocks share one fake upstream without meeting. */
function fixtureAs(id: number, fixture: number): void {
  upstream().setRecording(id, upstream().recording(fixture)!);
}

describe.sequential('replicas with a volume each', () => {
  const cluster = clusterFor(() => upstream().baseUrl, { volumes: 'own', replicas: 2 });

  test('a replica answers from the copy it took from another, with the same facts and peaks, and one upstream download', async () => {
    fixtureAs(9101, 4);
    const infoA = await json(cluster(), 0, '/v1/call/recording/9101/info.json');
    const peaksA = await json(cluster(), 0, '/v1/call/recording/9101/peaks.json?points=300');
    const [aDir, bDir] = cluster().replicas.map((replica) => replica.cacheDir) as [string, string];
    expect(existsSync(sidecarOn(aDir, 9101))).toBe(true);

    expect(await json(cluster(), 1, '/v1/call/recording/9101/info.json')).toEqual(infoA);
    expect(await json(cluster(), 1, '/v1/call/recording/9101/peaks.json?points=300')).toEqual(peaksA);
    expect(existsSync(sidecarOn(bDir, 9101))).toBe(true);
    expect(upstreamFetches(upstream(), 9101)).toBe(1);
  });

  test("a purge removes every replica's copy and sidecar", async () => {
    fixtureAs(9102, 2);
    await json(cluster(), 0, '/v1/call/recording/9102/peaks.json');
    await json(cluster(), 1, '/v1/call/recording/9102/peaks.json');
    const dirs = cluster().replicas.map((replica) => replica.cacheDir);
    for (const dir of dirs) expect(existsSync(sidecarOn(dir, 9102))).toBe(true);

    const purge = await cluster().at(1, recordingPath(9102), { method: 'DELETE', headers: ACME_AUTH });
    expect(purge.status).toBe(204);
    for (const dir of dirs) {
      expect(await eventually(() => !existsSync(sidecarOn(dir, 9102)))).toBe(true);
      expect(existsSync(path.join(dir, 'recordings', namespaceFor(upstream().baseUrl), '9102.mp3'))).toBe(false);
    }
  });
});

describe.sequential('replicas sharing a volume', () => {
  const cluster = clusterFor(() => upstream().baseUrl, { volumes: 'shared', replicas: 2 });

  test('the facts and the sidecar one replica stored are what the other answers with', async () => {
    fixtureAs(9201, 3);
    const peaksA = await json(cluster(), 0, '/v1/call/recording/9201/peaks.json?points=64');
    const infoA = await json(cluster(), 0, '/v1/call/recording/9201/info.json');
    const [volume] = cluster().cacheDirs as [string];
    expect(existsSync(sidecarOn(volume, 9201))).toBe(true);

    expect(await json(cluster(), 1, '/v1/call/recording/9201/peaks.json?points=64')).toEqual(peaksA);
    expect(await json(cluster(), 1, '/v1/call/recording/9201/info.json')).toEqual(infoA);
    expect(upstreamFetches(upstream(), 9201)).toBe(1);

    const purge = await cluster().at(0, recordingPath(9201), { method: 'DELETE', headers: ACME_AUTH });
    expect(purge.status).toBe(204);
    expect(existsSync(sidecarOn(volume, 9201))).toBe(false);
  });
});
