/**
 * Run by durability-startup.ts in a fresh process (with --expose-gc): times
 * `createGateway()` on an existing cache directory, which reconciles the
 * index with the files and loads every entry, then prints one JSON line.
 *
 *   node --expose-gc --import tsx bench/durability-startup-child.ts <cache dir> <upstream base url>
 */
import { performance } from 'node:perf_hooks';

interface LogLine {
  level: number;
  msg?: string;
  [field: string]: unknown;
}

const [cacheDir, upstreamBaseUrl] = process.argv.slice(2);
if (!cacheDir || !upstreamBaseUrl) throw new Error('usage: durability-startup-child.ts <cache dir> <upstream base url>');
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

const importStarted = performance.now();
const { createGateway } = await import('../src/gateway.js');
const { createLogger } = await import('../src/logger.js');
const { testConfig } = await import('../dev/gateway-harness.js');
const importMs = performance.now() - importStarted;

const lines: LogLine[] = [];
const logger = createLogger({
  level: 'warn',
  destination: {
    write(text: string) {
      for (const line of text.split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line) as LogLine);
    },
  },
});

gc();
const { rss: rssBefore, heapUsed: heapUsedBefore } = process.memoryUsage();
const started = performance.now();
const gateway = await createGateway({ config: testConfig({ dir: cacheDir, upstreamBaseUrl }), logger });
const loadMs = performance.now() - started;
const rssAfter = process.memoryUsage.rss();
gc();
const { heapUsed, heapTotal, rss: rssAfterGc } = process.memoryUsage();
const stats = gateway.cache.stats();
await gateway.close();

const reconciled = lines.find((line) => line.msg === 'cache reconciled at start-up');
process.stdout.write(
  `${JSON.stringify({
    importMs,
    loadMs,
    rssBefore,
    rssAfter,
    rssAfterGc,
    heapUsedBefore,
    heapUsed,
    heapTotal,
    entries: stats.entries,
    diskBytes: stats.diskBytes,
    kept: Number(reconciled?.kept ?? stats.entries),
    droppedEntries: Number(reconciled?.droppedEntries ?? 0),
    removedFiles: Number(reconciled?.removedFiles ?? 0),
    warnings: lines.filter((line) => line !== reconciled).map((line) => line.msg),
  })}\n`,
);
