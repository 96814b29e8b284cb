import { createHash } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { syntheticRecording } from '../../dev/recording-bytes.js';
import { RecordingDownload } from '../../src/download/recording-download.js';
import { NotFoundError } from '../../src/errors.js';
import { RetryableUpstreamError } from '../../src/upstream/errors.js';
import type { UpstreamRecording } from '../../src/upstream/flyflow-client.js';
import { ManualUpstream, fakeSink, readAll, upstreamOf } from './download-fakes.js';

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** An `open` that answers with each upstream in turn, counting its calls. */
function opener(...upstreams: UpstreamRecording[]): { open: () => Promise<UpstreamRecording>; calls: () => number } {
  let calls = 0;
  return {
    open: async () => upstreams[calls++]!,
    calls: () => calls,
  };
}

describe('where a download comes from', () => {
  test('is unknown while its source is choosing, and the upstream as soon as the source says so, before any head', async () => {
    const bytes = syntheticRecording(10_000);
    const upstream = new ManualUpstream(bytes.length);
    let goUpstream!: () => void;
    let answer!: (recording: UpstreamRecording) => void;
    const download = new RecordingDownload((goingUpstream) => {
      goUpstream = goingUpstream;
      return new Promise((resolve) => {
        answer = resolve;
      });
    }, fakeSink());
    await Promise.resolve();
    expect(download.origin).toBeUndefined();
    // Another replica asking now waits a moment for the choice, and no longer.
    expect(await download.originWithin(20)).toBeUndefined();
    const asked = download.originWithin(5_000);
    goUpstream();
    expect(download.origin).toBe('upstream');
    expect(await asked).toBe('upstream');
    answer(upstream);
    upstream.push(bytes);
    upstream.end();
    await download.completed;
    expect(download.origin).toBe('upstream');
  });
});

describe('one download', () => {
  test('callers get the head as soon as the first bytes are MP3 and the length is known, before the body is complete', async () => {
    const bytes = syntheticRecording(10_000);
    const upstream = new ManualUpstream(bytes.length);
    const sink = fakeSink();
    const download = new RecordingDownload(opener(upstream).open, sink);
    upstream.push(bytes.subarray(0, 2000));
    expect(await download.head).toEqual({ size: 10_000, contentType: 'audio/mpeg', lastModified: upstream.lastModified });
    expect(download.state).toBe('running');
    expect(download.sha256).toBeUndefined();
    expect(Buffer.from((await download.readAt(0, 2000))!).equals(bytes.subarray(0, 2000))).toBe(true);
    upstream.push(bytes.subarray(2000));
    upstream.end();
    const completed = await download.completed;
    expect(completed.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(download.sha256).toBe(completed.sha256);
    expect(completed.body?.equals(bytes)).toBe(true);
    expect(completed.file).toBe(sink.files[0]);
    expect(sink.files[0]!.state).toBe('writing');
  });

  test('the temporary file is opened once the upstream has answered, not while it answers, and not at all for a refused answer', async () => {
    const events: string[] = [];
    const bytes = syntheticRecording(4000);
    const sink = fakeSink();
    const createTemp = sink.createTemp.bind(sink);
    sink.createTemp = () => {
      events.push('temp file opened');
      return createTemp();
    };
    let answer!: (recording: UpstreamRecording) => void;
    const download = new RecordingDownload(
      () =>
        new Promise<UpstreamRecording>((resolve) => {
          answer = resolve;
        }),
      sink,
    );
    // Turns pass while the upstream answers: until 0.5.5 the file was opened in the first of them.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(events).toEqual([]);
    void download.head.then(() => events.push('head'));
    answer(upstreamOf(bytes));
    const completed = await download.completed;
    // The answer's first bytes came with it: the callers had the head before the file was asked for.
    expect(events).toEqual(['head', 'temp file opened']);
    expect(completed.file).toBe(sink.files[0]);

    const refusedSink = fakeSink();
    const refused = new RecordingDownload(() => Promise.reject(new NotFoundError()), refusedSink);
    await expect(refused.completed).rejects.toBeInstanceOf(NotFoundError);
    await refused.retire();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(refusedSink.files).toEqual([]);
  });

  test('a body that is not MP3 fails the download, and its file is removed once the download is retired', async () => {
    const sink = fakeSink();
    const download = new RecordingDownload(opener(upstreamOf(Buffer.from('<html>maintenance</html>'))).open, sink);
    await expect(download.completed).rejects.toThrow('not MP3 audio');
    await expect(download.head).rejects.toThrow('not MP3 audio');
    await download.retire();
    expect(sink.files[0]).toMatchObject({ state: 'discarded', closed: true });
  });

  test('a body shorter than its Content-Length fails the download rather than completing short', async () => {
    const bytes = syntheticRecording(3000);
    const upstream = new ManualUpstream(5000);
    upstream.push(bytes);
    upstream.end();
    const download = new RecordingDownload(opener(upstream).open, fakeSink());
    await expect(download.completed).rejects.toThrow('ended before its Content-Length');
  });
});

describe('the digest, for the ETag', () => {
  /** Lets the download take what was pushed. */
  async function settle(download: RecordingDownload, received: number): Promise<void> {
    while (download.received < received) await new Promise((resolve) => setImmediate(resolve));
  }

  test('is promised to a caller that joins once every byte is in, before the upstream has ended; one joining earlier is not made to wait', async () => {
    const bytes = syntheticRecording(10_000);
    const upstream = new ManualUpstream(bytes.length);
    const sink = fakeSink();
    const download = new RecordingDownload(opener(upstream).open, sink);
    expect(download.digestOnceReceived()).toBeUndefined();
    upstream.push(bytes.subarray(0, 2000));
    await download.head;
    expect(download.digestOnceReceived()).toBeUndefined();
    upstream.push(bytes.subarray(2000));
    await settle(download, bytes.length);
    const promised = download.digestOnceReceived();
    expect(promised).toBeInstanceOf(Promise);
    upstream.end();
    expect(await promised).toBe(sha256(bytes));
    await download.completed;
  });

  test('is published before the file is made durable and stored', async () => {
    const bytes = syntheticRecording(10_000);
    const sink = fakeSink();
    let releaseSync!: () => void;
    const syncing = new Promise<void>((resolve) => (releaseSync = resolve));
    const createTemp = sink.createTemp.bind(sink);
    sink.createTemp = async () => Object.assign(await createTemp(), { sync: () => syncing });
    const download = new RecordingDownload(opener(upstreamOf(bytes)).open, sink);
    await settle(download, bytes.length);
    expect(await download.digestOnceReceived()).toBe(sha256(bytes));
    expect(download.sha256).toBe(sha256(bytes));
    expect(download.state).toBe('running');
    releaseSync();
    expect((await download.completed).sha256).toBe(sha256(bytes));
  });

  test('a promised digest is undefined when the download fails instead', async () => {
    const bytes = syntheticRecording(10_000);
    const upstream = new ManualUpstream(bytes.length);
    const download = new RecordingDownload(opener(upstream).open, fakeSink());
    upstream.push(bytes);
    await settle(download, bytes.length);
    const promised = download.digestOnceReceived();
    expect(promised).toBeInstanceOf(Promise);
    upstream.fail(new Error('not worth another attempt'));
    await expect(download.completed).rejects.toThrow();
    expect(await promised).toBeUndefined();
  });
});

describe("another replica's stored copy", () => {
  test('is stored when its bytes have the sha256 the cluster lists for it', async () => {
    const bytes = syntheticRecording(8000);
    let withdrawn = 0;
    const copy = Object.assign(upstreamOf(bytes), { copyOf: { sha256: sha256(bytes), withdraw: () => withdrawn++ } });
    const completed = await new RecordingDownload(opener(copy).open, fakeSink()).completed;
    expect(completed.sha256).toBe(sha256(bytes));
    expect(withdrawn).toBe(0);
  });

  test('whose bytes do not have its listed sha256 (a damaged file), with no byte given out yet: no longer listed, and fetched again at once from the next source', async () => {
    const listed = syntheticRecording(8000);
    const damaged = Buffer.from(listed);
    damaged.write('XXXXXXXX', 4000, 'latin1');
    let withdrawn = 0;
    const copy = Object.assign(upstreamOf(damaged), { copyOf: { sha256: sha256(listed), withdraw: () => withdrawn++ } });
    const attempts = opener(copy, upstreamOf(listed));
    const sink = fakeSink();
    const download = new RecordingDownload(attempts.open, sink);
    const completed = await download.completed;
    expect(withdrawn).toBe(1);
    expect(attempts.calls()).toBe(2);
    expect(completed.body?.equals(listed)).toBe(true);
    expect(completed.sha256).toBe(sha256(listed));
    // The damaged attempt's file went at once; the good one is what is stored.
    expect(sink.files[0]).toMatchObject({ state: 'discarded', closed: true });
    expect(completed.file).toBe(sink.files[1]);
  });

  test('whose bytes do not have its listed sha256, after a reader had a byte of it: not stored, no longer listed, and never read whole', async () => {
    const listed = syntheticRecording(8000);
    const damaged = Buffer.from(listed);
    damaged.write('XXXXXXXX', 4000, 'latin1');
    let withdrawn = 0;
    const copy = Object.assign(new ManualUpstream(damaged.length), { copyOf: { sha256: sha256(listed), withdraw: () => withdrawn++ } });
    const attempts = opener(copy, upstreamOf(listed));
    const sink = fakeSink();
    const download = new RecordingDownload(attempts.open, sink);
    copy.push(damaged.subarray(0, 2000));
    await download.head;
    expect(Buffer.from((await download.readAt(0, 2000))!).equals(damaged.subarray(0, 2000))).toBe(true);
    copy.push(damaged.subarray(2000));
    copy.end();
    await expect(download.completed).rejects.toThrow('does not match its sha256');
    expect(withdrawn).toBe(1);
    expect(attempts.calls()).toBe(1);
    // Its last bytes were held back for the check: a reader never gets the damaged copy whole.
    await expect(download.readAt(damaged.length - 1, 1)).rejects.toThrow('does not match its sha256');
    await download.retire();
    expect(sink.files[0]).toMatchObject({ state: 'discarded', closed: true });
  });
});

describe('a body that breaks', () => {
  test('before any caller has the head it is fetched again, and each broken attempt closes and removes its file at once', async () => {
    const bytes = syntheticRecording(8000);
    const broken = () =>
      upstreamOf(bytes, { declareLength: false, breakAfter: 1000, breakWith: new RetryableUpstreamError('socket hang up') });
    const attempts = opener(broken(), broken(), upstreamOf(bytes));
    const sink = fakeSink();
    const download = new RecordingDownload(attempts.open, sink);
    const completed = await download.completed;
    expect(attempts.calls()).toBe(3);
    expect(completed.body?.equals(bytes)).toBe(true);
    expect(sink.files).toHaveLength(3);
    expect(sink.files[0]).toMatchObject({ state: 'discarded', closed: true });
    expect(sink.files[1]).toMatchObject({ state: 'discarded', closed: true });
    expect(sink.files[2]).toMatchObject({ state: 'writing', closed: false });
    expect(completed.file).toBe(sink.files[2]);
    await download.retire();
    expect(sink.files[2]!.closed).toBe(true);
  });

  test('after a caller had a byte of it, it is not fetched again: they see the failure', async () => {
    const bytes = syntheticRecording(8000);
    const upstream = new ManualUpstream(bytes.length);
    const attempts = opener(upstream, upstreamOf(bytes));
    const sink = fakeSink();
    const download = new RecordingDownload(attempts.open, sink);
    upstream.push(bytes.subarray(0, 1000));
    await download.head;
    expect((await download.readAt(0, 1))?.length).toBe(1);
    upstream.fail(new RetryableUpstreamError('socket hang up'));
    await expect(download.completed).rejects.toThrow('socket hang up');
    await expect(download.readAt(1, 1000)).resolves.toHaveLength(999);
    await expect(download.readAt(1000, 1000)).rejects.toThrow('socket hang up');
    expect(attempts.calls()).toBe(1);
    expect(upstream.cancelled).toBe(true);
  });

  /**
   * A download whose first answer sent 1000 of 8000 bytes (callers have the
   * head), with a read waiting at 5000, that then breaks: the next attempt
   * opens `again`.
   */
  async function brokenAfterHead(again: () => Promise<UpstreamRecording>) {
    const bytes = syntheticRecording(8000);
    const first = new ManualUpstream(bytes.length);
    let calls = 0;
    const sink = fakeSink();
    const download = new RecordingDownload(async () => (calls++ === 0 ? first : again()), sink);
    first.push(bytes.subarray(0, 1000));
    await download.head;
    const waiting = download.readAt(5000, 1000);
    waiting.catch(() => {});
    first.fail(new RetryableUpstreamError('socket hang up'));
    return { bytes, download, sink, waiting, calls: () => calls };
  }

  test('after callers had the head but no byte, it is fetched again: a read waiting further on gets the new body', async () => {
    const bytes = syntheticRecording(8000);
    const { download, sink, waiting, calls } = await brokenAfterHead(async () => upstreamOf(bytes));
    const completed = await download.completed;
    expect(calls()).toBe(2);
    expect(completed.body?.equals(bytes)).toBe(true);
    expect(Buffer.from((await waiting)!).equals(bytes.subarray(5000, 6000))).toBe(true);
    expect((await readAll((offset, max) => download.readAt(offset, max))).equals(bytes)).toBe(true);
    expect(sink.files[0]).toMatchObject({ state: 'discarded', closed: true });
    expect(completed.file).toBe(sink.files[1]);
  });

  test('a body fetched again after callers had the head must be as long as the head said, or the download fails', async () => {
    const { download, waiting, calls } = await brokenAfterHead(async () => upstreamOf(syntheticRecording(9000)));
    await expect(download.completed).rejects.toThrow('answered differently');
    await expect(waiting).rejects.toThrow('answered differently');
    expect(calls()).toBe(2);
  });

  test('when the upstream cannot be reached again, a read waiting for the new body gets that failure', async () => {
    const { download, waiting, calls } = await brokenAfterHead(async () => {
      throw new RetryableUpstreamError('Upstream unreachable');
    });
    await expect(download.completed).rejects.toThrow('Upstream unreachable');
    await expect(waiting).rejects.toThrow('Upstream unreachable');
    await expect(download.readAt(0, 1000)).rejects.toThrow('Upstream unreachable');
    expect(calls()).toBe(2);
  });

  test('a failure that is not worth another attempt ends the download at once', async () => {
    const bytes = syntheticRecording(8000);
    const attempts = opener(
      upstreamOf(bytes, { declareLength: false, breakAfter: 1000, breakWith: new Error('too large') }),
      upstreamOf(bytes),
    );
    const download = new RecordingDownload(attempts.open, fakeSink());
    await expect(download.completed).rejects.toThrow('Download failed');
    expect(attempts.calls()).toBe(1);
  });
});

describe('readers and the file', () => {
  test('the file stays open for a reader after the download is retired, and closes when the last reader lets go', async () => {
    const bytes = syntheticRecording(5000);
    const sink = fakeSink({ memoryEntryMaxBytes: 1000 });
    const download = new RecordingDownload(opener(upstreamOf(bytes)).open, sink);
    const release = download.acquire();
    const completed = await download.completed;
    await completed.file!.commit('recordings/ns/7.mp3');
    await download.retire();
    expect(sink.files[0]!.closed).toBe(false);
    expect((await readAll((offset, max) => download.readAt(offset, max))).equals(bytes)).toBe(true);
    release();
    release();
    await new Promise((resolve) => setImmediate(resolve));
    expect(sink.files[0]).toMatchObject({ state: 'committed', closed: true });
  });
});
