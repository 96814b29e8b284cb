import { ENCRYPTION_KEY_BYTES } from './defaults.js';

/*
 * The cache encryption keys (`cache.encryption`): each is 32 random bytes
 * written as base64, standard (`+/`) or URL-safe (`-_`), padding optional.
 * Problems describe the text (its length, what it decodes to), never quote it.
 */

// One alphabet per key: a key mixing `+` and `-` is a typo, not a key.
const BASE64 = /^(?:[A-Za-z0-9+/]*|[A-Za-z0-9_-]*)={0,2}$/;

/** The 32 bytes of one base64 key, or what is wrong with the text (without quoting it). */
export function decodeEncryptionKey(text: string): Buffer | { problem: string } {
  const trimmed = text.trim();
  if (!BASE64.test(trimmed) || trimmed.replace(/=+$/, '').length % 4 === 1) {
    return { problem: `is not base64 (${ENCRYPTION_KEY_BYTES} random bytes, standard or URL-safe alphabet)` };
  }
  const key = Buffer.from(trimmed, 'base64');
  if (key.length < ENCRYPTION_KEY_BYTES) {
    return { problem: `decodes to ${key.length} bytes, shorter than the ${ENCRYPTION_KEY_BYTES} an AES-256 key needs` };
  }
  if (key.length > ENCRYPTION_KEY_BYTES) {
    return { problem: `decodes to ${key.length} bytes; an AES-256 key is exactly ${ENCRYPTION_KEY_BYTES}` };
  }
  return key;
}

/**
 * The keys of a comma-separated list (`previous_keys_*`), or what is wrong with
 * the first bad one, named by its position. Empty items (a trailing comma) are skipped.
 */
export function decodeEncryptionKeyList(text: string): Buffer[] | { problem: string } {
  const items = text.split(',').map((item) => item.trim());
  const keys: Buffer[] = [];
  for (const [i, item] of items.entries()) {
    if (item === '') continue;
    const key = decodeEncryptionKey(item);
    if (!Buffer.isBuffer(key)) return { problem: `key ${i + 1} of the comma-separated list ${key.problem}` };
    keys.push(key);
  }
  if (keys.length === 0) return { problem: 'holds no key (expected a comma-separated list of base64 keys)' };
  return keys;
}
