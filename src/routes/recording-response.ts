import type { ServerResponse } from 'node:http';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { evaluatePreconditions, rangeIsApplicable, type Validators } from '../http/conditional.js';
import { PreconditionFailedError, RangeNotSatisfiableError } from '../errors.js';
import { contentRange, decideRange, type ByteRange } from '../http/range.js';
import { drained, whenClosed } from '../http/response-closed.js';
import type { CachedRecording } from '../cache/recording-cache.js';
import type { RequestFields } from '../http/request-fields.js';
import type { RecordingReader } from '../recordings/recording-service.js';
import { storedRepresentation, type Representation } from './recording-headers.js';

/** The request headers that shape a recording answer. */
export type RecordingRequest = { method: string } & Pick<
  RequestFields,
  'range' | 'ifRange' | 'ifMatch' | 'ifNoneMatch' | 'ifModifiedSince' | 'ifUnmodifiedSince'
>;

/** The per-request headers: Cache-Control, Cache-Status, CORS, X-Request-Id. */
export type ResponseHeaders = Record<string, string>;

/**
 * For the request log and the metrics: the body bytes handed to the
 * connection so far (0 for HEAD and 304), counted as they go, so a transfer
 * the client cut short reports what it got rather than nothing.
 */
export interface ResponseOutcome {
  bodyBytes: number;
}

type Plan = { kind: 'not-modified' } | { kind: 'full' } | { kind: 'partial'; range: ByteRange };

// The adapter honours RESPONSE_ALREADY_SENT only as the platform's own
// Response; one built after the adapter replaced the global Response (its
// first server in this process) would be sent as an empty 200 instead.
// Reading its body turns it into the platform's own.
void RESPONSE_ALREADY_SENT.body;

// What one read hands the connection. 64 KiB, not more: 20 clients of a
// 200 MB disk hit then stay under 150 MB resident and get 2-3 times the
// throughput of 256 KiB reads (npm run bench:durability, issue 11), since
// a smaller chunk is on the wire while the next is read.
const STREAM_CHUNK_BYTES = 64 * 1024;

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

/**
 * Whether the answer to `request` for a stored recording sends its whole
 * body: a GET without a Range, with one that covers every byte (Chrome's
 * `bytes=0-`), or with one the answer ignores (malformed, an If-Range that no
 * longer holds, several ranges answered whole). Not for HEAD, a 304, a 412 or
 * a 416, nor a range of part of it. Decided as `plan` decides the answer, so
 * it cannot disagree with it. RecordingService.find asks it of a small disk
 * hit, to read the whole file only when the answer needs it (see `readsWhole` there).
 */
export function sendsWholeBody(request: RecordingRequest, entry: CachedRecording): boolean {
  if (request.method !== 'GET') return false;
  const size = entry.meta.size;
  let decision: Plan;
  try {
    decision = plan(request, size, storedRepresentation(entry).validators);
  } catch {
    return false;
  }
  if (decision.kind === 'partial') return decision.range.start === 0 && decision.range.end === size - 1;
  return decision.kind === 'full';
}

function notModified(representation: Representation, extra: ResponseHeaders): Response {
  return new Response(null, { status: 304, headers: Object.assign({}, representation.notModifiedHeaders, extra) });
}

/** Adds the length, and the range when it is one, to an answer's own headers. */
function addLengthHeaders(headers: ResponseHeaders, size: number, range: ByteRange | undefined): ResponseHeaders {
  if (range) {
    headers['Content-Range'] = contentRange(range, size);
    headers['Content-Length'] = String(range.end - range.start + 1);
  } else {
    headers['Content-Length'] = String(size);
  }
  return headers;
}

function bodyHeaders(
  base: Readonly<Record<string, string>>,
  extra: ResponseHeaders,
  size: number,
  range: ByteRange | undefined,
): Record<string, string> {
  // Object.assign, not spread: on every answer, V8's object spread costs microseconds here.
  return addLengthHeaders(Object.assign({}, base, extra), size, range);
}

/**
 * An answer from a recording held whole in memory. Its head is `fields`, the
 * recording's own, the same object for every answer of the kind (the
 * memory-hit door keeps them as bytes), then `headers`, this answer's own.
 * Its body is `bodyLength` bytes of `source` from `bodyStart` (see
 * {@link bodyOf}): the door copies a short range from the recording without
 * making a view of it; `source` is undefined for HEAD and 304.
 */
export interface MemoryAnswer {
  status: 200 | 206 | 304;
  fields: Readonly<Record<string, string>>;
  headers: ResponseHeaders;
  source: Uint8Array | undefined;
  bodyStart: number;
  bodyLength: number;
}

/** The body of `answer`: its source itself when the body is all of it. */
export function bodyOf(answer: Pick<MemoryAnswer, 'source' | 'bodyStart' | 'bodyLength'>): Uint8Array | undefined {
  const { source, bodyStart, bodyLength } = answer;
  if (source === undefined || (bodyStart === 0 && bodyLength === source.length)) return source;
  return source.subarray(bodyStart, bodyStart + bodyLength);
}

/** Every header of `answer`, in the order they go out. */
export function allHeaders(answer: Pick<MemoryAnswer, 'fields' | 'headers'>): Record<string, string> {
  return Object.assign({}, answer.fields, answer.headers);
}

/**
 * The answer for a recording held whole in memory, as plain parts, for the
 * app's Response and for the memory-hit path that writes to Node directly.
 * `extra`, this request's own object, becomes the answer's `headers`.
 * @throws PreconditionFailedError (412) or RangeNotSatisfiableError (416).
 */
export function memoryAnswer(
  request: RecordingRequest,
  representation: Representation,
  body: Buffer,
  extra: ResponseHeaders,
): MemoryAnswer {
  const decision = plan(request, body.length, representation.validators);
  if (decision.kind === 'not-modified') {
    return { status: 304, fields: representation.notModifiedHeaders, headers: extra, source: undefined, bodyStart: 0, bodyLength: 0 };
  }
  const range = decision.kind === 'partial' ? decision.range : undefined;
  const headers = addLengthHeaders(extra, body.length, range);
  const status = range ? 206 : 200;
  const fields = representation.headers;
  if (request.method === 'HEAD') return { status, fields, headers, source: undefined, bodyStart: 0, bodyLength: 0 };
  return range
    ? { status, fields, headers, source: body, bodyStart: range.start, bodyLength: range.end + 1 - range.start }
    : { status, fields, headers, source: body, bodyStart: 0, bodyLength: body.length };
}

/** A recording held whole in memory: written straight from its Buffer. */
export function memoryResponse(
  request: RecordingRequest,
  representation: Representation,
  body: Buffer,
  extra: ResponseHeaders,
  outcome?: ResponseOutcome,
): Response {
  const answer = memoryAnswer(request, representation, body, extra);
  if (outcome && answer.source) outcome.bodyBytes = answer.bodyLength;
  // A Buffer is a Uint8Array; the cast only widens lib.dom's ArrayBuffer-only typing.
  return new Response((bodyOf(answer) ?? null) as Uint8Array<ArrayBuffer> | null, { status: answer.status, headers: allHeaders(answer) });
}

/**
 * A recording read as it is sent: a large file on disk, never read whole, or
 * a download under way. The head is committed only once the body's first
 * bytes are at hand, and goes out in the same write: a body that fails before
 * then (an upstream silent short of the range, an encrypted copy whose chunk
 * fails its check) rejects with its error, answered as JSON, never a head
 * followed by a cut with no byte. The reader is released when the answer no
 * longer needs it: at once for HEAD, 304 and errors, else when the body ends
 * or the client goes away. With Node's response at hand (`connection`) the
 * body is written to it directly and the answer is RESPONSE_ALREADY_SENT:
 * the adapter's copy from a web stream would hold the first bytes back for a
 * timer tick, and costs a promise per chunk. `extra` makes the per-request
 * headers as the head is committed: a signed URL's max-age counts down while
 * the head waits for its first bytes.
 */
export async function streamedResponse(
  request: RecordingRequest,
  representation: Representation,
  size: number,
  reader: RecordingReader,
  extra: () => ResponseHeaders,
  connection?: ServerResponse,
  outcome?: ResponseOutcome,
): Promise<Response> {
  let decision: Plan;
  try {
    decision = plan(request, size, representation.validators);
  } catch (error) {
    reader.release();
    throw error;
  }
  if (decision.kind === 'not-modified') {
    reader.release();
    return notModified(representation, extra());
  }
  const range = decision.kind === 'partial' ? decision.range : undefined;
  const status = range ? 206 : 200;
  if (request.method === 'HEAD') {
    reader.release();
    return new Response(null, { status, headers: bodyHeaders(representation.headers, extra(), size, range) });
  }
  const start = range?.start ?? 0;
  const end = range ? range.end + 1 : size;
  const read: ReadAt = (offset, max, scratch) => reader.readAt(offset, max, scratch);
  const sent = (bytes: number) => {
    if (outcome) outcome.bodyBytes += bytes;
  };
  // File reads land in one buffer per answer written to Node, reused once the
  // connection has taken its bytes: a fresh 64 KiB per read left tens of MB of
  // Buffers for the GC to find under 20 concurrent large downloads (bench:durability).
  const scratch = Buffer.allocUnsafe(connection ? Math.min(end - start, STREAM_CHUNK_BYTES) : 0);
  let first: Uint8Array | undefined;
  try {
    first = start < end ? await readChunk(read, start, end, connection ? scratch : undefined) : undefined;
  } catch (error) {
    reader.release();
    throw error;
  }
  const headers = bodyHeaders(representation.headers, extra(), size, range);
  if (connection) {
    connection.writeHead(status, headers);
    void writeFromReader(connection, read, first, start, end, scratch, sent, () => reader.release());
    return RESPONSE_ALREADY_SENT;
  }
  return new Response(
    streamFromReader(read, first, start, end, sent, () => reader.release()),
    { status, headers },
  );
}

type ReadAt = (offset: number, maxBytes: number, scratch?: Buffer) => Promise<Uint8Array | null> | Uint8Array | null;

/** The next bytes of `[position, end)`, at most STREAM_CHUNK_BYTES; rejects if the body ends before `end`. */
async function readChunk(read: ReadAt, position: number, end: number, scratch?: Buffer): Promise<Uint8Array> {
  const chunk = await read(position, Math.min(end - position, STREAM_CHUNK_BYTES), scratch);
  if (chunk === null || chunk.length === 0) throw new Error('recording body ended early');
  return chunk;
}

/**
 * Writes `first`, then the rest of `[start, end)`, to Node's response, reading
 * the next bytes only once the connection took the last ones, so a slow client
 * never makes the gateway buffer a recording. A body that fails after its head
 * went out cuts the connection: the client sees a transfer short of its
 * Content-Length. `done` runs exactly once: at the end, on failure, or as soon
 * as the client goes.
 */
async function writeFromReader(
  connection: ServerResponse,
  read: ReadAt,
  first: Uint8Array | undefined,
  start: number,
  end: number,
  scratch: Buffer,
  sent: (bytes: number) => void,
  done: () => void,
): Promise<void> {
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    done();
  };
  whenClosed(connection, finish);
  let chunk = first;
  let position = start;
  try {
    while (chunk && !finished) {
      position += chunk.length;
      sent(chunk.length);
      if (!connection.write(chunk)) await drained(connection);
      if (position >= end) break;
      // Node still holds scratch's bytes unwritten: the next read needs another buffer.
      if (connection.writableLength > 0 && chunk.buffer === scratch.buffer) scratch = Buffer.allocUnsafe(scratch.length);
      chunk = await readChunk(read, position, end, scratch);
    }
    if (!finished) connection.end();
  } catch {
    connection.destroy();
  } finally {
    finish();
  }
}

/**
 * A pull-based body: `first`, then the next bytes read only when the client
 * has taken the last ones, so a slow reader never makes the gateway buffer a
 * recording. `done` runs exactly once, when the body ends, fails or the
 * client goes away.
 */
function streamFromReader(
  read: ReadAt,
  first: Uint8Array | undefined,
  start: number,
  end: number,
  sent: (bytes: number) => void,
  done: () => void,
): ReadableStream<Uint8Array> {
  let pending = first;
  let position = start;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    done();
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          if (position >= end) {
            finish();
            controller.close();
            return;
          }
          const chunk = pending ?? (await readChunk(read, position, end));
          pending = undefined;
          position += chunk.length;
          controller.enqueue(chunk);
          sent(chunk.length);
          if (position >= end) {
            finish();
            controller.close();
          }
        } catch (error) {
          finish();
          controller.error(error);
        }
      },
      cancel() {
        finish();
      },
    },
    { highWaterMark: 0 },
  );
}
