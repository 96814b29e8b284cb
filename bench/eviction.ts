/**
 * `npm run bench:eviction`: does disk eviction keep up with thousands of
 * entries? Stores N small recordings through the real cache (disk files, sqlite
 * index) with a disk budget that holds only a fraction of them, so that every
 * store past the budget evicts, and prints the cost per store as the cache grows.
 *
 *   EVICTION_STORES=5000    recordings stored
 *   EVICTION_KEEP=1000      how many fit in max_disk_bytes
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { systemClock } from '../src/clock.js';
import { DiskHealth } from '../src/cache/disk-health.js';
import { createDiskStore } from '../src/cache/disk-store.js';
import { RecordingCache } from '../src/cache/recording-cache.js';
import { createSqliteIndex } from '../src/cache/sqlite-index.js';
import { silentLogger } from '../src/logger.js';
import { markdownTable } from './table.js';

const STORES = Number(process.env.EVICTION_STORES ?? 5_000);
const KEEP = Number(process.env.EVICTION_KEEP ?? 1_000);
const SIZE = 4_096;
const BATCH = Math.max(1, Math.floor(STORES / 5));

const dir = await mkdtemp(path.join(tmpdir(), 'rg-bench-eviction-'));
const disk = createDiskStore(dir);
await disk.init();
const index = createSqliteIndex(dir);
const logger = silentLogger();
let evicted = 0;
const cache = new RecordingCache({
  disk,
  index,
  diskHealth: new DiskHealth(logger, systemClock),
  maxMemoryBytes: 1024 * 1024,
  maxDiskBytes: KEEP * SIZE,
  logger,
  onEvict: (count) => (evicted += count),
});
await cache.load();

const rows: string[][] = [];
let batchStart = performance.now();
for (let i = 1; i <= STORES; i++) {
  const body = Buffer.concat([Buffer.from('ID3'), randomBytes(SIZE - 3)]);
  const temp = await disk.createTemp();
  await temp.write(body, 0);
  await temp.sync();
  await cache.store(
    {
      namespace: 'bench',
      callId: String(i),
      size: SIZE,
      sha256: createHash('sha256').update(body).digest('hex'),
      contentType: 'audio/mpeg',
      fetchedAt: Date.now(),
    },
    temp,
    undefined,
  );
  await temp.close();
  // Some hits keep a few old entries recent, so eviction must skip over them.
  if (i % 10 === 0) cache.lookup(`bench/${Math.max(1, i - KEEP + 5)}`);
  if (i % BATCH === 0) {
    const elapsed = performance.now() - batchStart;
    const stats = cache.stats();
    rows.push([
      `${i - BATCH + 1}-${i}`,
      (elapsed / BATCH).toFixed(2),
      String(stats.entries),
      (stats.diskBytes / 1024).toFixed(0),
      String(evicted),
    ]);
    batchStart = performance.now();
  }
}
await index.close();
await rm(dir, { recursive: true, force: true });

console.log(`# disk eviction at ${STORES} stores, budget ${KEEP} recordings of ${SIZE} B\n`);
console.log(
  markdownTable(['stores', 'ms per store (write + fsync + rename + index + eviction)', 'entries', 'disk KiB', 'evicted so far'], rows),
);
console.log(
  '\nEach store is a temp-file write and fsync, a rename with a directory fsync, an index write and, past the budget, one eviction (unlink + index delete).' +
    ' A flat ms-per-store column means eviction does not grow with the number of entries: it walks the in-memory recency order, never the directory.',
);
