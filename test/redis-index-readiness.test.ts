/**
 * /readyz of a gateway on a shared Redis index (`cache.index: redis://…`, no
 * cluster) while that Redis is down or stalled: the index is named as the
 * cause, never the cache disk, and the answer comes within a load balancer's
 * probe timeout.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { makeTempDir, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { startRedisServer, type RunningRedis } from './support/redis-server.js';

let upstream: FakeFlyflow;
let redis: RunningRedis | undefined;
let gateway: RunningGateway | undefined;
let dir: string | undefined;

beforeAll(async () => {
  upstream = await startFakeFlyflow();
});
afterAll(async () => {
  await upstream.close();
});
afterEach(async () => {
  if (redis) process.kill(redis.pid, 'SIGCONT');
  await gateway?.close();
  await redis?.stop();
  if (dir) await removeDir(dir);
  gateway = undefined;
  redis = undefined;
  dir = undefined;
});

async function start(): Promise<RunningGateway> {
  redis = await startRedisServer();
  dir = await makeTempDir('rg-redis-ready-');
  gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl, cache: { index: { kind: 'redis', url: redis.url } } }));
  return gateway;
}

async function readyz(replica: RunningGateway): Promise<{ status: number; message?: string; ms: number }> {
  const started = Date.now();
  const response = await replica.fetch('/readyz');
  const body = (await response.json()) as { message?: string };
  return { status: response.status, ...(body.message === undefined ? {} : { message: body.message }), ms: Date.now() - started };
}

/** Polls /readyz until it answers 200, for at most `ms`. */
async function readyWithin(replica: RunningGateway, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if ((await readyz(replica)).status === 200) return true;
    await sleep(100);
  }
  return false;
}

describe('/readyz on a shared Redis index', () => {
  test('a recording stored while Redis is down makes the index the reason, not the cache disk, and readiness returns with Redis', async () => {
    const replica = await start();
    const { port } = redis!;
    await redis!.stop();
    const response = await replica.fetch('/v1/call/recording/1.mp3');
    expect(response.status).toBe(200);
    await response.arrayBuffer();
    await replica.gateway.downloads.idle();
    const down = await readyz(replica);
    expect(down.status).toBe(503);
    expect(down.message).toMatch(/^redis index: /);
    expect(down.message).not.toContain('cache directory');
    redis = await startRedisServer({ port });
    expect(await readyWithin(replica, 3_000)).toBe(true);
  });

  test('a stalled Redis is reported within about a second, not after the index’s 5 s operation timeout', async () => {
    const replica = await start();
    expect((await readyz(replica)).status).toBe(200);
    process.kill(redis!.pid, 'SIGSTOP');
    const stalled = await readyz(replica);
    expect(stalled).toMatchObject({ status: 503, message: 'redis index: the index store did not answer within 1 s' });
    expect(stalled.ms).toBeLessThan(1_500);
    // Asked again while the first ping still waits: no longer.
    expect((await readyz(replica)).ms).toBeLessThan(1_500);
    process.kill(redis!.pid, 'SIGCONT');
    expect(await readyWithin(replica, 3_000)).toBe(true);
  });
});
