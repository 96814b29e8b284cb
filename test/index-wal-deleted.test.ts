/**
 * The sqlite index's write-ahead log (`index.sqlite-wal`) or its shared-memory
 * file (`-shm`) deleted while the gateway runs: sqlite would go on writing
 * into the deleted log, and a crash would lose every entry since the last
 * checkpoint. A real gateway process, killed with SIGKILL, a real sqlite
 * index, a real upstream on 127.0.0.1.
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, makeTempDir, removeDir } from '../dev/gateway-harness.js';
import { startGatewayProcess, stopGatewayProcess, writeGatewayConfig, type GatewayProcess } from '../dev/gateway-process.js';
import { INDEX_SIDE_FILES } from '../src/cache/damaged-index.js';
import { sqliteIndexFile } from '../src/cache/sqlite-index.js';
import { runCliInProcess } from './support/run-cli-in-process.js';

const AUTH = { authorization: `Bearer ${ACME_KEY}` };

let upstream: FakeFlyflow;
let dir: string;
let cacheDir: string;
let configPath: string;
const children: GatewayProcess[] = [];

beforeEach(async () => {
  upstream = await startFakeFlyflow();
  dir = await makeTempDir('rg-index-wal-');
  cacheDir = path.join(dir, 'cache');
  configPath = await writeGatewayConfig(dir, { upstreamBaseUrl: upstream.baseUrl, cacheDir });
});

afterEach(async () => {
  for (const child of children.splice(0)) await stopGatewayProcess(child);
  await upstream.close();
  await removeDir(dir);
});

async function startChild(): Promise<GatewayProcess> {
  const child = await startGatewayProcess(configPath);
  children.push(child);
  return child;
}

/** Fetches a recording and waits until the gateway has indexed it (a HEAD is then a hit). */
async function store(gateway: GatewayProcess, id: number): Promise<void> {
  const response = await fetch(`${gateway.url}/v1/call/recording/${id}.mp3`, { headers: AUTH });
  expect(response.status).toBe(200);
  await response.arrayBuffer();
  await expect
    .poll(async () =>
      (await fetch(`${gateway.url}/v1/call/recording/${id}.mp3`, { method: 'HEAD', headers: AUTH })).headers.get('cache-status'),
    )
    .toMatch(/; hit/);
}

async function cacheStatus(gateway: GatewayProcess, id: number): Promise<string | null> {
  const response = await fetch(`${gateway.url}/v1/call/recording/${id}.mp3`, { headers: AUTH });
  expect(response.status).toBe(200);
  await response.arrayBuffer();
  return response.headers.get('cache-status');
}

async function readyz(gateway: GatewayProcess): Promise<{ status: number; message?: string }> {
  const response = await fetch(`${gateway.url}/readyz`);
  const { message } = (await response.json()) as { message?: string };
  return { status: response.status, ...(message === undefined ? {} : { message }) };
}

describe.each(['-wal', '-shm'])('the index %s file deleted while the gateway runs', (suffix) => {
  test('no entry is lost to a SIGKILL after it: /readyz notices, the log is checkpointed, and a restart keeps every recording', async () => {
    const first = await startChild();
    await store(first, 1);
    await store(first, 2);
    await rm(sqliteIndexFile(cacheDir) + suffix);
    await store(first, 3);

    expect(await readyz(first)).toEqual({
      status: 503,
      message: `sqlite index: its ${suffix} file was deleted while the gateway ran; opening the index again`,
    });
    await expect.poll(async () => (await readyz(first)).status).toBe(200);
    await first.waitForLog((line) => line.msg === 'the cache index is open again, with its -wal and -shm in place; no entry was lost');
    for (const side of INDEX_SIDE_FILES) expect(existsSync(sqliteIndexFile(cacheDir) + side)).toBe(true);
    await store(first, 4);
    first.child.kill('SIGKILL');
    await first.exited;

    const second = await startChild();
    for (const id of [1, 2, 3, 4]) expect(await cacheStatus(second, id)).toMatch(/; hit/);
    for (const id of [1, 2, 3, 4]) expect(upstream.recordingRequests(id)).toHaveLength(1);
  });
});

describe('`cache stats` run after the -wal was deleted and before the next /readyz', () => {
  test('says in one line that the log was deleted and that the gateway repairs it at its next /readyz, and counts every recording after it', async () => {
    const gateway = await startChild();
    await store(gateway, 1);
    await rm(`${sqliteIndexFile(cacheDir)}-wal`);
    await store(gateway, 2);
    const stats = () => runCliInProcess(['--config', configPath, 'cache', 'stats', '--json'], { cwd: dir });

    expect(await stats()).toEqual({
      code: 1,
      stdout: '',
      stderr: `error: the cache index's log ${sqliteIndexFile(cacheDir)}-wal was deleted while a gateway had it open, so the index cannot be read here: the running gateway writes what the log held into the index at its next /readyz (probe it, then run this again)`,
    });
    await expect.poll(async () => (await readyz(gateway)).status).toBe(200);
    const after = await stats();
    expect(after.code, after.stderr).toBe(0);
    expect(JSON.parse(after.stdout)).toMatchObject({ recordings: 2 });
  });
});
