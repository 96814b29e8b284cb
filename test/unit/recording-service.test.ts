import { describe, expect, test } from 'vitest';
import { manualClock } from '../../dev/manual-clock.js';
import { NotFoundMemory } from '../../src/cache/not-found-memory.js';
import type { CacheHit, CachedRecording, RecordingCache } from '../../src/cache/recording-cache.js';
import type { RecordingMeta } from '../../src/cache/recording-meta.js';
import { StaleCopyError } from '../../src/cache/stale-copy.js';
import type { StoredFile } from '../../src/cache/stored-file.js';
import type { DownloadManager, JoinedDownload } from '../../src/download/download-manager.js';
import type { RecordingDownload } from '../../src/download/recording-download.js';
import { NotFoundError } from '../../src/errors.js';
import { RecordingService } from '../../src/recordings/recording-service.js';

const MEMORY_ENTRY_MAX_BYTES = 1000;

function entry(callId: string, size: number): CachedRecording {
  const meta: RecordingMeta = { namespace: 'ns', callId, size, sha256: '0'.repeat(64), contentType: 'audio/mpeg', fetchedAt: 0 };
  return { key: `ns/${callId}`, meta, onDisk: true };
}

/** A cache whose tiers the test fills by hand, recording what the service asked of it. */
function fakeCache(tiers: {
  memory?: Map<string, Buffer>;
  disk?: Map<string, CachedRecording>;
  index?: Map<string, CachedRecording>;
  /** An index of this cache directory alone, whose files are `index`'s: else a shared one, which must be asked. */
  localIndex?: boolean;
  damaged?: Set<string>;
  /** `cache.encryption` on. */
  encrypted?: boolean;
}) {
  const calls: string[] = [];
  /** The recordings read whole (and checked), as `readVerified` does. */
  const readWhole: string[] = [];
  const pins = new Map<string, number>();
  const closed: string[] = [];
  const cache = {
    memoryEntryMaxBytes: MEMORY_ENTRY_MAX_BYTES,
    encrypted: tiers.encrypted === true,
    lookup(key: string): CacheHit | undefined {
      const known = tiers.disk?.get(key);
      if (!known) return undefined;
      const body = tiers.memory?.get(key);
      return body ? { tier: 'memory', entry: known, body } : { tier: 'disk', entry: known };
    },
    knownAbsent: (key: string) => tiers.localIndex === true && !tiers.index?.has(key),
    async lookupIndex(key: string): Promise<CacheHit | undefined> {
      calls.push(`index ${key}`);
      const known = tiers.index?.get(key);
      return known && { tier: 'disk', entry: known };
    },
    pin(key: string) {
      pins.set(key, (pins.get(key) ?? 0) + 1);
      let done = false;
      return () => {
        if (done) return;
        done = true;
        pins.set(key, pins.get(key)! - 1);
      };
    },
    async openFile(found: CachedRecording, streamed?: boolean): Promise<StoredFile | undefined> {
      calls.push(`open ${found.key}${streamed ? ' to stream' : ''}`);
      return {
        size: found.meta.size,
        changedAtMs: 0,
        read: async (buffer: Uint8Array, position: number) => {
          const bytes = Buffer.alloc(Math.max(0, Math.min(buffer.length, found.meta.size - position)), 7);
          buffer.set(bytes);
          return bytes.length;
        },
        readAll: async () => Buffer.alloc(found.meta.size, 7),
        close: async () => {
          closed.push(found.key);
        },
      };
    },
    async readVerified(found: CachedRecording): Promise<Buffer | undefined> {
      readWhole.push(found.key);
      return tiers.damaged?.has(found.key) ? undefined : Buffer.alloc(found.meta.size, 7);
    },
  };
  return { cache: cache as unknown as RecordingCache, calls, readWhole, pins, closed };
}

function fakeDownloads(inFlight: string[] = [], finishedSha256?: string, overtaken = false) {
  const joined: string[] = [];
  const downloads = {
    isInFlight: (key: string) => inFlight.includes(key),
    overtaken: () => overtaken,
    join(owner: { namespace: string }, callId: string): JoinedDownload {
      joined.push(`${owner.namespace}/${callId}`);
      const download = {
        received: 0,
        head: Promise.resolve({ size: 10, contentType: 'audio/mpeg', lastModified: undefined }),
        completed: Promise.resolve({ size: 10 }),
        sha256: finishedSha256,
        digestOnceReceived: () => finishedSha256,
      } as unknown as RecordingDownload;
      return { download, collapsed: false, release: () => {}, stored: Promise.resolve() };
    },
  };
  return { downloads: downloads as unknown as DownloadManager, joined };
}

const owner = { namespace: 'ns', upstreamApiKey: 'key' };

describe('finding a recording', () => {
  test('a memory hit is answered synchronously: nothing is awaited on the fast path', () => {
    const known = entry('1', 100);
    const body = Buffer.alloc(100, 1);
    const { cache } = fakeCache({ disk: new Map([[known.key, known]]), memory: new Map([[known.key, body]]) });
    const service = new RecordingService({
      cache,
      downloads: fakeDownloads().downloads,
      notFound: new NotFoundMemory(30_000, manualClock()),
    });
    const found = service.find('ns', '1');
    expect(found).not.toBeInstanceOf(Promise);
    expect(found).toMatchObject({ tier: 'memory', entry: known, body });
  });

  test('a miss asks the shared index, which may know what another replica stored', async () => {
    const known = entry('2', 100);
    const { cache, calls } = fakeCache({ index: new Map([[known.key, known]]) });
    const service = new RecordingService({
      cache,
      downloads: fakeDownloads().downloads,
      notFound: new NotFoundMemory(30_000, manualClock()),
    });
    expect(await service.find('ns', '2')).toMatchObject({ tier: 'disk', entry: known, body: Buffer.alloc(100, 7) });
    expect(calls).toEqual(['index ns/2', 'open ns/2']);
  });

  test('a miss that a local index cannot hold is answered synchronously; one it may hold asks it', async () => {
    const known = entry('8', 100);
    const notFound = new NotFoundMemory(30_000, manualClock());
    const { cache, calls } = fakeCache({ index: new Map([[known.key, known]]), localIndex: true });
    const service = new RecordingService({ cache, downloads: fakeDownloads().downloads, notFound });
    expect(service.find('ns', '9')).toBeUndefined();
    expect(calls).toEqual([]);
    expect(await service.find('ns', '8')).toMatchObject({ tier: 'disk', entry: known });
    expect(calls).toEqual(['index ns/8', 'open ns/8']);
    notFound.remember('ns/9');
    await expect(service.find('ns', '9')).rejects.toBeInstanceOf(NotFoundError);
  });

  test('a remembered 404 is answered without asking the index', async () => {
    const { cache, calls } = fakeCache({});
    const notFound = new NotFoundMemory(30_000, manualClock());
    notFound.remember('ns/3');
    const service = new RecordingService({ cache, downloads: fakeDownloads().downloads, notFound });
    await expect(service.find('ns', '3')).rejects.toBeInstanceOf(NotFoundError);
    expect(calls).toEqual([]);
  });

  test('while a download of it is under way, a miss joins it without asking the index', async () => {
    const { cache, calls } = fakeCache({});
    const service = new RecordingService({
      cache,
      downloads: fakeDownloads(['ns/4']).downloads,
      notFound: new NotFoundMemory(30_000, manualClock()),
    });
    expect(await service.find('ns', '4')).toBeUndefined();
    expect(calls).toEqual([]);
  });

  test('a large disk hit stays open and pinned against eviction until its reader is released', async () => {
    const large = entry('5', MEMORY_ENTRY_MAX_BYTES + 1);
    const { cache, pins, closed } = fakeCache({ disk: new Map([[large.key, large]]) });
    const service = new RecordingService({
      cache,
      downloads: fakeDownloads().downloads,
      notFound: new NotFoundMemory(30_000, manualClock()),
    });
    const found = await service.find('ns', '5');
    expect(found?.body).toBeUndefined();
    expect(pins.get('ns/5')).toBe(1);
    expect((await found!.reader!.readAt(0, 64))?.length).toBe(64);
    found!.reader!.release();
    found!.reader!.release();
    expect(pins.get('ns/5')).toBe(0);
    expect(closed).toEqual(['ns/5']);
  });

  test('a small disk hit that fails its checksum is a miss, its file closed and unpinned', async () => {
    const small = entry('6', 100);
    const { cache, pins, closed } = fakeCache({ disk: new Map([[small.key, small]]), damaged: new Set(['ns/6']) });
    const service = new RecordingService({
      cache,
      downloads: fakeDownloads().downloads,
      notFound: new NotFoundMemory(30_000, manualClock()),
    });
    expect(await service.find('ns', '6')).toBeUndefined();
    expect(pins.get('ns/6')).toBe(0);
    expect(closed).toEqual(['ns/6']);
  });
});

describe('a small disk hit, read whole or from its file', () => {
  function serviceOver(encrypted: boolean) {
    const small = entry('7', 100);
    const fake = fakeCache({ disk: new Map([[small.key, small]]), encrypted });
    const service = new RecordingService({
      cache: fake.cache,
      downloads: fakeDownloads().downloads,
      notFound: new NotFoundMemory(30_000, manualClock()),
    });
    return { service, small, ...fake };
  }

  test('encrypted, for an answer that needs part of it or none: read from its file, asked once with its entry, never read whole', async () => {
    const { service, small, calls, readWhole, pins, closed } = serviceOver(true);
    const asked: CachedRecording[] = [];
    const found = await service.find('ns', '7', (of) => {
      asked.push(of);
      return false;
    });
    expect(asked).toEqual([small]);
    expect(found).toMatchObject({ tier: 'disk', entry: small });
    expect(found?.body).toBeUndefined();
    expect((await found!.reader!.readAt(10, 20))?.length).toBe(20);
    found!.reader!.release();
    expect(calls).toEqual(['open ns/7 to stream']);
    expect(readWhole).toEqual([]);
    expect(pins.get('ns/7')).toBe(0);
    expect(closed).toEqual(['ns/7']);
  });

  test.each([
    ['encrypted, for an answer that sends it whole', true, () => true],
    ['encrypted, when not told what the answer needs', true, undefined],
    ['in the clear, whatever the answer needs', false, () => false],
  ])('%s: read whole and checked (so kept in memory)', async (_case, encrypted, wholeBody) => {
    const { service, small, calls, readWhole } = serviceOver(encrypted);
    const found = await service.find('ns', '7', wholeBody);
    expect(found).toMatchObject({ tier: 'disk', entry: small, body: Buffer.alloc(100, 7) });
    expect(calls).toEqual(['open ns/7']);
    expect(readWhole).toEqual(['ns/7']);
  });
});

describe('warming the cache', () => {
  test('a stored recording is reported without a download', async () => {
    const known = entry('7', 100);
    const { cache } = fakeCache({ disk: new Map([[known.key, known]]) });
    const { downloads, joined } = fakeDownloads();
    const service = new RecordingService({ cache, downloads, notFound: new NotFoundMemory(30_000, manualClock()) });
    expect(await service.warm(owner, '7')).toEqual({ status: 'cached', size: 100 });
    expect(joined).toEqual([]);
  });

  test('a warm-up asks on purpose: a 404 remembered a moment ago does not stop it', async () => {
    const { cache } = fakeCache({});
    const { downloads, joined } = fakeDownloads();
    const notFound = new NotFoundMemory(30_000, manualClock());
    notFound.remember('ns/8');
    const service = new RecordingService({ cache, downloads, notFound });
    expect(await service.warm(owner, '8')).toEqual({ status: 'fetched', size: 10 });
    expect(joined).toEqual(['ns/8']);
    expect(notFound.has('ns/8')).toBe(false);
  });

  test('a warm-up whose download a purge overtook (here or in another process) fails: nothing was stored', async () => {
    const { cache } = fakeCache({});
    const { downloads } = fakeDownloads([], undefined, true);
    const service = new RecordingService({ cache, downloads, notFound: new NotFoundMemory(30_000, manualClock()) });
    await expect(service.warm(owner, '8')).rejects.toThrow(new StaleCopyError('purged while it downloaded, so not stored'));
  });

  test('joining a download that is complete but still being stored brings its sha256, for the ETag', async () => {
    const { cache } = fakeCache({});
    const { downloads } = fakeDownloads(['ns/9'], 'a'.repeat(64));
    const service = new RecordingService({ cache, downloads, notFound: new NotFoundMemory(30_000, manualClock()) });
    const fetched = await service.fetch(owner, '9');
    expect(fetched.sha256).toBe('a'.repeat(64));
  });

  test('joining a download still under way brings no sha256: the answer carries no ETag yet', async () => {
    const { cache } = fakeCache({});
    const { downloads } = fakeDownloads(['ns/9']);
    const service = new RecordingService({ cache, downloads, notFound: new NotFoundMemory(30_000, manualClock()) });
    expect((await service.fetch(owner, '9')).sha256).toBeUndefined();
  });
});
