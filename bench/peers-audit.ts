/**
 * Proves the peers bench's audited gateway kept its audit trail: once it has
 * been stopped with SIGTERM (which writes the last batch), the lines on disk
 * are counted against the answers the load generator counted, and the chain
 * is checked as `recording-gateway audit verify` checks it.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { listAuditFiles } from '../src/audit/audit-files.js';
import { verifyAuditTrail } from '../src/audit/audit-verify.js';
import type { GatewayServer } from './peers-servers.js';
import { GATEWAY_AUDIT } from './peers-report.js';
import { fmt, mib } from './table.js';

// Longer than the trail's 50 ms batch interval: a count that holds this long is all that was queued.
const SETTLE_PAUSE_MS = 200;
const SETTLE_ATTEMPTS = 25;

interface TrailOnDisk {
  lines: number;
  files: number;
  bytes: number;
  /** Where the chain breaks, as `audit verify` would report it. */
  broken: string | undefined;
}

async function readTrail(dir: string): Promise<TrailOnDisk> {
  const chains = await verifyAuditTrail(dir);
  const files = await listAuditFiles(dir);
  let bytes = 0;
  for (const file of files) bytes += (await stat(path.join(dir, file.name))).size;
  const broken = chains.find((chain) => chain.broken !== undefined)?.broken;
  return {
    lines: chains.reduce((sum, chain) => sum + chain.lines, 0),
    files: files.length,
    bytes,
    broken: broken && `${broken.file} line ${broken.line}: ${broken.problem}`,
  };
}

/** The audit lines on disk once the count stops moving (the gateway writes a batch every 50 ms). */
export async function settledAuditLines(dir: string): Promise<number> {
  let lines = (await readTrail(dir)).lines;
  for (let attempt = 0; attempt < SETTLE_ATTEMPTS; attempt++) {
    await sleep(SETTLE_PAUSE_MS);
    const again = (await readTrail(dir)).lines;
    if (again === lines) return lines;
    lines = again;
  }
  return lines;
}

/** What the load generator counted against the audited gateway, warm-up runs included: each answer is one audit line. */
export interface AuditTally {
  runs: number;
  answers: number;
}

/**
 * SIGTERMs the audited gateway, then compares its trail with `tally`: every
 * answer counted must have its line; a few more are fine, since the load
 * generator stops with up to `connections` requests in flight per run, which
 * the gateway may still answer. `before` is the line count before the load
 * (the bench's own warm-up and checks); `counter` names the load generator. Returns the report line and whether
 * the check held.
 */
export async function checkAuditTrail(
  server: GatewayServer,
  options: { before: number; tally: AuditTally; connections: number; counter: string },
): Promise<{ line: string; ok: boolean }> {
  const { before, tally, connections, counter } = options;
  const exitCode = await server.shutDown();
  const trail = await readTrail(server.auditDir!);
  const during = trail.lines - before;
  const extra = during - tally.answers;
  const slack = tally.runs * connections;
  const exited = exitCode === undefined ? 'did not exit within the timeout and was killed' : `exited with code ${exitCode}`;
  const chain = trail.broken === undefined ? 'chain intact (checked as `audit verify` does)' : `**chain broken** at ${trail.broken}`;
  const verdict =
    extra < 0
      ? `**${fmt(-extra, 0)} answers have no line**`
      : extra > slack
        ? `**${fmt(extra, 0)} lines more than answers, over the ${fmt(slack, 0)} requests ${counter} may leave in flight (${connections} per run)**`
        : `${fmt(extra, 0)} more than answers, within the ${fmt(slack, 0)} requests ${counter} may leave in flight (${connections} per run)`;
  const ok = exitCode === 0 && trail.broken === undefined && extra >= 0 && extra <= slack;
  const line =
    `${ok ? '**Audit trail checked:**' : '**Audit trail check failed:**'} after SIGTERM, \`${GATEWAY_AUDIT}\` ${exited}; ` +
    `its audit dir holds ${fmt(trail.lines, 0)} lines in ${trail.files} file(s), ${mib(trail.bytes)} MiB, ${chain}. ` +
    `${fmt(before, 0)} lines are the bench's own warm-up and checks; the other ${fmt(during, 0)} came during the load, ` +
    `for ${fmt(tally.answers, 0)} answers ${counter} counted in its ${tally.runs} runs against it: ${verdict}.`;
  return { line, ok };
}
