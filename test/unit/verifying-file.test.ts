import { createHash } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { DamagedFileError, type StoredFile } from '../../src/cache/stored-file.js';
import { verifyingReadThrough } from '../../src/cache/verifying-file.js';

const BODY = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
const SHA256 = createHash('sha256').update(BODY).digest('hex');

function fileOf(bytes: Buffer): StoredFile {
  return {
    size: bytes.length,
    changedAtMs: 1,
    read: async (buffer, position) => bytes.copy(buffer, 0, position, Math.min(bytes.length, position + buffer.length)),
    readAll: async () => Buffer.from(bytes),
    close: async () => {},
  };
}

/** Reads `[start, end)` in `chunk`-byte reads, as a stream does; answers the bytes, or the error that cut it. */
async function stream(file: StoredFile, start: number, end: number, chunk: number): Promise<Buffer | Error> {
  const parts: Buffer[] = [];
  try {
    for (let at = start; at < end; ) {
      const buffer = Buffer.alloc(Math.min(chunk, end - at));
      const read = await file.read(buffer, at);
      if (read === 0) break;
      parts.push(buffer.subarray(0, read));
      at += read;
    }
  } catch (error) {
    return error as Error;
  }
  return Buffer.concat(parts);
}

describe('a file checked as it is read through', () => {
  test('an intact file reads whole and is reported intact once its last byte is read', async () => {
    let intact = 0;
    const file = verifyingReadThrough(fileOf(BODY), SHA256, () => intact++);
    const first = await stream(file, 0, 600, 128);
    expect(intact).toBe(0);
    const rest = await stream(file, 600, BODY.length, 128);
    expect(Buffer.concat([first as Buffer, rest as Buffer]).equals(BODY)).toBe(true);
    expect(intact).toBe(1);
  });

  test('a damaged file of the right size fails the read of its last bytes, after handing out the rest', async () => {
    const damaged = Buffer.from(BODY);
    damaged[500] = damaged[500]! ^ 0xff;
    let intact = 0;
    const file = verifyingReadThrough(fileOf(damaged), SHA256, () => intact++);
    const before = await stream(file, 0, 900, 100);
    expect((before as Buffer).length).toBe(900);
    const last = await stream(file, 900, BODY.length, 100);
    expect(last).toBeInstanceOf(DamagedFileError);
    expect((last as DamagedFileError).reason).toBe('digest');
    expect(intact).toBe(0);
  });

  test('reads out of order (a range, a seek) go unchecked', async () => {
    const damaged = Buffer.from(BODY);
    damaged[10] = damaged[10]! ^ 0xff;
    let intact = 0;
    const ranged = verifyingReadThrough(fileOf(damaged), SHA256, () => intact++);
    expect(((await stream(ranged, 100, BODY.length, 100)) as Buffer).length).toBe(900);
    const seeked = verifyingReadThrough(fileOf(damaged), SHA256, () => intact++);
    await stream(seeked, 0, 100, 100);
    expect(((await stream(seeked, 300, BODY.length, 100)) as Buffer).length).toBe(700);
    expect(intact).toBe(0);
  });
});
