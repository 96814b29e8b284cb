import type { CacheEncryptionConfig } from '../config/index.js';
import { keyIdOf } from '../cache/encryption/keyring.js';

/**
 * What a replica tells the others of its `cache.encryption` in its
 * heartbeat, never a key: the id of the key it writes files with and the ids
 * of every key it reads (README, Encryption at rest: a key id tells keys
 * apart without revealing one). Undefined without encryption.
 */
export interface VolumeKeys {
  writes: string;
  reads: string[];
}

export function volumeKeysOf(encryption: CacheEncryptionConfig | undefined): VolumeKeys | undefined {
  if (!encryption) return undefined;
  const writes = keyIdOf(encryption.key).toString('hex');
  return { writes, reads: [writes, ...encryption.previousKeys.map((key) => keyIdOf(key).toString('hex'))] };
}

/** A heartbeat's `keys`: a VolumeKeys, or null for none; undefined when it is not one (a replica before 0.5.7 sends none). */
export function parseVolumeKeys(value: unknown): VolumeKeys | null | undefined {
  if (value === null) return null;
  if (typeof value !== 'object') return undefined;
  const { writes, reads } = value as Partial<VolumeKeys>;
  if (typeof writes !== 'string' || !Array.isArray(reads) || !reads.every((id) => typeof id === 'string')) return undefined;
  return { writes, reads };
}

/**
 * Why a replica on this one's volume, with `theirs`, and this one, with
 * `mine`, remove each other's files (each removes the files its keys cannot
 * read, as damaged); undefined when this one reads what the other writes.
 * The other replica finds the converse.
 */
export function volumeKeysConflict(mine: VolumeKeys | undefined, theirs: VolumeKeys | undefined): string | undefined {
  if (!mine && !theirs) return undefined;
  if (!theirs) return 'it writes files in the clear, which this replica, with cache.encryption, removes as damaged';
  if (!mine) return 'it encrypts the files it writes, which this replica, without cache.encryption, cannot read and removes as damaged';
  if (mine.reads.includes(theirs.writes)) return undefined;
  return `it writes files under key id ${theirs.writes}, which this replica does not have and removes as damaged`;
}
