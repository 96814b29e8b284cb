/** What the index keeps about one stored recording. */
export interface RecordingMeta {
  namespace: string;
  callId: string;
  size: number;
  /** Hex sha256 of the whole body, checked before the entry is written. */
  sha256: string;
  contentType: string;
  /** Milliseconds since the epoch. */
  fetchedAt: number;
  /**
   * The Last-Modified its answers carry: the upstream's, never later than the
   * fetch, or without one the fetch's own date (taken as the upstream's head
   * arrived, so a little before `fetchedAt`). Copies stored before 0.4.10
   * may have none: they answer with `fetchedAt`.
   */
  lastModified?: string;
  /** Cluster only: the recording's purge generation when its download began; a later purge makes the copy stale. */
  generation?: number;
  /** What analysis read from the MP3 once stored; entries stored before it ran (or by older versions) have none. */
  facts?: RecordingFacts;
}

/** A recording's audio facts, as `info.json` answers them (src/recordings/analysis). */
export interface RecordingFacts {
  /** Seconds of audio. */
  durationSeconds: number;
  /** Bits per second: the stream's (average, for VBR) bitrate. */
  bitrate: number;
  /** Samples per second. */
  sampleRate: number;
  channels: number;
  /** The duration came from the size and bitrate (a constant bitrate without a frame count): a full decode may correct it. */
  estimated?: true;
}

export function cacheKey(namespace: string, callId: string): string {
  return `${namespace}/${callId}`;
}

/** A strong ETag derived from the content: the sha256, base64url, quoted (RFC 9110 8.8.3). */
export function etagFor(sha256Hex: string): string {
  return `"${Buffer.from(sha256Hex, 'hex').toString('base64url')}"`;
}

export function isRecordingMeta(value: unknown): value is RecordingMeta {
  if (typeof value !== 'object' || value === null) return false;
  const meta = value as Record<string, unknown>;
  return (
    typeof meta.namespace === 'string' &&
    typeof meta.callId === 'string' &&
    Number.isSafeInteger(meta.size) &&
    typeof meta.sha256 === 'string' &&
    /^[0-9a-f]{64}$/.test(meta.sha256) &&
    typeof meta.contentType === 'string' &&
    typeof meta.fetchedAt === 'number'
  );
}
