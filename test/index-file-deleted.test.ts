/**
 * The sqlite index file, or the whole cache directory, deleted while the
 * gateway runs: /readyz says so, the gateway puts the index back from the one
 * it has open, and the next start keeps what it lists. Real files, a real
 * sqlite index, a real upstream on 127.0.0.1.
 */
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { describe, expect, test } from 'vitest';
import { INDEX_SIDE_FILES } from '../src/cache/damaged-index.js';
import { sqliteIndexFile } from '../src/cache/sqlite-index.js';
import { makeTempDir, removeDir, SERVER_KEY, type RunningGateway } from '../dev/gateway-harness.js';
import { writeGatewayConfig } from '../dev/gateway-process.js';
import { runCliInProcess } from './support/run-cli-in-process.js';
import { capturingLogger } from './support/capturing-logger.js';
import { gatewayPerTest } from './support/gateway-per-test.js';

const HIT = /^recording-gateway; hit/;
const MISS = 'recording-gateway; fwd=uri-miss';

const bed = gatewayPerTest('rg-index-deleted-');

async function get(gateway: RunningGateway, id: number): Promise<string | null> {
  const response = await gateway.fetch(`/v1/call/recording/${id}.mp3`);
  expect(response.status).toBe(200);
  expect(Buffer.from(await response.arrayBuffer()).equals(bed.upstream.recording(id)!)).toBe(true);
  await gateway.gateway.downloads.idle();
  return response.headers.get('cache-status');
}

async function readyz(gateway: RunningGateway): Promise<{ status: number; message?: string }> {
  const response = await fetch(`${gateway.baseUrl}/readyz`);
  const { message } = (await response.json()) as { message?: string };
  return { status: response.status, ...(message === undefined ? {} : { message }) };
}

async function deleteIndexFile(): Promise<void> {
  const file = sqliteIndexFile(bed.dir);
  for (const suffix of ['', ...INDEX_SIDE_FILES]) await rm(file + suffix, { force: true });
}

describe('the index file deleted while the gateway runs', () => {
  test('/readyz answers 503 saying so, the file is put back with every entry, and a restart keeps the recordings', async () => {
    const { logger, lines } = capturingLogger();
    const gateway = await bed.start({}, { logger });
    await get(gateway, 1);
    await get(gateway, 2);
    await deleteIndexFile();

    const first = await readyz(gateway);
    expect(first.status).toBe(503);
    expect(first.message).toContain('sqlite index: its file was deleted while the gateway ran');
    expect(first.message).not.toContain(bed.dir);
    await expect.poll(async () => (await readyz(gateway)).status).toBe(200);
    expect(existsSync(sqliteIndexFile(bed.dir))).toBe(true);
    expect(lines.some((line) => line.msg === 'the cache index file is restored')).toBe(true);

    // Stored and purged after the restore: the restored file has both.
    expect(await get(gateway, 3)).toBe(MISS);
    expect((await gateway.fetch('/v1/call/recording/1.mp3', { method: 'DELETE' })).status).toBe(204);
    await bed.stop(gateway);

    const restarted = await bed.start();
    expect(await get(restarted, 2)).toMatch(HIT);
    expect(await get(restarted, 3)).toMatch(HIT);
    expect(await get(restarted, 1)).toBe(MISS);
    expect(bed.upstream.recordingRequests(2)).toHaveLength(1);
    expect(bed.upstream.recordingRequests(3)).toHaveLength(1);
  });

  test('with the whole cache directory removed, /readyz answers 503, then the gateway recreates it and stores again', async () => {
    const gateway = await bed.start();
    await get(gateway, 1);
    await rm(bed.dir, { recursive: true, force: true });

    expect((await readyz(gateway)).status).toBe(503);
    await expect.poll(async () => (await readyz(gateway)).status).toBe(200);
    expect(await get(gateway, 2)).toBe(MISS);
    await bed.stop(gateway);

    const restarted = await bed.start();
    expect(await get(restarted, 2)).toMatch(HIT);
    // Its file went with the directory: its entry is dropped, and it is fetched again.
    expect(await get(restarted, 1)).toBe(MISS);
  });

  test('an index file replaced by another keeps /readyz at 503, saying to restart', async () => {
    const gateway = await bed.start();
    await get(gateway, 1);
    await deleteIndexFile();
    await writeFile(sqliteIndexFile(bed.dir), '');

    for (let probe = 0; probe < 3; probe++) {
      expect(await readyz(gateway)).toEqual({
        status: 503,
        message: 'sqlite index: its file was replaced while the gateway ran; restart the gateway',
      });
    }
  });

  test('a CLI command run before the gateway put it back refuses, creating no empty index in its place; the gateway then restores it', async () => {
    const gateway = await bed.start();
    await get(gateway, 1);
    await deleteIndexFile();

    const cliDir = await makeTempDir('rg-index-deleted-cli-');
    try {
      const configPath = await writeGatewayConfig(cliDir, { upstreamBaseUrl: bed.upstream.baseUrl, cacheDir: bed.dir });
      const stats = await runCliInProcess(['--config', configPath, 'cache', 'stats'], {
        cwd: cliDir,
        env: { FLYFLOW_API_KEY: SERVER_KEY },
      });
      expect(stats.code).toBe(1);
      expect(stats.stderr).toContain('is missing while the cache holds recordings');
      expect(existsSync(sqliteIndexFile(bed.dir))).toBe(false);
    } finally {
      await removeDir(cliDir);
    }
    expect((await readyz(gateway)).message).toContain('restoring it');
    await expect.poll(async () => (await readyz(gateway)).status).toBe(200);
    await bed.stop(gateway);
    expect(await get(await bed.start(), 1)).toMatch(HIT);
  });
});
