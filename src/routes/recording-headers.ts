import type { CachedRecording } from '../cache/recording-catalogue.js';
import { etagFor, type RecordingMeta } from '../cache/recording-meta.js';
import type { DownloadHead } from '../download/recording-download.js';
import type { Validators } from '../http/conditional.js';
import { lastModifiedAsOf } from '../http/last-modified.js';

/** What every successful answer for one recording carries, and the validators its conditionals compare. */
export interface Representation {
  readonly headers: Readonly<Record<string, string>>;
  /** What a 304 carries of them (RFC 9110 15.4.5): the ETag a 200 would, if any. */
  readonly notModifiedHeaders: Readonly<Record<string, string>>;
  readonly validators: Validators;
}

// Built on a recording's first hit and kept while its entry lives, so a cache
// of 100,000 entries holds no header objects for the ones nobody asked for.
const storedRepresentations = new WeakMap<CachedRecording, Representation>();

/**
 * The one place a recording's headers are built, for hits and downloads alike.
 * Every recording is an MP3 (the download checks its first bytes), so its type
 * is `audio/mpeg` whatever audio type the upstream named (`audio/mp3`): the
 * contract's, with nothing of the upstream's headers passed on.
 */
function representation(callId: string, validators: Validators): Representation {
  const headers: Record<string, string> = { 'Content-Type': 'audio/mpeg', 'Accept-Ranges': 'bytes' };
  if (validators.etag !== undefined) headers.ETag = validators.etag;
  if (validators.lastModified !== undefined) headers['Last-Modified'] = validators.lastModified.toUTCString();
  headers['Content-Disposition'] = `inline; filename="call-${callId}.mp3"`;
  const notModifiedHeaders: Record<string, string> = validators.etag === undefined ? {} : { ETag: validators.etag };
  return { headers, notModifiedHeaders, validators };
}

/** An HTTP date the upstream sent, when it parses. */
function upstreamDate(value: string | undefined): Date | undefined {
  const parsed = value === undefined ? Number.NaN : Date.parse(value);
  return Number.isNaN(parsed) ? undefined : new Date(parsed);
}

/**
 * A stored copy's validators: a strong ETag from its sha256, and the
 * upstream's Last-Modified, never later than when it was fetched (a copy
 * stored before downloads clamped it may hold a future date), else when it
 * was fetched.
 */
export function storedValidators(meta: RecordingMeta): Validators {
  return {
    etag: etagFor(meta.sha256),
    lastModified: upstreamDate(lastModifiedAsOf(meta.lastModified, meta.fetchedAt)) ?? new Date(meta.fetchedAt),
  };
}

/** A stored recording, with its {@link storedValidators}. */
export function storedRepresentation(entry: CachedRecording): Representation {
  let known = storedRepresentations.get(entry);
  if (!known) {
    known = representation(entry.meta.callId, storedValidators(entry.meta));
    storedRepresentations.set(entry, known);
  }
  return known;
}

/** The download's Last-Modified (the upstream's, or the fetch's date: see DownloadManager): a stored copy keeps the same. */
function upstreamLastModified(head: DownloadHead): Pick<Validators, 'lastModified'> {
  const lastModified = upstreamDate(head.lastModified);
  return lastModified ? { lastModified } : {};
}

/**
 * A recording still arriving. Its ETag would be a digest of bytes not yet
 * received, so it has none (a strong ETag must be exact); its Last-Modified
 * is the one the stored copy will have: the upstream's, or when the gateway
 * fetched it.
 */
export function downloadRepresentation(callId: string, head: DownloadHead): Representation {
  return representation(callId, upstreamLastModified(head));
}

/** A finished download that could not be stored: its sha256 is known, so it has the ETag a stored copy would have. */
export function completedRepresentation(callId: string, head: DownloadHead, sha256: string): Representation {
  return representation(callId, { etag: etagFor(sha256), ...upstreamLastModified(head) });
}
