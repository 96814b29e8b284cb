import { randomUUID } from 'node:crypto';
import { mkdir, open, stat, unlink } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import path from 'node:path';
import { systemClock, type Clock } from '../clock.js';
import type { AuditConfig } from '../config/index.js';
import { AuditTrail } from './audit-trail.js';

/*
 * A purge the CLI does itself (no gateway answered, or a Redis index, where
 * the CLI always purges) is audited by the CLI, in a chain of its own per
 * host: a gateway's chain has one writer, the gateway. CLI runs on one host
 * take turns through a lock file beside the trail.
 */

const LOCK_WAIT_MS = 5_000;
const LOCK_POLL_MS = 50;
/** A lock this old was left by a CLI that died holding it. */
const STALE_LOCK_MS = 60_000;

/** The CLI's chain on this host: `cli.<host name>`, in the characters file names allow. */
function cliChainName(): string {
  return `cli.${
    hostname()
      .replace(/[^A-Za-z0-9._-]/g, '_')
      .slice(0, 64) || 'host'
  }`;
}

function systemUser(): string | null {
  try {
    return userInfo().username;
  } catch {
    // A container user without a passwd entry.
    return null;
  }
}

async function takeLock(lock: string, clock: Clock): Promise<void> {
  const deadline = clock.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await (await open(lock, 'wx', 0o640)).close();
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const age = await stat(lock).then(
      (info) => Date.now() - info.mtimeMs,
      () => 0,
    );
    if (age > STALE_LOCK_MS) await unlink(lock).catch(() => {});
    else if (clock.now() >= deadline) throw new Error(`another CLI run holds ${lock}`);
    else await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS));
  }
}

/**
 * Writes the audit line of a purge the CLI did itself; rejects when it
 * cannot be written.
 * @param status 200 when the purge completed, 500 when it stopped part-way.
 */
export async function auditCliPurge(
  audit: AuditConfig,
  filter: { callId?: string; tenant?: string },
  status: number,
  clock: Clock = systemClock,
): Promise<void> {
  const chain = cliChainName();
  await mkdir(audit.dir, { recursive: true, mode: 0o750 });
  const lock = path.join(audit.dir, `.${chain}.lock`);
  await takeLock(lock, clock);
  try {
    const trail = await AuditTrail.open({ dir: audit.dir, retentionDays: audit.retentionDays, nodeId: chain, clock });
    trail.record({
      time: clock.now(),
      requestId: randomUUID(),
      event: 'purge',
      tenant: filter.tenant ?? null,
      credential: { kind: 'cli', user: systemUser() },
      callId: filter.callId ?? null,
      method: 'CLI',
      status,
      bytesSent: 0,
      range: null,
      cache: null,
      client: null,
      userAgent: 'recording-gateway cache purge',
    });
    try {
      await trail.flush();
    } finally {
      await trail.close();
    }
  } finally {
    await unlink(lock).catch(() => {});
  }
}
