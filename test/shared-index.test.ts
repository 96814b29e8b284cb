/**
 * Two replicas sharing one Redis index and one cache directory: what one
 * fetched the other serves without asking Flyflow again, and a purge through
 * either is seen by it.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createRedisIndex } from '../src/cache/redis-index.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { makeTempDir, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { startRedisServer, type RunningRedis } from './support/redis-server.js';

const RECORDING = '/v1/call/recording/1.mp3';

describe('two replicas sharing a Redis index and a cache directory', () => {
  let redis: RunningRedis;
  let upstream: FakeFlyflow;
  let dir: string;
  let replicaA: RunningGateway;
  let replicaB: RunningGateway;

  beforeAll(async () => {
    redis = await startRedisServer();
    upstream = await startFakeFlyflow();
  });
  afterAll(async () => {
    await upstream?.close();
    await redis?.stop();
  });

  beforeEach(async () => {
    upstream.reset();
    dir = await makeTempDir('rg-shared-');
    const config = testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, cache: { index: { kind: 'redis', url: redis.url } } });
    replicaA = await startGateway(config);
    replicaB = await startGateway(config);
  });
  afterEach(async () => {
    await replicaA?.close();
    await replicaB?.close();
    await removeDir(dir);
    // Each test starts from an empty shared index.
    const index = createRedisIndex(redis.url);
    try {
      for await (const [key] of index.entries()) await index.delete(key);
    } finally {
      await index.close();
    }
  });

  async function fetchWhole(replica: RunningGateway, init?: RequestInit): Promise<{ response: Response; body: Buffer }> {
    const response = await replica.fetch(RECORDING, init);
    return { response, body: Buffer.from(await response.arrayBuffer()) };
  }

  it('serves on replica B what replica A fetched, without another upstream request', async () => {
    const fromA = await fetchWhole(replicaA);
    expect(fromA.response.status).toBe(200);
    expect(fromA.response.headers.get('cache-status')).toContain('fwd=uri-miss');
    // A's answer streams while it downloads; the index entry is written once the body is verified.
    await replicaA.gateway.downloads.idle();
    expect(upstream.recordingRequests(1)).toHaveLength(1);

    const fromB = await fetchWhole(replicaB);
    expect(fromB.response.status).toBe(200);
    expect(fromB.response.headers.get('cache-status')).toMatch(/\bhit\b/);
    expect(fromB.body.equals(upstream.recording(1)!)).toBe(true);
    expect(fromB.body.equals(fromA.body)).toBe(true);
    expect(upstream.recordingRequests(1)).toHaveLength(1);
  });

  it('refetches on replica B after a DELETE through replica B', async () => {
    await fetchWhole(replicaA);
    await replicaA.gateway.downloads.idle();
    const hit = await fetchWhole(replicaB);
    expect(hit.response.headers.get('cache-status')).toMatch(/\bhit\b/);
    expect(upstream.recordingRequests(1)).toHaveLength(1);

    const deleted = await replicaB.fetch(RECORDING, { method: 'DELETE' });
    expect(deleted.status).toBe(204);

    const again = await fetchWhole(replicaB);
    expect(again.response.status).toBe(200);
    expect(again.response.headers.get('cache-status')).toContain('fwd=uri-miss');
    expect(again.body.equals(upstream.recording(1)!)).toBe(true);
    expect(upstream.recordingRequests(1)).toHaveLength(2);
  });
  it("drops replica A's memory copy when replica B purges the recording", async () => {
    await fetchWhole(replicaA);
    await replicaA.gateway.downloads.idle();
    const memoryHit = await fetchWhole(replicaA);
    expect(memoryHit.response.headers.get('cache-status')).toBe('recording-gateway; hit; detail=memory');

    expect((await replicaB.fetch(RECORDING, { method: 'DELETE' })).status).toBe(204);
    // The deletion reaches A over Redis pub/sub, a moment after B answered.
    const key = `${replicaA.gateway.tenants.all[0]!.namespace}/1`;
    const deadline = Date.now() + 5_000;
    while (replicaA.gateway.cache.lookup(key) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));

    const afterPurge = await fetchWhole(replicaA);
    expect(afterPurge.response.headers.get('cache-status')).toContain('fwd=uri-miss');
    expect(upstream.recordingRequests(1)).toHaveLength(2);
  });

  it('does not store on replica B a download under way there when replica A answered a DELETE of it', async () => {
    upstream.setBehaviour(1, { kind: 'gate' });
    // B's client has the head and the first bytes; the rest waits at the upstream.
    const streaming = await replicaB.fetch(RECORDING);
    expect(streaming.headers.get('cache-status')).toContain('fwd=uri-miss');

    expect((await replicaA.fetch(RECORDING, { method: 'DELETE' })).status).toBe(204);
    upstream.release(1);
    // The client that was streaming gets the whole recording; it is just not kept.
    expect(Buffer.from(await streaming.arrayBuffer()).equals(upstream.recording(1)!)).toBe(true);
    await replicaB.gateway.downloads.idle();

    const after = await fetchWhole(replicaA);
    expect(after.response.headers.get('cache-status')).toContain('fwd=uri-miss');
    expect(upstream.recordingRequests(1)).toHaveLength(2);
    // A download begun after the purge is stored as usual, and found by B.
    await replicaA.gateway.downloads.idle();
    const hit = await fetchWhole(replicaB);
    expect(hit.response.headers.get('cache-status')).toMatch(/\bhit\b/);
  });
});
