import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { keyIdOf } from '../../src/cache/encryption/keyring.js';
import { parseVolumeKeys, volumeKeysConflict, volumeKeysOf } from '../../src/cluster/volume-keys.js';

const oldKey = randomBytes(32);
const newKey = randomBytes(32);
const id = (key: Buffer) => keyIdOf(key).toString('hex');

describe("what a replica tells the others of its cache.encryption, and when two on one volume remove each other's files", () => {
  test('key ids only, the writing key first among those read; nothing without encryption', () => {
    const keys = volumeKeysOf({ key: newKey, previousKeys: [oldKey] });
    expect(keys).toEqual({ writes: id(newKey), reads: [id(newKey), id(oldKey)] });
    expect(JSON.stringify(keys)).not.toContain(newKey.toString('hex'));
    expect(JSON.stringify(keys)).not.toContain(newKey.toString('base64'));
    expect(volumeKeysOf(undefined)).toBeUndefined();
  });

  test('a heartbeat says keys, none (null), or nothing this replica can read (a replica before 0.5.7)', () => {
    expect(parseVolumeKeys({ writes: 'ab', reads: ['ab', 'cd'] })).toEqual({ writes: 'ab', reads: ['ab', 'cd'] });
    expect(parseVolumeKeys(null)).toBeNull();
    for (const odd of [undefined, 'ab', { writes: 'ab' }, { writes: 1, reads: [] }, { writes: 'ab', reads: [2] }]) {
      expect(parseVolumeKeys(odd)).toBeUndefined();
    }
  });

  test('both in the clear, or one reading the key the other writes with, is no conflict', () => {
    expect(volumeKeysConflict(undefined, undefined)).toBeUndefined();
    const rotating = volumeKeysOf({ key: newKey, previousKeys: [oldKey] });
    const notYet = volumeKeysOf({ key: oldKey, previousKeys: [] });
    expect(volumeKeysConflict(rotating, notYet)).toBeUndefined();
    // The second round of a rotation: the first reads the second's new key.
    expect(
      volumeKeysConflict(volumeKeysOf({ key: oldKey, previousKeys: [newKey] }), volumeKeysOf({ key: newKey, previousKeys: [oldKey] })),
    ).toBeUndefined();
  });

  test('one in the clear and one encrypting, or a key one writes with that the other lacks, is a conflict, said from each side', () => {
    const encrypting = volumeKeysOf({ key: newKey, previousKeys: [] });
    expect(volumeKeysConflict(encrypting, undefined)).toMatch(/writes files in the clear/);
    expect(volumeKeysConflict(undefined, encrypting)).toMatch(/encrypts the files it writes/);
    const other = volumeKeysOf({ key: oldKey, previousKeys: [] });
    expect(volumeKeysConflict(encrypting, other)).toBe(
      `it writes files under key id ${id(oldKey)}, which this replica does not have and removes as damaged`,
    );
    expect(volumeKeysConflict(other, encrypting)).toContain(id(newKey));
  });
});
