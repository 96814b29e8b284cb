import { randomUUID } from 'node:crypto';
import { open, stat, unlink } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import path from 'node:path';
import { systemClock, type Clock } from '../clock.js';
import type { AuditConfig } from '../config/index.js';
import { PRIVATE_FILE_MODE, makePrivateDir } from '../private-files.js';
import type { MintedUrl } from './audit-event.js';
import { AuditTrail } from './audit-trail.js';

/*
 * What the CLI does itself is audited by the CLI, in a chain of its own per
 * host (a gateway's chain has one writer, the gateway): a purge no gateway
 * did (none answered, or a Redis index, where the CLI always purges), and a
 * signed URL minted with `sign`. CLI runs on one host take turns through a
 * lock file beside the trail.
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
      await (await open(lock, 'wx', PRIVATE_FILE_MODE)).close();
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

/** One thing the CLI did, as its audit line says it. */
export interface CliAuditEntry {
  event: 'purge' | 'signed-url';
  /** null: a purge of every tenant. */
  tenant: string | null;
  /** null: a purge of a whole tenant or of everything. */
  callId: string | null;
  /** For a purge, 200 when it completed, 500 when it stopped part-way. */
  status: number;
  /** The command, as the line's user agent: `cache purge`, `sign`. */
  command: string;
  /** For `sign`, the kid and exp of the URL it mints. */
  minted?: MintedUrl;
}

/** Writes the audit line of something the CLI did itself; rejects when it cannot be written. */
export async function auditCliCommand(audit: AuditConfig, entry: CliAuditEntry, clock: Clock = systemClock): Promise<void> {
  const chain = cliChainName();
  await makePrivateDir(audit.dir);
  const lock = path.join(audit.dir, `.${chain}.lock`);
  await takeLock(lock, clock);
  try {
    const trail = await AuditTrail.open({ dir: audit.dir, retentionDays: audit.retentionDays, nodeId: chain, clock });
    trail.record({
      time: clock.now(),
      requestId: randomUUID(),
      event: entry.event,
      tenant: entry.tenant,
      credential: { kind: 'cli', user: systemUser() },
      callId: entry.callId,
      method: 'CLI',
      status: entry.status,
      bytesSent: 0,
      range: null,
      cache: null,
      client: null,
      userAgent: `recording-gateway ${entry.command}`,
      minted: entry.minted,
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
