/**
 * Recordings are personal data: whatever the gateway and its CLI create under
 * cache.dir is closed to other local users under the usual umask 022
 * (directories 0750, files 0640, as the audit trail), and what an older
 * version left open is closed at start-up where that is cheap. Real files, a
 * real sqlite index, a real upstream on 127.0.0.1.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ACME_KEY, SERVER_KEY, bytesOf, namespaceFor } from '../dev/gateway-harness.js';
import { createDiskStore } from '../src/cache/disk-store.js';
import { writeFully } from '../src/cache/temp-file.js';
import { gatewayPerTest, settled } from './support/gateway-per-test.js';
import { runCliInProcess } from './support/run-cli-in-process.js';

const bed = gatewayPerTest('rg-file-modes-');
let umask: number;

beforeAll(() => {
  umask = process.umask(0o022);
});

afterAll(() => {
  process.umask(umask);
});

const modeOf = async (file: string): Promise<number> => (await stat(file)).mode & 0o7777;

/** Every directory and file under `root` (itself included), with its permission bits. */
async function modesUnder(root: string): Promise<Map<string, number>> {
  const modes = new Map<string, number>([['.', await modeOf(root)]]);
  for (const entry of await readdir(root, { recursive: true })) modes.set(entry, await modeOf(path.join(root, entry)));
  return modes;
}

/** Everything under `root` is 0750 (directories) or 0640 (files): nothing for others. */
async function expectClosedToOthers(root: string): Promise<Map<string, number>> {
  const modes = await modesUnder(root);
  const wrong: string[] = [];
  for (const [entry, mode] of modes) {
    const expected = (await stat(path.join(root, entry))).isDirectory() ? 0o750 : 0o640;
    if (mode !== expected) wrong.push(`${entry}: ${mode.toString(8)}, expected ${expected.toString(8)}`);
  }
  expect(wrong).toEqual([]);
  return modes;
}

describe('files under cache.dir, under umask 022', () => {
  test('a fetched recording, its sidecar, the index and the folders the gateway created are not readable by other users', async () => {
    const cacheDir = path.join(bed.dir, 'cache');
    const gateway = await bed.start({ dir: cacheDir });
    expect((await gateway.fetch('/v1/call/recording/4.mp3')).status).toBe(200);
    expect((await gateway.fetch('/v1/call/recording/4/peaks.json?points=10')).status).toBe(200);
    await settled(gateway);

    const modes = await expectClosedToOthers(cacheDir);
    const namespace = namespaceFor(bed.upstream.baseUrl);
    // Each kind of file is there to be checked, the index's WAL files too (the gateway holds the index open).
    for (const entry of [
      'index.sqlite',
      'index.sqlite-wal',
      'index.sqlite-shm',
      'tmp',
      'recordings',
      `recordings/${namespace}`,
      `recordings/${namespace}/4.mp3`,
      `sidecars/${namespace}/4.peaks`,
    ]) {
      expect(modes.has(entry), entry).toBe(true);
    }
    expect([...modes.keys()].filter((entry) => entry.startsWith('tmp/'))).toHaveLength(1);
  });

  test.each([
    ['in the clear', undefined],
    ['encrypted', { key: randomBytes(32), previousKeys: [] }],
  ])(
    'a download in progress (%s) is written to a temporary file other users cannot read, and keeps its mode once stored',
    async (_, encryption) => {
      const disk = createDiskStore(bed.dir, { encryption });
      await disk.init();
      const file = await disk.createTemp();
      try {
        expect(await modeOf(path.dirname(file.path))).toBe(0o750);
        expect(await modeOf(file.path)).toBe(0o640);
        await writeFully(file, randomBytes(1000), 0);
        await file.sync();
        await file.commit(disk.pathFor('ns', '7'));
      } finally {
        await file.close();
      }
      expect(await modeOf(disk.pathFor('ns', '7'))).toBe(0o640);
      expect(await modeOf(path.dirname(disk.pathFor('ns', '7')))).toBe(0o750);
    },
  );

  test('a cache directory the operator made keeps its mode; what an older version left open to others is closed at start-up', async () => {
    const cacheDir = path.join(bed.dir, 'cache');
    const namespace = namespaceFor(bed.upstream.baseUrl);
    const first = await bed.start({ dir: cacheDir });
    await bytesOf(await first.fetch('/v1/call/recording/1.mp3'));
    await bed.stop(first);
    // As an older version left them under umask 022, in a cache directory the operator made 0755.
    for (const folder of ['.', 'recordings', `recordings/${namespace}`, 'tmp']) await chmod(path.join(cacheDir, folder), 0o755);
    await chmod(path.join(cacheDir, 'index.sqlite'), 0o644);
    await writeFile(path.join(cacheDir, 'index.sqlite-wal'), '', { mode: 0o644 });

    const gateway = await bed.start({ dir: cacheDir });
    expect((await gateway.fetch('/v1/call/recording/1.mp3')).status).toBe(200);
    expect(await modeOf(cacheDir)).toBe(0o755);
    for (const folder of ['recordings', `recordings/${namespace}`, 'tmp'])
      expect(await modeOf(path.join(cacheDir, folder)), folder).toBe(0o750);
    for (const file of ['index.sqlite', 'index.sqlite-wal', 'index.sqlite-shm'])
      expect(await modeOf(path.join(cacheDir, file)), file).toBe(0o640);
  });

  test('recording-gateway prefetch creates the cache closed to other users', async () => {
    const cacheDir = path.join(bed.dir, 'cache');
    const config = path.join(bed.dir, 'gateway.yaml');
    await writeFile(
      config,
      [
        `upstream: { base_url: "${bed.upstream.baseUrl}" }`,
        `cache: { dir: ${JSON.stringify(cacheDir)} }`,
        'tenants:',
        '  - id: acme',
        `    api_keys: ["sha256:${createHash('sha256').update(ACME_KEY).digest('hex')}"]`,
      ].join('\n'),
    );
    const { code, stderr } = await runCliInProcess(['--config', config, 'prefetch', '2'], {
      cwd: bed.dir,
      env: { FLYFLOW_API_KEY: SERVER_KEY },
    });
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const modes = await expectClosedToOthers(cacheDir);
    expect(modes.has(`recordings/${namespaceFor(bed.upstream.baseUrl)}/2.mp3`)).toBe(true);
    expect(modes.has('index.sqlite')).toBe(true);
  });
});
