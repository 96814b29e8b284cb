import { existsSync } from 'node:fs';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { queryAuditTrail, type AuditFilter, type AuditLine } from '../audit/audit-query.js';
import { utcDay } from '../audit/audit-files.js';
import { verifyAuditTrail, type ChainReport } from '../audit/audit-verify.js';
import type { GatewayConfig } from '../config/index.js';
import { CommandFailure, callIdArgument, directoryExists, givenOnce, printJson, type Print } from './io.js';
import { terminalSafe } from './terminal-safe.js';

/*
 * `recording-gateway audit query` and `audit verify` (README, Compliance):
 * they read the trail in `audit.dir` and never write to it, so they may run
 * beside a gateway that is writing.
 */

export interface AuditCommandDeps {
  print: Print;
  /** Notes beside the data (stderr), so `--json` output stays parseable. */
  warn: Print;
  config: () => Promise<GatewayConfig>;
}

const EVENTS = ['recording', 'info', 'peaks', 'signed-url', 'purge', 'dropped'];

/** An `--event` value: one of {@link EVENTS} (the choices help lists; this parser replaces commander's check of them). */
function oneOfEvents(value: string): string {
  if (!EVENTS.includes(value)) throw new InvalidArgumentError(`Allowed choices are ${EVENTS.join(', ')}.`);
  return value;
}
// RFC 3339 (5.6) lets `T` and `Z` be lowercase, and seconds be 60 (a leap second) with any number of fraction digits.
const ISO_TIME = /^([0-9]{4}-[0-9]{2}-[0-9]{2})(?:[Tt ]([0-9]{2}:[0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?$/;
const LEAP_SECOND = '60';

/**
 * An ISO 8601 / RFC 3339 date or date-time; UTC unless it names an offset.
 * Fraction digits past the millisecond are cut off (audit times have
 * milliseconds). A leap second, `23:59:60`, is taken as the start of the
 * second after it: the epoch milliseconds have no leap seconds, and no
 * audit line is written at one.
 */
export function parseIsoTime(value: string): number {
  const match = ISO_TIME.exec(value);
  const [, date, minutes, seconds = '00', fraction = '', zone] = match ?? [];
  const leap = seconds === LEAP_SECOND;
  const text = `${date}T${minutes ?? '00:00'}:${leap ? '59' : seconds}.${fraction.padEnd(3, '0').slice(0, 3)}${zone?.toUpperCase() ?? 'Z'}`;
  const parsed = match ? Date.parse(text) : Number.NaN;
  // Date.parse takes 2026-02-30 as March 2: the day must come back as written, whatever the offset.
  const sameDay = !Number.isNaN(parsed) && utcDay(Date.parse(`${date}T00:00Z`)) === date;
  if (!sameDay)
    throw new InvalidArgumentError('expected an ISO 8601 time such as 2026-11-30 or 2026-11-30T14:05:00Z (UTC unless an offset is given)');
  return leap ? Math.floor(parsed / 1000) * 1000 + 1000 : parsed;
}

/** The audit directory of the config; the command fails when the trail is off, or when a file is where the directory should be. */
function auditDir(config: GatewayConfig): string {
  if (!config.audit) throw new CommandFailure('the config has no `audit` section, so there is no audit trail: add `audit: { dir: ... }`');
  directoryExists(config.audit.dir, config.audit.dirSetting ?? 'audit.dir');
  return config.audit.dir;
}

/** Adds `audit query` and `audit verify` to the CLI. */
export function registerAuditCommands(program: Command, deps: AuditCommandDeps): void {
  const audit = program.command('audit').description('read and check the audit trail (who played which recording, when)');
  audit
    .command('query')
    .description('print the audit lines that match, oldest first')
    .option('--tenant <id>', "only this tenant's lines", givenOnce())
    .option('--call <id>', 'only this call id', givenOnce(callIdArgument))
    .option('--since <time>', 'only lines at or after this ISO 8601 time (UTC unless an offset is given)', givenOnce(parseIsoTime))
    .option('--until <time>', 'only lines before this ISO 8601 time', givenOnce(parseIsoTime))
    .addOption(new Option('--event <event>', 'only this kind of line').choices(EVENTS).argParser(givenOnce(oneOfEvents)))
    .option('--json', 'print the matching lines as they are on disk, one JSON object a line')
    .addHelpText('after', '\nA "dropped" line (lines lost while the audit disk was full) matches every --tenant and --call.')
    .action(async (options: { tenant?: string; call?: string; since?: number; until?: number; event?: string; json?: boolean }) => {
      const dir = auditDir(await deps.config());
      const filter: AuditFilter = {
        ...(options.tenant === undefined ? {} : { tenant: options.tenant }),
        ...(options.call === undefined ? {} : { callId: options.call }),
        ...(options.since === undefined ? {} : { since: options.since }),
        ...(options.until === undefined ? {} : { until: options.until }),
        ...(options.event === undefined ? {} : { event: options.event }),
      };
      await auditQuery(dir, filter, { ...deps, json: options.json === true });
    });
  audit
    .command('verify')
    .description("check every line's sha256 link to the line before it; exits 1 naming the file and line of the first broken link")
    .option('--json', 'print one JSON document')
    .addHelpText(
      'after',
      '\nFinds an edited, removed, inserted or reordered line, and a removed file between two others.\n' +
        'Lines cut from the end of the newest file are found only by comparing the printed head hash with one noted earlier.',
    )
    .action(async (options: { json?: boolean }) => {
      await auditVerify(auditDir(await deps.config()), { ...deps, json: options.json === true });
    });
}

const COLUMNS: Array<[string, number, (record: Record<string, unknown>) => unknown]> = [
  ['time', 24, (r) => r.time],
  ['event', 10, (r) => r.event],
  ['tenant', 12, (r) => r.tenant],
  ['call', 8, (r) => r.call_id],
  ['method', 6, (r) => r.method],
  ['status', 6, (r) => r.status],
  ['bytes', 9, (r) => (r.event === 'dropped' ? `${String(r.dropped_lines)} lost` : r.bytes_sent)],
  ['range', 14, (r) => r.range],
  ['cache', 9, (r) => r.cache],
  ['credential', 24, (r) => credentialText(r.credential)],
  ['minted', 30, (r) => mintedText(r.minted)],
  ['client', 0, (r) => r.client],
];

function credentialText(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { kind, key, kid } = value as { kind?: unknown; key?: unknown; kid?: unknown };
  const detail = typeof key === 'string' ? key : typeof kid === 'string' ? kid : undefined;
  return detail === undefined ? String(kind) : `${String(kind)}:${detail}`;
}

/** A minted URL's kid and expiry, `k2 until 2026-12-04T10:00:00Z`; nothing on lines that minted none (and on lines older than the field). */
function mintedText(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { kid, exp } = value as { kid?: unknown; exp?: unknown };
  const expires = new Date(typeof exp === 'number' ? exp * 1000 : Number.NaN);
  const until = Number.isNaN(expires.getTime()) ? String(exp) : expires.toISOString().replace('.000Z', 'Z');
  return `${String(kid)} until ${until}`;
}

function row(cells: string[]): string {
  return cells
    .map((cell, index) => cell.padEnd(COLUMNS[index]![1]))
    .join('  ')
    .trimEnd();
}

function tableRow({ record }: AuditLine): string {
  return row(
    COLUMNS.map(([, , cell]) => {
      const value = cell(record);
      return value === null || value === undefined ? '-' : terminalSafe(String(value));
    }),
  );
}

/** `audit query`: the matching lines as a table, or as they are on disk with `json`. */
export async function auditQuery(dir: string, filter: AuditFilter, output: AuditCommandDeps & { json: boolean }): Promise<void> {
  if (!existsSync(dir)) {
    if (!output.json) output.print(`no audit lines: the audit directory ${dir} does not exist yet`);
    return;
  }
  let unreadable = 0;
  let count = 0;
  const lines = queryAuditTrail(dir, filter, () => unreadable++);
  // The header waits for the first answer: a file that cannot be read fails the query before anything is printed.
  let next = await lines.next();
  if (!output.json) output.print(row(COLUMNS.map(([name]) => name)));
  try {
    for (; !next.done; next = await lines.next()) {
      output.print(output.json ? terminalSafe(next.value.text) : tableRow(next.value));
      count++;
    }
  } finally {
    // As `for await` would: a print that throws closes the file being read.
    await lines.return(undefined);
  }
  if (!output.json) output.print(`${count} line${count === 1 ? '' : 's'}`);
  if (unreadable > 0)
    output.warn(`note: skipped ${unreadable} line${unreadable === 1 ? '' : 's'} that are not audit lines; run \`audit verify\``);
}

function chainName(report: ChainReport): string {
  return report.chain === '' ? 'audit trail' : `audit trail of node ${report.chain}`;
}

/** `audit verify`: checks every chain; fails naming the file and line of each chain's first broken link. */
export async function auditVerify(dir: string, output: AuditCommandDeps & { json: boolean }): Promise<void> {
  const exists = existsSync(dir);
  const reports = exists ? await verifyAuditTrail(dir) : [];
  const broken = reports.filter((report) => report.broken !== undefined);
  if (output.json) {
    printJson(output.print, {
      audit_dir: dir,
      exists,
      intact: broken.length === 0,
      chains: reports.map((report) => ({
        node: report.chain === '' ? null : report.chain,
        files: report.files,
        lines: report.lines,
        head: report.head,
        continues_removed_file: report.continuesRemovedFile,
        unfinished_last_line: report.unfinishedLastLine,
        broken: report.broken ?? null,
      })),
    });
  } else if (!exists || reports.length === 0) {
    output.print(`nothing to verify: ${exists ? 'no audit files in' : 'the audit directory does not exist yet:'} ${dir}`);
  } else {
    for (const report of reports) {
      const what = `${chainName(report)}: ${report.files} file${report.files === 1 ? '' : 's'}, ${report.lines} line${report.lines === 1 ? '' : 's'}`;
      if (report.broken) {
        output.print(`${what} intact, then broken at ${report.broken.file}:${report.broken.line}: ${report.broken.problem}`);
        continue;
      }
      output.print(`${what}, intact; head ${report.head}`);
      if (report.continuesRemovedFile)
        output.print('  its first line continues from a file no longer there (removed past audit.retention_days)');
      if (report.unfinishedLastLine) output.print('  its newest line is still being written and was not checked');
    }
  }
  const [first] = broken;
  if (first?.broken) {
    const { file, line, problem } = first.broken;
    throw new CommandFailure(`the audit trail is broken at ${file}:${line}: line ${line} ${problem}`);
  }
}
