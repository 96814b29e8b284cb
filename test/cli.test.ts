import { execFileSync, spawn } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeTempDir, removeDir } from '../dev/gateway-harness.js';
import { freePort } from '../dev/free-port.js';
import { eventually } from '../dev/recording-bytes.js';
import { startScriptNodeFlags } from '../dev/gateway-process.js';
import { ROOT, runCliProcess } from '../dev/run-cli.js';

import { runCliInProcess } from './support/run-cli-in-process.js';

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
  test('--help lists every command and the exit codes', async () => {
    const { code, stdout } = await runCliProcess(['--help']);
    expect(code).toBe(0);
    for (const command of ['serve', 'hash-key', 'new-key', 'sign', 'cache', 'prefetch', '--version']) expect(stdout).toContain(command);
    expect(stdout).toContain('Exit codes: 0 ok, 1 failure (or damage found by `cache verify`), 2 bad command line.');
  });

  test('--version prints the version of the package', async () => {
    const { version } = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const { code, stdout, stderr } = await runCliProcess(['--version']);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout.trim()).toBe(version);
  });

  test('a reader that closes the pipe early (`new-key | head -1`) ends the command quietly, exit 0', async () => {
    // Closed before the child has written anything (it takes a while to start): every write finds no reader.
    const { code, stderr } = await runCliProcess(['new-key'], { closeStdout: true });
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });

  test.each([
    [
      'hash-key',
      ['hash-key', 'acme-key', '--json'],
      (out: Record<string, unknown>) => expect(out).toEqual({ digest: `sha256:${createHash('sha256').update('acme-key').digest('hex')}` }),
    ],
    [
      'new-key',
      ['new-key', '--json'],
      (out: Record<string, unknown>) => expect(out.digest).toBe(`sha256:${createHash('sha256').update(String(out.key)).digest('hex')}`),
    ],
  ])('%s --json prints one JSON document', async (_name, args, check) => {
    const { code, stdout } = await runCliInProcess(args, { cwd: dir });
    expect(code).toBe(0);
    check(JSON.parse(stdout) as Record<string, unknown>);
  });

  test('sign --json prints the URL and its expiry, as the HTTP route does', async () => {
    const before = Math.floor(Date.now() / 1000);
    const { code, stdout } = await runCliInProcess(['--config', configPath, 'sign', '--tenant', 'acme', '--call', '7', '--json'], {
      cwd: dir,
      env: { ACME_SIGNING_SECRET: SIGNING_SECRET },
    });
    expect(code).toBe(0);
    const out = JSON.parse(stdout) as { url: string; expires_at: number };
    expect(Object.keys(out)).toEqual(['url', 'expires_at']);
    expect(out.expires_at - before).toBeGreaterThanOrEqual(300);
    expect(new URL(out.url).searchParams.get('exp')).toBe(String(out.expires_at));
  });

  test('hash-key prints the sha256 digest in the form the config takes', async () => {
    const { code, stdout } = await runCliProcess(['hash-key', 'acme-key']);
    expect(code).toBe(0);
    expect(stdout.trim()).toBe(`sha256:${createHash('sha256').update('acme-key').digest('hex')}`);
  });

  test.each([
    ['an empty key', '', 'the key is empty'],
    ['a key of spaces', '   ', 'the key has a character other than visible ASCII (a space, say)'],
    ['a key with a space inside', 'acme key', 'the key has a character other than visible ASCII (a space, say)'],
  ])('hash-key refuses %s, which no request could present: exit 2', async (_name, key, reason) => {
    const { code, stdout, stderr } = await runCliInProcess(['hash-key', key], { cwd: dir });
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toBe(
      `error: ${reason}: no request could present it after "Bearer "; make one with \`recording-gateway new-key\` (run with --help for usage)`,
    );
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
    const { code, stdout, stderr } = await runCliProcess(
      ['--config', configPath, 'sign', '--tenant', 'acme', '--call', '42', '--ttl', '120'],
      {
        env: { ACME_SIGNING_SECRET: SIGNING_SECRET },
      },
    );
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
    ['an unknown command', ['bogus'], /^error: unknown command 'bogus'/],
    ['a misspelt command', ['servee'], /unknown command 'servee'\n\(Did you mean serve\?\)/],
    ['an unknown option', ['cache', 'stats', '--verbose'], /unknown option '--verbose'/],
    ['a command group alone', ['cache'], /Usage: recording-gateway cache/],
    ['a value the command refuses', ['sign', '--tenant', 'nobody', '--call', '1'], / in the config \(run with --help for usage\)$/],
    [
      '--call given twice',
      ['sign', '--tenant', 'acme', '--call', '1', '--call', '2'],
      /'--call <id>' argument '2' is invalid\. The option was given more than once/,
    ],
    [
      '--tenant given twice',
      ['sign', '--tenant', 'acme', '--tenant', 'beta', '--call', '1'],
      /'--tenant <id>' argument 'beta' is invalid\. The option was given more than once/,
    ],
    ['--config given twice', ['-c', 'other.yaml', 'cache', 'stats'], /'-c, --config <path>' argument 'other\.yaml' is invalid/],
    ['--event given twice', ['audit', 'query', '--event', 'purge', '--event', 'info'], /'--event <event>' argument 'info' is invalid/],
    [
      'an --event nobody writes',
      ['audit', 'query', '--event', 'nope'],
      /Allowed choices are recording, info, peaks, signed-url, purge, dropped\./,
    ],
  ])('%s exits 2 with a clear message', async (_name, args, message) => {
    const { code, stderr } = await runCliInProcess(['--config', configPath, ...args], {
      cwd: dir,
      env: { ACME_SIGNING_SECRET: SIGNING_SECRET },
    });
    expect(code).toBe(2);
    expect(stderr).toMatch(message);
    expect(stderr).not.toMatch(/too many arguments/);
    expect(stderr).not.toContain(SIGNING_SECRET);
  });

  test('an unknown command exits 2 from the real process too', async () => {
    const { code, stderr } = await runCliProcess(['bogus']);
    expect(code).toBe(2);
    expect(stderr).toBe("error: unknown command 'bogus' (run with --help for usage)\n");
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

  test.each([
    [
      'a blank FLYFLOW_API_KEY',
      { FLYFLOW_API_KEY: ' ' },
      'environment variable FLYFLOW_API_KEY is blank, only whitespace (it holds the Flyflow server key)',
    ],
    [
      'a one-character ADMIN_TOKEN',
      { FLYFLOW_API_KEY: 'k', ADMIN_TOKEN: 'x' },
      'the secret in environment variable ADMIN_TOKEN is shorter than 16 bytes (it holds the admin token); generate one with `openssl rand -base64 32` or `recording-gateway new-key`',
    ],
  ])('serve with %s stops at start-up and says how to fix it', async (_name, env, message) => {
    const { code, stderr } = await runCliInProcess(['--config', configPath], {
      cwd: dir,
      env: { ...env, ACME_SIGNING_SECRET: SIGNING_SECRET },
    });
    expect(code).toBe(1);
    expect(stderr).toBe(`error: ${message}`);
  });

  test('serve that cannot listen names the setting to change: a host of no address here, a port in use', async () => {
    const badHost = await runCliInProcess(['--config', configPath], {
      cwd: dir,
      env: { FLYFLOW_API_KEY: 'k', ACME_SIGNING_SECRET: SIGNING_SECRET, HOST: 'no such host' },
    });
    expect(badHost.code).toBe(1);
    expect(badHost.stderr).toMatch(/^error: listen\.host \(or HOST\) "no such host" is no address of this machine: /);
    const taken = createNetServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as AddressInfo;
    try {
      const busy = await runCliInProcess(['--config', configPath], {
        cwd: dir,
        env: { FLYFLOW_API_KEY: 'k', ACME_SIGNING_SECRET: SIGNING_SECRET, PORT: String(port) },
      });
      expect(busy.code).toBe(1);
      expect(busy.stderr).toMatch(new RegExp(`^error: listen\\.port \\(or PORT\\) ${port} on 127\\.0\\.0\\.1 is in use: `));
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  test('serve with a missing config file names the file', async () => {
    const { code, stderr } = await runCliProcess(['--config', path.join(dir, 'nope.yaml')], { env: { FLYFLOW_API_KEY: 'x' } });
    expect(code).toBe(1);
    expect(stderr).toContain('config file not found');
  });

  test('npm start and the Docker image give Node the same flags, and Node takes them: the young generation stays at 4 MiB semi-spaces', async () => {
    const flags = startScriptNodeFlags();
    const dockerfile = await readFile(path.join(ROOT, 'Dockerfile'), 'utf8');
    const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)![1]!) as string[];
    expect(entrypoint).toEqual(['node', ...flags, 'dist/cli.js']);
    // Allocates ~200 MB of short-lived objects, then prints how large V8 let the new space grow.
    const script =
      "let k=[];for(let i=0;i<3e6;i++){k.push({i,s:'x'+i});if(k.length>2e4)k=[]}" +
      "console.log(require('v8').getHeapSpaceStatistics().find((s)=>s.space_name==='new_space').space_size)";
    const newSpace = (args: string[]) => Number(execFileSync(process.execPath, [...args, '-e', script], { encoding: 'utf8' }).trim());
    expect(newSpace(flags)).toBeLessThanOrEqual(8 * 1024 * 1024);
    expect(newSpace([])).toBeGreaterThan(16 * 1024 * 1024);
  });
});

describe('npm start', () => {
  test('a service manager that signals npm alone stops the gateway too: SIGTERM reaches it, it shuts down gracefully and npm exits 0', async () => {
    const port = await freePort();
    const npm = spawn('npm', ['start', '--silent'], {
      cwd: ROOT,
      // Its own process group, so that teardown can reach anything npm leaves behind.
      detached: true,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? dir,
        GATEWAY_CONFIG: configPath,
        FLYFLOW_API_KEY: 'npm-start-test-key',
        ACME_SIGNING_SECRET: SIGNING_SECRET,
        PORT: String(port),
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    npm.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    npm.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => npm.once('exit', (code) => resolve(code)));
    try {
      expect(await eventually(async () => output.includes('recording-gateway listening'), 30_000)).toBe(true);
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      npm.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(output).toContain('shutting down');
      // Nothing of the group is left: no orphaned gateway still holding the port.
      expect(await eventually(async () => !groupAlive(npm.pid!), 5_000)).toBe(true);
      await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
    } finally {
      if (groupAlive(npm.pid!)) process.kill(-npm.pid!, 'SIGKILL');
    }
  }, 60_000);
});

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}
