/**
 * A FIFO (or a socket) in the audit directory under a day file's name: the
 * CLI's `audit verify` and `audit query`, the gateway at start and the trail
 * when its day comes each refuse it, naming it, instead of waiting forever
 * for the FIFO's other end. Real FIFOs made with mkfifo, real processes.
 */
import { execFileSync } from 'node:child_process';
import { constants, openSync, closeSync } from 'node:fs';
import { mkdir, readFile, symlink, unlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import type { AuditEvent } from '../src/audit/audit-event.js';
import { utcDay } from '../src/audit/audit-files.js';
import { AuditTrail } from '../src/audit/audit-trail.js';
import { makeTempDir, manualClock, removeDir, SERVER_KEY } from '../dev/gateway-harness.js';
import { writeGatewayConfig } from '../dev/gateway-process.js';
import { runCliProcess } from '../dev/run-cli.js';
import { capturingLogger } from './support/capturing-logger.js';

const DAY_MS = 86_400_000;
const START = Date.UTC(2026, 10, 28, 9, 0, 0);
/** Long enough for a CLI child to start under load; a run that hangs is killed then, and fails. */
const CLI_TIMEOUT_MS = 20_000;

let dir: string;
let auditDir: string;
const fifos: string[] = [];
const servers: Server[] = [];

beforeEach(async () => {
  dir = await makeTempDir('rg-audit-fifo-');
  auditDir = path.join(dir, 'audit');
  await mkdir(auditDir);
});

afterEach(async () => {
  // Lets an open() still waiting on a FIFO's other end return, so no thread stays blocked.
  for (const fifo of fifos.splice(0)) {
    try {
      closeSync(openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK));
    } catch {
      // Gone already.
    }
  }
  for (const server of servers.splice(0)) server.close();
  await removeDir(dir);
});

function mkfifo(file: string): string {
  execFileSync('mkfifo', [file]);
  fifos.push(file);
  return file;
}

function event(time: number, callId: string): AuditEvent {
  return {
    time,
    requestId: `req-${callId}`,
    event: 'recording',
    tenant: 'acme',
    credential: { kind: 'api-key', key: 'abcdefabcdef' },
    callId,
    method: 'GET',
    status: 200,
    bytesSent: 1000,
    range: null,
    cache: 'hit',
    client: '127.0.0.1',
    userAgent: 'audit-fifo-test',
  };
}

async function writeOneDay(): Promise<void> {
  const trail = await AuditTrail.open({ dir: auditDir, retentionDays: 365, clock: manualClock(START) });
  trail.record(event(START, '1'));
  await trail.close();
}

async function configPath(): Promise<string> {
  return writeGatewayConfig(dir, {
    upstreamBaseUrl: 'http://127.0.0.1:1',
    cacheDir: path.join(dir, 'cache'),
    topLevelYaml: [`audit: { dir: ${JSON.stringify(auditDir)} }`],
  });
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms).unref()),
  ]);
}

describe('audit verify and audit query', () => {
  test.each([
    ['a FIFO', 'a FIFO (named pipe)', (file: string) => mkfifo(file)],
    [
      'a socket',
      'a socket',
      async (file: string) => {
        const server = createServer();
        servers.push(server);
        await new Promise<void>((resolve) => server.listen(file, resolve));
      },
    ],
  ])(
    '%s named like a day file makes them exit 1 at once, naming it, before printing anything, instead of hanging',
    async (_what, kind, make) => {
      await writeOneDay();
      const odd = path.join(auditDir, `audit-${utcDay(START + DAY_MS)}.jsonl`);
      await make(odd);
      const config = await configPath();
      for (const args of [['verify'], ['query'], ['query', '--json']]) {
        const { code, stdout, stderr } = await runCliProcess(['--config', config, 'audit', ...args], { timeoutMs: CLI_TIMEOUT_MS });
        // Nothing on stdout: neither the table's header nor the lines of the day before it, which read well.
        expect({ args, code, stdout }).toEqual({ args, code: 1, stdout: '' });
        expect(stderr.trim()).toBe(`error: cannot read the audit file ${odd}: it is ${kind}, not a regular file`);
      }
    },
  );
});

describe('the gateway', () => {
  test('started with a FIFO as its newest day file, it stops with one line naming the file, not hanging before it listens', async () => {
    await writeOneDay();
    const fifo = mkfifo(path.join(auditDir, `audit-${utcDay(START + DAY_MS)}.jsonl`));
    const { code, stdout, stderr } = await runCliProcess(['--config', await configPath(), 'serve'], {
      env: { FLYFLOW_API_KEY: SERVER_KEY },
      timeoutMs: CLI_TIMEOUT_MS,
    });
    expect({ code, stdout }).toEqual({ code: 1, stdout: '' });
    expect(stderr.trim()).toBe(
      `error: audit.dir: ${auditDir} cannot be used: ${fifo} is a FIFO (named pipe), not a regular file: move it out of the audit directory`,
    );
  });

  test("a FIFO as the next day's file is reported as unwritable (lines kept, /readyz's problem set, a warning naming it), and written once it is gone", async () => {
    const clock = manualClock(START);
    const { logger, lines } = capturingLogger();
    const trail = await AuditTrail.open({ dir: auditDir, retentionDays: 365, clock, logger, retryIntervalMs: 20, maxRetryIntervalMs: 50 });
    try {
      trail.record(event(START, '1'));
      await trail.flush();
      const fifo = mkfifo(path.join(auditDir, `audit-${utcDay(START + DAY_MS)}.jsonl`));
      clock.advance(DAY_MS);
      trail.record(event(clock.now(), '2'));

      await expect(withTimeout(trail.flush(), 5_000)).rejects.toThrow('audit trail cannot be written');
      expect(trail.problem).toBe('cannot be written');
      expect(trail.status()).toMatchObject({ pendingLines: 1, droppedLines: 0 });
      const warning = lines.find((line) => String(line.msg).startsWith('audit trail cannot be written'));
      expect((warning?.err as { message?: string } | undefined)?.message).toBe(
        `${fifo} is a FIFO (named pipe), not a regular file: move it out of the audit directory`,
      );

      await unlink(fifo);
      await expect.poll(() => trail.problem).toBeUndefined();
      await trail.flush();
      expect(JSON.parse(await readFile(fifo, 'utf8'))).toMatchObject({ call_id: 2 });
    } finally {
      await withTimeout(trail.close(), 5_000).catch(() => {});
    }
  });

  test('a symbolic link to a regular day file is still read and written', async () => {
    const target = path.join(dir, 'elsewhere.jsonl');
    await writeFile(target, '');
    await symlink(target, path.join(auditDir, `audit-${utcDay(START)}.jsonl`));
    const trail = await AuditTrail.open({ dir: auditDir, retentionDays: 365, clock: manualClock(START) });
    trail.record(event(START, '1'));
    await trail.close();
    expect(JSON.parse(await readFile(target, 'utf8'))).toMatchObject({ call_id: 1 });
  });
});
