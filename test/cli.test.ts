import { createHash, createHmac } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeTempDir, removeDir } from '../dev/gateway-harness.js';
import { runCliProcess } from '../dev/run-cli.js';

const SIGNING_SECRET = 'cli-test-signing-secret-0123456789';
let dir: string;
let configPath: string;

beforeAll(async () => {
  dir = await makeTempDir('rg-cli-');
  configPath = path.join(dir, 'gateway.yaml');
  await writeFile(
    configPath,
    [
      'public_base_url: https://recordings.example.com',
      'upstream: { base_url: "http://127.0.0.1:9/v1" }',
      `cache: { dir: ${JSON.stringify(path.join(dir, 'cache'))} }`,
      'tenants:',
      '  - id: acme',
      `    api_keys: ["sha256:${createHash('sha256').update('acme-key').digest('hex')}"]`,
      '    signing_keys: [{ kid: k1, secret_env: ACME_SIGNING_SECRET }]',
      '    max_signed_url_ttl_seconds: 600',
    ].join('\n'),
  );
});

afterAll(() => removeDir(dir));

describe('recording-gateway CLI', () => {
  test('--help lists every command', async () => {
    const { code, stdout } = await runCliProcess(['--help']);
    expect(code).toBe(0);
    for (const command of ['serve', 'hash-key', 'new-key', 'sign']) expect(stdout).toContain(command);
  });

  test('hash-key prints the sha256 digest in the form the config takes', async () => {
    const { code, stdout } = await runCliProcess(['hash-key', 'acme-key']);
    expect(code).toBe(0);
    expect(stdout.trim()).toBe(`sha256:${createHash('sha256').update('acme-key').digest('hex')}`);
  });

  test('new-key prints a fresh key and the digest of that same key', async () => {
    const first = await runCliProcess(['new-key']);
    const second = await runCliProcess(['new-key']);
    const key = /key: +(\S+)/.exec(first.stdout)?.[1];
    const digest = /digest: +sha256:([0-9a-f]{64})/.exec(first.stdout)?.[1];
    expect(key).toMatch(/^rgk_[A-Za-z0-9_-]{43}$/);
    expect(digest).toBe(createHash('sha256').update(key!).digest('hex'));
    expect(second.stdout).not.toContain(key!);
  });

  test('sign prints an absolute signed URL whose signature follows the contract formula', async () => {
    const before = Math.floor(Date.now() / 1000);
    const { code, stdout, stderr } = await runCliProcess(['--config', configPath, 'sign', '--tenant', 'acme', '--call', '42', '--ttl', '120'], {
      env: { ACME_SIGNING_SECRET: SIGNING_SECRET },
    });
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const url = new URL(stdout.trim());
    expect(url.origin + url.pathname).toBe('https://recordings.example.com/v1/call/recording/42.mp3');
    const after = Math.ceil(Date.now() / 1000);
    const exp = Number(url.searchParams.get('exp'));
    expect(exp).toBeGreaterThanOrEqual(before + 120);
    expect(exp).toBeLessThanOrEqual(after + 120);
    const expected = createHmac('sha256', SIGNING_SECRET).update(`v1\nacme\n42\n${exp}`).digest('base64url');
    expect(url.searchParams.get('sig')).toBe(expected);
    expect(url.searchParams.get('kid')).toBe('k1');
    expect(stdout).not.toContain(SIGNING_SECRET);
  });

  test.each([
    ['a bad call id', ['sign', '--tenant', 'acme', '--call', '01'], /call id/],
    ['a missing --call', ['sign', '--tenant', 'acme'], /--call/],
    ['an unknown tenant', ['sign', '--tenant', 'nobody', '--call', '1'], /no tenant "nobody"/],
    ['a ttl over the tenant maximum', ['sign', '--tenant', 'acme', '--call', '1', '--ttl', '601'], /max_signed_url_ttl_seconds/],
    ['an unknown command', ['bogus'], /too many arguments|unknown command/],
  ])('%s exits non-zero with a clear message', async (_name, args, message) => {
    const { code, stderr } = await runCliProcess(['--config', configPath, ...args], { env: { ACME_SIGNING_SECRET: SIGNING_SECRET } });
    expect(code).not.toBe(0);
    expect(stderr).toMatch(message);
    expect(stderr).not.toContain(SIGNING_SECRET);
  });

  test('serve without the Flyflow key stops at start-up with one clear message', async () => {
    const { code, stderr } = await runCliProcess(['--config', configPath, 'serve']);
    expect(code).toBe(1);
    expect(stderr).toContain(
      `${configPath}: upstream.api_key_env: environment variable FLYFLOW_API_KEY is not set (it holds the Flyflow server key)`,
    );
    expect(stderr.startsWith('error: ')).toBe(true);
    expect(stderr).not.toMatch(/\n\s+at /);
  });

  test('serve with a missing config file names the file', async () => {
    const { code, stderr } = await runCliProcess(['--config', path.join(dir, 'nope.yaml')], { env: { FLYFLOW_API_KEY: 'x' } });
    expect(code).toBe(1);
    expect(stderr).toContain('config file not found');
  });
});
