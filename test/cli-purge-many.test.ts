/**
 * `cache purge` with no gateway running, on more recordings than it removes
 * in one index operation: real sqlite, real files.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { makeTempDir, removeDir, SERVER_KEY } from '../dev/gateway-harness.js';
import { writeGatewayConfig } from '../dev/gateway-process.js';
import { upstreamNamespace } from '../src/auth/tenants.js';
import { createDiskStore } from '../src/cache/disk-store.js';
import { cacheKey } from '../src/cache/recording-meta.js';
import { createSqliteIndex } from '../src/cache/sqlite-index.js';
import { sampleMeta } from './recording-index.contract.js';
import { runCliInProcess } from './support/run-cli-in-process.js';

const UPSTREAM = 'http://127.0.0.1:9/v1';
const ACME = upstreamNamespace(UPSTREAM, SERVER_KEY);
// No tenant of the config has it: a purge of acme must leave it alone.
const OTHER = 'ns-of-another-account-0123456789';
const ids = (count: number) => Array.from({ length: count }, (_, i) => String(i + 1));

let dir: string | undefined;

afterEach(async () => {
  if (dir) await removeDir(dir);
  dir = undefined;
});

test('cache purge --tenant removes each of 1,100 recordings, files and entries, over three batches, and no other', async () => {
  dir = await makeTempDir('rg-purge-many-');
  const cacheDir = path.join(dir, 'cache');
  const configPath = await writeGatewayConfig(dir, { upstreamBaseUrl: UPSTREAM, cacheDir });
  const disk = createDiskStore(cacheDir);
  await disk.init();
  const index = createSqliteIndex(cacheDir);
  const store = async (namespace: string, callId: string) => {
    await index.set(cacheKey(namespace, callId), sampleMeta(callId, { namespace, size: 16 }));
    const file = disk.pathFor(namespace, callId);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, Buffer.alloc(16, 1));
  };
  for (const callId of ids(1_100)) await store(ACME, callId);
  for (const callId of ids(30)) await store(OTHER, callId);
  await index.close();

  const purge = await runCliInProcess(['--config', configPath, 'cache', 'purge', '--tenant', 'acme'], {
    cwd: dir,
    env: { FLYFLOW_API_KEY: SERVER_KEY },
  });
  expect(purge.stderr).toBe('');
  expect(purge.stdout).toBe('purged 1100 recordings');
  expect(purge.code).toBe(0);

  const after = createSqliteIndex(cacheDir);
  const left: string[] = [];
  for await (const [key] of after.entries()) left.push(key);
  await after.close();
  expect(left.sort()).toEqual(
    ids(30)
      .map((callId) => cacheKey(OTHER, callId))
      .sort(),
  );
  await expect(readdir(path.dirname(disk.pathFor(ACME, '1')))).resolves.toEqual([]);
  expect(await readdir(path.dirname(disk.pathFor(OTHER, '1')))).toHaveLength(30);
});
