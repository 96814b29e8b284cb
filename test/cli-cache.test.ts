import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { upstreamNamespace } from '../src/auth/tenants.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, SERVER_KEY, acmeTenant, makeTempDir, removeDir, startGateway, testConfig } from '../dev/gateway-harness.js';
import { runCliProcess } from '../dev/run-cli.js';
import { runCliInProcess } from './support/run-cli-in-process.js';

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

  test('prefetch --json reports each recording in one document', async () => {
    const { code, stdout, stderr } = await runCliInProcess(['--config', configPath, 'prefetch', '1', '998', '--json'], { cwd: dir, env });
    expect(code).toBe(1);
    expect(JSON.parse(stdout)).toEqual({
      recordings: [
        { call_id: 1, status: 'cached', size: upstream.recording(1)!.length },
        { call_id: 998, status: 'failed', error: 'Recording not found' },
      ],
      failed: 1,
    });
    expect(stderr).toBe('error: 1 of 2 recordings could not be prefetched');
  });

  test('prefetch --json tells a recording fetched now from one already cached, as the text does', async () => {
    const own = await makeTempDir('rg-cli-prefetch-');
    try {
      const ownConfig = path.join(own, 'gateway.yaml');
      await writeFile(
        ownConfig,
        (await readFile(configPath, 'utf8')).replace(JSON.stringify(path.join(dir, 'cache')), JSON.stringify(path.join(own, 'cache'))),
      );
      const first = await runCliInProcess(['--config', ownConfig, 'prefetch', '2', '--json'], { cwd: own, env });
      expect(first.code).toBe(0);
      expect(JSON.parse(first.stdout)).toEqual({
        recordings: [{ call_id: 2, status: 'fetched', size: upstream.recording(2)!.length }],
        failed: 0,
      });
      const again = await runCliInProcess(['--config', ownConfig, 'prefetch', '2', '--json'], { cwd: own, env });
      expect(JSON.parse(again.stdout)).toEqual({
        recordings: [{ call_id: 2, status: 'cached', size: upstream.recording(2)!.length }],
        failed: 0,
      });
      const text = await runCliInProcess(['--config', ownConfig, 'prefetch', '2'], { cwd: own, env });
      expect(text.stdout).toContain('call 2: already cached');
      // One recording is counted in the singular.
      const stats = await runCliInProcess(['--config', ownConfig, 'cache', 'stats'], { cwd: own, env });
      expect(stats.stdout).toContain('(acme): 1 recording, ');
      const verified = await runCliInProcess(['--config', ownConfig, 'cache', 'verify'], { cwd: own, env });
      expect(verified.stdout).toContain('verified 1 recording: 1 intact, 0 removed');
    } finally {
      await removeDir(own);
    }
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
    const running = await startGateway(
      testConfig({ dir: path.join(dir, 'live'), upstreamBaseUrl: upstream.baseUrl, tenants: [acmeTenant()] }),
    );
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

  test('cache stats --json prints one document with the same numbers', async () => {
    const { code, stdout } = await runCliInProcess(['--config', configPath, 'cache', 'stats', '--json'], { cwd: dir, env });
    expect(code).toBe(0);
    const namespace = upstreamNamespace(upstream.baseUrl, SERVER_KEY);
    const sizes = [1, 2, 4].map((id) => upstream.recording(id)!.length);
    expect(JSON.parse(stdout)).toEqual({
      cache_dir: path.join(dir, 'cache'),
      index: 'sqlite',
      exists: true,
      recordings: 3,
      bytes: sizes.reduce((sum, size) => sum + size, 0),
      max_disk_bytes: 10 * 1024 ** 3,
      namespaces: [{ namespace, tenants: ['acme'], recordings: 3, bytes: sizes.reduce((sum, size) => sum + size, 0) }],
      gateway: { url: 'http://127.0.0.1:1', state: 'not-running' },
    });
  });

  test('`cache stats | head -1` ends quietly when head closes the pipe, exit 0', async () => {
    const { code, stderr } = await runCliProcess(['--config', configPath, 'cache', 'stats'], { env, closeStdout: true });
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });

  test('cache verify finds a corrupted file by its sha256, removes it and exits 1', async () => {
    const file = path.join(dir, 'cache', 'recordings', upstreamNamespace(upstream.baseUrl, SERVER_KEY), '2.mp3');
    const bytes = await readFile(file);
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0xff;
    await writeFile(file, bytes);
    const { code, stdout, stderr } = await runCliProcess(['--config', configPath, 'cache', 'verify'], { env });
    expect(code).toBe(1);
    expect(stdout).toMatch(/removed .*\/2: sha256 mismatch/);
    expect(stdout).toContain('verified 3 recordings: 2 intact, 1 removed');
    expect(stderr).toBe('error: found 1 damaged recording and removed it\n');
  });

  test('cache verify of an intact cache exits 0; --json lists what it removed', async () => {
    const clean = await runCliInProcess(['--config', configPath, 'cache', 'verify', '--json'], { cwd: dir, env });
    expect(clean.code).toBe(0);
    expect(JSON.parse(clean.stdout)).toEqual({ cache_dir: path.join(dir, 'cache'), exists: true, checked: 2, intact: 2, removed: [] });

    await writeFile(path.join(dir, 'cache', 'recordings', upstreamNamespace(upstream.baseUrl, SERVER_KEY), '4.mp3'), 'not the recording');
    const damaged = await runCliInProcess(['--config', configPath, 'cache', 'verify', '--json'], { cwd: dir, env });
    expect(damaged.code).toBe(1);
    expect(JSON.parse(damaged.stdout)).toMatchObject({ checked: 2, intact: 1, removed: [{ call_id: 4, problem: 'wrong size' }] });
    await runCliProcess(['--config', configPath, 'prefetch', '4'], { env });
  });

  test('cache purge without --call, --tenant or --all refuses (exit 2) and removes nothing', async () => {
    const purge = await runCliInProcess(['--config', configPath, 'cache', 'purge'], { cwd: dir, env });
    expect(purge.code).toBe(2);
    expect(purge.stderr).toBe(
      'error: name what to purge: --call ID, --tenant T, or both; --all purges everything (run with --help for usage)',
    );
    const both = await runCliInProcess(['--config', configPath, 'cache', 'purge', '--all', '--call', '1'], { cwd: dir, env });
    expect(both.code).toBe(2);
    const stats = await runCliInProcess(['--config', configPath, 'cache', 'stats'], { cwd: dir, env });
    expect(stats.stdout).toContain('recordings: 2, ');
  });

  test('cache purge --call removes one recording; an unknown tenant is a usage error', async () => {
    const purge = await runCliProcess(['--config', configPath, 'cache', 'purge', '--call', '4'], { env });
    expect(purge.code).toBe(0);
    expect(purge.stdout).toBe('purged 1 recording\n');
    const stats = await runCliProcess(['--config', configPath, 'cache', 'stats'], { env });
    expect(stats.stdout).toContain('recordings: 1, ');
    const unknown = await runCliInProcess(['--config', configPath, 'cache', 'purge', '--tenant', 'nobody'], { cwd: dir, env });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe('error: no tenant "nobody" in the config (run with --help for usage)');
  });

  test('cache purge --tenant removes that namespace', async () => {
    const { code, stdout } = await runCliInProcess(['--config', configPath, 'cache', 'purge', '--tenant', 'acme', '--json'], {
      cwd: dir,
      env,
    });
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual({ purged: 1, by: 'cli' });
  });

  test('cache purge --all removes everything', async () => {
    await runCliProcess(['--config', configPath, 'prefetch', '1', '3'], { env });
    const { code, stdout } = await runCliInProcess(['--config', configPath, 'cache', 'purge', '--all'], { cwd: dir, env });
    expect(code).toBe(0);
    expect(stdout).toBe('purged 2 recordings');
    const stats = await runCliInProcess(['--config', configPath, 'cache', 'stats'], { cwd: dir, env });
    expect(stats.stdout).toContain('recordings: 0, ');
  });

  test.each([
    ['cache stats', ['cache', 'stats'], 0, /^recordings: 0, 0 B of 10 GB$/m],
    ['cache verify', ['cache', 'verify'], 0, /^nothing to check: the cache directory .*never does not exist yet$/m],
    ['cache purge --all', ['cache', 'purge', '--all'], 0, /^nothing to purge: the cache directory .*never does not exist yet$/m],
  ])('%s on a cache directory that does not exist yet says so, without a sqlite error', async (_name, args, exitCode, line) => {
    const missing = path.join(dir, 'never');
    const { code, stdout, stderr } = await runCliInProcess(['--config', configPath, ...args], {
      cwd: dir,
      env: { ...env, CACHE_DIR: missing },
    });
    expect(stderr).toBe('');
    expect(code).toBe(exitCode);
    expect(stdout).toMatch(line);
    expect(stdout).not.toMatch(/SQLITE/);
    expect(existsSync(missing)).toBe(false);
  });

  test.each([
    ['serve', ['serve'], 'cannot create', /recordings: not a directory \(ENOTDIR\)$/],
    ['prefetch', ['prefetch', '1'], 'cannot create', /recordings: not a directory \(ENOTDIR\)$/],
    ['cache stats', ['cache', 'stats'], '', / is not a directory$/],
  ])('%s with CACHE_DIR naming a file says which setting to fix', async (_name, args, verb, ending) => {
    const file = path.join(dir, 'a-file');
    await writeFile(file, 'not a directory');
    const { code, stderr } = await runCliInProcess(['--config', configPath, ...args], { cwd: dir, env: { ...env, CACHE_DIR: file } });
    expect(code).toBe(1);
    expect(stderr).toMatch(new RegExp(`^error: cache\\.dir \\(CACHE_DIR\\): ${verb ? `${verb} ` : ''}${file}`));
    expect(stderr).toMatch(ending);
  });

  test.each([
    ['cache stats', ['cache', 'stats']],
    ['cache verify', ['cache', 'verify']],
    ['cache purge', ['cache', 'purge', '--all']],
  ])('%s with CACHE_DIR below a file says which setting to fix', async (_name, args) => {
    const file = path.join(dir, 'a-file');
    await writeFile(file, 'not a directory');
    const below = path.join(file, 'cache');
    const { code, stderr } = await runCliInProcess(['--config', configPath, ...args], { cwd: dir, env: { ...env, CACHE_DIR: below } });
    expect(code).toBe(1);
    expect(stderr.trim()).toBe(`error: cache.dir (CACHE_DIR): ${below} is not a directory`);
  });

  test('every cache command has --help', async () => {
    for (const command of [['cache', 'stats'], ['cache', 'verify'], ['cache', 'purge'], ['prefetch']]) {
      const { code, stdout } = await runCliProcess([...command, '--help']);
      expect(code).toBe(0);
      expect(stdout).toContain('Usage: recording-gateway');
    }
  });
});
