/**
 * The eight bench scenarios. Each one sets up what it needs (a gateway with a
 * small memory tier, a restart on the same directory, a dripping upstream),
 * measures, and returns markdown; `run.ts` prints it and tracks memory.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { signRecordingUrl } from '@recording-gateway/client';
import { ACME_SIGNING_SECRET } from '../dev/gateway-harness.js';
import {
  AUTH,
  COLD_BYTES,
  COLD_ID,
  FIRST_HIT_BASE_ID,
  LARGE_BYTES,
  LARGE_CONCURRENCY,
  LARGE_ID,
  MEDIUM_ID,
  SMALL_ID,
  SMALL_MEMORY_TIER_BYTES,
  job,
  loadTable,
  measure,
  memoryHit,
  prime,
  recordingPath,
  render,
  sizeOf,
  withGateway,
  type Scenario,
} from './context.js';
import { fmt, markdownTable, type Cell } from './table.js';

export const scenarios: Scenario[] = [
  {
    id: 1,
    title: 'Memory hit, small recording (23 KB)',
    run: (ctx) =>
      loadTable(
        ctx,
        [{ label: `GET ${sizeOf(ctx, SMALL_ID)} B`, job: job(ctx, SMALL_ID, memoryHit(ctx, SMALL_ID)) }],
        'Every answer checked: 200, full Content-Length and body, `Cache-Status: …detail=memory`.',
      ),
  },
  {
    id: 2,
    title: 'Memory hit, 124 KB recording',
    run: (ctx) =>
      loadTable(
        ctx,
        [{ label: `GET ${sizeOf(ctx, MEDIUM_ID)} B`, job: job(ctx, MEDIUM_ID, memoryHit(ctx, MEDIUM_ID)) }],
        'Same checks as scenario 1.',
      ),
  },
  {
    id: 3,
    title: 'Disk hit streamed from file (2 MiB, memory tier 1 MiB)',
    run: (ctx) =>
      withGateway(ctx, SMALL_MEMORY_TIER_BYTES, async (start) => {
        const gateway = await start();
        await prime(gateway, LARGE_ID);
        const stats = gateway.gateway.cache.stats();
        const table = await loadTable(
          { ...ctx, gateway },
          [
            {
              label: `GET ${LARGE_BYTES} B`,
              job: job(
                { ...ctx, gateway },
                LARGE_ID,
                { status: 200, contentLength: LARGE_BYTES, cacheStatus: 'detail=disk' },
                {
                  concurrency: LARGE_CONCURRENCY,
                },
              ),
            },
          ],
          `Memory tier ${SMALL_MEMORY_TIER_BYTES} B, so entries over ${gateway.gateway.cache.memoryEntryMaxBytes} B stream from the file ` +
            `(64 KiB reads through a pull ReadableStream). Memory entries after priming: ${stats.memoryEntries}; every answer checked \`detail=disk\`.`,
        );
        return table;
      }),
  },
  {
    id: 4,
    title: 'First hit after restart (small recordings read from disk, then promoted)',
    async run(ctx) {
      const n = ctx.firstHits;
      const size = sizeOf(ctx, SMALL_ID);
      const ids = Array.from({ length: 2 * n }, (_, i) => FIRST_HIT_BASE_ID + i);
      for (const id of ids) ctx.upstream.setRecording(id, ctx.bytes.get(SMALL_ID)!);
      return withGateway(ctx, undefined, async (start) => {
        const first = await start();
        const fill = { ...ctx, gateway: first };
        const once = { requests: n, durationMs: undefined, warmupMs: 0 };
        const filled = await measure(
          fill,
          `cold miss, fast upstream, ${2 * n} distinct, 8 at a time`,
          job(
            fill,
            SMALL_ID,
            { status: 200, contentLength: size, cacheStatus: 'fwd=uri-miss' },
            {
              ...once,
              paths: ids.map(recordingPath),
              requests: ids.length,
              concurrency: 8,
            },
          ),
        );
        const storeStarted = performance.now();
        await first.gateway.downloads.idle();
        const storeMs = performance.now() - storeStarted;
        await first.close();

        const restartStarted = performance.now();
        const gateway = await start();
        const restartMs = performance.now() - restartStarted;
        const again = { ...ctx, gateway };
        const firstHalf = ids.slice(0, n).map(recordingPath);
        const secondHalf = ids.slice(n).map(recordingPath);
        const disk = { status: 200, contentLength: size, cacheStatus: 'detail=disk' };
        const rows = [
          filled,
          await measure(
            again,
            `first hit, ${n} distinct, sequential`,
            job(again, SMALL_ID, disk, { ...once, paths: firstHalf, concurrency: 1 }),
          ),
          await measure(
            again,
            `first hit, ${n} distinct, 8 at a time`,
            job(again, SMALL_ID, disk, { ...once, paths: secondHalf, concurrency: 8 }),
          ),
          await measure(
            again,
            'second hit (memory), sequential',
            job(again, SMALL_ID, memoryHit(ctx, SMALL_ID), { ...once, paths: firstHalf, concurrency: 1 }),
          ),
        ];
        return render(
          rows,
          `The first row fills the cache: ${2 * n} recordings of ${size} B through the gateway from an upstream that answers at once ` +
            `(each download is written, fsynced, renamed and indexed; the client has its bytes before that finishes, and the last stores ` +
            `took another ${fmt(storeMs, 0)} ms). The gateway was then closed and started again on the same directory: start-up with ` +
            `${2 * n} index entries took ${fmt(restartMs, 1)} ms. Each first hit opens and reads the file (from the OS page cache: the ` +
            `files were just written) and promotes it into memory; \`Cache-Status\` checked on every answer.`,
        );
      });
    },
  },
  {
    id: 5,
    title: 'Range requests on a memory hit (124 KB recording)',
    run(ctx) {
      const size = sizeOf(ctx, MEDIUM_ID);
      return loadTable(
        ctx,
        [
          {
            label: 'bytes=0-1 (Safari probe)',
            job: job(ctx, MEDIUM_ID, { status: 206, contentLength: 2, cacheStatus: 'detail=memory' }, { range: { header: 'bytes=0-1' } }),
          },
          {
            label: 'random 64 KiB window',
            job: job(
              ctx,
              MEDIUM_ID,
              { status: 206, contentLength: 65_536, cacheStatus: 'detail=memory' },
              {
                range: { randomLength: 65_536, size },
              },
            ),
          },
        ],
        'Every answer checked: 206, Content-Length, and (random window) the exact `Content-Range`.',
      );
    },
  },
  {
    id: 6,
    title: 'Cold misses collapsed onto one slow upstream download',
    async run(ctx) {
      const callers = 50;
      const chunkBytes = 32 * 1024;
      const intervalMs = 40;
      const dripMs = (Math.ceil(COLD_BYTES / chunkBytes) - 1) * intervalMs;
      const joinAfterMs = Math.round(dripMs / 2);
      const expected = ctx.bytes.get(COLD_ID)!;
      ctx.upstream.setBehaviour(COLD_ID, { kind: 'slow-body', chunkBytes, intervalMs });
      const result = await ctx.load.coldMiss({
        baseUrl: ctx.gateway.baseUrl,
        path: recordingPath(COLD_ID),
        headers: AUTH,
        expected: { sha256: createHash('sha256').update(expected).digest('hex'), size: expected.length },
        callers,
        joinAfterMs,
      });
      await ctx.gateway.gateway.downloads.idle();
      const upstreamRequests = ctx.upstream.recordingRequests(COLD_ID).length;
      const { first, joiners } = result;
      const rows: Cell[][] = [
        ['first caller', 1, fmt(first.headMs, 1), fmt(first.ttfbMs, 1), fmt(first.totalMs, 0), '-', first.cacheStatus],
        [
          `joiners, sent +${joinAfterMs} ms`,
          callers - 1,
          `${fmt(joiners.headMs.p50, 1)} / ${fmt(joiners.headMs.max, 1)}`,
          `${fmt(joiners.ttfbMs.p50, 1)} / ${fmt(joiners.ttfbMs.max, 1)}`,
          fmt(joiners.totalMs.p50, 0),
          fmt(joiners.totalMs.max, 0),
          joiners.cacheStatuses.join(', '),
        ],
      ];
      const verdict = upstreamRequests === 1 ? 'OK' : 'FAIL: expected 1';
      return [
        markdownTable(
          ['caller', 'n', 'head ms (p50 / max)', 'TTFB ms (p50 / max)', 'total ms (p50)', 'total ms (max)', 'Cache-Status'],
          rows,
        ),
        '',
        `- upstream requests for the recording: **${upstreamRequests}** (${verdict})`,
        `- wall time, first request to last byte of all ${callers}: ${fmt(result.wallMs, 0)} ms ` +
          `(upstream drips ${COLD_BYTES} B as ${chunkBytes} B every ${intervalMs} ms ≈ ${dripMs} ms)`,
        `- bodies identical to the upstream's (sha256) for all callers: ${result.errors.length === 0 ? 'yes' : `no: ${result.errors.join('; ')}`}`,
      ].join('\n');
    },
  },
  {
    id: 7,
    title: 'Signed-URL auth vs API key (memory hit, 23 KB)',
    async run(ctx) {
      const expiresAt = Math.floor(Date.now() / 1000) + 3600;
      const signed = signRecordingUrl({ tenant: 'acme', callId: SMALL_ID, expiresAt, kid: 'k1', secret: ACME_SIGNING_SECRET });
      const expect = memoryHit(ctx, SMALL_ID);
      return loadTable(
        ctx,
        [
          { label: 'Authorization: Bearer (sha256 lookup)', job: job(ctx, SMALL_ID, expect) },
          { label: 'signed URL (HMAC-SHA256 verify)', job: job(ctx, SMALL_ID, expect, { paths: [signed], headers: {} }) },
        ],
        'Same recording, same checks; the signed URL carries `tenant`, `exp`, `kid`, `sig` and no Authorization header.',
      );
    },
  },
  {
    id: 8,
    title: 'HEAD on a memory hit (23 KB)',
    run: (ctx) =>
      loadTable(
        ctx,
        [{ label: 'HEAD', job: job(ctx, SMALL_ID, memoryHit(ctx, SMALL_ID), { method: 'HEAD' }) }],
        'Checked: 200, `Content-Length` of the whole recording, no body.',
      ),
  },
];
