import { createHash } from 'node:crypto';
import { ENCRYPTION_KEY_BYTES, GENERATE_ENCRYPTION_KEY_HINT, type CacheEncryptionConfig } from '../../config/index.js';
import { KEY_ID_BYTES } from './chunk-format.js';

/** One AES-256 master key and its id, as written in the headers of the files it encrypts. */
export interface CacheKey {
  readonly id: Buffer;
  readonly secret: Buffer;
}

/**
 * The keys of `cache.encryption`: new files are written with `current`;
 * `find` also knows the previous keys, so files written before a rotation
 * are still read.
 */
export interface Keyring {
  readonly current: CacheKey;
  /** The key with this id, or undefined when none configured has it. */
  find(id: Buffer): CacheKey | undefined;
}

// Ids already reported; bounded, as damaged headers could carry any number of them.
const MAX_REPORTED_IDS = 64;

/** A key's id: the first bytes of its sha256 (safe to write in a file or a log line: a 256-bit random key cannot be guessed from it). */
export function keyIdOf(secret: Buffer): Buffer {
  return createHash('sha256').update(secret).digest().subarray(0, KEY_ID_BYTES);
}

/**
 * The keyring of `config`. `onUnknownKey` hears of each key id that no
 * configured key has, once per id (a log line, not one per file).
 * @throws Error when a key is not 32 bytes (the config loader refuses those; an unread key arrives empty).
 */
export function createKeyring(config: CacheEncryptionConfig, onUnknownKey: (keyIdHex: string) => void = () => {}): Keyring {
  for (const secret of [config.key, ...config.previousKeys]) {
    if (secret.length !== ENCRYPTION_KEY_BYTES) {
      throw new Error(
        `cache.encryption: a key is ${secret.length} bytes, not ${ENCRYPTION_KEY_BYTES}; set its environment variable or file to ${ENCRYPTION_KEY_BYTES} random bytes in base64 (${GENERATE_ENCRYPTION_KEY_HINT})`,
      );
    }
  }
  const keys = [config.key, ...config.previousKeys].map((secret): CacheKey => ({ id: keyIdOf(secret), secret }));
  const byId = new Map(keys.map((key) => [key.id.toString('hex'), key]));
  const unknown = new Set<string>();
  return {
    current: keys[0]!,
    find(id) {
      const hex = id.toString('hex');
      const key = byId.get(hex);
      if (!key && !unknown.has(hex) && unknown.size < MAX_REPORTED_IDS) {
        unknown.add(hex);
        onUnknownKey(hex);
      }
      return key;
    },
  };
}
