import { createHash } from 'node:crypto';
import { sha256Hex } from '../sha256.js';
import type { DiskStore } from './disk-store.js';
import type { RecordingIndex } from './recording-index.js';
import type { RecordingMeta } from './recording-meta.js';
import { DamagedFileError, type StoredFile } from './stored-file.js';

export interface VerifyReport {
  checked: number;
  /**
   * Keys whose file was missing, of the wrong size, failed its sha256, or
   * (`damaged`, with `cache.encryption`) failed decryption; all removed.
   */
  removed: Array<{ key: string; reason: 'missing' | 'size' | 'checksum' | 'damaged' }>;
}

const HASH_READ_BYTES = 1024 * 1024;

/** True when `body` is exactly the recording `meta` describes: its size and its sha256. */
export function isIntact(body: Buffer, meta: Pick<RecordingMeta, 'size' | 'sha256'>): boolean {
  return body.length === meta.size && sha256Hex(body) === meta.sha256;
}

/** The sha256 and size of a stored recording as it reads (decrypted); undefined when missing, 'damaged' when it fails decryption. */
async function hashStored(disk: DiskStore, meta: RecordingMeta): Promise<{ sha256: string; size: number } | 'damaged' | undefined> {
  const hash = createHash('sha256');
  let size = 0;
  let file: StoredFile | undefined;
  try {
    file = await disk.openRecording(meta.namespace, meta.callId);
    if (!file) return undefined;
    const buffer = Buffer.allocUnsafe(HASH_READ_BYTES);
    for (;;) {
      const bytesRead = await file.read(buffer, size);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      size += bytesRead;
    }
  } catch (error) {
    if (error instanceof DamagedFileError) return 'damaged';
    throw error;
  } finally {
    await file?.close();
  }
  return { sha256: hash.digest('hex'), size };
}

type Problem = VerifyReport['removed'][number]['reason'];

function problemOf(actual: Awaited<ReturnType<typeof hashStored>>, meta: RecordingMeta): Problem | undefined {
  if (actual === 'damaged') return 'damaged';
  if (!actual) return 'missing';
  if (actual.size !== meta.size) return 'size';
  return actual.sha256 === meta.sha256 ? undefined : 'checksum';
}

/**
 * Rehashes every stored recording (decrypted, with `cache.encryption`) against
 * the sha256 in its index entry and removes the ones that do not match or
 * fail decryption (file and entry), so they are fetched again instead of
 * served broken. `onEntry` reports progress.
 */
export async function verifyCache(
  index: RecordingIndex,
  disk: DiskStore,
  onEntry: (key: string, meta: RecordingMeta, verdict: 'ok' | Problem) => void = () => {},
): Promise<VerifyReport> {
  const entries: Array<[string, RecordingMeta]> = [];
  for await (const entry of index.entries()) entries.push(entry);
  const report: VerifyReport = { checked: 0, removed: [] };
  for (const [key, meta] of entries) {
    const reason = problemOf(await hashStored(disk, meta), meta);
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
