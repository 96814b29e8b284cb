import { randomBytes } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { makeTempDir, removeDir } from '../dev/gateway-harness.js';
import { syntheticRecording } from '../dev/recording-bytes.js';
import { HEADER_BYTES, TAG_BYTES, openChunk, plaintextSize, sealChunk, sealedSize } from '../src/cache/encryption/chunk-format.js';
import { decryptBuffer, encryptBuffer, openEncryptedFile } from '../src/cache/encryption/encrypted-file.js';
import { createEncryptedTempFile } from '../src/cache/encryption/encrypted-temp-file.js';
import { createKeyring, keyIdOf, type Keyring } from '../src/cache/encryption/keyring.js';
import { DamagedFileError, type StoredFile } from '../src/cache/stored-file.js';
import { createTempFile } from '../src/cache/temp-file.js';
import { GrowingBody } from '../src/download/growing-body.js';
import { MemoryTempFile, readAll } from './unit/download-fakes.js';

const CHUNK = 64 * 1024;
const keyA = randomBytes(32);
const keyB = randomBytes(32);
const ringA = createKeyring({ key: keyA, previousKeys: [] });

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir('rg-enc-');
});
afterEach(async () => {
  await removeDir(dir);
});

/** True when `haystack` holds any 64-byte run of `plaintext` (sampled every 61 bytes, so no run is skipped). */
function holdsPlaintext(haystack: Buffer, plaintext: Buffer): boolean {
  for (let at = 0; at + 64 <= plaintext.length; at += 61) {
    if (haystack.includes(plaintext.subarray(at, at + 64))) return true;
  }
  return false;
}

/** Writes `plaintext` through an encrypted temp file (in pieces of `piece` bytes), syncs, commits it to `target`. */
async function writeEncrypted(target: string, plaintext: Buffer, piece = 10_000, keyring: Keyring = ringA, chunkBytes = CHUNK) {
  const temp = await createEncryptedTempFile(await createTempFile(dir), keyring.current, chunkBytes);
  for (let at = 0; at < plaintext.length; at += piece) {
    expect(await temp.write(plaintext.subarray(at, at + piece), at)).toBe(Math.min(piece, plaintext.length - at));
  }
  await temp.sync();
  await temp.commit(target);
  await temp.close();
}

async function openStored(file: string, keyring: Keyring = ringA): Promise<StoredFile> {
  const handle = await open(file, 'r');
  try {
    return await openEncryptedFile(handle, keyring);
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Reads `length` bytes at `start`, piece by piece as GrowingBody and the routes do, from a stored or a temp file. */
async function readRange(file: Pick<StoredFile, 'read'>, start: number, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  let filled = 0;
  while (filled < length) {
    const bytesRead = await file.read(buffer.subarray(filled), start + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return buffer.subarray(0, filled);
}

async function damageOf(run: () => Promise<unknown>): Promise<string> {
  try {
    await run();
  } catch (error) {
    if (error instanceof DamagedFileError) return error.reason;
    throw error;
  }
  return 'intact';
}

describe('the encrypted file format', () => {
  test.each([0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17])(
    'a %i-byte recording round-trips, and its size is known from the file size alone',
    async (size) => {
      const plaintext = syntheticRecording(Math.max(size, 3)).subarray(0, size);
      const sealed = encryptBuffer(plaintext, ringA.current);
      expect(sealed.length).toBe(sealedSize(size, CHUNK));
      expect(plaintextSize(sealed.length, CHUNK)).toBe(size);
      expect(decryptBuffer(sealed, ringA).equals(plaintext)).toBe(true);
      expect(holdsPlaintext(sealed, plaintext)).toBe(false);
    },
  );

  test('every flipped byte, in the header or any chunk or tag, makes the file unreadable', () => {
    const plaintext = syntheticRecording(2 * CHUNK + 100);
    const sealed = encryptBuffer(plaintext, ringA.current);
    const positions = [0, 8, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + CHUNK, HEADER_BYTES + CHUNK + TAG_BYTES + 5, sealed.length - 1];
    for (const at of positions) {
      const edited = Buffer.from(sealed);
      edited[at] = edited[at]! ^ 0x01;
      expect(() => decryptBuffer(edited, ringA), `byte ${at}`).toThrow(DamagedFileError);
    }
  });

  test('a file cut at a chunk boundary, chunks swapped, or a chunk from another file fails authentication', () => {
    const plaintext = syntheticRecording(3 * CHUNK + 100);
    const sealed = encryptBuffer(plaintext, ringA.current);
    const stride = CHUNK + TAG_BYTES;
    const chunk = (bytes: Buffer, index: number) => bytes.subarray(HEADER_BYTES + index * stride, HEADER_BYTES + (index + 1) * stride);

    // Cut after two whole chunks plus the tag-sized bytes of the third: a size that looks whole.
    const cut = sealed.subarray(0, HEADER_BYTES + 2 * stride + TAG_BYTES + 10);
    expect(() => decryptBuffer(cut, ringA)).toThrow(DamagedFileError);

    const swapped = Buffer.concat([
      sealed.subarray(0, HEADER_BYTES),
      chunk(sealed, 1),
      chunk(sealed, 0),
      sealed.subarray(HEADER_BYTES + 2 * stride),
    ]);
    expect(() => decryptBuffer(swapped, ringA)).toThrow(DamagedFileError);

    const other = encryptBuffer(syntheticRecording(3 * CHUNK + 100), ringA.current);
    const spliced = Buffer.concat([sealed.subarray(0, HEADER_BYTES + stride), chunk(other, 1), sealed.subarray(HEADER_BYTES + 2 * stride)]);
    expect(() => decryptBuffer(spliced, ringA)).toThrow(DamagedFileError);
  });

  test('a chunk opens only at the index and with the last-chunk flag it was sealed with', () => {
    const key = randomBytes(32);
    const sealed = sealChunk(key, 3, false, Buffer.from('ID3 some audio'));
    expect(openChunk(key, 3, false, sealed).toString()).toBe('ID3 some audio');
    expect(() => openChunk(key, 3, true, sealed)).toThrow(DamagedFileError);
    expect(() => openChunk(key, 4, false, sealed)).toThrow(DamagedFileError);
    expect(() => openChunk(randomBytes(32), 3, false, sealed)).toThrow(DamagedFileError);
  });

  test('a file written under a previous key is read; under a key no longer configured it is damaged, reported once by id', () => {
    const plaintext = syntheticRecording(5000);
    const sealed = encryptBuffer(plaintext, ringA.current);
    const rotated = createKeyring({ key: keyB, previousKeys: [keyA] });
    expect(decryptBuffer(sealed, rotated).equals(plaintext)).toBe(true);

    const reported: string[] = [];
    const onlyB = createKeyring({ key: keyB, previousKeys: [] }, (id) => reported.push(id));
    for (let i = 0; i < 3; i++) {
      expect(() => decryptBuffer(sealed, onlyB)).toThrow(expect.objectContaining({ reason: 'unknown-key' }));
    }
    expect(reported).toEqual([keyIdOf(keyA).toString('hex')]);
    expect(reported[0]).not.toContain(keyA.toString('hex'));
  });

  test('a file in the clear is not taken for an encrypted one', () => {
    expect(() => decryptBuffer(syntheticRecording(5000), ringA)).toThrow(expect.objectContaining({ reason: 'format' }));
  });

  test('a key that is not 32 bytes is refused with a message naming no key', () => {
    expect(() => createKeyring({ key: Buffer.alloc(0), previousKeys: [] })).toThrow(/0 bytes, not 32/);
  });
});

describe('an encrypted temporary file', () => {
  test('no plaintext byte reaches the disk, and the committed file reads back exactly, by any range', async () => {
    const plaintext = syntheticRecording(5 * CHUNK + 1234);
    const target = path.join(dir, 'stored.mp3');
    await writeEncrypted(target, plaintext, 7_001);
    const onDisk = await readFile(target);
    expect(holdsPlaintext(onDisk, plaintext)).toBe(false);
    expect(onDisk.length).toBe(sealedSize(plaintext.length, CHUNK));

    const file = await openStored(target);
    try {
      expect(file.size).toBe(plaintext.length);
      expect((await file.readAll()).equals(plaintext)).toBe(true);
      for (const [start, length] of [
        [0, 1],
        [CHUNK - 3, 10],
        [2 * CHUNK - 1, CHUNK + 2],
        [plaintext.length - 1, 1],
        [0, plaintext.length],
        [3 * CHUNK, 64 * 1024],
      ] as const) {
        expect((await readRange(file, start, length)).equals(plaintext.subarray(start, start + length)), `${start}+${length}`).toBe(true);
      }
      expect(await file.read(Buffer.alloc(10), plaintext.length)).toBe(0);
    } finally {
      await file.close();
    }
  });

  test('reads while it is written see exactly what was written so far, from disk and from memory', async () => {
    const plaintext = syntheticRecording(3 * CHUNK + 500);
    const temp = await createEncryptedTempFile(await createTempFile(dir), ringA.current);
    try {
      for (let at = 0; at < plaintext.length; at += 20_000) {
        const piece = plaintext.subarray(at, at + 20_000);
        const writing = temp.write(piece, at);
        // A read racing the write of a full chunk.
        const racing = readRange(temp, 0, at);
        await writing;
        expect((await racing).equals(plaintext.subarray(0, at))).toBe(true);
        const upTo = at + piece.length;
        expect((await readRange(temp, 0, upTo)).equals(plaintext.subarray(0, upTo))).toBe(true);
        expect(
          (await readRange(temp, Math.max(0, upTo - 70_000), 70_000)).equals(plaintext.subarray(Math.max(0, upTo - 70_000), upTo)),
        ).toBe(true);
      }
      const onDisk = await readFile(temp.path);
      expect(holdsPlaintext(onDisk, plaintext)).toBe(false);
      await temp.sync();
      expect((await readRange(temp, 0, plaintext.length)).equals(plaintext)).toBe(true);
    } finally {
      await temp.close();
    }
  });

  test('positions out of order are refused', async () => {
    const temp = await createEncryptedTempFile(await createTempFile(dir), ringA.current);
    try {
      await temp.write(Buffer.from('ID3abc'), 0);
      await expect(temp.write(Buffer.from('x'), 100)).rejects.toThrow(/in order/);
    } finally {
      await temp.close();
    }
  });

  test('a disk that fills up midway fails the write, and the bytes taken before stay readable (the download goes on from memory)', async () => {
    const plaintext = syntheticRecording(4 * CHUNK);
    // Room for the header and two chunks.
    const disk = new MemoryTempFile('/nowhere/x.part', HEADER_BYTES + 2 * (CHUNK + TAG_BYTES) + 100);
    const sink = {
      createTemp: () => createEncryptedTempFile(disk, ringA.current),
      memoryEntryMaxBytes: 0,
      diskErrors: [] as unknown[],
      onDiskError(error: unknown) {
        this.diskErrors.push(error);
      },
    };
    const body = await GrowingBody.create(sink, plaintext.length);
    for (let at = 0; at < plaintext.length; at += 5000) await body.append(plaintext.subarray(at, at + 5000));
    const sealed = await body.seal();
    expect(sealed.file).toBeUndefined();
    expect(sink.diskErrors.length).toBeGreaterThan(0);
    expect((await readAll((offset, max) => body.readAt(offset, max))).equals(plaintext)).toBe(true);
    expect(holdsPlaintext(disk.bytes, plaintext)).toBe(false);
    await body.close();
  });

  test('a GrowingBody over an encrypted file serves joiners the exact bytes and commits a readable file', async () => {
    const plaintext = syntheticRecording(2 * CHUNK + 999);
    const sink = {
      createTemp: async () => createEncryptedTempFile(await createTempFile(dir), ringA.current),
      memoryEntryMaxBytes: 0,
      onDiskError(error: unknown) {
        throw error;
      },
    };
    const body = await GrowingBody.create(sink, plaintext.length);
    const joiner = readAll((offset, max) => body.readAt(offset, max));
    for (let at = 0; at < plaintext.length; at += 3000) await body.append(plaintext.subarray(at, at + 3000));
    const { file } = await body.seal();
    expect((await joiner).equals(plaintext)).toBe(true);
    const target = path.join(dir, 'committed.mp3');
    await file!.commit(target);
    await body.close();
    const stored = await openStored(target);
    expect((await stored.readAll()).equals(plaintext)).toBe(true);
    await stored.close();
  });
});

describe('a stored encrypted file', () => {
  test('an edited byte in a later chunk is found when that chunk is read; earlier chunks still read', async () => {
    const plaintext = syntheticRecording(3 * CHUNK);
    const target = path.join(dir, 'edited.mp3');
    await writeEncrypted(target, plaintext);
    const bytes = await readFile(target);
    const at = HEADER_BYTES + 2 * (CHUNK + TAG_BYTES) + 40;
    bytes[at] = bytes[at]! ^ 0x80;
    await writeFile(target, bytes);
    const file = await openStored(target);
    try {
      expect((await readRange(file, 0, CHUNK)).equals(plaintext.subarray(0, CHUNK))).toBe(true);
      expect(await damageOf(() => readRange(file, 2 * CHUNK, 100))).toBe('authentication');
      expect(await damageOf(() => file.readAll())).toBe('authentication');
    } finally {
      await file.close();
    }
  });

  test('a cut-short file is damaged: at open when its size cannot be whole, else when its new last chunk is read', async () => {
    const plaintext = syntheticRecording(3 * CHUNK + 10);
    const target = path.join(dir, 'cut.mp3');
    await writeEncrypted(target, plaintext);
    const bytes = await readFile(target);
    const stride = CHUNK + TAG_BYTES;
    const openAndReadAll = async () => {
      const file = await openStored(target);
      try {
        await file.readAll();
      } finally {
        await file.close();
      }
    };

    // The last chunk dropped whole: what is left ends on a full chunk, which no whole file does.
    await writeFile(target, bytes.subarray(0, HEADER_BYTES + 3 * stride));
    expect(await damageOf(() => openStored(target))).toBe('truncated');
    // Less than a tag after the last full chunk.
    await writeFile(target, bytes.subarray(0, HEADER_BYTES + 3 * stride + 5));
    expect(await damageOf(() => openStored(target))).toBe('truncated');
    // A size that looks whole: the chunk that now comes last was not written as last.
    await writeFile(target, bytes.subarray(0, HEADER_BYTES + 2 * stride + TAG_BYTES + 10));
    const file = await openStored(target);
    try {
      expect(file.size).toBe(2 * CHUNK + 10);
      expect((await readRange(file, 0, CHUNK)).equals(plaintext.subarray(0, CHUNK))).toBe(true);
      expect(await damageOf(() => readRange(file, 2 * CHUNK, 5))).toBe('authentication');
    } finally {
      await file.close();
    }
    expect(await damageOf(openAndReadAll)).toBe('authentication');
  });

  test('a file under an unknown key, or in the clear, is damaged at open', async () => {
    const target = path.join(dir, 'a.mp3');
    await writeEncrypted(target, syntheticRecording(1000));
    expect(await damageOf(() => openStored(target, createKeyring({ key: keyB, previousKeys: [] })))).toBe('unknown-key');
    await writeFile(target, syntheticRecording(1000));
    expect(await damageOf(() => openStored(target))).toBe('format');
  });
});
