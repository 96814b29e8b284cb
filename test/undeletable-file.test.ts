/**
 * A cached file the gateway cannot delete for a while (EPERM, EBUSY, EIO;
 * here `chattr +i`, which needs root and a file system that has it): it is
 * never served once purged or expired, stays counted, and goes as soon as a
 * later eviction or sweep can delete it. Real files, a real sqlite index, a
 * real upstream on 127.0.0.1.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { DAY_MS } from '../src/clock.js';
import { cacheKey } from '../src/cache/recording-meta.js';
import { manualClock, namespaceFor, type RunningGateway } from '../dev/gateway-harness.js';
import { capturingLogger } from './support/capturing-logger.js';
import { gatewayPerTest } from './support/gateway-per-test.js';
import { storedFiles } from './support/durability.js';

const MISS = 'recording-gateway; fwd=uri-miss';

/** Whether `chattr +i` works here (root, a file system with the flag); the tests skip where it does not. */
function canMakeImmutable(): boolean {
  const dir = mkdtempSync(path.join(tmpdir(), 'rg-chattr-'));
  const file = path.join(dir, 'probe');
  try {
    writeFileSync(file, '');
    execFileSync('chattr', ['+i', file], { stdio: 'ignore' });
    execFileSync('chattr', ['-i', file], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const immutableWorks = canMakeImmutable();
const bed = gatewayPerTest('rg-undeletable-');
const immutable = new Set<string>();

function makeImmutable(file: string): void {
  execFileSync('chattr', ['+i', file]);
  immutable.add(file);
}

function makeMutable(file: string): void {
  execFileSync('chattr', ['-i', file]);
  immutable.delete(file);
}

// Registered after the bed's hooks, so it runs before they remove the directory.
afterEach(() => {
  for (const file of immutable) makeMutable(file);
});

async function get(gateway: RunningGateway, id: number): Promise<Response> {
  const response = await gateway.fetch(`/v1/call/recording/${id}.mp3`);
  expect(response.status).toBe(200);
  expect(Buffer.from(await response.arrayBuffer()).equals(bed.upstream.recording(id)!)).toBe(true);
  await gateway.gateway.downloads.idle();
  return response;
}

const keyOf = (id: number) => cacheKey(namespaceFor(bed.upstream.baseUrl), String(id));

describe.skipIf(!immutableWorks)('a cached file that cannot be deleted for a while', () => {
  test('after a failed DELETE it is never served, stays counted, and the next eviction deletes it', async () => {
    const sizes = [1, 2, 3].map((id) => bed.upstream.recording(id)!.length);
    // Room for two of the three recordings.
    const maxDiskBytes = sizes[0]! + sizes[1]! + 1000;
    const gateway = await bed.start({ cache: { maxDiskBytes } });
    await get(gateway, 2);
    const file = bed.recordingFile(2, 'mp3');
    makeImmutable(file);

    const refused = await gateway.fetch('/v1/call/recording/2.mp3', { method: 'DELETE' });
    expect(refused.status).toBe(503);
    expect(await refused.json()).toEqual({ error: 'Service Unavailable', message: expect.any(String) });
    // Neither from memory nor from the file and index entry still there.
    const after = await get(gateway, 2);
    expect(after.headers.get('cache-status')).toBe(MISS);
    expect(bed.upstream.recordingRequests(2)).toHaveLength(2);

    makeMutable(file);
    await get(gateway, 1);
    await get(gateway, 3);
    // The file was still counted, so storing 3 went over the budget and evicted it, least recently used.
    expect(existsSync(file)).toBe(false);
    expect(await gateway.gateway.index.get(keyOf(2))).toBeUndefined();
    expect(await storedFiles(bed.dir)).toHaveLength(2);
    expect(gateway.gateway.cache.stats().diskBytes).toBeLessThanOrEqual(maxDiskBytes);
  });

  test('an expired copy whose deletion failed is deleted by a later sweep, even once fetched again meanwhile', async () => {
    const clock = manualClock();
    const gateway = await bed.start({ cache: { retentionDays: 1 } }, { clock });
    await get(gateway, 4);
    const file = bed.recordingFile(4, 'mp3');
    makeImmutable(file);

    clock.advance(DAY_MS + 1);
    expect(await gateway.gateway.retention!.sweep()).toBe(0);
    const again = await get(gateway, 4);
    expect(again.headers.get('cache-status')).toBe(MISS);

    makeMutable(file);
    expect(await gateway.gateway.retention!.sweep()).toBe(1);
    expect(existsSync(file)).toBe(false);
    expect(await gateway.gateway.index.get(keyOf(4))).toBeUndefined();
    expect(await storedFiles(bed.dir)).toEqual([]);
  });

  test('an eviction that fails makes no room: the newcomer is served, not stored, and the disk stays within its budget', async () => {
    const sizes = [1, 2, 3].map((id) => bed.upstream.recording(id)!.length);
    const maxDiskBytes = sizes[0]! + sizes[1]! + 1000;
    const gateway = await bed.start({ cache: { maxDiskBytes } });
    await get(gateway, 1);
    await get(gateway, 2);
    const file = bed.recordingFile(1, 'mp3');
    makeImmutable(file);

    // 3 needs 1's room (the least recently used), which cannot be deleted.
    await get(gateway, 3);
    expect(existsSync(bed.recordingFile(3, 'mp3'))).toBe(false);
    const onDisk = await storedFiles(bed.dir);
    expect(onDisk.reduce((sum, stored) => sum + statSync(path.join(bed.dir, 'recordings', stored)).size, 0)).toBeLessThanOrEqual(
      maxDiskBytes,
    );
    expect(gateway.gateway.cache.stats().diskBytes).toBeLessThanOrEqual(maxDiskBytes);
  });

  test('an eviction that fails is logged naming the file and the real cause (EPERM from unlink), not ENOTDIR from scandir', async () => {
    const sizes = [1, 2, 3].map((id) => bed.upstream.recording(id)!.length);
    const { logger, lines } = capturingLogger();
    const gateway = await bed.start({ cache: { maxDiskBytes: sizes[0]! + sizes[1]! + 1000 } }, { logger });
    await get(gateway, 1);
    await get(gateway, 2);
    const file = bed.recordingFile(1, 'mp3');
    makeImmutable(file);

    await get(gateway, 3);
    expect(lines.find((line) => line.msg === 'evicting a recording failed')?.err).toMatchObject({
      code: 'EPERM',
      message: `EPERM: operation not permitted, unlink '${file}'`,
    });
    expect(JSON.stringify(lines)).not.toMatch(/scandir|ENOTDIR/);
  });

  test('a DELETE refused 503 because the file cannot be deleted logs the file and the cause', async () => {
    const { logger, lines } = capturingLogger();
    const gateway = await bed.start({}, { logger });
    await get(gateway, 1);
    const file = bed.recordingFile(1, 'mp3');
    makeImmutable(file);

    expect((await gateway.fetch('/v1/call/recording/1.mp3', { method: 'DELETE' })).status).toBe(503);
    const said = lines.find((line) => String(line.msg).startsWith("a purge could not delete the recording's file"));
    expect(said).toMatchObject({ key: keyOf(1), err: { code: 'EPERM', message: `EPERM: operation not permitted, unlink '${file}'` } });
  });

  test('a retention sweep that cannot delete a file logs the file and EPERM from unlink', async () => {
    const clock = manualClock();
    const { logger, lines } = capturingLogger();
    const gateway = await bed.start({ cache: { retentionDays: 1 } }, { clock, logger });
    await get(gateway, 4);
    const file = bed.recordingFile(4, 'mp3');
    makeImmutable(file);

    clock.advance(DAY_MS + 1);
    expect(await gateway.gateway.retention!.sweep()).toBe(0);
    expect(lines.find((line) => line.msg === 'deleting an expired recording failed; the next sweep tries again')?.err).toMatchObject({
      code: 'EPERM',
      message: `EPERM: operation not permitted, unlink '${file}'`,
    });
  });

  test("a purged copy whose file cannot be replaced is that file's trouble: /readyz stays 200", async () => {
    const gateway = await bed.start();
    await get(gateway, 2);
    makeImmutable(bed.recordingFile(2, 'mp3'));
    expect((await gateway.fetch('/v1/call/recording/2.mp3', { method: 'DELETE' })).status).toBe(503);
    // Fetched again, and its store fails on the file it cannot replace.
    await get(gateway, 2);
    await get(gateway, 2);
    const ready = await gateway.fetch('/readyz');
    expect(ready.status, await ready.clone().text()).toBe(200);
  });
});
