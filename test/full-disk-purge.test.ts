/**
 * A purge on a full disk: the moment operators purge. The cache directory is
 * a small real tmpfs filled to the last byte, with a real sqlite index that
 * cannot grow (SQLITE_FULL) and a real upstream on 127.0.0.1.
 */
import { existsSync } from 'node:fs';
import { syntheticRecording } from '../dev/recording-bytes.js';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { createSqliteIndex } from '../src/cache/sqlite-index.js';
import { sha256Hex } from '../src/sha256.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, SERVER_KEY, makeTempDir, removeDir, startGateway, testConfig, type RunningGateway } from '../dev/gateway-harness.js';
import { keyFor, mountTmpfs, recordingPath, storedFiles, unmount } from './support/durability.js';
import { runCliInProcess } from './support/run-cli-in-process.js';

const ADMIN_TOKEN = 'admin-token-for-full-disk-purge-0123456789';
const MISS = 'recording-gateway; fwd=uri-miss';
const IDS = [1, 2, 3];

let upstream: FakeFlyflow;
let base: string;
let dir: string;
const running: RunningGateway[] = [];

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  base = await makeTempDir('rg-full-disk-purge-');
  dir = path.join(base, 'cache');
  await mkdir(dir);
  await mountTmpfs(dir, '3m');
});

afterEach(async () => {
  for (const gateway of running.splice(0)) await gateway.close();
  await upstream.close();
  await unmount(dir);
  await removeDir(base);
});

async function start(): Promise<RunningGateway> {
  const gateway = await startGateway({ ...testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }), adminToken: ADMIN_TOKEN });
  running.push(gateway);
  return gateway;
}

async function stop(gateway: RunningGateway): Promise<void> {
  running.splice(running.indexOf(gateway), 1);
  await gateway.close();
}

async function get(gateway: RunningGateway, id: number): Promise<Response> {
  const response = await gateway.fetch(`/v1/call/recording/${id}.mp3`);
  await response.arrayBuffer();
  await gateway.gateway.downloads.idle();
  return response;
}

/** Caches the recordings, then fills the disk. */
async function cacheThenFillDisk(gateway: RunningGateway): Promise<void> {
  await cacheRecordings(gateway);
  await fillDisk();
}

async function cacheRecordings(gateway: RunningGateway): Promise<void> {
  for (const id of IDS) expect((await get(gateway, id)).status).toBe(200);
  expect(await storedFiles(dir)).toHaveLength(IDS.length);
}

/** Writes a file until the disk has not one byte left. */
async function fillDisk(): Promise<void> {
  const junk = await open(path.join(dir, 'junk'), 'w');
  try {
    for (;;) await junk.write(Buffer.alloc(16 * 1024));
  } catch (error) {
    expect((error as NodeJS.ErrnoException).code).toBe('ENOSPC');
  } finally {
    await junk.close();
  }
}

/** Neither file nor index entry is left of the recordings, and each is fetched from upstream again. */
async function expectPurged(gateway: RunningGateway | undefined): Promise<void> {
  expect(await storedFiles(dir)).toEqual([]);
  const index = gateway?.gateway.index ?? createSqliteIndex(dir);
  try {
    for (const id of IDS) expect(await index.get(keyFor(upstream.baseUrl, id))).toBeUndefined();
  } finally {
    if (!gateway) await index.close();
  }
  if (!gateway) return;
  for (const id of IDS) {
    const before = upstream.recordingRequests(id).length;
    const response = await get(gateway, id);
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-status')).toBe(MISS);
    expect(upstream.recordingRequests(id).length).toBe(before + 1);
  }
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Runs `cache purge ARGS` with no gateway answering at the config's address. */
async function purgeAlone(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const configPath = path.join(base, 'gateway.yaml');
  await writeFile(
    configPath,
    [
      `listen: { host: 127.0.0.1, port: ${await closedPort()} }`,
      `upstream: { base_url: "${upstream.baseUrl}" }`,
      `cache: { dir: ${JSON.stringify(dir)} }`,
      'tenants:',
      '  - id: acme',
      `    api_keys: ["sha256:${sha256Hex(ACME_KEY)}"]`,
    ].join('\n'),
  );
  return runCliInProcess(['--config', configPath, 'cache', 'purge', ...args], { cwd: base, env: { FLYFLOW_API_KEY: SERVER_KEY } });
}

/** The file and index entry of `id` are gone; the others' files are still there. */
async function expectCallPurged(id: number): Promise<void> {
  expect(existsSync(recordingPath(dir, upstream.baseUrl, id))).toBe(false);
  expect(await storedFiles(dir)).toHaveLength(IDS.length - 1);
  const index = createSqliteIndex(dir);
  try {
    expect(await index.get(keyFor(upstream.baseUrl, id))).toBeUndefined();
  } finally {
    await index.close();
  }
}

describe('a purge on a full disk', () => {
  test('DELETE answers 204, and the recording is gone from disk and index and fetched again', async () => {
    const gateway = await start();
    await cacheThenFillDisk(gateway);

    for (const id of IDS) {
      const response = await gateway.fetch(`/v1/call/recording/${id}.mp3`, { method: 'DELETE' });
      expect(response.status, await response.text()).toBe(204);
      expect(existsSync(recordingPath(dir, upstream.baseUrl, id))).toBe(false);
    }
    await expectPurged(gateway);
  });

  test('POST /admin/cache/purge {"all": true} purges every recording', async () => {
    const gateway = await start();
    await cacheThenFillDisk(gateway);

    const response = await fetch(`${gateway.baseUrl}/admin/cache/purge`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ all: true }),
    });
    expect(response.status, await response.clone().text()).toBe(200);
    expect(await response.json()).toEqual({ purged: IDS.length });
    await expectPurged(gateway);
  });

  test('after a DELETE on a full disk, the next start does not serve the recording either', async () => {
    const gateway = await start();
    await cacheThenFillDisk(gateway);
    expect((await gateway.fetch('/v1/call/recording/1.mp3', { method: 'DELETE' })).status).toBe(204);
    await stop(gateway);
    await rm(path.join(dir, 'junk'));

    const restarted = await start();
    const response = await get(restarted, 1);
    expect(response.headers.get('cache-status')).toBe(MISS);
    expect(upstream.recordingRequests(1)).toHaveLength(2);
  });

  test('`cache purge --all` with no gateway running purges every recording', async () => {
    const gateway = await start();
    await cacheRecordings(gateway);
    // Closing the index gave back its journal's room: filled after.
    await stop(gateway);
    await fillDisk();
    const purge = await purgeAlone(['--all']);
    expect(purge, purge.stderr).toMatchObject({ code: 0, stdout: `purged ${IDS.length} recordings` });
    await expectPurged(undefined);
  });

  test('`cache purge --call 1` with no gateway running removes a recording whose file gives back room enough for the index', async () => {
    upstream.setRecording(1, syntheticRecording(200 * 1024));
    const gateway = await start();
    await cacheRecordings(gateway);
    await stop(gateway);
    await fillDisk();
    const purge = await purgeAlone(['--call', '1']);
    expect(purge, purge.stderr).toMatchObject({ code: 0, stdout: 'purged 1 recording' });
    await expectCallPurged(1);
  });

  test('`cache purge --call 1` alone, when its file gives back less room than sqlite needs, removes the file and says in one line that the index entry stayed, and why', async () => {
    const gateway = await start();
    await cacheRecordings(gateway);
    await stop(gateway);
    await fillDisk();
    const purge = await purgeAlone(['--call', '1']);
    expect(purge.code).toBe(1);
    expect(purge.stdout).toBe('');
    expect(purge.stderr).toMatch(
      new RegExp(
        `^error: removed the file of 1 recording, but not its index entry: ${dir} is on a full volume and the sqlite index has no room to write \\(SQLITE_[A-Z]+: [^)]+\\); an entry without its file is never served, and the gateway's next start drops it; free some space on that volume and run the purge again$`,
      ),
    );
    expect(existsSync(recordingPath(dir, upstream.baseUrl, 1))).toBe(false);
    expect(await storedFiles(dir)).toHaveLength(IDS.length - 1);

    await rm(path.join(dir, 'junk'));
    const again = await purgeAlone(['--call', '1']);
    expect(again, again.stderr).toMatchObject({ code: 0, stdout: 'purged 1 recording' });
    await expectCallPurged(1);
  });

  test('a gateway started on a full volume, whose sqlite index cannot open, says the volume is full, not a bare disk I/O error', async () => {
    const gateway = await start();
    await cacheRecordings(gateway);
    await stop(gateway);
    await fillDisk();
    const refused = await start().then(
      () => undefined,
      (error: Error) => error,
    );
    expect(refused?.message).toMatch(/has no free space, so its sqlite index cannot be opened/);
  });
});
