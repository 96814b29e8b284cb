import { describe, expect, test } from 'vitest';
import { manualClock } from '../../dev/manual-clock.js';
import { syntheticRecording } from '../../dev/recording-bytes.js';
import type { RecordingMeta } from '../../src/cache/recording-meta.js';
import { StaleCopyError } from '../../src/cache/stale-copy.js';
import type { TempFile } from '../../src/cache/temp-file.js';
import { DownloadManager, type DownloadStore } from '../../src/download/download-manager.js';
import { DownloadSlots } from '../../src/download/download-slots.js';
import { NotFoundError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import type { UpstreamRecording } from '../../src/upstream/flyflow-client.js';
import { ManualUpstream, fakeSink, upstreamOf } from './download-fakes.js';

const owner = { namespace: 'ns', upstreamApiKey: 'server-key' };
// The cap on downloads has tests of its own; here every download gets a slot at once unless a test says otherwise.
const PLENTY_OF_SLOTS = 64;

interface Stored {
  meta: RecordingMeta;
  file: TempFile | undefined;
  body: Buffer | undefined;
  /** Whether the download could still be joined while it was being stored. */
  joinable: boolean;
}

function setUp(options: { answer: (callId: string) => Promise<UpstreamRecording>; commit?: boolean; slots?: DownloadSlots }) {
  const sink = fakeSink();
  const stored: Stored[] = [];
  const remembered: string[] = [];
  const opened: string[] = [];
  const clock = manualClock();
  const store: DownloadStore = {
    async store(meta, file, body) {
      stored.push({ meta, file, body, joinable: manager.isInFlight(`${meta.namespace}/${meta.callId}`) });
      if (options.commit !== false) await file?.commit(`recordings/${meta.namespace}/${meta.callId}.mp3`);
    },
  };
  const manager: DownloadManager = new DownloadManager({
    client: {
      openRecording: (callId, apiKey) => {
        opened.push(`${callId} with ${apiKey}`);
        return options.answer(callId);
      },
    },
    sink,
    store,
    slots: options.slots ?? new DownloadSlots(PLENTY_OF_SLOTS),
    notFound: {
      remember: (key) => {
        remembered.push(key);
      },
    },
    clock,
    logger: silentLogger(),
  });
  return { manager, sink, stored, remembered, opened, clock };
}

describe('one download per recording', () => {
  test('concurrent callers for one recording share one upstream request; the later ones are told they joined', async () => {
    const bytes = syntheticRecording(4000);
    const upstream = new ManualUpstream(bytes.length);
    const { manager, opened, stored } = setUp({ answer: async () => upstream });
    const first = manager.join(owner, '7');
    const second = manager.join(owner, '7');
    expect(first.collapsed).toBe(false);
    expect(second.collapsed).toBe(true);
    expect(second.download).toBe(first.download);
    upstream.push(bytes);
    upstream.end();
    await first.stored;
    expect(opened).toEqual(['7 with server-key']);
    expect(stored).toHaveLength(1);
    first.release();
    second.release();
  });

  test('a finished download is stored while it can still be joined, so no request falls in between', async () => {
    const bytes = syntheticRecording(4000);
    const { manager, stored, clock } = setUp({ answer: async () => upstreamOf(bytes) });
    const joined = manager.join(owner, '7');
    joined.release();
    await joined.stored;
    expect(stored).toHaveLength(1);
    expect(stored[0]!.joinable).toBe(true);
    expect(stored[0]!.meta).toMatchObject({ namespace: 'ns', callId: '7', size: 4000, contentType: 'audio/mpeg', fetchedAt: clock.now() });
    expect(stored[0]!.body?.equals(bytes)).toBe(true);
    expect(manager.isInFlight('ns/7')).toBe(false);
    expect(manager.inFlight).toBe(0);
  });

  test('a caller that may not join one under way (its replica is out of the cluster) gets a download of its own, and only that one is stored', async () => {
    const [older, newer] = [syntheticRecording(4000), syntheticRecording(4001)];
    const upstreams = [new ManualUpstream(older.length), new ManualUpstream(newer.length)];
    const { manager, opened, stored } = setUp({ answer: async () => upstreams[opened.length - 1]! });
    const first = manager.join(owner, '7');
    const second = manager.join(owner, '7', { joinUnderWay: false });
    expect(second.collapsed).toBe(false);
    expect(second.download).not.toBe(first.download);
    expect(opened).toHaveLength(2);
    upstreams[0]!.push(older);
    upstreams[0]!.end();
    upstreams[1]!.push(newer);
    upstreams[1]!.end();
    await Promise.all([first.stored, second.stored]);
    expect(stored.map((it) => it.meta.size)).toEqual([newer.length]);
    first.release();
    second.release();
  });

  test('once settled, the next caller starts a new download', async () => {
    const { manager, opened } = setUp({ answer: async () => upstreamOf(syntheticRecording(100)) });
    const first = manager.join(owner, '7');
    first.release();
    await manager.idle();
    const second = manager.join(owner, '7');
    second.release();
    expect(second.collapsed).toBe(false);
    await manager.idle();
    expect(opened).toHaveLength(2);
  });
});

describe('when the upstream is asked', () => {
  test('with a slot free, within join(): nothing the caller does next holds the request back', async () => {
    const bytes = syntheticRecording(4000);
    const { manager, opened } = setUp({ answer: async () => upstreamOf(bytes) });
    const joined = manager.join(owner, '7');
    expect(opened).toEqual(['7 with server-key']);
    await joined.stored;
    joined.release();
  });

  test('with every slot taken, only once one comes free', async () => {
    const bytes = syntheticRecording(4000);
    const slots = new DownloadSlots(1);
    const held = slots.take('elsewhere')!;
    const { manager, opened } = setUp({ answer: async () => upstreamOf(bytes), slots });
    const joined = manager.join(owner, '7');
    await new Promise((resolve) => setImmediate(resolve));
    expect(opened).toEqual([]);
    held();
    await joined.stored;
    expect(opened).toEqual(['7 with server-key']);
    joined.release();
  });
});

describe('what is not stored', () => {
  test('a purge during the download wins: nothing is stored and the file is removed', async () => {
    const bytes = syntheticRecording(4000);
    const upstream = new ManualUpstream(bytes.length);
    const { manager, stored, sink } = setUp({ answer: async () => upstream });
    const joined = manager.join(owner, '7');
    joined.release();
    upstream.push(bytes.subarray(0, 100));
    await joined.download.head;
    await manager.discard('ns', '7');
    expect(manager.isInFlight('ns/7')).toBe(false);
    upstream.push(bytes.subarray(100));
    upstream.end();
    await manager.idle();
    expect(stored).toEqual([]);
    expect(manager.overtaken(joined.download)).toBe(true);
    expect(sink.files[0]).toMatchObject({ state: 'discarded', closed: true });
  });

  test('a purge in another process sharing the index: the count noted as the download began goes to the store, which refuses it', async () => {
    const bytes = syntheticRecording(4000);
    const upstream = new ManualUpstream(bytes.length);
    const sink = fakeSink();
    let purges = 3;
    const asked: string[] = [];
    const seenByStore: Array<number | undefined> = [];
    const manager = new DownloadManager({
      client: { openRecording: async (callId) => (callId === '7' ? upstream : upstreamOf(bytes)) },
      sink,
      store: {
        async purgesSoFar(key) {
          asked.push(key);
          return purges;
        },
        async store(_meta, _file, _body, purgesSeen) {
          seenByStore.push(purgesSeen);
          if (purgesSeen !== purges) throw new StaleCopyError('purged while it downloaded');
        },
      },
      slots: new DownloadSlots(PLENTY_OF_SLOTS),
      notFound: { remember: () => {} },
      clock: manualClock(),
      logger: silentLogger(),
    });
    const joined = manager.join(owner, '7');
    joined.release();
    expect(asked).toEqual(['ns/7']);
    upstream.push(bytes.subarray(0, 100));
    await joined.download.head;
    purges++; // the other process's purge
    upstream.push(bytes.subarray(100));
    upstream.end();
    await joined.stored;
    expect(seenByStore).toEqual([3]);
    expect(manager.overtaken(joined.download)).toBe(true);
    expect(sink.files[0]).toMatchObject({ state: 'discarded', closed: true });

    // One that began after it is stored, and not overtaken.
    const later = manager.join(owner, '8');
    later.release();
    await later.stored;
    expect(seenByStore).toEqual([3, 4]);
    expect(manager.overtaken(later.download)).toBe(false);
  });

  test('a file the store did not commit (no room, failing disk) is removed; a committed one is closed and kept', async () => {
    const uncommitted = setUp({ answer: async () => upstreamOf(syntheticRecording(100)), commit: false });
    uncommitted.manager.join(owner, '7').release();
    await uncommitted.manager.idle();
    expect(uncommitted.sink.files[0]).toMatchObject({ state: 'discarded', closed: true });

    const committed = setUp({ answer: async () => upstreamOf(syntheticRecording(100)) });
    committed.manager.join(owner, '7').release();
    await committed.manager.idle();
    expect(committed.sink.files[0]).toMatchObject({ state: 'committed', closed: true });
  });

  test('an upstream 404 is remembered, so the next requests need not ask; other failures are not', async () => {
    const { manager, remembered, stored } = setUp({
      answer: async (callId) => {
        if (callId === '404') throw new NotFoundError();
        return upstreamOf(Buffer.from('<html>maintenance</html>'));
      },
    });
    manager.join(owner, '404').release();
    manager.join(owner, '500').release();
    await manager.idle();
    expect(remembered).toEqual(['ns/404']);
    expect(stored).toEqual([]);
  });

  test('a 404 for a download a purge discarded is not remembered', async () => {
    let refuse!: (error: Error) => void;
    const { manager, remembered } = setUp({ answer: () => new Promise((_resolve, reject) => (refuse = reject)) });
    manager.join(owner, '7').release();
    await manager.discard('ns', '7');
    refuse(new NotFoundError());
    await manager.idle();
    expect(remembered).toEqual([]);
  });
});
