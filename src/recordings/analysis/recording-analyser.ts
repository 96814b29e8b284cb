import { setImmediate as nextTurn } from 'node:timers/promises';
import type { DiskStore } from '../../cache/disk-store.js';
import type { CachedRecording, RecordingCache } from '../../cache/recording-cache.js';
import type { RecordingFacts, RecordingMeta } from '../../cache/recording-meta.js';
import type { Logger } from '../../logger.js';
import { AnalysisQueue, QueueClosedError, type QueuedTask } from './analysis-queue.js';
import { analyseMp3, UndecodableRecordingError, type Mp3Analysis } from './mp3-analysis.js';
import { MPEG_BITRATE_BOUNDS, readStreamHeader, type Mp3Source, type StreamHeader } from './mp3-header.js';
import { RecordingGoneError, type OpenedRecording } from './stored-recording-source.js';
import { decodePeaks, encodePeaks, type WaveformPeaks } from './waveform-peaks.js';

export interface RecordingAnalyserOptions {
  cache: Pick<RecordingCache, 'recordFacts' | 'holds'>;
  disk: Pick<DiskStore, 'writeSidecar' | 'readSidecar'>;
  /** Opens a stored recording's bytes; undefined when that entry is no longer stored. */
  open(entry: CachedRecording): Promise<OpenedRecording | undefined>;
  logger: Logger;
  /** Decodes at a time; default 1 (each is CPU work on the event loop's thread, in slices). */
  concurrency?: number;
  /** Header reads after a store waiting at most; more are left for a request to do. Default 1000. */
  maxWaiting?: number;
}

/** What the analyser has done since it started, for tests and benches. */
export interface AnalysisCounts {
  /** Stream headers read (facts), each about a millisecond. */
  headersRead: number;
  /** Whole recordings decoded (peaks), each a fraction of the recording's length in CPU time. */
  decodes: number;
}

const DEFAULT_CONCURRENCY = 1;
const DEFAULT_MAX_WAITING = 1000;
// Header reads are short (about a millisecond each): one at a time keeps a burst of stores from holding the thread.
const HEADER_CONCURRENCY = 1;

/** Facts as an index entry holds them, checked: an entry written by another version may hold anything. */
export function knownFacts(meta: RecordingMeta): RecordingFacts | undefined {
  const facts = meta.facts as Partial<RecordingFacts> | undefined;
  if (typeof facts !== 'object' || facts === null) return undefined;
  const positive = (value: unknown) => typeof value === 'number' && Number.isFinite(value) && value > 0;
  // A bitrate no MPEG stream has was not read from audio (an older version trusted a frame-count header blindly).
  const bitrate = facts.bitrate as number;
  return positive(facts.durationSeconds) &&
    positive(bitrate) &&
    bitrate >= MPEG_BITRATE_BOUNDS.min &&
    bitrate <= MPEG_BITRATE_BOUNDS.max &&
    positive(facts.sampleRate) &&
    positive(facts.channels)
    ? (facts as RecordingFacts)
    : undefined;
}

/**
 * Analyses stored recordings. Right after a recording is stored (in the
 * background, on a later turn of the event loop) only its facts are read,
 * from its stream header. Its peaks are computed when first asked for, by
 * decoding it whole; concurrent requests join that one decode. A recording
 * whose header gives no duration (a variable bitrate without a frame count)
 * is decoded on its first info.json request too. The facts go into the
 * recording's index entry, the peaks into a sidecar file beside it.
 */
export class RecordingAnalyser {
  readonly #headers: AnalysisQueue;
  readonly #decodes: AnalysisQueue;
  readonly #reading = new Map<CachedRecording, QueuedTask<RecordingFacts | undefined>>();
  readonly #decoding = new Map<CachedRecording, QueuedTask<Mp3Analysis>>();
  /** Peaks that have no sidecar (a recording in memory only, or a sidecar the disk refused). */
  readonly #unsaved = new WeakMap<CachedRecording, WaveformPeaks>();
  /** Recordings that could not be decoded: not tried again while their entry lives. */
  readonly #undecodable = new WeakMap<RecordingMeta, UndecodableRecordingError>();
  readonly #counts: AnalysisCounts = { headersRead: 0, decodes: 0 };

  constructor(private readonly options: RecordingAnalyserOptions) {
    this.#headers = new AnalysisQueue(HEADER_CONCURRENCY, options.maxWaiting ?? DEFAULT_MAX_WAITING);
    // Decodes are only ever asked for by a request, so none waits in the background.
    this.#decodes = new AnalysisQueue(options.concurrency ?? DEFAULT_CONCURRENCY, 0);
  }

  /** Headers read and recordings decoded so far. */
  get counts(): Readonly<AnalysisCounts> {
    return { ...this.#counts };
  }

  /** Header reads and decodes waiting for their turn now, all accounts together (tests, benches). */
  get waiting(): { headers: number; decodes: number } {
    return { headers: this.#headers.waiting, decodes: this.#decodes.waiting };
  }

  /** A recording was stored: read its facts from its header in the background, unless they are known. */
  schedule(entry: CachedRecording): void {
    if (knownFacts(entry.meta)) return;
    this.#headerJob(entry, false)?.result.catch(() => {});
  }

  /** The recording's facts: known, else read from its header, else (no duration there) from decoding it. */
  async facts(entry: CachedRecording): Promise<RecordingFacts> {
    const known = knownFacts(entry.meta);
    if (known) return known;
    const failed = this.#undecodable.get(entry.meta);
    if (failed) throw failed;
    const job = this.#headerJob(entry, true)!;
    job.promote();
    return (await job.result) ?? (await this.#decode(entry)).facts;
  }

  /** The recording's fine peaks: from its sidecar, else decoding it (which writes the sidecar). */
  async peaks(entry: CachedRecording): Promise<WaveformPeaks> {
    const saved = this.#unsaved.get(entry) ?? (entry.onDisk ? await this.#readSidecar(entry) : undefined);
    return saved ?? (await this.#decode(entry)).peaks;
  }

  /**
   * The facts of a recording that could not be stored, from its header or else by decoding it; nothing kept.
   * @param namespace the upstream account it was fetched for, whose share of the queues it takes.
   */
  async unstoredFacts(namespace: string, source: Mp3Source): Promise<RecordingFacts> {
    const header = await this.#headers.add(() => this.#readHeader(source), true, namespace)!.result;
    return header?.facts ?? (await this.#decodeUnstored(namespace, source)).facts;
  }

  /** The peaks of a recording that could not be stored, by decoding it in `namespace`'s share of the queue; nothing kept. */
  async unstoredPeaks(namespace: string, source: Mp3Source): Promise<WaveformPeaks> {
    return (await this.#decodeUnstored(namespace, source)).peaks;
  }

  /** Resolves once no header read or decode of a stored recording is waiting or running (tests, the CLI). */
  async idle(): Promise<void> {
    while (this.#reading.size + this.#decoding.size > 0) {
      await Promise.allSettled([...this.#reading.values(), ...this.#decoding.values()].map((job) => job.result));
    }
  }

  /** Drops the work waiting, and resolves once what runs is done. */
  async close(): Promise<void> {
    await Promise.all([this.#headers.close(), this.#decodes.close()]);
  }

  #headerJob(entry: CachedRecording, urgent: boolean): QueuedTask<RecordingFacts | undefined> | undefined {
    const existing = this.#reading.get(entry);
    if (existing) return existing;
    const job = this.#headers.add(
      async () => {
        // After a store: never in the turn that stored it, so the answer it belongs to goes out first.
        if (!urgent) await nextTurn();
        return this.#readFacts(entry);
      },
      urgent,
      entry.meta.namespace,
    );
    if (!job) return undefined;
    this.#tracked(this.#reading, entry, job, 'reading the header of a stored recording failed');
    return job;
  }

  async #readFacts(entry: CachedRecording): Promise<RecordingFacts | undefined> {
    const opened = await this.options.open(entry);
    if (!opened) throw new RecordingGoneError(`${entry.key} is no longer stored`);
    let header: StreamHeader | undefined;
    try {
      header = await this.#readHeader(opened);
    } finally {
      opened.release();
    }
    // A decode that finished meanwhile has recorded facts at least as good.
    if (header?.facts && !knownFacts(entry.meta)) await this.#record(entry, header.facts);
    return header?.facts;
  }

  #readHeader(source: Mp3Source): Promise<StreamHeader | undefined> {
    this.#counts.headersRead++;
    return readStreamHeader(source);
  }

  /**
   * Decodes a stored recording now, or joins its decode under way.
   * @throws RecordingGoneError when it is no longer stored; UndecodableRecordingError.
   */
  #decode(entry: CachedRecording): Promise<Mp3Analysis> {
    const existing = this.#decoding.get(entry);
    if (existing) return existing.result;
    const failed = this.#undecodable.get(entry.meta);
    if (failed) return Promise.reject(failed);
    const job = this.#decodes.add(() => this.#decodeStored(entry), true, entry.meta.namespace)!;
    this.#tracked(this.#decoding, entry, job, 'analysing a recording failed');
    return job.result;
  }

  #decodeUnstored(namespace: string, source: Mp3Source): Promise<Mp3Analysis> {
    return this.#decodes.add(
      () => {
        this.#counts.decodes++;
        return analyseMp3(source);
      },
      true,
      namespace,
    )!.result;
  }

  async #decodeStored(entry: CachedRecording): Promise<Mp3Analysis> {
    const opened = await this.options.open(entry);
    if (!opened) throw new RecordingGoneError(`${entry.key} is no longer stored`);
    let analysis: Mp3Analysis;
    try {
      this.#counts.decodes++;
      analysis = await analyseMp3(opened);
    } finally {
      opened.release();
    }
    await this.#keep(entry, analysis);
    return analysis;
  }

  /** Tracks a job while it runs; a recording that is not audio is remembered, other failures logged. */
  #tracked<T>(jobs: Map<CachedRecording, QueuedTask<T>>, entry: CachedRecording, job: QueuedTask<T>, failure: string): void {
    jobs.set(entry, job);
    void job.result.then(
      () => jobs.delete(entry),
      (error: unknown) => {
        jobs.delete(entry);
        if (error instanceof UndecodableRecordingError) {
          this.#undecodable.set(entry.meta, error);
          this.options.logger.info(
            { key: entry.key, reason: error.message },
            'a stored recording is not decodable audio: no facts or peaks',
          );
        } else if (!(error instanceof RecordingGoneError || error instanceof QueueClosedError)) {
          this.options.logger.warn({ err: error, key: entry.key }, failure);
        }
      },
    );
  }

  /**
   * Keeps what a decode found, unless the recording went meanwhile (a purge
   * racing the write leaves at most a sidecar that start-up removes): the
   * peaks always, the facts when none were known or the estimated ones proved
   * wrong. A disk or index that refuses is logged, and the answer still given.
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
    const known = knownFacts(entry.meta);
    if (known && !(known.estimated && !facts.estimated)) return;
    if (known) {
      logger.info(
        { key: entry.key, estimatedSeconds: known.durationSeconds, decodedSeconds: facts.durationSeconds },
        "the recording's estimated duration was wrong: the decoded one replaces it",
      );
    }
    await this.#record(entry, facts);
  }

  async #record(entry: CachedRecording, facts: RecordingFacts): Promise<void> {
    await this.options.cache.recordFacts(entry, facts).catch((error: unknown) => {
      this.options.logger.warn({ err: error, key: entry.key }, "cannot store the recording's facts in the index");
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
