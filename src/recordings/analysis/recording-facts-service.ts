import type { CachedRecording, RecordingCache } from '../../cache/recording-cache.js';
import { cacheKey, type RecordingFacts } from '../../cache/recording-meta.js';
import type { DownloadOwner } from '../../download/download-manager.js';
import { BadGatewayError } from '../../errors.js';
import type { RecordingReader, RecordingService } from '../recording-service.js';
import { UndecodableRecordingError } from './mp3-analysis.js';
import type { Mp3Source } from './mp3-header.js';
import type { RecordingAnalyser } from './recording-analyser.js';
import { RecordingGoneError } from './stored-recording-source.js';
import type { WaveformPeaks } from './waveform-peaks.js';

const NO_BODY = () => false;

/** How the recording behind an answer was found, as Cache-Status says it. */
export type FactsCacheResult = 'hit' | 'miss' | 'collapsed';

/**
 * The recording an info or peaks request is about: a stored entry, or (when
 * it could not be stored) its finished download. Release it once answered.
 */
export type LocatedRecording = { sha256: string; cache: FactsCacheResult; release(): void } & (
  | { entry: CachedRecording; unstored?: undefined }
  | { entry?: undefined; unstored: { size: number; reader: RecordingReader } }
);

/** An answer's content and the recording it was read from. */
export interface FactsRead<T> {
  value: T;
  /** The recording's sha256 and size: those of the copy fetched again when the located one went away. */
  sha256: string;
  size: number;
  cache: FactsCacheResult;
}

export interface RecordingFactsServiceOptions {
  cache: Pick<RecordingCache, 'lookup'>;
  recordings: Pick<RecordingService, 'find' | 'fetchWhole'>;
  analyser: RecordingAnalyser;
}

/**
 * What `info.json` and `peaks.json` are answered from: the catalogue's entry
 * when the recording is stored (its facts without reading the audio, its peaks
 * from the sidecar), else the recording fetched the way the `.mp3` route
 * fetches it (one download, joined by every request for it), then analysed.
 */
export class RecordingFactsService {
  constructor(private readonly options: RecordingFactsServiceOptions) {}

  /**
   * The recording, stored or fetched; a memory or catalogue hit reads nothing.
   * @throws what the `.mp3` route would: NotFoundError, upstream errors.
   */
  async locate(owner: DownloadOwner, callId: string): Promise<LocatedRecording> {
    const entry = this.options.cache.lookup(cacheKey(owner.namespace, callId))?.entry;
    if (entry) return stored(entry, 'hit');
    // Only the entry is needed: a small encrypted copy is opened, not decrypted whole (see RecordingService.find).
    const found = await this.options.recordings.find(owner.namespace, callId, NO_BODY);
    if (found) {
      found.reader?.release();
      return stored(found.entry, 'hit');
    }
    return this.#fetch(owner, callId);
  }

  /** The recording's facts. Releases nothing: the caller releases `located`. */
  info(owner: DownloadOwner, callId: string, located: LocatedRecording): Promise<FactsRead<RecordingFacts>> {
    return this.#read(
      owner,
      callId,
      located,
      (entry) => this.options.analyser.facts(entry),
      (source) => this.options.analyser.unstoredFacts(owner.namespace, source),
    );
  }

  /** The recording's fine waveform peaks. Releases nothing: the caller releases `located`. */
  peaks(owner: DownloadOwner, callId: string, located: LocatedRecording): Promise<FactsRead<WaveformPeaks>> {
    return this.#read(
      owner,
      callId,
      located,
      (entry) => this.options.analyser.peaks(entry),
      (source) => this.options.analyser.unstoredPeaks(owner.namespace, source),
    );
  }

  /**
   * Reads from the located recording; when its stored copy went away
   * meanwhile (a purge, an eviction), fetches it again once, as a hit on a
   * vanished file does.
   */
  async #read<T>(
    owner: DownloadOwner,
    callId: string,
    located: LocatedRecording,
    fromEntry: (entry: CachedRecording) => Promise<T>,
    fromUnstored: (source: Mp3Source) => Promise<T>,
  ): Promise<FactsRead<T>> {
    try {
      return { value: await this.#readOnce(located, fromEntry, fromUnstored), ...described(located) };
    } catch (error) {
      if (!(error instanceof RecordingGoneError)) throw undecodable(error);
    }
    const again = await this.#fetch(owner, callId);
    try {
      return { value: await this.#readOnce(again, fromEntry, fromUnstored), ...described(again) };
    } catch (error) {
      throw undecodable(error);
    } finally {
      again.release();
    }
  }

  async #readOnce<T>(
    located: LocatedRecording,
    fromEntry: (entry: CachedRecording) => Promise<T>,
    fromUnstored: (source: Mp3Source) => Promise<T>,
  ): Promise<T> {
    if (located.entry) return fromEntry(located.entry);
    const { size, reader } = located.unstored;
    return fromUnstored({ size, readAt: (offset, maxBytes) => reader.readAt(offset, maxBytes) });
  }

  async #fetch(owner: DownloadOwner, callId: string): Promise<LocatedRecording> {
    const whole = await this.options.recordings.fetchWhole(owner, callId);
    const cache = whole.collapsed ? 'collapsed' : 'miss';
    if (whole.found) {
      whole.found.reader?.release();
      return stored(whole.found.entry, cache);
    }
    const { reader, head } = whole.fetched;
    return { sha256: whole.sha256, cache, unstored: { size: head.size, reader }, release: () => reader.release() };
  }
}

function described(located: LocatedRecording): Omit<FactsRead<unknown>, 'value'> {
  return { sha256: located.sha256, size: located.entry?.meta.size ?? located.unstored!.size, cache: located.cache };
}

function stored(entry: CachedRecording, cache: FactsCacheResult): LocatedRecording {
  return { entry, sha256: entry.meta.sha256, cache, release() {} };
}

/** An MP3 the decoder cannot read is the upstream's bad body: 502, as for the recording itself. */
function undecodable(error: unknown): unknown {
  if (!(error instanceof UndecodableRecordingError)) return error;
  return new BadGatewayError('The recording could not be decoded for analysis', { cause: error });
}
