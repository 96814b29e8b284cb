import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { upstreamNamespace } from '../src/auth/tenants.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, SERVER_KEY, acmeTenant, makeTempDir, removeDir, startGateway, testConfig } from '../dev/gateway-harness.js';
import { runCliProcess } from '../dev/run-cli.js';

let upstream: FakeFlyflow;
let dir: string;
let configPath: string;
const env = { FLYFLOW_API_KEY: SERVER_KEY };

async function writeConfig(port = 8080): Promise<void> {
  await writeFile(
    configPath,
    [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `upstream: { base_url: "${upstream.baseUrl}" }`,
      `cache: { dir: ${JSON.stringify(path.join(dir, 'cache'))} }`,
      'tenants:',
      '  - id: acme',
      `    api_keys: ["sha256:${createHash('sha256').update(ACME_KEY).digest('hex')}"]`,
    ].join('\n'),
  );
}

beforeAll(async () => {
  upstream = await startFakeFlyflow({ apiKeys: [SERVER_KEY] });
  dir = await makeTempDir('rg-cli-cache-');
  configPath = path.join(dir, 'gateway.yaml');
  await writeConfig(1);
});

afterAll(async () => {
  await upstream.close();
  await removeDir(dir);
});

describe('cache commands, in the order an operator would use them', () => {
  test('prefetch warms the cache through the upstream', async () => {
    const { code, stdout, stderr } = await runCliProcess(['--config', configPath, 'prefetch', '1', '2', '4'], { env });
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toMatch(/call 1: cached \(22\.63 KB\)/);
    expect(stdout).toMatch(/call 4: cached/);
    expect(upstream.recordingRequests()).toHaveLength(3);
    const again = await runCliProcess(['--config', configPath, 'prefetch', '1'], { env });
    expect(again.stdout).toContain('call 1: already cached');
    expect(upstream.recordingRequests()).toHaveLength(3);
  });

  test('prefetch of a missing recording exits non-zero and says why', async () => {
    const { code, stdout, stderr } = await runCliProcess(['--config', configPath, 'prefetch', '999'], { env });
    expect(code).toBe(1);
    expect(stdout).toContain('call 999: failed: Recording not found');
    expect(stderr).toContain('1 of 1 recordings could not be prefetched');
  });

  test('cache stats counts entries and bytes per namespace, naming its tenants', async () => {
    const { code, stdout } = await runCliProcess(['--config', configPath, 'cache', 'stats'], { env });
    expect(code).toBe(0);
    const total = [1, 2, 4].reduce((sum, id) => sum + upstream.recording(id)!.length, 0);
    expect(stdout).toContain(`recordings: 3, `);
    expect(stdout).toContain(`${upstreamNamespace(upstream.baseUrl, SERVER_KEY)} (acme): 3 recordings`);
    expect(stdout).toContain('no running gateway answered');
    expect(stdout).not.toContain(SERVER_KEY);
    expect(total).toBeGreaterThan(0);
  });

  test('cache stats reports the hit ratio of the running gateway', async () => {
    const running = await startGateway(testConfig({ dir: path.join(dir, 'live'), upstreamBaseUrl: upstream.baseUrl, tenants: [acmeTenant()] }));
    try {
      await writeConfig(Number(new URL(running.baseUrl).port));
      await (await running.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
      await running.gateway.downloads.idle();
      for (let i = 0; i < 3; i++) await (await running.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
      const { stdout } = await runCliProcess(['--config', configPath, 'cache', 'stats'], { env });
      expect(stdout).toContain('hit ratio:  75.0% since start (3 hits of 4 recording requests)');
    } finally {
      await running.close();
      await writeConfig(1);
    }
  });

  test('cache verify finds a corrupted file by its sha256 and removes it', async () => {
    const file = path.join(dir, 'cache', 'recordings', upstreamNamespace(upstream.baseUrl, SERVER_KEY), '2.mp3');
    const bytes = await readFile(file);
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0xff;
    await writeFile(file, bytes);
    const { code, stdout } = await runCliProcess(['--config', configPath, 'cache', 'verify'], { env });
    expect(code).toBe(0);
    expect(stdout).toMatch(/removed .*\/2: sha256 mismatch/);
    expect(stdout).toContain('verified 3 recordings: 2 intact, 1 removed');
  });

  test('cache purge --call removes one recording; an unknown tenant is a clear error', async () => {
    const purge = await runCliProcess(['--config', configPath, 'cache', 'purge', '--call', '4'], { env });
    expect(purge.code).toBe(0);
    expect(purge.stdout).toContain('purged 1 recording');
    const stats = await runCliProcess(['--config', configPath, 'cache', 'stats'], { env });
    expect(stats.stdout).toContain('recordings: 1, ');
    const unknown = await runCliProcess(['--config', configPath, 'cache', 'purge', '--tenant', 'nobody'], { env });
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no tenant "nobody"');
  });

  test('cache purge --tenant removes that namespace', async () => {
    const { code, stdout } = await runCliProcess(['--config', configPath, 'cache', 'purge', '--tenant', 'acme'], { env });
    expect(code).toBe(0);
    expect(stdout).toContain('purged 1 recording');
  });

  test('every cache command has --help', async () => {
    for (const command of [['cache', 'stats'], ['cache', 'verify'], ['cache', 'purge'], ['prefetch']]) {
      const { code, stdout } = await runCliProcess([...command, '--help']);
      expect(code).toBe(0);
      expect(stdout).toContain('Usage: recording-gateway');
    }
  });
});
