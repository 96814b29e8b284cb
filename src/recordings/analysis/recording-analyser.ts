import type { DiskStore } from '../../cache/disk-store.js';
import type { CachedRecording, RecordingCache } from '../../cache/recording-cache.js';
import type { RecordingFacts, RecordingMeta } from '../../cache/recording-meta.js';
import type { Logger } from '../../logger.js';
import type { RecordingService } from '../recording-service.js';
import { AnalysisQueue, QueueClosedError, type QueuedTask } from './analysis-queue.js';
import { analyseMp3, UndecodableRecordingError, type Mp3Analysis, type Mp3Source } from './mp3-analysis.js';
import { decodePeaks, encodePeaks, type WaveformPeaks } from './waveform-peaks.js';

/** A stored recording's bytes, open for one analysis. */
export interface OpenedRecording extends Mp3Source {
  /** Frees the file or pin behind it; called once the analysis is done. */
  release(): void;
}

export interface RecordingAnalyserOptions {
  cache: Pick<RecordingCache, 'recordFacts' | 'holds'>;
  disk: Pick<DiskStore, 'writeSidecar' | 'readSidecar'>;
  /** Opens a stored recording's bytes; undefined when that entry is no longer stored. */
  open(entry: CachedRecording): Promise<OpenedRecording | undefined>;
  logger: Logger;
  /** Analyses at a time; default 1 (each is CPU work on the event loop's thread, in slices). */
  concurrency?: number;
  /** Background analyses waiting at most; more are left for a request to start. Default 1000. */
  maxWaiting?: number;
}

/** The stored recording went away (purged, evicted, replaced) before it could be analysed. */
export class RecordingGoneError extends Error {
  override readonly name = 'RecordingGoneError';
}

const DEFAULT_CONCURRENCY = 1;
const DEFAULT_MAX_WAITING = 1000;

/** Facts as an index entry holds them, checked: an entry written by another version may hold anything. */
export function knownFacts(meta: RecordingMeta): RecordingFacts | undefined {
  const facts = meta.facts as Partial<RecordingFacts> | undefined;
  if (typeof facts !== 'object' || facts === null) return undefined;
  const positive = (value: unknown) => typeof value === 'number' && Number.isFinite(value) && value > 0;
  return positive(facts.durationSeconds) && positive(facts.bitrate) && positive(facts.sampleRate) && positive(facts.channels)
    ? (facts as RecordingFacts)
    : undefined;
}

/**
 * Opens stored recordings for analysis. A small one is read whole through
 * the recording service (checked against its sha256, as any hit is). A large
 * one is opened afresh for each read and closed again, so an analysis never
 * holds a file or an eviction pin for the seconds it takes: if the recording
 * is evicted or purged meanwhile, the next read finds it gone.
 */
export function storedRecordingOpener(
  cache: Pick<RecordingCache, 'memoryEntryMaxBytes' | 'pin' | 'openFile'>,
  recordings: Pick<RecordingService, 'find'>,
) {
  return async function openStored(entry: CachedRecording): Promise<OpenedRecording | undefined> {
    if (entry.meta.size > cache.memoryEntryMaxBytes) return largeFileSource(cache, entry);
    const found = await Promise.resolve(recordings.find(entry.meta.namespace, entry.meta.callId)).catch(() => undefined);
    if (found?.entry !== entry || !found.body) {
      found?.reader?.release();
      return undefined;
    }
    return bodySource(found.body);
  };
}

function largeFileSource(cache: Pick<RecordingCache, 'pin' | 'openFile'>, entry: CachedRecording): OpenedRecording {
  return {
    size: entry.meta.size,
    async readAt(offset, maxBytes) {
      const unpin = cache.pin(entry.key);
      try {
        const file = await cache.openFile(entry);
        if (!file) throw new RecordingGoneError(`${entry.key} is no longer stored`);
        try {
          const buffer = Buffer.allocUnsafe(maxBytes);
          const bytesRead = await file.read(buffer, offset);
          return bytesRead === 0 ? null : buffer.subarray(0, bytesRead);
        } finally {
          await file.close();
        }
      } finally {
        unpin();
      }
    },
    release() {},
  };
}

/** A recording held whole in memory, as an {@link OpenedRecording}. */
export function bodySource(body: Uint8Array): OpenedRecording {
  return {
    size: body.length,
    readAt: async (offset, maxBytes) => (offset >= body.length ? null : body.subarray(offset, offset + maxBytes)),
    release() {},
  };
}

/**
 * Analyses stored recordings, once each: after a recording is stored (in the
 * background, a few at a time), or when a request needs its facts or peaks
 * first (that request goes ahead of the background work, and concurrent ones
 * join the same analysis). The facts go into the recording's index entry, the
 * peaks into a sidecar file beside it.
 */
export class RecordingAnalyser {
  readonly #queue: AnalysisQueue;
  readonly #jobs = new Map<CachedRecording, QueuedTask<Mp3Analysis>>();
  /** Peaks that have no sidecar (a recording in memory only, or a sidecar the disk refused). */
  readonly #unsaved = new WeakMap<CachedRecording, WaveformPeaks>();
  /** Recordings that could not be decoded: not tried again while their entry lives. */
  readonly #undecodable = new WeakMap<RecordingMeta, UndecodableRecordingError>();

  constructor(private readonly options: RecordingAnalyserOptions) {
    this.#queue = new AnalysisQueue(options.concurrency ?? DEFAULT_CONCURRENCY, options.maxWaiting ?? DEFAULT_MAX_WAITING);
  }

  /** A recording was stored: analyse it in the background, unless its facts are known. */
  schedule(entry: CachedRecording): void {
    if (knownFacts(entry.meta)) return;
    this.#job(entry, false)?.result.catch(() => {});
  }

  /** The recording's facts, analysing it first when they are not known yet. */
  async facts(entry: CachedRecording): Promise<RecordingFacts> {
    return knownFacts(entry.meta) ?? (await this.analyse(entry)).facts;
  }

  /** The recording's fine peaks: from its sidecar, else analysing it (which writes the sidecar). */
  async peaks(entry: CachedRecording): Promise<WaveformPeaks> {
    const saved = this.#unsaved.get(entry) ?? (entry.onDisk ? await this.#readSidecar(entry) : undefined);
    return saved ?? (await this.analyse(entry)).peaks;
  }

  /**
   * Analyses a stored recording now, or joins its analysis under way.
   * @throws RecordingGoneError when it is no longer stored; UndecodableRecordingError.
   */
  analyse(entry: CachedRecording): Promise<Mp3Analysis> {
    const job = this.#job(entry, true)!;
    job.promote();
    return job.result;
  }

  /** A recording that could not be stored: analysed from its bytes, nothing kept. */
  async analyseUnstored(source: Mp3Source): Promise<Mp3Analysis> {
    return this.#queue.add(() => analyseMp3(source), true)!.result;
  }

  /** Resolves once no analysis is waiting or running (tests, the CLI). */
  async idle(): Promise<void> {
    while (this.#jobs.size > 0) await Promise.allSettled([...this.#jobs.values()].map((job) => job.result));
  }

  /** Drops the analyses waiting, and resolves once those running are done. */
  close(): Promise<void> {
    return this.#queue.close();
  }

  #job(entry: CachedRecording, urgent: boolean): QueuedTask<Mp3Analysis> | undefined {
    const existing = this.#jobs.get(entry);
    if (existing) return existing;
    const failed = this.#undecodable.get(entry.meta);
    if (failed) return { result: Promise.reject(failed), promote() {} };
    const job = this.#queue.add(() => this.#run(entry), urgent);
    if (!job) return undefined;
    this.#jobs.set(entry, job);
    void job.result.then(
      () => this.#jobs.delete(entry),
      (error: unknown) => {
        this.#jobs.delete(entry);
        if (error instanceof UndecodableRecordingError) {
          this.#undecodable.set(entry.meta, error);
          this.options.logger.info(
            { key: entry.key, reason: error.message },
            'a stored recording is not decodable audio: no facts or peaks',
          );
        } else if (!(error instanceof RecordingGoneError || error instanceof QueueClosedError)) {
          this.options.logger.warn({ err: error, key: entry.key }, 'analysing a recording failed');
        }
      },
    );
    return job;
  }

  async #run(entry: CachedRecording): Promise<Mp3Analysis> {
    const opened = await this.options.open(entry);
    if (!opened) throw new RecordingGoneError(`${entry.key} is no longer stored`);
    let analysis: Mp3Analysis;
    try {
      analysis = await analyseMp3(opened);
    } finally {
      opened.release();
    }
    await this.#keep(entry, analysis);
    return analysis;
  }

  /**
   * Keeps what the analysis found, unless the recording went meanwhile (a
   * purge racing the write leaves at most a sidecar that start-up removes).
   * A disk or index that refuses is logged, and the answer still given.
   */
  async #keep(entry: CachedRecording, { facts, peaks }: Mp3Analysis): Promise<void> {
    const { cache, disk, logger } = this.options;
    if (!cache.holds(entry)) return;
    let saved = false;
    if (entry.onDisk) {
      saved = await disk.writeSidecar(entry.meta.namespace, entry.meta.callId, 'peaks', encodePeaks(peaks)).then(
        () => true,
        (error: unknown) => {
          logger.warn({ err: error, key: entry.key }, 'cannot store the waveform peaks beside the recording');
          return false;
        },
      );
    }
    if (!saved) this.#unsaved.set(entry, peaks);
    if (knownFacts(entry.meta)) return;
    await cache.recordFacts(entry, facts).catch((error: unknown) => {
      logger.warn({ err: error, key: entry.key }, "cannot store the recording's facts in the index");
    });
  }

  async #readSidecar(entry: CachedRecording): Promise<WaveformPeaks | undefined> {
    const bytes = await this.options.disk.readSidecar(entry.meta.namespace, entry.meta.callId, 'peaks').catch((error: unknown) => {
      this.options.logger.warn({ err: error, key: entry.key }, 'cannot read the waveform peaks; analysing the recording again');
      return undefined;
    });
    return bytes && decodePeaks(bytes);
  }
}
