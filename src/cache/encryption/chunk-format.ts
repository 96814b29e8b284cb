import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { DamagedFileError } from '../stored-file.js';

/*
 * The encrypted file format (README, Encryption at rest):
 *
 *   header  "RGENC1\n" | version (1 byte) | key id (8) | chunk size (uint32 BE) | salt (32)
 *   chunks  AES-256-GCM(chunk i) | tag (16), each chunk `chunk size` bytes of plaintext,
 *           the last one shorter (possibly empty) and flagged as last
 *
 * Each file has its own key, HKDF-SHA256(master key, salt), so the per-chunk
 * nonce can simply be the chunk index (a counter never repeats under one key,
 * where random nonces under a shared key would need counting files). The
 * index and the last-chunk flag are in both the nonce and the additional
 * data: a chunk moved, dropped, or taken from another file fails
 * authentication, and so does a file cut at a chunk boundary (its new last
 * chunk was not written as last). Plaintext offset to chunk is arithmetic,
 * so a range decrypts only the chunks it touches.
 */

const MAGIC = Buffer.from('RGENC1\n', 'latin1');
const VERSION = 1;
/** Bytes of the key id: the start of the key's sha256, enough to tell keys apart, nothing to learn a key from. */
export const KEY_ID_BYTES = 8;
const SALT_BYTES = 32;
/** The GCM tag after each chunk. */
export const TAG_BYTES = 16;
const IV_BYTES = 12;
/** Bytes before the first chunk. */
export const HEADER_BYTES = MAGIC.length + 1 + KEY_ID_BYTES + 4 + SALT_BYTES;
/** Plaintext bytes per chunk of new files: a 64 KiB range touches one or two chunks. */
export const DEFAULT_CHUNK_BYTES = 64 * 1024;
// Bounds on a header's chunk size, so a damaged header cannot make a reader allocate gigabytes.
const MIN_CHUNK_BYTES = 16;
const MAX_CHUNK_BYTES = 1024 * 1024;
const FILE_KEY_INFO = Buffer.from('recording-gateway cache file key v1', 'latin1');

/** What a file's header says. */
export interface FileHeader {
  keyId: Buffer;
  chunkBytes: number;
  salt: Buffer;
}

/** A new file's header under the key `keyId`, with a fresh random salt. */
export function newHeader(keyId: Buffer, chunkBytes = DEFAULT_CHUNK_BYTES): { bytes: Buffer; header: FileHeader } {
  if (!Number.isInteger(chunkBytes) || chunkBytes < MIN_CHUNK_BYTES || chunkBytes > MAX_CHUNK_BYTES) {
    throw new RangeError(`encryption: chunk size ${chunkBytes} is outside ${MIN_CHUNK_BYTES}..${MAX_CHUNK_BYTES}`);
  }
  const salt = randomBytes(SALT_BYTES);
  const bytes = Buffer.alloc(HEADER_BYTES);
  let at = MAGIC.copy(bytes, 0);
  at = bytes.writeUInt8(VERSION, at);
  at += keyId.copy(bytes, at, 0, KEY_ID_BYTES);
  at = bytes.writeUInt32BE(chunkBytes, at);
  salt.copy(bytes, at);
  return { bytes, header: { keyId: keyId.subarray(0, KEY_ID_BYTES), chunkBytes, salt } };
}

/**
 * Reads a header.
 * @throws DamagedFileError ('format') when `bytes` is no header this version writes.
 */
export function parseHeader(bytes: Buffer): FileHeader {
  if (bytes.length < HEADER_BYTES || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new DamagedFileError('format', 'not an encrypted cache file (no header): stored in the clear, or cut short');
  }
  let at = MAGIC.length;
  const version = bytes.readUInt8(at++);
  if (version !== VERSION) throw new DamagedFileError('format', `encrypted cache file of unknown version ${version}`);
  const keyId = Buffer.from(bytes.subarray(at, at + KEY_ID_BYTES));
  at += KEY_ID_BYTES;
  const chunkBytes = bytes.readUInt32BE(at);
  at += 4;
  if (chunkBytes < MIN_CHUNK_BYTES || chunkBytes > MAX_CHUNK_BYTES) {
    throw new DamagedFileError('format', `encrypted cache file with an impossible chunk size ${chunkBytes}`);
  }
  return { keyId, chunkBytes, salt: Buffer.from(bytes.subarray(at, at + SALT_BYTES)) };
}

/** The file's own AES-256 key, derived from the master key and the file's salt. */
export function fileKey(masterKey: Buffer, header: FileHeader): Buffer {
  return Buffer.from(hkdfSync('sha256', masterKey, header.salt, FILE_KEY_INFO, 32));
}

/** The nonce and the additional data of chunk `index`: both bind the index and the last-chunk flag. */
function chunkLabel(index: number, last: boolean): Buffer {
  const label = Buffer.alloc(IV_BYTES);
  label.writeUInt32BE(Math.floor(index / 2 ** 32), 0);
  label.writeUInt32BE(index >>> 0, 4);
  label.writeUInt8(last ? 1 : 0, 8);
  return label;
}

/** Encrypts chunk `index`: its ciphertext followed by its tag. */
export function sealChunk(key: Buffer, index: number, last: boolean, plaintext: Uint8Array): Buffer {
  const label = chunkLabel(index, last);
  const cipher = createCipheriv('aes-256-gcm', key, label);
  cipher.setAAD(label);
  const sealed = Buffer.allocUnsafe(plaintext.length + TAG_BYTES);
  const body = cipher.update(plaintext);
  body.copy(sealed, 0);
  cipher.final().copy(sealed, body.length);
  cipher.getAuthTag().copy(sealed, plaintext.length);
  return sealed;
}

/**
 * Decrypts chunk `index` (its ciphertext followed by its tag).
 * @throws DamagedFileError ('authentication') when it is not what was written there under this key.
 */
export function openChunk(key: Buffer, index: number, last: boolean, sealed: Uint8Array): Buffer {
  if (sealed.length < TAG_BYTES) throw new DamagedFileError('truncated', `encrypted chunk ${index} is cut short`);
  const label = chunkLabel(index, last);
  const decipher = createDecipheriv('aes-256-gcm', key, label);
  decipher.setAAD(label);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const body = decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES));
  try {
    decipher.final();
  } catch (error) {
    throw new DamagedFileError('authentication', `encrypted chunk ${index} failed authentication`, { cause: error });
  }
  return body;
}

/** Where chunk `index` starts in the file. */
export function chunkOffset(index: number, chunkBytes: number): number {
  return HEADER_BYTES + index * (chunkBytes + TAG_BYTES);
}

/** The file size of `plaintextSize` bytes encrypted in chunks of `chunkBytes`. */
export function sealedSize(plaintextSize: number, chunkBytes: number): number {
  return chunkOffset(Math.floor(plaintextSize / chunkBytes), chunkBytes) + (plaintextSize % chunkBytes) + TAG_BYTES;
}

/**
 * The plaintext size of an encrypted file of `fileSize` bytes.
 * @throws DamagedFileError ('truncated') when no whole file has that size.
 */
export function plaintextSize(fileSize: number, chunkBytes: number): number {
  const body = fileSize - HEADER_BYTES;
  const full = Math.floor(body / (chunkBytes + TAG_BYTES));
  const rest = body - full * (chunkBytes + TAG_BYTES);
  // The last chunk is shorter than a full one and still has its tag: a remainder under a tag is a cut.
  if (body < TAG_BYTES || rest < TAG_BYTES) throw new DamagedFileError('truncated', 'encrypted cache file is cut short');
  return full * chunkBytes + rest - TAG_BYTES;
}

/** The index of the last chunk of `plaintextSize` bytes (the one that is shorter than the rest, possibly empty). */
export function lastChunkIndex(plaintextSize: number, chunkBytes: number): number {
  return Math.floor(plaintextSize / chunkBytes);
}
