import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, unlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { auditEventFor, auditLineStart, type AuditedRequest } from '../src/audit/audit-event.js';
import { verifyAuditTrail } from '../src/audit/audit-verify.js';
import type { Caller } from '../src/auth/authenticate.js';
import type { Tenant } from '../src/auth/tenants.js';
import type { GatewayConfig } from '../src/config/index.js';
import type { GatewayOptions } from '../src/gateway.js';
import { startFakeFlyflow, type FakeFlyflow } from '../dev/fake-flyflow.js';
import {
  ACME_KEY,
  ACME_SIGNING_SECRET,
  ACME_SIGNING_SECRET_K2,
  acmeTenant,
  bytesOf,
  makeTempDir,
  manualClock,
  removeDir,
  startGateway,
  testConfig,
  type RunningGateway,
} from '../dev/gateway-harness.js';
import type { ManualClock } from '../dev/manual-clock.js';
import { mountTmpfs, unmount } from './support/durability.js';

const ADMIN_TOKEN = 'admin-token-for-audit-tests-0123456789';
const ZERO_HASH = '0'.repeat(64);
const ACME_KEY_ID = createHash('sha256').update(ACME_KEY).digest('hex').slice(0, 12);
// manualClock() starts at 2026-11-30T12:00:00Z.
const TODAY = 'audit-2026-11-30.jsonl';

let upstream: FakeFlyflow;
let dir: string;
let auditDir: string;
const running: RunningGateway[] = [];

beforeAll(async () => {
  upstream = await startFakeFlyflow();
});

afterAll(async () => {
  await upstream.close();
});

beforeEach(async () => {
  dir = await makeTempDir('rg-audit-');
  auditDir = path.join(dir, 'audit');
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((gateway) => gateway.close()));
  await removeDir(dir);
});

function auditConfig(retentionDays = 365): GatewayConfig {
  return {
    ...testConfig({ dir: path.join(dir, 'cache'), upstreamBaseUrl: upstream.baseUrl }),
    adminToken: ADMIN_TOKEN,
    audit: { dir: auditDir, retentionDays },
  };
}

async function start(
  clock: ManualClock = manualClock(),
  config = auditConfig(),
  audit: GatewayOptions['audit'] = {},
): Promise<RunningGateway> {
  const gateway = await startGateway(config, { clock, ...(audit ? { audit } : {}) });
  running.push(gateway);
  return gateway;
}

/** Lines of an audit file, exactly as on disk, without their newlines. */
async function fileLines(name: string): Promise<string[]> {
  const text = await readFile(path.join(auditDir, name), 'utf8');
  expect(text.endsWith('\n')).toBe(true);
  return text.slice(0, -1).split('\n');
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Each line's prev is the sha256 of the line before; the first one's is `first`. */
function expectChained(lines: string[], first: string): void {
  let expected = first;
  for (const line of lines) {
    expect((JSON.parse(line) as { prev: string }).prev).toBe(expected);
    expected = sha256(line);
  }
}

/** Writes one file of three chained lines for each day, the chain starting from zero; returns the hash of the last line. */
async function writeChainedFiles(days: string[]): Promise<string> {
  let prev = ZERO_HASH;
  for (const day of days) {
    const lines: string[] = [];
    for (const second of [0, 1, 2]) {
      const line = JSON.stringify({
        time: `${day}T10:00:0${second}.000Z`,
        event: 'recording',
        tenant: 'acme',
        call_id: 1,
        status: 200,
        prev,
      });
      lines.push(line);
      prev = sha256(line);
    }
    await writeFile(path.join(auditDir, `audit-${day}.jsonl`), `${lines.join('\n')}\n`);
  }
  return prev;
}

async function waitFor<T>(probe: () => Promise<T | undefined> | T | undefined, what: string): Promise<T> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function metric(gateway: RunningGateway, name: string): Promise<number> {
  const text = await (await gateway.fetch('/metrics', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `));
  if (line === undefined) throw new Error(`no metric ${name}`);
  return Number(line.split(' ')[1]);
}

describe('audit trail of a running gateway', () => {
  test('a GET, a range GET, a minted signed URL, a signed-URL GET and a DELETE are one chained line each, with nothing secret', async () => {
    const clock = manualClock();
    const gateway = await start(clock);
    const whole = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { 'user-agent': 'support-tool/1.0' } });
    const size = (await bytesOf(whole)).length;
    await gateway.gateway.downloads.idle();
    const ranged = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { range: 'bytes=0-99' } });
    expect(ranged.status).toBe(206);
    await ranged.arrayBuffer();
    const minted = await gateway.fetch('/v1/call/recording/1/signed-url', { method: 'POST' });
    const mintedBody = await minted.text();
    const { url } = JSON.parse(mintedBody) as { url: string };
    const signed = await fetch(new URL(url, gateway.baseUrl));
    expect(signed.status).toBe(200);
    await signed.arrayBuffer();
    const deleted = await gateway.fetch('/v1/call/recording/1.mp3', { method: 'DELETE' });
    expect(deleted.status).toBe(204);
    // Not audited: a wrong key (no tenant), a health check.
    const refused = await gateway.fetch('/v1/call/recording/1.mp3', { headers: { authorization: 'Bearer not-a-key' } });
    expect(refused.status).toBe(401);
    await (await gateway.fetch('/healthz')).arrayBuffer();
    await gateway.gateway.audit!.flush();

    const lines = await fileLines(TODAY);
    expect(await readdir(auditDir)).toEqual([TODAY]);
    expect(lines).toHaveLength(5);
    expectChained(lines, ZERO_HASH);
    const records = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const apiKey = { kind: 'api-key', key: ACME_KEY_ID };
    const common = { tenant: 'acme', call_id: 1, client: '127.0.0.1' };
    const exp = Math.floor(clock.now() / 1000) + 300;
    expect(records[0]).toMatchObject({
      ...common,
      event: 'recording',
      credential: apiKey,
      method: 'GET',
      status: 200,
      bytes_sent: size,
      range: null,
      cache: 'miss',
      user_agent: 'support-tool/1.0',
      request_id: whole.headers.get('x-request-id'),
    });
    expect(records[1]).toMatchObject({ ...common, event: 'recording', status: 206, bytes_sent: 100, range: 'bytes=0-99', cache: 'hit' });
    expect(records[2]).toMatchObject({
      ...common,
      event: 'signed-url',
      credential: apiKey,
      method: 'POST',
      status: 200,
      bytes_sent: 0,
      cache: null,
      // No kid asked: the tenant's first key signs, for the default 300 s.
      minted: { kid: 'k1', exp },
    });
    expect(new URL(url, gateway.baseUrl).searchParams.get('exp')).toBe(String(exp));
    expect(Object.keys(records[2]!).slice(-3)).toEqual(['user_agent', 'minted', 'prev']);
    expect(records.filter((record) => 'minted' in record).map((record) => record.event)).toEqual(['signed-url']);
    expect(records[3]).toMatchObject({
      ...common,
      event: 'recording',
      credential: { kind: 'signed-url', kid: 'k1' },
      status: 200,
      bytes_sent: size,
      cache: 'hit',
    });
    expect(records[4]).toMatchObject({ ...common, event: 'purge', credential: apiKey, method: 'DELETE', status: 204, bytes_sent: 0 });
    expect(records[0]!.time).toBe('2026-11-30T12:00:00.000Z');
    expect(Object.keys(records[0]!)).toEqual([
      'time',
      'request_id',
      'event',
      'tenant',
      'credential',
      'call_id',
      'method',
      'status',
      'bytes_sent',
      'range',
      'cache',
      'client',
      'user_agent',
      'prev',
    ]);

    const bytes = await readFile(path.join(auditDir, TODAY), 'utf8');
    const signature = new URL(url, gateway.baseUrl).searchParams.get('sig')!;
    for (const secret of [ACME_KEY, ACME_SIGNING_SECRET, ACME_SIGNING_SECRET_K2, ADMIN_TOKEN, signature, 'sig=', 'exp=']) {
      expect(bytes).not.toContain(secret);
    }
  });

  test('a URL minted with kid k2 names k2 and its exp on its minting line and is played under k2; a mint refused for an unknown kid is a 400 line', async () => {
    const clock = manualClock();
    const gateway = await start(clock);
    const minted = await gateway.fetch('/v1/call/recording/1/signed-url', {
      method: 'POST',
      body: JSON.stringify({ kid: 'k2', ttl_seconds: 60 }),
    });
    expect(minted.status).toBe(200);
    const { url, expires_at: expiresAt } = (await minted.json()) as { url: string; expires_at: number };
    expect(expiresAt).toBe(Math.floor(clock.now() / 1000) + 60);
    expect(new URL(url, gateway.baseUrl).searchParams.get('exp')).toBe(String(expiresAt));
    const signed = await fetch(new URL(url, gateway.baseUrl));
    expect(signed.status).toBe(200);
    await signed.arrayBuffer();
    const refused = await gateway.fetch('/v1/call/recording/1/signed-url', { method: 'POST', body: JSON.stringify({ kid: 'k9' }) });
    expect(refused.status).toBe(400);
    await refused.arrayBuffer();
    await gateway.gateway.audit!.flush();

    const records = (await fileLines(TODAY)).map((line) => JSON.parse(line) as Record<string, unknown>);
    const apiKey = { kind: 'api-key', key: ACME_KEY_ID };
    // The minting line names who asked (the API key) and, in `minted`, the key the URL is signed with; its plays name that kid as their credential.
    expect(records).toMatchObject([
      { event: 'signed-url', credential: apiKey, call_id: 1, status: 200, minted: { kid: 'k2', exp: expiresAt } },
      { event: 'recording', credential: { kind: 'signed-url', kid: 'k2' }, call_id: 1, status: 200 },
      { event: 'signed-url', credential: apiKey, call_id: 1, status: 400 },
    ]);
    expect(records.map((record) => 'minted' in record)).toEqual([true, false, false]);
  });

  test('a mint refused 400 or 429 made no URL: its line has no minted field; one refused 401 has no line', async () => {
    const config = { ...auditConfig(), tenants: [acmeTenant({ rateLimitPerMinute: 2 })] };
    const gateway = await start(manualClock(), config);
    const mint = async (body: object, authorization = `Bearer ${ACME_KEY}`) => {
      const response = await gateway.fetch('/v1/call/recording/1/signed-url', {
        method: 'POST',
        headers: { authorization },
        body: JSON.stringify(body),
      });
      await response.arrayBuffer();
      return response.status;
    };
    expect(await mint({ ttl_seconds: 7200 })).toBe(400);
    expect(await mint({ kid: 'k1' })).toBe(200);
    expect(await mint({ kid: 'k1' }, 'Bearer not-a-key')).toBe(401);
    expect(await mint({ kid: 'k1' })).toBe(429);
    await gateway.gateway.audit!.flush();

    const records = (await fileLines(TODAY)).map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(records.map((record) => [record.event, record.status, record.minted])).toEqual([
      ['signed-url', 400, undefined],
      ['signed-url', 200, { kid: 'k1', exp: Math.floor(Date.UTC(2026, 10, 30, 12) / 1000) + 300 }],
      ['signed-url', 429, undefined],
    ]);
    expect(records.map((record) => 'minted' in record)).toEqual([false, true, false]);
  });

  test('a transfer the client cuts short still names its address, on a miss and on a memory hit', async () => {
    const gateway = await start();
    const { port } = new URL(gateway.baseUrl);
    /** A GET whose client closes its socket as soon as the first body bytes arrive. */
    const cutShort = (id: number) =>
      new Promise<void>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () =>
          socket.write(`GET /v1/call/recording/${id}.mp3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ACME_KEY}\r\n\r\n`),
        );
        socket.once('data', () => socket.destroy());
        socket.once('close', () => resolve());
        socket.once('error', reject);
      });
    // Large enough that the answer is still being written when the client goes.
    const large = Buffer.concat(Array.from({ length: 40 }, () => upstream.recording(4)!));
    upstream.setRecording(40, large);
    await cutShort(40);
    await gateway.gateway.downloads.idle();
    await cutShort(40);
    const records = await waitFor(async () => {
      await gateway.gateway.audit!.flush();
      const lines = existsSync(path.join(auditDir, TODAY)) ? await fileLines(TODAY) : [];
      return lines.length >= 2 ? lines.map((line) => JSON.parse(line) as Record<string, unknown>) : undefined;
    }, 'two audit lines');
    expect(records.map((record) => [record.call_id, record.cache, record.client])).toEqual([
      [40, 'miss', '127.0.0.1'],
      [40, 'hit', '127.0.0.1'],
    ]);
  });

  test('a request whose client left before any answer was sent is audited with no status, not the 200 it never got', async () => {
    const gateway = await start();
    upstream.setBehaviour(2, { kind: 'slow-head', delayMs: 500 });
    try {
      const { port } = new URL(gateway.baseUrl);
      await new Promise<void>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () => {
          socket.write(`GET /v1/call/recording/2.mp3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ACME_KEY}\r\n\r\n`);
          setTimeout(() => socket.destroy(), 100);
        });
        socket.once('data', () => reject(new Error('the gateway answered before the client left')));
        socket.once('close', () => resolve());
      });
      const record = await waitFor(async () => {
        await gateway.gateway.audit!.flush();
        const lines = existsSync(path.join(auditDir, TODAY)) ? await fileLines(TODAY) : [];
        return lines.length > 0 ? (JSON.parse(lines[0]!) as Record<string, unknown>) : undefined;
      }, 'the audit line');
      expect(record).toMatchObject({ event: 'recording', call_id: 2, status: null, bytes_sent: 0, cache: 'miss' });
      await gateway.gateway.downloads.idle();
    } finally {
      upstream.setBehaviour(2, undefined);
    }
  });

  test('an admin purge is a purge line naming how it was authorized and what it named', async () => {
    const gateway = await start();
    await (await gateway.fetch('/v1/call/recording/2.mp3')).arrayBuffer();
    const purge = await fetch(`${gateway.baseUrl}/admin/cache/purge`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ call_id: 2, tenant: 'acme' }),
    });
    expect(purge.status).toBe(200);
    await purge.arrayBuffer();
    const refused = await fetch(`${gateway.baseUrl}/admin/cache/purge`, {
      method: 'POST',
      headers: { authorization: 'Bearer wrong-token', 'content-type': 'application/json' },
      body: '{"all": true}',
    });
    expect(refused.status).toBe(401);
    await gateway.gateway.audit!.flush();
    const records = (await fileLines(TODAY)).map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(records).toHaveLength(2);
    expect(records[1]).toMatchObject({
      event: 'purge',
      tenant: 'acme',
      call_id: 2,
      method: 'POST',
      status: 200,
      credential: { kind: 'admin-token' },
    });
    expect(await readFile(path.join(auditDir, TODAY), 'utf8')).not.toContain(ADMIN_TOKEN);
  });

  test('an admin purge refused 400 names the tenant and call it asked for, each where valid, so its line does not read as a purge of everything', async () => {
    const gateway = await start();
    const purge = (body: string) =>
      fetch(`${gateway.baseUrl}/admin/cache/purge`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        body,
      });
    for (const body of ['{"tenant": "acme", "call_id": "abc"}', '{"tenant": "acme", "call_id": 2, "all": true}', '{"tenant": "nobody"}']) {
      const refused = await purge(body);
      expect(refused.status).toBe(400);
      await refused.arrayBuffer();
    }
    await gateway.gateway.audit!.flush();
    const records = (await fileLines(TODAY)).map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(records.map((record) => [record.event, record.status, record.tenant, record.call_id, record.credential])).toEqual([
      ['purge', 400, 'acme', null, { kind: 'admin-token' }],
      ['purge', 400, 'acme', 2, { kind: 'admin-token' }],
      ['purge', 400, null, null, { kind: 'admin-token' }],
    ]);
  });

  test('after a restart the chain continues from the last line on disk; a new UTC day starts a file chained to the old one', async () => {
    const clock = manualClock(Date.UTC(2026, 10, 30, 23, 59, 58));
    const first = await start(clock);
    await (await first.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
    // close() writes what is queued: nothing is flushed by hand here.
    await running.splice(0)[0]!.close();
    const [firstLine] = await fileLines(TODAY);

    const second = await start(clock);
    await (await second.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
    clock.advance(3_000);
    await (await second.fetch('/v1/call/recording/2.mp3')).arrayBuffer();
    await second.gateway.audit!.flush();

    const yesterday = await fileLines(TODAY);
    expect(yesterday).toHaveLength(2);
    expect(yesterday[0]).toBe(firstLine);
    expectChained(yesterday, ZERO_HASH);
    const today = await fileLines('audit-2026-12-01.jsonl');
    expect(today).toHaveLength(1);
    expectChained(today, sha256(yesterday[1]!));
    expect(JSON.parse(today[0]!)).toMatchObject({ time: '2026-12-01T00:00:01.000Z', call_id: 2 });
  });

  test('a line a crash left half-written is cut off at start-up, and the chain continues from the whole line before it', async () => {
    const clock = manualClock();
    const first = await start(clock);
    await (await first.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
    await running.splice(0)[0]!.close();
    const [whole] = await fileLines(TODAY);
    await writeFile(path.join(auditDir, TODAY), `${whole}\n{"time":"2026-11-30T12:00:00.5`);

    const second = await start(clock);
    await (await second.fetch('/v1/call/recording/2.mp3')).arrayBuffer();
    await second.gateway.audit!.flush();
    const lines = await fileLines(TODAY);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe(whole);
    expectChained(lines, ZERO_HASH);
  });

  test('files past audit.retention_days are removed at start and when a new day begins; newer ones stay', async () => {
    const { mkdir } = await import('node:fs/promises');
    await mkdir(auditDir, { recursive: true });
    const old = 'audit-2026-10-30.jsonl';
    const recent = 'audit-2026-11-01.jsonl';
    const otherNode = 'audit-gw-2-2026-10-01.jsonl';
    for (const name of [old, recent, otherNode]) await writeFile(path.join(auditDir, name), '');
    await writeFile(path.join(auditDir, 'notes.txt'), 'not an audit file');
    const clock = manualClock();
    const gateway = await start(clock, auditConfig(30));
    // 2026-10-30 ended 31 days before 2026-11-30 12:00; 2026-11-01 ended 28.5 days before.
    expect((await readdir(auditDir)).sort()).toEqual([recent, 'notes.txt']);

    clock.advance(2 * 86_400_000);
    await (await gateway.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
    await gateway.gateway.audit!.flush();
    await waitFor(() => (existsSync(path.join(auditDir, recent)) ? undefined : true), 'the daily retention sweep');
    expect((await readdir(auditDir)).sort()).toEqual(['audit-2026-12-02.jsonl', 'notes.txt']);
  });

  test("an expired file is removed at start-up also when it is the newest: the next line, today's first, still links to its last line", async () => {
    const { mkdir } = await import('node:fs/promises');
    await mkdir(auditDir, { recursive: true });
    // Three chained days; with retention 0.1 day (2.4 h), even 2026-11-29, which ended 12 h ago, is past it.
    const tip = await writeChainedFiles(['2026-11-27', '2026-11-28', '2026-11-29']);
    const gateway = await start(manualClock(), auditConfig(0.1));
    expect(await readdir(auditDir)).toEqual(['audit-tip.json']);

    await (await gateway.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
    await gateway.gateway.audit!.flush();
    const lines = await fileLines(TODAY);
    expect(lines).toHaveLength(1);
    expectChained(lines, tip);
    expect((await readdir(auditDir)).sort()).toEqual([TODAY, 'audit-tip.json']);
    const [report, ...others] = await verifyAuditTrail(auditDir);
    expect(others).toEqual([]);
    expect(report).toMatchObject({ files: 1, lines: 1, continuesRemovedFile: true });
    expect(report!.broken).toBeUndefined();
  });

  test('after every file was removed past retention, a restart still continues the chain from the last line removed', async () => {
    const { mkdir } = await import('node:fs/promises');
    await mkdir(auditDir, { recursive: true });
    const tip = await writeChainedFiles(['2026-11-28', '2026-11-29']);
    const clock = manualClock();
    await start(clock, auditConfig(0.1));
    expect(await readdir(auditDir)).toEqual(['audit-tip.json']);
    await running.splice(0)[0]!.close();

    const again = await start(clock, auditConfig(0.1));
    await (await again.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
    await again.gateway.audit!.flush();
    expectChained(await fileLines(TODAY), tip);
  });

  test('a full audit disk shows on /readyz and /metrics, keeps lines in memory up to the bound, counts the rest, and recovers', async () => {
    // A real full disk: a small tmpfs as the audit directory, filled up.
    await mkdir(auditDir);
    await mountTmpfs(auditDir, '64k');
    try {
      await fullAuditDiskShowsAndRecovers();
    } finally {
      await Promise.all(running.splice(0).map((gateway) => gateway.close()));
      await unmount(auditDir);
    }
  });

  async function fullAuditDiskShowsAndRecovers(): Promise<void> {
    const gateway = await start(manualClock(), auditConfig(), { retryIntervalMs: 20, maxRetryIntervalMs: 50, maxPendingLines: 2 });
    await (await gateway.fetch('/readyz')).arrayBuffer();
    const filler = path.join(auditDir, 'filler');
    await expect(writeFile(filler, Buffer.alloc(1024 * 1024))).rejects.toMatchObject({ code: 'ENOSPC' });
    for (const id of [1, 2, 3]) await (await gateway.fetch(`/v1/call/recording/${id}.mp3`)).arrayBuffer();

    const notReady = await waitFor(async () => {
      const response = await gateway.fetch('/readyz');
      return response.status === 503 ? ((await response.json()) as { error: string; message: string }) : undefined;
    }, '/readyz to report the audit trail');
    expect(notReady).toEqual({ error: 'Service Unavailable', message: 'audit trail: cannot be written (ENOSPC)' });
    expect(JSON.stringify(notReady)).not.toContain(auditDir);
    expect(await metric(gateway, 'recording_gateway_audit_write_errors_total')).toBeGreaterThan(0);
    expect(await metric(gateway, 'recording_gateway_audit_pending_lines')).toBe(2);
    expect(await metric(gateway, 'recording_gateway_audit_dropped_lines_total')).toBe(1);
    // Requests are still answered while the trail cannot be written.
    expect((await gateway.fetch('/v1/call/recording/1.mp3')).status).toBe(200);

    await unlink(filler);
    await waitFor(async () => ((await gateway.fetch('/readyz')).status === 200 ? true : undefined), '/readyz to recover');
    await (await gateway.fetch('/v1/call/recording/4.mp3')).arrayBuffer();
    await gateway.gateway.audit!.flush();
    expect(await metric(gateway, 'recording_gateway_audit_pending_lines')).toBe(0);

    const lines = await fileLines(TODAY);
    expectChained(lines, ZERO_HASH);
    const records = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    // The two kept lines, then a note of the two lost (call 3, and the request made while full), then the next line.
    expect(records.map((record) => record.call_id ?? `dropped ${String(record.dropped_lines)}`)).toEqual([1, 2, 'dropped 2', 4]);
    expect(await metric(gateway, 'recording_gateway_audit_dropped_lines_total')).toBe(2);
  }

  test('without `audit` in the config there is no trail, no audit metric and no audit check', async () => {
    const gateway = await start(manualClock(), { ...auditConfig(), audit: undefined });
    await (await gateway.fetch('/v1/call/recording/1.mp3')).arrayBuffer();
    expect(gateway.gateway.audit).toBeUndefined();
    expect(existsSync(auditDir)).toBe(false);
    await expect(metric(gateway, 'recording_gateway_audit_pending_lines')).rejects.toThrow('no metric');
  });
});

describe('auditEventFor decides what is audited', () => {
  const tenant = { id: 'acme' } as Tenant;
  const caller: Caller = { tenant, credential: { kind: 'api-key', keyId: 'abcdefabcdef' } };
  function request(overrides: Partial<AuditedRequest>): AuditedRequest {
    return {
      time: Date.UTC(2026, 10, 30),
      requestId: 'req-00000001',
      method: 'GET',
      path: '/v1/call/recording/7.mp3',
      status: 200,
      caller,
      callId: '7',
      cache: 'hit',
      adminPurge: undefined,
      minted: undefined,
      clientAddress: '10.0.0.1',
      bytesSent: 10,
      header: (name) => (name === 'range' ? `bytes=${'1'.repeat(500)}-` : 'x'.repeat(1000)),
      ...overrides,
    };
  }

  test.each([
    ['GET', '/v1/call/recording/7.mp3', 'recording'],
    ['HEAD', '/v1/call/recording/7.mp3', 'recording'],
    ['DELETE', '/v1/call/recording/7.mp3', 'purge'],
    ['GET', '/v1/call/recording/7/info.json', 'info'],
    ['GET', '/v1/call/recording/7/peaks.json', 'peaks'],
    ['POST', '/v1/call/recording/7/signed-url', 'signed-url'],
  ])('%s %s is a %s line', (method, requestPath, event) => {
    expect(auditEventFor(request({ method, path: requestPath }))?.event).toBe(event);
  });

  test('only a signed-url line carries what was minted', () => {
    const minted = { kid: 'k2', exp: 1_796_400_000 };
    expect(auditEventFor(request({ method: 'POST', path: '/v1/call/recording/7/signed-url', minted }))?.minted).toEqual(minted);
    const recordingLine = auditEventFor(request({ minted }));
    expect(recordingLine?.minted).toBeUndefined();
    expect(auditLineStart(recordingLine!)).not.toContain('minted');
  });

  test.each([
    ['no authenticated caller', { caller: undefined }],
    ['a webhook', { path: '/v1/webhooks/flyflow/acme', callId: undefined }],
    ['a health check', { path: '/healthz', caller: undefined, callId: undefined }],
    ['a POST to an .mp3', { method: 'POST' }],
    ['an unauthorized admin purge', { path: '/admin/cache/purge', method: 'POST', caller: undefined, callId: undefined }],
  ])('%s is not audited', (_what, overrides) => {
    expect(auditEventFor(request(overrides as Partial<AuditedRequest>))).toBeUndefined();
  });

  test('headers a client controls are cut short', () => {
    const event = auditEventFor(request({}))!;
    expect(event.range).toHaveLength(100);
    expect(event.userAgent).toHaveLength(200);
  });
});
