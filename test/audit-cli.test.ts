import { createHash } from 'node:crypto';
import { cp, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { AuditEvent } from '../src/audit/audit-event.js';
import { AuditTrail } from '../src/audit/audit-trail.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_KEY, SERVER_KEY, makeTempDir, manualClock, removeDir } from '../dev/gateway-harness.js';
import { startGatewayProcess, stopGatewayProcess, writeGatewayConfig, type GatewayProcess } from '../dev/gateway-process.js';
import { runCliProcess } from '../dev/run-cli.js';
import { runCliInProcess } from './support/run-cli-in-process.js';

/** Every temporary directory this file makes, removed once it is done. */
const madeDirs: string[] = [];
async function tempDir(prefix: string): Promise<string> {
  const made = await makeTempDir(prefix);
  madeDirs.push(made);
  return made;
}

const DAY_MS = 86_400_000;
const DAY_1 = 'audit-2026-11-28.jsonl';
const DAY_2 = 'audit-2026-11-29.jsonl';
const DAY_3 = 'audit-2026-11-30.jsonl';
const START = Date.UTC(2026, 10, 28, 9, 0, 0);

let dir: string;
/** A trail of three days written by AuditTrail itself; each test works on a copy. */
let pristine: string;
let sequence = 0;

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function event(time: number, tenant: string, callId: string, method = 'GET'): AuditEvent {
  return {
    time,
    requestId: `req-${String(++sequence).padStart(8, '0')}`,
    event: method === 'DELETE' ? 'purge' : 'recording',
    tenant,
    credential: { kind: 'api-key', key: 'abcdefabcdef' },
    callId,
    method,
    status: method === 'DELETE' ? 204 : 200,
    bytesSent: method === 'DELETE' ? 0 : 1000,
    range: null,
    cache: method === 'DELETE' ? null : 'hit',
    client: '127.0.0.1',
    userAgent: 'audit-cli-test',
  };
}

/** Writes a config for the trail in `auditDir` and returns its path. */
async function configFor(auditDir: string | undefined): Promise<string> {
  const configPath = path.join(await tempDir('rg-audit-cli-config-'), 'gateway.yaml');
  await writeFile(
    configPath,
    [
      // Port 1: no gateway runs there, so `cache purge` does the purge itself.
      'listen: { host: 127.0.0.1, port: 1 }',
      'upstream: { base_url: "http://127.0.0.1:1" }',
      `cache: { dir: ${JSON.stringify(path.join(dir, 'cache'))} }`,
      ...(auditDir === undefined ? [] : [`audit: { dir: ${JSON.stringify(auditDir)} }`]),
      'tenants:',
      '  - id: acme',
      `    api_keys: ["sha256:${sha256(ACME_KEY)}"]`,
    ].join('\n'),
  );
  return configPath;
}

/** A copy of the pristine trail and a config naming it. */
async function copyOfTrail(): Promise<{ auditDir: string; configPath: string }> {
  const auditDir = path.join(await tempDir('rg-audit-cli-copy-'), 'audit');
  await cp(pristine, auditDir, { recursive: true });
  return { auditDir, configPath: await configFor(auditDir) };
}

async function linesOf(file: string): Promise<string[]> {
  return (await readFile(file, 'utf8')).split('\n').slice(0, -1);
}

async function rewrite(file: string, edit: (lines: string[]) => string[]): Promise<void> {
  await writeFile(file, `${edit(await linesOf(file)).join('\n')}\n`);
}

function audit(args: string[], configPath: string) {
  return runCliInProcess(['--config', configPath, 'audit', ...args], { cwd: dir });
}

beforeAll(async () => {
  dir = await tempDir('rg-audit-cli-');
  pristine = path.join(dir, 'pristine');
  const clock = manualClock(START);
  const trail = await AuditTrail.open({ dir: pristine, retentionDays: 365, clock });
  trail.record(event(START, 'acme', '1'));
  trail.record(event(START + 60_000, 'beta', '2'));
  trail.record(event(START + 120_000, 'acme', '2', 'DELETE'));
  trail.record(event(START + 180_000, 'acme', '3'));
  trail.record(event(START + DAY_MS, 'acme', '1'));
  trail.record(event(START + DAY_MS + 1000, 'beta', '3'));
  trail.record(event(START + 2 * DAY_MS, 'acme', '4'));
  await trail.close();
});

afterAll(async () => {
  for (const made of madeDirs.splice(0)) await removeDir(made);
});

describe('audit verify', () => {
  test('an intact trail passes, naming its files, lines and head hash', async () => {
    const { auditDir, configPath } = await copyOfTrail();
    expect((await readdir(auditDir)).sort()).toEqual([DAY_1, DAY_2, DAY_3]);
    const last = (await linesOf(path.join(auditDir, DAY_3))).at(-1)!;
    const { code, stdout, stderr } = await audit(['verify'], configPath);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toBe(`audit trail: 3 files, 7 lines, intact; head ${sha256(last)}`);

    const json = await audit(['verify', '--json'], configPath);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({
      audit_dir: auditDir,
      exists: true,
      intact: true,
      chains: [
        {
          node: null,
          files: 3,
          lines: 7,
          head: sha256(last),
          continues_removed_file: false,
          unfinished_last_line: false,
          broken: null,
        },
      ],
    });
  });

  test('one edited byte fails, naming the file and the line whose link broke', async () => {
    const { auditDir, configPath } = await copyOfTrail();
    await rewrite(path.join(auditDir, DAY_1), (lines) =>
      lines.map((line, index) => (index === 1 ? line.replace('"status":200', '"status":201') : line)),
    );
    const { code, stdout, stderr } = await audit(['verify'], configPath);
    expect(code).toBe(1);
    expect(stdout).toContain(`audit trail: 3 files, 2 lines intact, then broken at ${DAY_1}:3`);
    expect(stderr).toBe(
      `error: the audit trail is broken at ${DAY_1}:3: line 3 does not follow line 2: line 2 was edited, or lines were removed or reordered here`,
    );
  });

  test('a deleted line fails where the gap is', async () => {
    const { auditDir, configPath } = await copyOfTrail();
    await rewrite(path.join(auditDir, DAY_1), (lines) => lines.filter((_, index) => index !== 1));
    const { code, stderr } = await audit(['verify'], configPath);
    expect(code).toBe(1);
    expect(stderr).toContain(`broken at ${DAY_1}:2: line 2 does not follow line 1`);
  });

  test('two swapped lines fail', async () => {
    const { auditDir, configPath } = await copyOfTrail();
    await rewrite(path.join(auditDir, DAY_1), ([a, b, c, d]) => [a!, c!, b!, d!]);
    const { code, stderr } = await audit(['verify', '--json'], configPath);
    expect(code).toBe(1);
    expect(stderr).toContain(`broken at ${DAY_1}:2`);
  });

  test('a removed file between two others fails at the first line of the next', async () => {
    const { auditDir, configPath } = await copyOfTrail();
    await rm(path.join(auditDir, DAY_2));
    const { code, stdout, stderr } = await audit(['verify', '--json'], configPath);
    expect(code).toBe(1);
    expect(JSON.parse(stdout).chains[0].broken).toEqual({
      file: DAY_3,
      line: 1,
      problem: `does not continue from the last line of ${DAY_1}: a file between them was removed, lines were removed from the end of ${DAY_1}, or one of the two lines was edited`,
    });
    expect(stderr).toContain(`broken at ${DAY_3}:1`);
  });

  test('a line that is not JSON fails; the oldest file removed by retention does not', async () => {
    const { auditDir, configPath } = await copyOfTrail();
    await rm(path.join(auditDir, DAY_1));
    const trimmed = await audit(['verify'], configPath);
    expect(trimmed.code).toBe(0);
    expect(trimmed.stdout).toContain('its first line continues from a file no longer there');
    await rewrite(path.join(auditDir, DAY_2), (lines) => [lines[0]!, 'not json', ...lines.slice(1)]);
    const broken = await audit(['verify'], configPath);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toContain(`broken at ${DAY_2}:2: line 2 is not an audit line`);
  });

  test.each([
    ['a directory', (at: string) => mkdir(at)],
    ['a symbolic link to nothing', (at: string) => symlink(path.join(path.dirname(at), 'nowhere'), at)],
  ])('%s named like a day file fails verify and query naming that file, without a stack', async (_what, make) => {
    const { auditDir, configPath } = await copyOfTrail();
    const odd = path.join(auditDir, 'audit-2026-11-27.jsonl');
    await make(odd);
    for (const args of [['verify'], ['query']]) {
      const { code, stderr } = await audit(args, configPath);
      expect(code).toBe(1);
      expect(stderr).toContain(`error: cannot read the audit file ${odd}: it is `);
      expect(stderr).not.toMatch(/\n\s+at /);
    }
  });

  test('an audit directory that does not exist yet has nothing to verify; a config without `audit` is an error', async () => {
    const missing = await audit(['verify'], await configFor(path.join(dir, 'no-such-audit-dir')));
    expect(missing).toMatchObject({ code: 0, stderr: '' });
    expect(missing.stdout).toContain('nothing to verify');
    const off = await audit(['verify'], await configFor(undefined));
    expect(off.code).toBe(1);
    expect(off.stderr).toBe('error: the config has no `audit` section, so there is no audit trail: add `audit: { dir: ... }`');
  });

  test.each([
    ['audit verify', ['audit', 'verify']],
    ['audit query', ['audit', 'query']],
    ['serve', ['serve']],
  ])('%s with a file where the audit directory should be, or on its path, names the setting to fix', async (_name, args) => {
    const file = path.join(dir, 'a-file');
    await writeFile(file, 'not a directory');
    // Port 0: serve stops before it listens, but must not find port 1 taken instead.
    const configPath = await configFor(file);
    await writeFile(configPath, (await readFile(configPath, 'utf8')).replace('port: 1 }', 'port: 0 }'));
    const run = (env: Record<string, string>) =>
      runCliInProcess(['--config', configPath, ...args], { cwd: dir, env: { FLYFLOW_API_KEY: SERVER_KEY, ...env } });
    const inFile = await run({});
    expect(inFile).toMatchObject({ code: 1, stdout: '' });
    expect(inFile.stderr.trim()).toBe(`error: audit.dir: ${file} is not a directory`);
    const below = path.join(file, 'audit');
    const fromEnv = await run({ AUDIT_DIR: below });
    expect(fromEnv).toMatchObject({ code: 1, stdout: '' });
    expect(fromEnv.stderr.trim()).toBe(`error: audit.dir (AUDIT_DIR): ${below} is not a directory`);
  });
});

describe('audit query', () => {
  test('--tenant, --call, --since and --until filter; --json prints the lines as they are on disk', async () => {
    const { auditDir, configPath } = await copyOfTrail();
    const all = [DAY_1, DAY_2, DAY_3].map((name) => path.join(auditDir, name));
    const lines = (await Promise.all(all.map(linesOf))).flat();
    const calls = (stdout: string) => stdout.split('\n').map((line) => (JSON.parse(line) as { call_id: number }).call_id);

    const everything = await audit(['query', '--json'], configPath);
    expect(everything.code).toBe(0);
    expect(everything.stdout.split('\n')).toEqual(lines);
    expect(calls((await audit(['query', '--tenant', 'beta', '--json'], configPath)).stdout)).toEqual([2, 3]);
    expect(calls((await audit(['query', '--call', '1', '--json'], configPath)).stdout)).toEqual([1, 1]);
    expect(calls((await audit(['query', '--tenant', 'acme', '--call', '2', '--json'], configPath)).stdout)).toEqual([2]);
    const since = await audit(['query', '--since', '2026-11-29', '--json'], configPath);
    expect(calls(since.stdout)).toEqual([1, 3, 4]);
    const window = await audit(['query', '--since', '2026-11-28T09:01:00Z', '--until', '2026-11-28T09:03:00Z', '--json'], configPath);
    expect(calls(window.stdout)).toEqual([2, 2]);
    // An offset is honoured: 10:03 at +01:00 is 09:03 UTC.
    const offset = await audit(['query', '--since', '2026-11-28T10:03:00+01:00', '--until', '2026-11-29', '--json'], configPath);
    expect(calls(offset.stdout)).toEqual([3]);
  });

  test('times with a lowercase `t` and `z`, as RFC 3339 allows, filter as the uppercase ones do', async () => {
    const { configPath } = await copyOfTrail();
    const window = await audit(['query', '--since', '2026-11-28t09:01:00z', '--until', '2026-11-28t09:03:00z', '--json'], configPath);
    expect(window).toMatchObject({ code: 0, stderr: '' });
    expect(window.stdout.split('\n').map((line) => (JSON.parse(line) as { call_id: number }).call_id)).toEqual([2, 2]);
  });

  test('times with more than 3 fraction digits are cut to the millisecond; a leap second (:60) is the start of the next second', async () => {
    const { configPath } = await copyOfTrail();
    const calls = async (args: string[]) => {
      const { code, stdout, stderr } = await audit(['query', ...args, '--json'], configPath);
      expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
      return stdout.split('\n').map((line) => (JSON.parse(line) as { call_id: number }).call_id);
    };
    // 09:00:59.9999999 is 09:00:59.999, before the line at 09:01; 09:02:00.0000001 is 09:02:00.000, not after the line then.
    expect(await calls(['--since', '2026-11-28T09:00:59.9999999Z', '--until', '2026-11-28T09:02:00.000000100Z'])).toEqual([2]);
    expect(await calls(['--since', '2026-11-28T23:59:60Z'])).toEqual([1, 3, 4]);
    expect(await calls(['--until', '2026-11-28T23:59:60Z'])).toEqual([1, 2, 2, 3]);
    expect(await calls(['--since', '2026-11-29T09:59:60.5+01:00', '--until', '2026-11-29T09:00:01Z'])).toEqual([1]);
  });

  test('without --json it prints a table with a header and a count', async () => {
    const { configPath } = await copyOfTrail();
    const { code, stdout } = await audit(['query', '--tenant', 'acme', '--call', '2'], configPath);
    expect(code).toBe(0);
    const [header, row, count] = stdout.split('\n');
    expect(header).toMatch(/^time\s+event\s+tenant\s+call\s+method\s+status\s+bytes\s+range\s+cache\s+credential\s+minted\s+client$/);
    expect(row).toMatch(
      /^2026-11-28T09:02:00\.000Z\s+purge\s+acme\s+2\s+DELETE\s+204\s+0\s+-\s+-\s+api-key:abcdefabcdef\s+-\s+127\.0\.0\.1$/,
    );
    expect(count).toBe('1 line');
  });

  test('a trail of lines from before `minted` and lines with it: verify passes, query filters both and shows the kid and expiry of what was minted', async () => {
    const auditDir = path.join(await tempDir('rg-audit-cli-minted-'), 'audit');
    await mkdir(auditDir, { recursive: true });
    // Two lines as 0.6.1 wrote them: a signed-url line then had no `minted`.
    const oldLines: string[] = [];
    let prev = '0'.repeat(64);
    for (const [second, event, method] of [
      ['00', 'recording', 'GET'],
      ['30', 'signed-url', 'POST'],
    ]) {
      const line =
        `{"time":"2026-11-28T09:00:${second}.000Z","request_id":"req-old-${second}","event":"${event}","tenant":"acme",` +
        `"credential":{"kind":"api-key","key":"abcdefabcdef"},"call_id":5,"method":"${method}","status":200,"bytes_sent":0,` +
        `"range":null,"cache":null,"client":"127.0.0.1","user_agent":"audit-cli-test","prev":"${prev}"}`;
      oldLines.push(line);
      prev = sha256(line);
    }
    await writeFile(path.join(auditDir, DAY_1), `${oldLines.join('\n')}\n`);
    // This version's trail goes on from them.
    const mintedAt = START + 3_600_000;
    const exp = mintedAt / 1000 + 300;
    const trail = await AuditTrail.open({ dir: auditDir, retentionDays: 365, clock: manualClock(mintedAt) });
    trail.record({ ...event(mintedAt, 'acme', '5', 'POST'), event: 'signed-url', cache: null, bytesSent: 0, minted: { kid: 'k2', exp } });
    trail.record({ ...event(mintedAt + 1000, 'acme', '5'), credential: { kind: 'signed-url', kid: 'k2' } });
    await trail.close();
    const configPath = await configFor(auditDir);

    const verify = await audit(['verify'], configPath);
    expect(verify).toMatchObject({ code: 0, stderr: '' });
    expect(verify.stdout).toMatch(/^audit trail: 1 file, 4 lines, intact; head [0-9a-f]{64}$/);

    const json = await audit(['query', '--json'], configPath);
    expect(json.code).toBe(0);
    const lines = json.stdout.split('\n');
    expect(lines.slice(0, 2)).toEqual(oldLines);
    expect(lines.map((line) => (JSON.parse(line) as { minted?: unknown }).minted)).toEqual([
      undefined,
      undefined,
      { kid: 'k2', exp },
      undefined,
    ]);

    const table = await audit(['query', '--event', 'signed-url'], configPath);
    expect(table).toMatchObject({ code: 0, stderr: '' });
    const [header, old, minted, count] = table.stdout.split('\n');
    expect(header).toMatch(/\s+credential\s+minted\s+client$/);
    expect(old).toMatch(
      /^2026-11-28T09:00:30\.000Z\s+signed-url\s+acme\s+5\s+POST\s+200\s+0\s+-\s+-\s+api-key:abcdefabcdef\s+-\s+127\.0\.0\.1$/,
    );
    expect(minted).toMatch(
      /^2026-11-28T10:00:00\.000Z\s+signed-url\s+acme\s+5\s+POST\s+200\s+0\s+-\s+-\s+api-key:abcdefabcdef\s+k2 until 2026-11-28T10:05:00Z\s+127\.0\.0\.1$/,
    );
    expect(count).toBe('2 lines');
  });

  test("a client's control characters (C1's CSI, a bidi override) reach the terminal escaped, in the table and in --json", async () => {
    const auditDir = path.join(await tempDir('rg-audit-cli-controls-'), 'audit');
    const trail = await AuditTrail.open({ dir: auditDir, retentionDays: 365, clock: manualClock(START) });
    const range = 'bytes=0-1\u009b2K\u009b1GNOTHING TO SEE HERE';
    trail.record({ ...event(START, 'acme', '7'), range, userAgent: 'agent\u202eevil' });
    await trail.close();
    const configPath = await configFor(auditDir);
    const raw = /[\u0080-\u009f\u202a-\u202e]/;

    const table = await audit(['query'], configPath);
    expect(table.code).toBe(0);
    expect(table.stdout).not.toMatch(raw);
    expect(table.stdout).toContain('bytes=0-1\\u009b2K\\u009b1GNOTHING');

    const json = await audit(['query', '--json'], configPath);
    expect(json.stdout).not.toMatch(raw);
    const [onDisk] = await linesOf(path.join(auditDir, DAY_1));
    expect(onDisk).toMatch(raw);
    expect(JSON.parse(json.stdout)).toEqual(JSON.parse(onDisk!));
  });

  test('bad arguments exit 2 with a clear message and no stack', async () => {
    const { configPath } = await copyOfTrail();
    for (const [args, message] of [
      [['--since', 'yesterday'], 'expected an ISO 8601 time'],
      [['--until', '2026-02-30'], 'expected an ISO 8601 time'],
      [['--since', '2026-02-30T10:00:00Z'], 'expected an ISO 8601 time'],
      [['--since', '2026-02-30T10:00:00+02:00'], 'expected an ISO 8601 time'],
      [['--call', '0'], 'expected a call id'],
      [['--event', 'listen'], 'Allowed choices are recording, info, peaks, signed-url, purge, dropped'],
      [['--colour'], "unknown option '--colour'"],
    ] as const) {
      const { code, stderr } = await audit(['query', ...args], configPath);
      expect(code).toBe(2);
      expect(stderr).toContain(message);
      expect(stderr).not.toMatch(/\n\s+at /);
    }
    const help = await audit(['query', '--help'], configPath);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--since <time>');
  });
});

describe('with a gateway process', () => {
  let upstream: FakeFlyflow;
  let gateway: GatewayProcess | undefined;

  beforeAll(async () => {
    upstream = await startFakeFlyflow({ apiKeys: [SERVER_KEY] });
  });

  afterAll(async () => {
    if (gateway) await stopGatewayProcess(gateway);
    await upstream.close();
  });

  test('a CLI purge is audited by the gateway, SIGTERM writes every line, and the CLI reads the result', async () => {
    const base = await tempDir('rg-audit-process-');
    const auditDir = path.join(base, 'audit');
    const configPath = await writeGatewayConfig(base, {
      upstreamBaseUrl: upstream.baseUrl,
      cacheDir: path.join(base, 'cache'),
      topLevelYaml: ['audit:', `  dir: ${JSON.stringify(auditDir)}`],
    });
    gateway = await startGatewayProcess(configPath);
    const get = async (id: number) => {
      const response = await fetch(`${gateway!.url}/v1/call/recording/${id}.mp3`, { headers: { authorization: `Bearer ${ACME_KEY}` } });
      await response.arrayBuffer();
      expect(response.status).toBe(200);
    };
    await get(1);
    await get(2);
    const purge = await runCliInProcess(['--config', configPath, 'cache', 'purge', '--call', '1'], {
      cwd: base,
      env: { FLYFLOW_API_KEY: SERVER_KEY, PORT: String(gateway.port) },
    });
    expect(purge.code).toBe(0);
    // The last request is answered right before the signal: its line is still in the batch.
    await get(2);
    gateway.child.kill('SIGTERM');
    expect(await gateway.exited).toEqual({ code: 0, signal: null });
    gateway = undefined;

    const query = await runCliInProcess(['--config', configPath, 'audit', 'query', '--json'], { cwd: base });
    expect(query.stderr).toBe('');
    const records = query.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(records.map((record) => [record.event, record.call_id, record.method])).toEqual([
      ['recording', 1, 'GET'],
      ['recording', 2, 'GET'],
      ['purge', 1, 'POST'],
      ['recording', 2, 'GET'],
    ]);
    expect(records[2]).toMatchObject({ credential: { kind: 'local-grant' }, tenant: null, status: 200 });
    const verify = await runCliInProcess(['--config', configPath, 'audit', 'verify'], { cwd: base });
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/^audit trail: 1 file, 4 lines, intact; head [0-9a-f]{64}$/);
    await removeDir(base);
  });

  test('`audit query | head -1` ends quietly when head closes the pipe, exit 0', async () => {
    const { configPath } = await copyOfTrail();
    const { code, stderr } = await runCliProcess(['--config', configPath, 'audit', 'query'], { closeStdout: true });
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });
});

describe('cache purge without a running gateway', () => {
  test('the CLI audits the purge it does itself, in a chain of its own', async () => {
    const auditDir = path.join(await tempDir('rg-audit-cli-purge-'), 'audit');
    const configPath = await configFor(auditDir);
    await mkdir(path.join(dir, 'cache'), { recursive: true });
    for (const args of [['--call', '5', '--tenant', 'acme'], ['--all']]) {
      const purge = await runCliInProcess(['--config', configPath, 'cache', 'purge', ...args], {
        cwd: dir,
        env: { FLYFLOW_API_KEY: SERVER_KEY },
      });
      expect(purge.stderr).toBe('');
      expect(purge.code).toBe(0);
    }
    const [file, ...others] = await readdir(auditDir);
    expect(others.filter((name) => name.endsWith('.jsonl'))).toEqual([]);
    expect(file).toMatch(/^audit-cli\.[A-Za-z0-9._-]+-[0-9]{4}-[0-9]{2}-[0-9]{2}\.jsonl$/);
    const records = (await linesOf(path.join(auditDir, file!))).map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(records).toMatchObject([
      { event: 'purge', tenant: 'acme', call_id: 5, method: 'CLI', status: 200, credential: { kind: 'cli' } },
      { event: 'purge', tenant: null, call_id: null, method: 'CLI', status: 200 },
    ]);
    expect((await audit(['verify'], configPath)).code).toBe(0);
  });
});

describe('sign', () => {
  const SECRET = 'audit-cli-signing-secret-0123456789';
  const SECRET_K2 = 'audit-cli-signing-secret-k2-9876543210';
  const env = { ACME_SIGNING_SECRET: SECRET, ACME_SIGNING_SECRET_K2: SECRET_K2 };

  async function signConfig(auditDir: string): Promise<string> {
    const configPath = await configFor(auditDir);
    const keys = '[{ kid: k1, secret_env: ACME_SIGNING_SECRET }, { kid: k2, secret_env: ACME_SIGNING_SECRET_K2 }]';
    await writeFile(configPath, `${await readFile(configPath, 'utf8')}\n    signing_keys: ${keys}\n`);
    return configPath;
  }

  async function auditRecords(auditDir: string): Promise<Record<string, unknown>[]> {
    const files = (await readdir(auditDir)).filter((name) => name.endsWith('.jsonl'));
    const lines = await Promise.all(files.map((name) => linesOf(path.join(auditDir, name))));
    return lines.flat().map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  test('a URL the CLI mints is audited in its own chain first, without its signature or the secret', async () => {
    const auditDir = path.join(await tempDir('rg-audit-cli-sign-'), 'audit');
    const configPath = await signConfig(auditDir);
    const signed = await runCliInProcess(['--config', configPath, 'sign', '--tenant', 'acme', '--call', '7', '--ttl', '60'], {
      cwd: dir,
      env,
    });
    expect(signed.stderr).toBe('');
    expect(signed.code).toBe(0);
    const query = new URL(signed.stdout.trim(), 'http://gateway.example').searchParams;
    const sig = query.get('sig')!;
    expect(sig).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const [file] = await readdir(auditDir).then((names) => names.filter((name) => name.endsWith('.jsonl')));
    expect(file).toMatch(/^audit-cli\./);
    const text = await readFile(path.join(auditDir, file!), 'utf8');
    expect(text).not.toContain(sig);
    expect(text).not.toContain(SECRET);
    expect((await linesOf(path.join(auditDir, file!))).map((line) => JSON.parse(line) as Record<string, unknown>)).toMatchObject([
      {
        event: 'signed-url',
        tenant: 'acme',
        call_id: 7,
        method: 'CLI',
        status: 200,
        credential: { kind: 'cli' },
        user_agent: 'recording-gateway sign',
        // No --kid: the tenant's first key signs.
        minted: { kid: 'k1', exp: Number(query.get('exp')) },
      },
    ]);
    expect((await audit(['verify'], configPath)).code).toBe(0);
  });

  test('sign --kid: its line names the kid the URL is signed with and the exp it carries; a kid the tenant lacks writes no line', async () => {
    const auditDir = path.join(await tempDir('rg-audit-cli-sign-kid-'), 'audit');
    const configPath = await signConfig(auditDir);
    const sign = (kid: string) =>
      runCliInProcess(['--config', configPath, 'sign', '--tenant', 'acme', '--call', '8', '--ttl', '120', '--kid', kid, '--json'], {
        cwd: dir,
        env,
      });
    const before = Math.floor(Date.now() / 1000);
    const signed = await sign('k2');
    expect(signed).toMatchObject({ code: 0, stderr: '' });
    const { url, expires_at: expiresAt } = JSON.parse(signed.stdout) as { url: string; expires_at: number };
    expect(expiresAt - 120).toBeGreaterThanOrEqual(before);
    const query = new URL(url, 'http://gateway.example').searchParams;
    expect([query.get('kid'), query.get('exp')]).toEqual(['k2', String(expiresAt)]);

    const refused = await sign('k9');
    expect(refused.code).toBe(2);
    expect(refused.stdout).toBe('');

    const records = await auditRecords(auditDir);
    expect(records).toMatchObject([{ event: 'signed-url', call_id: 8, status: 200, minted: { kid: 'k2', exp: expiresAt } }]);
    expect(records).toHaveLength(1);
    const text = JSON.stringify(records);
    for (const secret of [query.get('sig')!, SECRET, SECRET_K2]) expect(text).not.toContain(secret);
  });

  test('when its audit line cannot be written, no URL is printed and the exit code is 1', async () => {
    const blocked = path.join(await tempDir('rg-audit-cli-sign-blocked-'), 'not-a-dir');
    await writeFile(blocked, 'a file where the audit directory should be');
    const signed = await runCliInProcess(['--config', await signConfig(blocked), 'sign', '--tenant', 'acme', '--call', '7'], {
      cwd: dir,
      env,
    });
    expect(signed.code).toBe(1);
    expect(signed.stdout).toBe('');
    expect(signed.stderr).toMatch(/^error: no URL minted: its audit line could not be written: /);
  });
});

describe('replicas sharing one audit directory (cluster mode)', () => {
  test("retention on one replica removes another's expired chain whole, keeping its tip: that replica's chain goes on from it", async () => {
    const auditDir = path.join(dir, 'tips-audit');
    const clock = manualClock(START);
    const two = await AuditTrail.open({ dir: auditDir, retentionDays: 365, clock, nodeId: 'gw-2' });
    two.record(event(START, 'acme', '1'));
    two.record(event(START + 1000, 'acme', '2'));
    await two.close();
    const last = (await linesOf(path.join(auditDir, 'audit-gw-2-2026-11-28.jsonl'))).at(-1)!;

    // Two days on, 2026-11-28 ended 1.4 days ago: past a retention of half a day, for gw-2's newest file too.
    clock.advance(2 * DAY_MS);
    const one = await AuditTrail.open({ dir: auditDir, retentionDays: 0.5, clock, nodeId: 'gw-1' });
    await one.close();
    expect(await readdir(auditDir)).toEqual(['audit-gw-2-tip.json']);

    const again = await AuditTrail.open({ dir: auditDir, retentionDays: 0.5, clock, nodeId: 'gw-2' });
    again.record(event(clock.now(), 'acme', '3'));
    await again.close();
    const [first] = await linesOf(path.join(auditDir, 'audit-gw-2-2026-11-30.jsonl'));
    expect((JSON.parse(first!) as { prev: string }).prev).toBe(sha256(last));
    const verify = await audit(['verify'], await configFor(auditDir));
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(
      /^audit trail of node gw-2: 1 file, 1 line, intact; head [0-9a-f]{64}\n {2}its first line continues from a file no longer there/,
    );
  });

  test('each node keeps a chain of its own; verify checks each, query merges them by time', async () => {
    const auditDir = path.join(await tempDir('rg-audit-cli-nodes-'), 'audit');
    const clock = manualClock(START);
    const one = await AuditTrail.open({ dir: auditDir, retentionDays: 365, clock, nodeId: 'gw-1' });
    const two = await AuditTrail.open({ dir: auditDir, retentionDays: 365, clock, nodeId: 'gw-2' });
    one.record(event(START, 'acme', '1'));
    two.record(event(START + 1000, 'acme', '2'));
    one.record(event(START + 2000, 'acme', '3'));
    two.record(event(START + DAY_MS, 'acme', '4'));
    await Promise.all([one.close(), two.close()]);
    expect((await readdir(auditDir)).sort()).toEqual([
      'audit-gw-1-2026-11-28.jsonl',
      'audit-gw-2-2026-11-28.jsonl',
      'audit-gw-2-2026-11-29.jsonl',
    ]);
    const configPath = await configFor(auditDir);

    const verify = await audit(['verify'], configPath);
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(
      /^audit trail of node gw-1: 1 file, 2 lines, intact; head [0-9a-f]{64}\naudit trail of node gw-2: 2 files, 2 lines, intact/,
    );
    const query = await audit(['query', '--json'], configPath);
    expect(query.stdout.split('\n').map((line) => (JSON.parse(line) as { call_id: number }).call_id)).toEqual([1, 2, 3, 4]);

    await rewrite(path.join(auditDir, 'audit-gw-1-2026-11-28.jsonl'), ([a, b]) => [b!, a!]);
    const broken = await audit(['verify', '--json'], configPath);
    expect(broken.code).toBe(1);
    const chains = (JSON.parse(broken.stdout) as { chains: Array<{ node: string; broken: unknown }> }).chains;
    expect(chains.map((chain) => [chain.node, chain.broken === null])).toEqual([
      ['gw-1', false],
      ['gw-2', true],
    ]);
  });
});
