import { afterAll, beforeAll, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { makeTempDir, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { createGateway, type Gateway } from '../src/gateway.js';

/*
 * A miss asks the sqlite index only when the recording's file is on disk
 * (src/cache/recording-cache.ts, lookupIndex): what another process on the
 * cache directory (the CLI's prefetch) stored is still found, without an
 * upstream request, and a real miss does not wait for the index.
 */

let upstream: FakeFlyflow;
let dir: string;
let gateway: RunningGateway;
let cli: Gateway;

beforeAll(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir();
  const config = testConfig({ dir, upstreamBaseUrl: upstream.baseUrl });
  gateway = await startGateway(config);
  // A second process on the same cache, as `recording-gateway prefetch` opens it.
  cli = await createGateway({ config, reconcile: false });
});

afterAll(async () => {
  await cli?.close();
  await gateway?.close();
  await upstream?.close();
  await removeDir(dir);
});

test('a recording another process stored after start-up is served from disk, with no upstream request', async () => {
  const acme = cli.tenants.byId('acme')!;
  await cli.recordings.warm(acme, '2');
  expect(upstream.recordingRequests(2)).toHaveLength(1);

  const served = await gateway.fetch('/v1/call/recording/2.mp3');
  expect(served.status).toBe(200);
  expect(served.headers.get('cache-status')).toBe('recording-gateway; hit; detail=disk');
  expect(Buffer.from(await served.arrayBuffer())).toEqual(upstream.recording(2));
  expect(upstream.recordingRequests(2)).toHaveLength(1);
});

test('a real miss with no file on disk never reads the index: the entry another process wrote without its file is not used', async () => {
  // An index entry whose file is missing can only be a leftover: the miss goes upstream without asking the index.
  const meta = (await cli.index.get(`${cli.tenants.byId('acme')!.namespace}/2`))!;
  await cli.index.set(`${meta.namespace}/3`, { ...meta, callId: '3' });
  const get = gateway.gateway.index.get.bind(gateway.gateway.index);
  const asked: string[] = [];
  gateway.gateway.index.get = (key) => {
    asked.push(key);
    return get(key);
  };
  try {
    const miss = await gateway.fetch('/v1/call/recording/3.mp3');
    expect(miss.headers.get('cache-status')).toBe('recording-gateway; fwd=uri-miss');
    expect(Buffer.from(await miss.arrayBuffer())).toEqual(upstream.recording(3));
    expect(asked).toEqual([]);
  } finally {
    gateway.gateway.index.get = get;
  }
});
