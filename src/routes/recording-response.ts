import type { FileHandle } from 'node:fs/promises';
import type { CachedRecording } from '../cache/recording-cache.js';
import type { DownloadHead, RecordingDownload } from '../download/recording-download.js';
import { evaluatePreconditions, rangeIsApplicable, type Validators } from '../http/conditional.js';
import { PreconditionFailedError, RangeNotSatisfiableError } from '../errors.js';
import { contentRange, decideRange, type ByteRange } from '../http/range.js';

/** The request headers that shape a recording answer. */
export interface RecordingRequest {
  method: string;
  range: string | undefined;
  ifRange: string | undefined;
  ifMatch: string | undefined;
  ifNoneMatch: string | undefined;
  ifModifiedSince: string | undefined;
  ifUnmodifiedSince: string | undefined;
}

/** The per-request headers: Cache-Control, Cache-Status, CORS, X-Request-Id. */
export type ResponseHeaders = Record<string, string>;

/** What an answer will send, for the request log: its body bytes (0 for HEAD, 304). */
export interface ResponseOutcome {
  bodyBytes: number;
}

/**
 * Cuts the client's connection when a body fails after its head went out, so
 * the client sees a transfer short of its Content-Length. Returns false where
 * there is no connection to cut (app.request in tests); the stream then errors.
 */
export type AbortConnection = () => boolean;

type Plan = { kind: 'not-modified' } | { kind: 'full' } | { kind: 'partial'; range: ByteRange };

// Large enough that a file streams in few thread-pool round trips, small
// enough that a slow client never makes the gateway hold much of a recording.
const STREAM_CHUNK_BYTES = 256 * 1024;

/**
 * RFC 9110 13.2.2: preconditions first, then Range (14.2), which applies only
 * to GET and only while If-Range, if sent, still matches.
 * @throws PreconditionFailedError (412) or RangeNotSatisfiableError (416).
 */
function plan(request: RecordingRequest, size: number, validators: Validators): Plan {
  const outcome = evaluatePreconditions(request, validators);
  if (outcome === 'not-modified') return { kind: 'not-modified' };
  if (outcome === 'precondition-failed') throw new PreconditionFailedError();
  if (request.method !== 'GET' || request.range === undefined) return { kind: 'full' };
  if (!rangeIsApplicable(request.ifRange, validators)) return { kind: 'full' };
  const decision = decideRange(request.range, size);
  if (decision.kind === 'unsatisfiable') throw new RangeNotSatisfiableError(size);
  return decision.kind === 'partial' ? decision : { kind: 'full' };
}

function notModified(headers: Readonly<Record<string, string>>, extra: ResponseHeaders): Response {
  const kept: Record<string, string> = { ETag: headers.ETag!, ...extra };
  return new Response(null, { status: 304, headers: kept });
}

function bodyHeaders(
  base: Readonly<Record<string, string>>,
  extra: ResponseHeaders,
  size: number,
  range: ByteRange | undefined,
): Record<string, string> {
  const headers: Record<string, string> = { ...base, ...extra };
  if (range) {
    headers['Content-Range'] = contentRange(range, size);
    headers['Content-Length'] = String(range.end - range.start + 1);
  } else {
    headers['Content-Length'] = String(size);
  }
  return headers;
}

/** A hit held in memory: written straight from its Buffer. */
export function memoryResponse(
  request: RecordingRequest,
  entry: CachedRecording,
  body: Buffer,
  extra: ResponseHeaders,
  outcome?: ResponseOutcome,
): Response {
  const decision = plan(request, body.length, entry);
  if (decision.kind === 'not-modified') return notModified(entry.headers, extra);
  const range = decision.kind === 'partial' ? decision.range : undefined;
  const headers = bodyHeaders(entry.headers, extra, body.length, range);
  const status = range ? 206 : 200;
  if (request.method === 'HEAD') return new Response(null, { status, headers });
  // A Buffer is a Uint8Array; the cast only widens lib.dom's ArrayBuffer-only typing.
  const bytes = (range ? body.subarray(range.start, range.end + 1) : body) as Uint8Array<ArrayBuffer>;
  if (outcome) outcome.bodyBytes = bytes.length;
  return new Response(bytes, { status, headers });
}

/** A hit on disk too large for memory: streamed from the open file, never read whole. `done` runs when it is no longer read. */
export function fileResponse(
  request: RecordingRequest,
  entry: CachedRecording,
  handle: FileHandle,
  extra: ResponseHeaders,
  done: () => void,
  abort?: AbortConnection,
  outcome?: ResponseOutcome,
): Response {
  const size = entry.meta.size;
  const finish = () => {
    void handle.close();
    done();
  };
  let decision: Plan;
  try {
    decision = plan(request, size, entry);
  } catch (error) {
    finish();
    throw error;
  }
  const range = decision.kind === 'partial' ? decision.range : undefined;
  if (decision.kind === 'not-modified' || request.method === 'HEAD') {
    finish();
    if (decision.kind === 'not-modified') return notModified(entry.headers, extra);
  }
  const headers = bodyHeaders(entry.headers, extra, size, range);
  const status = range ? 206 : 200;
  if (request.method === 'HEAD') return new Response(null, { status, headers });
  const start = range?.start ?? 0;
  const end = range ? range.end + 1 : size;
  const read = (offset: number, max: number) => readFileAt(handle, offset, max);
  if (outcome) outcome.bodyBytes = end - start;
  return new Response(streamFromReader(read, start, end, finish, abort), {
    status,
    headers,
  });
}

async function readFileAt(handle: FileHandle, offset: number, max: number): Promise<Uint8Array | null> {
  const buffer = Buffer.allocUnsafe(Math.min(max, STREAM_CHUNK_BYTES));
  const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
  return bytesRead === 0 ? null : buffer.subarray(0, bytesRead);
}

/**
 * An answer from a download under way. Its ETag is a digest of bytes not yet
 * received, so this answer carries none (a strong ETag must be exact); every
 * answer after the recording is whole does.
 */
export function downloadResponse(
  request: RecordingRequest,
  callId: string,
  download: RecordingDownload,
  head: DownloadHead & { size: number },
  extra: ResponseHeaders,
  release: () => void,
  abort?: AbortConnection,
  outcome?: ResponseOutcome,
): Response {
  const base: Record<string, string> = {
    'Content-Type': head.contentType,
    'Accept-Ranges': 'bytes',
    'Content-Disposition': `inline; filename="call-${callId}.mp3"`,
  };
  let decision: Plan;
  try {
    decision = plan(request, head.size, {});
  } catch (error) {
    release();
    throw error;
  }
  const range = decision.kind === 'partial' ? decision.range : undefined;
  const headers = bodyHeaders(base, extra, head.size, range);
  const status = range ? 206 : 200;
  if (decision.kind === 'not-modified') {
    release();
    // No ETag yet: it is the digest of bytes still arriving (RFC 9110 15.4.5 asks only for those a 200 would carry).
    return new Response(null, { status: 304, headers: extra });
  }
  if (request.method === 'HEAD') {
    release();
    return new Response(null, { status, headers });
  }
  const start = range?.start ?? 0;
  const end = range ? range.end + 1 : head.size;
  if (outcome) outcome.bodyBytes = end - start;
  return new Response(streamFromReader((offset, max) => download.readAt(offset, max), start, end, release, abort), {
    status,
    headers,
  });
}

/**
 * A pull-based body: the next bytes are read only when the client has taken
 * the last ones, so a slow reader never makes the gateway buffer a recording.
 * `done` runs exactly once, when the body ends, fails or the client goes away.
 */
function streamFromReader(
  read: (offset: number, maxBytes: number) => Promise<Uint8Array | null> | Uint8Array | null,
  start: number,
  end: number,
  done: () => void,
  abort: AbortConnection = () => false,
): ReadableStream<Uint8Array> {
  let position = start;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    done();
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        if (position >= end) {
          finish();
          controller.close();
          return;
        }
        const chunk = await read(position, Math.min(end - position, STREAM_CHUNK_BYTES));
        if (chunk === null || chunk.length === 0) throw new Error('recording body ended early');
        position += chunk.length;
        controller.enqueue(chunk);
        if (position >= end) {
          finish();
          controller.close();
        }
      } catch (error) {
        finish();
        // Erroring the stream would make the adapter log a stack and write an
        // error text into the audio body; cutting the connection says enough.
        if (abort()) controller.close();
        else controller.error(error);
      }
    },
    cancel() {
      finish();
    },
  }, { highWaterMark: 0 });
}
