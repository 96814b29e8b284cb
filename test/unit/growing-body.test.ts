import { describe, expect, test } from 'vitest';
import { syntheticRecording } from '../../dev/recording-bytes.js';
import { GrowingBody } from '../../src/download/growing-body.js';
import { BadGatewayError } from '../../src/errors.js';
import { fakeSink, readAll } from './download-fakes.js';

async function fill(body: GrowingBody, bytes: Buffer, chunkBytes: number): Promise<void> {
  for (let at = 0; at < bytes.length; at += chunkBytes) await body.append(bytes.subarray(at, at + chunkBytes));
}

describe('a body still arriving', () => {
  test('a reader asking past what arrived waits, and gets the bytes as they land', async () => {
    const sink = fakeSink();
    const body = GrowingBody.create(sink, 10);
    await body.append(Buffer.from('ID3ab'));
    const waiting = body.readAt(5, 100);
    let settled = false;
    void waiting.then(() => (settled = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBe(false);
    await body.append(Buffer.from('cdefg'));
    expect(Buffer.from((await waiting)!).toString()).toBe('cdefg');
  });

  test('a reader waiting for the first bytes gets them before the disk is asked to write them', async () => {
    const sink = fakeSink({ memoryEntryMaxBytes: 1000 });
    const body = GrowingBody.create(sink, 10_000);
    const file = sink.files[0]!;
    const order: string[] = [];
    const write = file.write.bind(file);
    file.write = (chunk, position) => {
      order.push(`disk ${position}`);
      return write(chunk, position);
    };
    const reading = body.readAt(0, 100).then(() => order.push('read 0'));
    await body.append(Buffer.from('ID3first'));
    await reading;
    await body.append(Buffer.from('second'));
    expect(order).toEqual(['read 0', 'disk 0', 'disk 8']);
    expect(file.bytes.toString()).toBe('ID3firstsecond');
  });

  test('the first bytes reach readers while the temporary file is still opening, and go to it once it is open', async () => {
    const sink = fakeSink({ memoryEntryMaxBytes: 1000 });
    const bytes = syntheticRecording(5000);
    let open!: () => void;
    const opened = new Promise<void>((resolve) => (open = resolve));
    const opening = opened.then(() => sink.createTemp());
    const body = GrowingBody.create(sink, bytes.length, opening);
    const appended = body.append(bytes.subarray(0, 700));
    expect(Buffer.from((await body.readAt(0, 1000))!).equals(bytes.subarray(0, 700))).toBe(true);
    expect(sink.files).toHaveLength(0);
    open();
    await appended;
    await fill(body, bytes.subarray(700), 700);
    const sealed = await body.seal();
    expect(sealed.file).toBe(sink.files[0]);
    expect(sink.files[0]!.bytes.equals(bytes)).toBe(true);
    expect((await readAll((offset, max) => body.readAt(offset, max))).equals(bytes)).toBe(true);
  });

  test('a small recording is kept in memory and handed over whole with its synced file', async () => {
    const sink = fakeSink({ memoryEntryMaxBytes: 1000 });
    const bytes = syntheticRecording(900);
    const body = GrowingBody.create(sink, bytes.length);
    await fill(body, bytes, 100);
    const sealed = await body.seal();
    expect(sealed.body?.equals(bytes)).toBe(true);
    expect(sealed.file).toBe(sink.files[0]);
    expect(sink.files[0]!.bytes.equals(bytes)).toBe(true);
    expect(sink.files[0]!.syncs).toBe(1);
    expect((await readAll((offset, max) => body.readAt(offset, max))).equals(bytes)).toBe(true);
  });

  test('a recording too large for the memory tier is read back from its file, never held in memory', async () => {
    const sink = fakeSink({ memoryEntryMaxBytes: 1000 });
    const bytes = syntheticRecording(5000);
    const body = GrowingBody.create(sink, bytes.length);
    await fill(body, bytes, 700);
    const sealed = await body.seal();
    expect(sealed.body).toBeUndefined();
    expect(sealed.file).toBe(sink.files[0]);
    // Damage the file: if the reader gets the damage, it read from the file.
    const file = sink.files[0]!;
    file.bytes[4000] = file.bytes[4000]! ^ 0xff;
    const read = await readAll((offset, max) => body.readAt(offset, max));
    expect(read.length).toBe(bytes.length);
    expect(read[4000]).toBe(bytes[4000]! ^ 0xff);
  });

  test('a reader at the live edge of a recording too large for memory gets a chunk while it is still being written', async () => {
    const sink = fakeSink({ memoryEntryMaxBytes: 1000 });
    const bytes = syntheticRecording(5000);
    const body = GrowingBody.create(sink, bytes.length);
    await body.append(bytes.subarray(0, 700));
    const release = sink.files[0]!.holdWrites();
    const appended = body.append(bytes.subarray(700, 1400));
    // Bytes 0-699 are in the file; 700-1399 only in the write under way.
    expect(Buffer.from((await body.readAt(0, 1000))!).equals(bytes.subarray(0, 700))).toBe(true);
    expect(Buffer.from((await body.readAt(900, 1000))!).equals(bytes.subarray(900, 1400))).toBe(true);
    const past = body.readAt(1400, 100);
    let settled = false;
    void past.then(() => (settled = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBe(false);
    release();
    await appended;
    await fill(body, bytes.subarray(1400), 700);
    expect(Buffer.from((await past)!).equals(bytes.subarray(1400, 1500))).toBe(true);
    await body.seal();
    expect(sink.files[0]!.bytes.equals(bytes)).toBe(true);
    expect((await readAll((offset, max) => body.readAt(offset, max))).equals(bytes)).toBe(true);
  });

  test('a body without a Content-Length that outgrows the memory tier lets its memory copy go', async () => {
    const sink = fakeSink({ memoryEntryMaxBytes: 1000 });
    const bytes = syntheticRecording(3000);
    const body = GrowingBody.create(sink, undefined);
    await fill(body, bytes, 500);
    const sealed = await body.seal();
    expect(sealed.body).toBeUndefined();
    expect(sealed.file).toBe(sink.files[0]);
    expect(sink.files[0]!.bytes.equals(bytes)).toBe(true);
    expect((await readAll((offset, max) => body.readAt(offset, max))).equals(bytes)).toBe(true);
  });
});

describe('a disk that fails', () => {
  test('when the disk fills midway, readers still get every byte, and the partial file is discarded rather than handed over', async () => {
    const sink = fakeSink({ memoryEntryMaxBytes: 1000, capacity: 2500 });
    const bytes = syntheticRecording(6000);
    const body = GrowingBody.create(sink, bytes.length);
    await fill(body, bytes, 1000);
    const sealed = await body.seal();
    expect(sealed.file).toBeUndefined();
    expect(sealed.body).toBeUndefined();
    expect(sink.files[0]!.state).toBe('discarded');
    expect(sink.diskErrors).toHaveLength(1);
    expect((sink.diskErrors[0] as NodeJS.ErrnoException).code).toBe('ENOSPC');
    // The first 2,500 bytes come from the file, the rest from memory.
    expect((await readAll((offset, max) => body.readAt(offset, max))).equals(bytes)).toBe(true);
  });

  test('a temporary file that fails to open after the first bytes arrived: the body lives in memory, readers get every byte, the problem is reported once', async () => {
    const sink = fakeSink({ memoryEntryMaxBytes: 1000 });
    const bytes = syntheticRecording(4000);
    let refuse!: (error: Error) => void;
    const opening = new Promise<never>((_, reject) => (refuse = reject));
    const body = GrowingBody.create(sink, bytes.length, opening);
    const appended = body.append(bytes.subarray(0, 1000));
    expect(Buffer.from((await body.readAt(0, 1000))!).equals(bytes.subarray(0, 1000))).toBe(true);
    refuse(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }));
    await appended;
    await fill(body, bytes.subarray(1000), 1000);
    const sealed = await body.seal();
    expect(sealed.file).toBeUndefined();
    expect(sealed.body?.equals(bytes)).toBe(true);
    expect(sink.diskErrors).toHaveLength(1);
    expect((await readAll((offset, max) => body.readAt(offset, max))).equals(bytes)).toBe(true);
  });

  test('without a temporary file the body lives in memory, and the disk problem is reported', async () => {
    const sink = fakeSink({ memoryEntryMaxBytes: 1000, unwritable: true });
    const bytes = syntheticRecording(4000);
    const body = GrowingBody.create(sink, bytes.length);
    await fill(body, bytes, 1000);
    const sealed = await body.seal();
    expect(sealed.file).toBeUndefined();
    expect(sealed.body?.equals(bytes)).toBe(true);
    expect(sink.diskErrors).toHaveLength(1);
  });
});

describe('the end of a body', () => {
  test('a failed body gives readers what arrived, then the failure; its file is discarded at once', async () => {
    const sink = fakeSink();
    const body = GrowingBody.create(sink, 100);
    await body.append(Buffer.from('ID3 some bytes'));
    const waiting = body.readAt(14, 10);
    body.fail(new BadGatewayError('Upstream body ended early'));
    await expect(waiting).rejects.toThrow('Upstream body ended early');
    expect(Buffer.from((await body.readAt(0, 100))!).toString()).toBe('ID3 some bytes');
    await Promise.resolve();
    expect(sink.files[0]!.state).toBe('discarded');
    expect(sink.files[0]!.closed).toBe(false);
  });

  test('close frees the file, and removes it unless it was committed', async () => {
    const sink = fakeSink();
    const committed = GrowingBody.create(sink, 3);
    await committed.append(Buffer.from('ID3'));
    const { file } = await committed.seal();
    await file!.commit('recordings/ns/1.mp3');
    await committed.close();
    expect(sink.files[0]).toMatchObject({ state: 'committed', closed: true });

    const abandoned = GrowingBody.create(sink, 3);
    await abandoned.append(Buffer.from('ID3'));
    await abandoned.seal();
    await abandoned.close();
    expect(sink.files[1]).toMatchObject({ state: 'discarded', closed: true });
  });
});
