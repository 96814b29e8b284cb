import path from 'node:path';
import { DAY_MS } from '../clock.js';
import { checkReadableFile, dayStart, parseAuditRecord, listAuditFiles, readFileLines, type AuditFile } from './audit-files.js';

/** `audit query`'s filters; each one left out matches everything. */
export interface AuditFilter {
  tenant?: string;
  /** Canonical decimal call id. */
  callId?: string;
  /** Milliseconds since the epoch: lines at or after. */
  since?: number;
  /** Milliseconds since the epoch: lines before. */
  until?: number;
  event?: string;
}

/** An audit line as read back: the exact text and its fields. */
export interface AuditLine {
  text: string;
  record: Record<string, unknown>;
}

/**
 * The lines of the trail in `dir` that match, oldest first (in cluster mode
 * the replicas' lines of one day are merged by time). Files outside the time
 * range are not read; one in it that cannot be (a FIFO, say) fails the
 * query before its first line. A `dropped` line (lines lost while the disk was full)
 * matches every tenant and call, so a query never hides a gap.
 * @param onUnreadable called for each line that is not a JSON object (run `audit verify`).
 */
export async function* queryAuditTrail(
  dir: string,
  filter: AuditFilter,
  onUnreadable: (file: string, line: number) => void = () => {},
): AsyncGenerator<AuditLine> {
  const days = new Map<string, AuditFile[]>();
  for (const file of await listAuditFiles(dir)) {
    const start = dayStart(file.day);
    if (filter.since !== undefined && start + DAY_MS <= filter.since) continue;
    if (filter.until !== undefined && start >= filter.until) continue;
    days.set(file.day, [...(days.get(file.day) ?? []), file]);
  }
  // Every file is checked before the first line comes, so a query fails before it has printed part of its answer.
  for (const files of days.values()) for (const file of files) await checkReadableFile(path.join(dir, file.name));
  for (const files of days.values()) {
    if (files.length === 1) {
      yield* matchingLines(dir, files[0]!, filter, onUnreadable);
      continue;
    }
    const merged: AuditLine[] = [];
    for (const file of files) for await (const line of matchingLines(dir, file, filter, onUnreadable)) merged.push(line);
    // ISO times in UTC with milliseconds sort as text; sort() is stable, so each chain keeps its order.
    merged.sort((a, b) => String(a.record.time).localeCompare(String(b.record.time)));
    yield* merged;
  }
}

async function* matchingLines(
  dir: string,
  file: AuditFile,
  filter: AuditFilter,
  onUnreadable: (file: string, line: number) => void,
): AsyncGenerator<AuditLine> {
  for await (const { number, bytes, terminated } of readFileLines(path.join(dir, file.name))) {
    // A line still being written by the gateway is read next time.
    if (!terminated) continue;
    const text = bytes.toString('utf8');
    const record = parseAuditRecord(text);
    if (record === undefined) {
      onUnreadable(file.name, number);
      continue;
    }
    if (matches(record, filter)) yield { text, record };
  }
}

function matches(record: Record<string, unknown>, filter: AuditFilter): boolean {
  const time = typeof record.time === 'string' ? Date.parse(record.time) : Number.NaN;
  if (filter.since !== undefined && !(time >= filter.since)) return false;
  if (filter.until !== undefined && !(time < filter.until)) return false;
  if (record.event === 'dropped') return filter.event === undefined || filter.event === 'dropped';
  if (filter.event !== undefined && record.event !== filter.event) return false;
  if (filter.tenant !== undefined && record.tenant !== filter.tenant) return false;
  if (filter.callId !== undefined && String(record.call_id) !== filter.callId) return false;
  return true;
}
