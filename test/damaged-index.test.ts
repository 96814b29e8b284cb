import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, SERVER_KEY, makeTempDir, removeDir, startGateway, testConfig } from '../dev/gateway-harness.js';
import { createLogger } from '../src/logger.js';
import { runCliInProcess } from './support/run-cli-in-process.js';

let upstream: FakeFlyflow;
let dir: string;

beforeAll(async () => {
  upstream = await startFakeFlyflow({ apiKeys: [SERVER_KEY] });
});
afterAll(async () => {
  await upstream.close();
});
afterEach(async () => {
  await removeDir(dir);
  upstream.reset();
});

/** A config file for the CLI commands, on this test's cache directory, beside it (the caller removes it). */
async function writeCommandConfig(): Promise<string> {
  const configPath = path.join(dir, '..', `${path.basename(dir)}.yaml`);
  await writeFile(
    configPath,
    [
      `upstream: { base_url: "${upstream.baseUrl}" }`,
      `cache: { dir: ${JSON.stringify(dir)} }`,
      'tenants:',
      '  - id: acme',
      `    api_keys: ["sha256:${createHash('sha256').update(ACME_KEY).digest('hex')}"]`,
    ].join('\n'),
  );
  return configPath;
}

/** Damage as testers made it: garbage over the file, or the file cut short. */
const DAMAGE = {
  garbage: (file: string) => writeFile(file, Buffer.from('not a database, just 100 bytes of something else'.repeat(2).slice(0, 100))),
  truncated: (file: string) => truncate(file, 5000),
};

/** A cache with two recordings in its index, written by a gateway that has stopped. */
async function cacheWithEntries(): Promise<string> {
  dir = await makeTempDir('rg-damaged-index-');
  const gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }));
  for (const id of [1, 2]) expect((await gateway.fetch(`/v1/call/recording/${id}.mp3`)).status).toBe(200);
  await gateway.close();
  return path.join(dir, 'index.sqlite');
}

describe.each(Object.entries(DAMAGE))('a %s sqlite index', (_, damage) => {
  test('the gateway sets it aside, says so in one warning, starts afresh and fetches again', async () => {
    const file = await cacheWithEntries();
    await damage(file);
    const damaged = await readFile(file);
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        callback();
      },
    });
    const before = upstream.recordingRequests().length;
    const gateway = await startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }), {
      logger: createLogger({ destination }),
    });
    try {
      const warnings = lines.map((line) => JSON.parse(line) as { level: number; msg: string }).filter((line) => line.level === 40);
      const aside = (await readdir(dir)).filter((name) => /^index\.sqlite\.damaged-[0-9TZ-]+$/.test(name));
      expect(aside).toHaveLength(1);
      expect(await readFile(path.join(dir, aside[0]!))).toEqual(damaged);
      const warning = warnings.find((line) => line.msg.includes('is damaged'));
      expect(warning?.msg).toContain(file);
      expect(warning?.msg).toContain(aside[0]);
      expect(JSON.stringify(warning)).not.toContain('"stack"');
      const again = await gateway.fetch('/v1/call/recording/1.mp3');
      expect(again.status).toBe(200);
      expect(upstream.recordingRequests().length).toBe(before + 1);
      expect((await gateway.fetch('/readyz', { headers: { authorization: '' } })).status).toBe(200);
    } finally {
      await gateway.close();
    }
  });

  test('cache commands leave it in place and say which file it is and what to do', async () => {
    const file = await cacheWithEntries();
    await damage(file);
    const damaged = await readFile(file);
    const configPath = await writeCommandConfig();
    const env = { FLYFLOW_API_KEY: SERVER_KEY };
    for (const command of [
      ['cache', 'stats'],
      ['cache', 'verify'],
      ['cache', 'purge', '--all'],
      ['prefetch', '3'],
    ]) {
      const { code, stderr } = await runCliInProcess(['--config', configPath, ...command], { cwd: dir, env });
      expect(code, command.join(' ')).toBe(1);
      expect(stderr.split('\n'), command.join(' ')).toHaveLength(1);
      expect(stderr).toContain(`the cache index ${file} is damaged`);
      expect(stderr).toContain('start the gateway, which sets it aside and starts a fresh one, or remove it');
    }
    expect(await readFile(file)).toEqual(damaged);
    await removeDir(configPath);
  });
});

describe('a directory where the sqlite index should be', () => {
  test('the gateway and the cache commands stop with one line naming the file', async () => {
    const file = path.join(dir, 'index.sqlite');
    await mkdir(file, { recursive: true });
    await expect(startGateway(testConfig({ dir, upstreamBaseUrl: upstream.baseUrl }))).rejects.toThrow(
      `cannot open the cache index ${file} (SQLITE_CANTOPEN`,
    );
    const configPath = await writeCommandConfig();
    for (const command of [
      ['cache', 'stats'],
      ['cache', 'verify'],
      ['prefetch', '3'],
    ]) {
      const { code, stderr } = await runCliInProcess(['--config', configPath, ...command], {
        cwd: dir,
        env: { FLYFLOW_API_KEY: SERVER_KEY },
      });
      expect(code, command.join(' ')).toBe(1);
      expect(stderr.trim().split('\n'), command.join(' ')).toHaveLength(1);
      expect(stderr, command.join(' ')).toContain(`cannot open the cache index ${file}`);
    }
    await removeDir(configPath);
  });
});
