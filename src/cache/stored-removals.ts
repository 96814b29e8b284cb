import type { DiskStore } from './disk-store.js';
import type { RecordingIndex } from './recording-index.js';
import type { RecordingMeta } from './recording-meta.js';

export interface StoredRemovalsOptions {
  disk: Pick<DiskStore, 'remove'>;
  index: Pick<RecordingIndex, 'delete'>;
  /** A file that could not be deleted: its entry (`meta`, when already forgotten) is to be counted again. */
  onUndeleted: (key: string, meta: RecordingMeta | undefined) => void;
}

/**
 * Deleting stored recordings, and what the cache must know meanwhile: which
 * keys are being deleted (the index must not bring them back), which
 * deletions are under way (their files take room until they are gone), and
 * which files could not be deleted (never served, kept counted, and tried
 * again by the next purge, sweep or eviction).
 */
export class StoredRemovals {
  readonly #removing = new Set<string>();
  readonly #underWay = new Set<Promise<void>>();
  readonly #undeleted = new Set<string>();

  constructor(private readonly options: StoredRemovalsOptions) {}

  /**
   * Deletes a recording's file, then its index entry: an entry outlives its
   * file only until the next start drops it, while a file without its entry
   * would sit on disk uncounted until then. A file that cannot be deleted
   * stays indexed and (given the `meta` of the entry already forgotten)
   * counted, and is withheld until a later purge, sweep or eviction deletes it.
   */
  async remove(key: string, namespace: string, callId: string, meta?: RecordingMeta): Promise<void> {
    const { disk, index } = this.options;
    this.#removing.add(key);
    const removal = disk.remove(namespace, callId).then(
      () => {
        this.#undeleted.delete(key);
        // After the file: its removal makes the room a full disk needs for the index's write.
        return index.delete(key);
      },
      (error: unknown) => {
        this.#undeleted.add(key);
        this.options.onUndeleted(key, meta);
        throw error;
      },
    );
    const settled = removal.catch(() => {});
    this.#underWay.add(settled);
    try {
      await removal;
    } finally {
      this.#removing.delete(key);
      this.#underWay.delete(settled);
    }
  }

  /** Being deleted now: its index entry is not to be written. */
  removing(key: string): boolean {
    return this.#removing.has(key);
  }

  /** Its file could not be deleted: never served. */
  undeleted(key: string): boolean {
    return this.#undeleted.has(key);
  }

  /** Being deleted, or its file could not be: never served, and the index is not asked. */
  withheld(key: string): boolean {
    return this.#removing.has(key) || this.#undeleted.has(key);
  }

  /** A new file took the place of one that could not be deleted. */
  replaced(key: string): void {
    this.#undeleted.delete(key);
  }

  /** The deletions under way, settled when their files are gone (or stayed). */
  underWay(): Array<Promise<void>> {
    return [...this.#underWay];
  }
}
