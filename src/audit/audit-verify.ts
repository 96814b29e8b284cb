import path from 'node:path';
import { ZERO_HASH, lineHash, listAuditFiles, parseAuditRecord, readFileLines, type AuditFile } from './audit-files.js';

const HASH = /^[0-9a-f]{64}$/;

/** Where a chain first breaks: the file and 1-based line at which it no longer holds, and why. */
export interface BrokenLink {
  file: string;
  line: number;
  problem: string;
}

/** What `audit verify` found in one chain (one per replica in cluster mode). */
export interface ChainReport {
  /** '' outside cluster mode; else the node id in its file names. */
  chain: string;
  files: number;
  /** Lines checked (up to the break, when there is one). */
  lines: number;
  /** sha256 of the last line checked: note it elsewhere to detect, later, lines cut from the end. */
  head: string;
  /** The first line continues a line no longer on disk (its file was past retention, or removed). */
  continuesRemovedFile: boolean;
  /** The newest file ends in a line still being written (no newline yet): not checked. */
  unfinishedLastLine: boolean;
  broken?: BrokenLink;
}

/**
 * Checks every chain in `dir`: each line is a JSON object whose `prev` is the
 * sha256 of the exact bytes of the line before it (across files, in day
 * order). An edited line breaks the link to the line after it; a removed,
 * inserted or reordered line, or a removed file in the middle, breaks the
 * link where the gap is. Not detectable by the chain alone: lines cut from
 * the end of the newest file, or whole files removed from the start (what
 * retention does); compare `head` with a copy kept elsewhere for those.
 */
export async function verifyAuditTrail(dir: string): Promise<ChainReport[]> {
  const chains = new Map<string, AuditFile[]>();
  for (const file of await listAuditFiles(dir)) chains.set(file.chain, [...(chains.get(file.chain) ?? []), file]);
  const reports: ChainReport[] = [];
  for (const [chain, files] of [...chains].sort(([a], [b]) => a.localeCompare(b))) reports.push(await verifyChain(dir, chain, files));
  return reports;
}

async function verifyChain(dir: string, chain: string, files: AuditFile[]): Promise<ChainReport> {
  const report: ChainReport = {
    chain,
    files: files.length,
    lines: 0,
    head: ZERO_HASH,
    continuesRemovedFile: false,
    unfinishedLastLine: false,
  };
  let previous: { hash: string; file: string; line: number } | undefined;
  for (const [index, file] of files.entries()) {
    const newest = index === files.length - 1;
    for await (const { number, bytes, terminated } of readFileLines(path.join(dir, file.name))) {
      const at = (problem: string): ChainReport => ({ ...report, broken: { file: file.name, line: number, problem } });
      if (!terminated) {
        if (newest) {
          report.unfinishedLastLine = true;
          break;
        }
        return at('is cut short: the line has no newline, yet a newer file follows');
      }
      const prev = prevOf(bytes);
      if (prev === undefined) return at('is not an audit line: not a JSON object with a "prev" sha256');
      if (previous === undefined) {
        report.continuesRemovedFile = prev !== ZERO_HASH;
      } else if (prev !== previous.hash) {
        if (number === 1) {
          return at(
            `does not continue from the last line of ${previous.file}: a file between them was removed, ` +
              `lines were removed from the end of ${previous.file}, or one of the two lines was edited`,
          );
        }
        return at(`does not follow line ${previous.line}: line ${previous.line} was edited, or lines were removed or reordered here`);
      }
      previous = { hash: lineHash(bytes), file: file.name, line: number };
      report.lines++;
      report.head = previous.hash;
    }
  }
  return report;
}

/** The `prev` of a line, or undefined when it is not an audit line. */
function prevOf(bytes: Buffer): string | undefined {
  const prev = parseAuditRecord(bytes.toString('utf8'))?.prev;
  return typeof prev === 'string' && HASH.test(prev) ? prev : undefined;
}
