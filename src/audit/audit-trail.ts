import { unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { silentLogger, type Logger } from '../logger.js';
import { auditLineStart, type AuditEvent } from './audit-event.js';
import { DAY_MS, systemClock, type Clock } from '../clock.js';
import {
  auditFileName,
  dayStart,
  lineHash,
  listAuditFiles,
  readChainTail,
  saveChainTipBeforeRemoving,
  utcDay,
  type AuditFile,
} from './audit-files.js';
import { errorMessage } from '../errors.js';
import { PRIVATE_FILE_MODE, makePrivateDir } from '../private-files.js';
import { openRegularFile } from './regular-file.js';

/** How often a batch of lines is written: the longest a line waits in memory. */
const DEFAULT_AUDIT_FLUSH_INTERVAL_MS = 50;
/** A batch this long is written at once, without waiting for the interval. */
const AUDIT_BATCH_LINES = 1_000;
/** Lines kept in memory while the audit disk fails (about 40 MB); past it lines are dropped and counted. */
const DEFAULT_AUDIT_MAX_PENDING_LINES = 100_000;
const DEFAULT_RETRY_INTERVAL_MS = 1_000;
const DEFAULT_MAX_RETRY_INTERVAL_MS = 15_000;
const LOG_INTERVAL_MS = 60_000;
const RETENTION_SWEEP_INTERVAL_MS = 60 * 60_000;
/** Lines hashed and written in one go at most: a backlog is written in chunks of a few ms, never in one long block of the event loop. */
const MAX_LINES_PER_WRITE = 2_000;

/** Where audit events go; what the request log sees of the trail. */
export interface AuditRecorder {
  record(event: AuditEvent): void;
}

export interface AuditTrailOptions {
  /** Absolute path of the audit directory; created when missing. */
  dir: string;
  /** How errors name the setting `dir` came from; default `audit.dir`. */
  dirSetting?: string;
  /** A day's file is removed once its last possible line is older than this. */
  retentionDays: number;
  /** Cluster mode: the replica's node id, in its file names, so replicas sharing a directory keep chains of their own. */
  nodeId?: string;
  clock?: Clock;
  logger?: Logger;
  flushIntervalMs?: number;
  maxPendingLines?: number;
  /** The first wait before a failed write is tried again; it doubles up to `maxRetryIntervalMs`. Default 1 s. */
  retryIntervalMs?: number;
  /** Default 15 s. */
  maxRetryIntervalMs?: number;
}

/** What /metrics shows of the trail. */
export interface AuditTrailStatus {
  pendingLines: number;
  writeErrors: number;
  droppedLines: number;
}

const ERROR_CODE = /^E[A-Z0-9]{1,15}$/;

/** What /readyz, which anyone may call, says: the error code at most, never the message (it names paths). */
function describeWriteFailure(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && ERROR_CODE.test(code) ? `cannot be written (${code})` : 'cannot be written';
}

interface PendingLine {
  /** The UTC day of the file it goes to. */
  day: string;
  /** The event, serialised when its batch is written; or a note's JSON line without `,"prev":"…"}`. */
  line: AuditEvent | string;
}

/**
 * The audit trail (README, Compliance): one JSON line per audited request,
 * each carrying the sha256 of the line before it. `record` only serialises
 * the event to an in-memory batch (well under a µs: no I/O, no serialising,
 * no hashing); the batch is serialised, hashed and written in order with one append every
 * {@link DEFAULT_AUDIT_FLUSH_INTERVAL_MS} ms, or at once when large. `close`
 * writes everything left; a crash loses at most the batch not yet written.
 *
 * A failing disk (ENOSPC, EACCES) keeps the lines in memory, up to a bound,
 * and retries with backoff; meanwhile `problem` is set (for /readyz). Lines
 * past the bound are dropped, counted, and noted in the trail itself by a
 * `dropped` line once writing works again.
 */
export class AuditTrail implements AuditRecorder {
  readonly #dir: string;
  readonly #chain: string;
  readonly #retentionMs: number;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #flushIntervalMs: number;
  readonly #maxPendingLines: number;
  readonly #retryIntervalMs: number;
  readonly #maxRetryIntervalMs: number;

  #pending: PendingLine[] = [];
  /** sha256 of the last line written: the next line's `prev`. */
  #lastHash: string;
  /** The day lines currently go to; never moves back, so the chain stays in file order when the clock does. */
  #day = '';
  #dayEnd = Number.NEGATIVE_INFINITY;
  /** The day of the last retention sweep: the first line of a new day sweeps again. */
  #sweptDay: string;
  /** The file written last, for the fsync on close. */
  #lastFile: string | undefined;
  /** A failed write whose bytes could not be cut off again: cut them before the next append to that file. */
  #torn: { file: string; size: number } | undefined;

  #writing: Promise<void> | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  /** The flush timer is the immediate one of a full batch. */
  #flushSoon = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #retryDelayMs: number;
  readonly #sweepTimer: NodeJS.Timeout;
  #closed = false;

  #problem: string | undefined;
  #writeErrors = 0;
  #droppedLines = 0;
  #droppedSinceNote = 0;
  #lastLoggedAt = Number.NEGATIVE_INFINITY;

  private constructor(options: AuditTrailOptions, lastHash: string, newestDay: string | undefined) {
    this.#dir = options.dir;
    this.#chain = options.nodeId ?? '';
    this.#retentionMs = options.retentionDays * DAY_MS;
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger ?? silentLogger();
    this.#flushIntervalMs = options.flushIntervalMs ?? DEFAULT_AUDIT_FLUSH_INTERVAL_MS;
    this.#maxPendingLines = options.maxPendingLines ?? DEFAULT_AUDIT_MAX_PENDING_LINES;
    this.#retryIntervalMs = options.retryIntervalMs ?? DEFAULT_RETRY_INTERVAL_MS;
    this.#maxRetryIntervalMs = options.maxRetryIntervalMs ?? DEFAULT_MAX_RETRY_INTERVAL_MS;
    this.#retryDelayMs = this.#retryIntervalMs;
    this.#sweptDay = utcDay(this.#clock.now());
    this.#lastHash = lastHash;
    if (newestDay !== undefined) this.#enterDay(newestDay);
    this.#sweepTimer = setInterval(() => void this.#sweep(), RETENTION_SWEEP_INTERVAL_MS);
    this.#sweepTimer.unref();
  }

  /**
   * Opens the trail in `dir`: continues the chain from the last line on disk
   * (cutting off a line a crash left half-written) and removes the files
   * past retention.
   */
  static async open(options: AuditTrailOptions): Promise<AuditTrail> {
    const logger = options.logger ?? silentLogger();
    let tail: Awaited<ReturnType<typeof readChainTail>>;
    try {
      await makePrivateDir(options.dir);
      tail = await readChainTail(options.dir, options.nodeId ?? '');
    } catch (error) {
      const setting = options.dirSetting ?? 'audit.dir';
      const code = (error as NodeJS.ErrnoException).code;
      // mkdir says EEXIST for a file where the directory should be, ENOTDIR for one where a folder on its path should be.
      const why =
        code === 'EEXIST' || code === 'ENOTDIR'
          ? `${options.dir} is not a directory`
          : `${options.dir} cannot be used: ${errorMessage(error)}`;
      throw new Error(`${setting}: ${why}`, { cause: error });
    }
    if (tail.tornBytesRemoved > 0) {
      logger.warn(
        { file: tail.file, bytes: tail.tornBytesRemoved },
        'audit trail: cut off a line left half-written by a crash; the chain continues from the line before it',
      );
    }
    const trail = new AuditTrail(options, tail.hash, tail.day);
    await trail.#sweep();
    return trail;
  }

  /** While writes fail: a short reason anyone may read (an error code, never a path). */
  get problem(): string | undefined {
    return this.#problem;
  }

  status(): AuditTrailStatus {
    return { pendingLines: this.#pending.length, writeErrors: this.#writeErrors, droppedLines: this.#droppedLines };
  }

  /** Queues one event (serialised and hashed later, when its batch is written); never does I/O. */
  record(event: AuditEvent): void {
    if (this.#closed || this.#pending.length >= this.#maxPendingLines) {
      this.#droppedLines++;
      this.#droppedSinceNote++;
      return;
    }
    if (this.#droppedSinceNote > 0) this.#noteDropped(event.time);
    this.#pending.push({ day: this.#dayOf(event.time), line: event });
    this.#schedule();
  }

  /** Writes every line queued so far; rejects while the disk fails (the lines stay queued). */
  async flush(): Promise<void> {
    for (;;) {
      if (this.#writing) {
        await this.#writing;
        continue;
      }
      if (this.#pending.length === 0) return;
      this.#startWriting();
      await this.#writing;
      if (this.#problem !== undefined) throw new Error(`audit trail ${this.#problem}`);
    }
  }

  /**
   * Writes what is left and stops. Lines that cannot be written then are
   * logged as lost and counted as dropped.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#flushTimer);
    clearTimeout(this.#retryTimer);
    clearInterval(this.#sweepTimer);
    if (this.#droppedSinceNote > 0) this.#noteDropped(this.#clock.now());
    while (this.#writing) await this.#writing;
    try {
      await this.#drain();
    } catch (error) {
      const lost = this.#pending.length;
      this.#droppedLines += lost;
      this.#pending = [];
      this.#logger.error({ err: error, lines: lost }, 'audit trail: lines could not be written before shutdown and are lost');
    }
    if (this.#lastFile !== undefined) await this.#sync(this.#lastFile);
  }

  #noteDropped(time: number): void {
    const note = `{"time":${JSON.stringify(new Date(time).toISOString())},"event":"dropped","dropped_lines":${this.#droppedSinceNote}`;
    this.#pending.push({ day: this.#dayOf(time), line: note });
    this.#droppedSinceNote = 0;
  }

  #dayOf(time: number): string {
    if (time >= this.#dayEnd) this.#enterDay(utcDay(time));
    return this.#day;
  }

  #enterDay(day: string): void {
    this.#day = day;
    this.#dayEnd = dayStart(day) + DAY_MS;
  }

  #schedule(): void {
    if (this.#writing || this.#problem !== undefined) return;
    const full = this.#pending.length >= AUDIT_BATCH_LINES;
    if (this.#flushTimer !== undefined && (!full || this.#flushSoon)) return;
    clearTimeout(this.#flushTimer);
    // A full batch is written at once, yet never on the caller's turn: it hashes its lines first.
    this.#flushSoon = full;
    this.#flushTimer = setTimeout(
      () => {
        this.#flushTimer = undefined;
        this.#startWriting();
      },
      full ? 0 : this.#flushIntervalMs,
    );
    this.#flushTimer.unref();
  }

  /** One writer at a time, so lines reach the disk in the order they were recorded. */
  #startWriting(): void {
    if (this.#writing) return;
    this.#writing = this.#drain()
      .then(
        () => this.#recovered(),
        (error: unknown) => this.#failed(error),
      )
      .finally(() => {
        this.#writing = undefined;
        // Lines recorded during the write wait for their own interval.
        if (this.#pending.length > 0 && this.#problem === undefined && !this.#closed) this.#schedule();
      });
  }

  /** Hashes and appends queued lines, one file (day) per write, until none is left. */
  async #drain(): Promise<void> {
    while (this.#pending.length > 0) {
      const pending = this.#pending;
      const { day } = pending[0]!;
      let hash = this.#lastHash;
      const parts: string[] = [];
      let count = 0;
      while (count < pending.length && count < MAX_LINES_PER_WRITE && pending[count]!.day === day) {
        const next = pending[count]!.line;
        const line = `${typeof next === 'string' ? next : auditLineStart(next)},"prev":"${hash}"}`;
        hash = lineHash(line);
        parts.push(line, '\n');
        count++;
      }
      const file = path.join(this.#dir, auditFileName(day, this.#chain));
      const movedOn = this.#lastFile !== undefined && this.#lastFile !== file;
      await this.#append(file, Buffer.from(parts.join('')));
      this.#lastHash = hash;
      pending.splice(0, count);
      // Yesterday's file is complete: hurry it to the disk.
      if (movedOn) void this.#sync(this.#lastFile!);
      this.#lastFile = file;
      if (day > this.#sweptDay) {
        this.#sweptDay = day;
        void this.#sweep();
      }
    }
  }

  /**
   * Appends `data` to `file` in one write. A write that fails part-way (a
   * full disk) is cut off again, so a retry never leaves half a line behind.
   */
  async #append(file: string, data: Buffer): Promise<void> {
    const handle = await this.#openForAppend(file);
    try {
      const { size } = await handle.stat();
      if (this.#torn?.file === file && size > this.#torn.size) await handle.truncate(this.#torn.size);
      const before = Math.min(size, this.#torn?.file === file ? this.#torn.size : size);
      this.#torn = undefined;
      try {
        await handle.writeFile(data);
      } catch (error) {
        await handle.truncate(before).catch(() => {
          this.#torn = { file, size: before };
        });
        throw error;
      }
    } finally {
      await handle.close().catch(() => {});
    }
  }

  async #openForAppend(file: string): Promise<FileHandle> {
    try {
      return await openRegularFile(file, 'append', PRIVATE_FILE_MODE);
    } catch (error) {
      // The directory was removed while the gateway runs: make it again.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      await makePrivateDir(this.#dir);
      return await openRegularFile(file, 'append', PRIVATE_FILE_MODE);
    }
  }

  /** Best effort: the lines are written; this only hurries them from the page cache to the disk. */
  async #sync(file: string): Promise<void> {
    try {
      const handle = await openRegularFile(file, 'read');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch {
      // Nothing to do: a later write or the kernel's own flush gets it there.
    }
  }

  #failed(error: unknown): void {
    this.#writeErrors++;
    this.#problem = describeWriteFailure(error);
    const now = this.#clock.now();
    if (now - this.#lastLoggedAt >= LOG_INTERVAL_MS) {
      this.#lastLoggedAt = now;
      this.#logger.warn(
        { err: error, pendingLines: this.#pending.length, droppedLines: this.#droppedLines },
        'audit trail cannot be written; lines are kept in memory and written once it works again',
      );
    }
    if (this.#closed) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#startWriting();
    }, this.#retryDelayMs);
    this.#retryTimer.unref();
    this.#retryDelayMs = Math.min(this.#retryDelayMs * 2, this.#maxRetryIntervalMs);
  }

  #recovered(): void {
    this.#retryDelayMs = this.#retryIntervalMs;
    if (this.#problem === undefined) return;
    this.#problem = undefined;
    this.#lastLoggedAt = Number.NEGATIVE_INFINITY;
    this.#logger.info({ droppedLines: this.#droppedLines }, 'audit trail is written again');
  }

  /**
   * Removes the files whose newest possible line is older than the retention,
   * in every chain, the newest file of one too. The next line's `prev` is in
   * memory; a chain whose last line is in a file removed is saved first, in
   * its tip file, so that the chain goes on from it after a restart as well.
   */
  async #sweep(): Promise<void> {
    const cutoff = this.#clock.now() - this.#retentionMs;
    try {
      const expired = (await listAuditFiles(this.#dir)).filter((file) => dayStart(file.day) + DAY_MS <= cutoff);
      const byChain = new Map<string, AuditFile[]>();
      for (const file of expired) byChain.set(file.chain, [...(byChain.get(file.chain) ?? []), file]);
      // Nothing is removed unless the tips are kept.
      for (const [chain, files] of byChain) await saveChainTipBeforeRemoving(this.#dir, chain, files);
      for (const file of expired) {
        await unlink(path.join(this.#dir, file.name)).catch((error: NodeJS.ErrnoException) => {
          // Another replica sharing the directory removed it first.
          if (error.code !== 'ENOENT') throw error;
        });
      }
    } catch (error) {
      this.#logger.warn({ err: error }, 'audit trail: could not remove files past audit.retention_days');
    }
  }
}
