import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { DiskStore } from './disk-store.js';
import type { RecordingIndex } from './recording-index.js';
import type { RecordingMeta } from './recording-meta.js';

export interface VerifyReport {
  checked: number;
  /** Keys whose file was missing, of the wrong size or failed its sha256; all removed. */
  removed: Array<{ key: string; reason: 'missing' | 'size' | 'checksum' }>;
}

/** True when `body` is exactly the recording `meta` describes: its size and its sha256. */
export function isIntact(body: Buffer, meta: Pick<RecordingMeta, 'size' | 'sha256'>): boolean {
  return body.length === meta.size && createHash('sha256').update(body).digest('hex') === meta.sha256;
}

async function hashFile(path: string): Promise<{ sha256: string; size: number } | undefined> {
  const hash = createHash('sha256');
  let size = 0;
  try {
    for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      size += chunk.length;
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  return { sha256: hash.digest('hex'), size };
}

/**
 * Rehashes every stored recording against the sha256 in its index entry and
 * removes the ones that do not match (file and entry), so they are fetched
 * again instead of served broken. `onEntry` reports progress.
 */
export async function verifyCache(
  index: RecordingIndex,
  disk: DiskStore,
  onEntry: (key: string, meta: RecordingMeta, verdict: 'ok' | VerifyReport['removed'][number]['reason']) => void = () => {},
): Promise<VerifyReport> {
  const entries: Array<[string, RecordingMeta]> = [];
  for await (const entry of index.entries()) entries.push(entry);
  const report: VerifyReport = { checked: 0, removed: [] };
  for (const [key, meta] of entries) {
    const actual = await hashFile(disk.pathFor(meta.namespace, meta.callId));
    const reason = !actual ? 'missing' : actual.size !== meta.size ? 'size' : actual.sha256 !== meta.sha256 ? 'checksum' : undefined;
    report.checked++;
    if (reason) {
      await index.delete(key);
      await disk.remove(meta.namespace, meta.callId);
      report.removed.push({ key, reason });
    }
    onEntry(key, meta, reason ?? 'ok');
  }
  return report;
}
