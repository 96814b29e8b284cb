import { BadGatewayError, GatewayError, GatewayTimeoutError, NotFoundError, ServiceUnavailableError } from '../errors.js';
import type { RecordingReader } from '../recordings/recording-service.js';

/**
 * What a peer answer starts with, as one JSON line before the bytes: its
 * response head goes out at once (so a replica that does not answer is told
 * from one still waiting for Flyflow within a second), and the recording's
 * own head follows when it is known.
 */
export type PeerHead =
  | { size: number; contentType: string; lastModified?: string | undefined; fetchedAt?: number | undefined }
  | { error: 'not_found' | 'unavailable' }
  | FailedDownload;

/** The peer's download from the upstream failed: its answer, for the asking replica to give its own callers. */
interface FailedDownload {
  error: 'failed';
  status: 502 | 503 | 504;
  message: string;
  retryAfterSeconds?: number | undefined;
}

const PASSED_ON = new Set([502, 503, 504]);

/** What a peer says when opening a recording failed: a failed download's answer is passed on, so the cluster asks the upstream once. */
function failureHead(error: unknown): PeerHead {
  if (error instanceof NotFoundError) return { error: 'not_found' };
  if (!(error instanceof GatewayError) || !PASSED_ON.has(error.status)) return { error: 'unavailable' };
  const retryAfterSeconds = Number(error.headers['Retry-After']) || undefined;
  return { error: 'failed', status: error.status as FailedDownload['status'], message: error.message, retryAfterSeconds };
}

/** The error a peer's failed download ends in here: the same status and message its own callers got. */
export function peerFailure(head: FailedDownload): GatewayError {
  const message = String(head.message).slice(0, MAX_MESSAGE_CHARS);
  if (head.status === 504) return new GatewayTimeoutError(message);
  if (head.status !== 503) return new BadGatewayError(message);
  const retryAfter = Number(head.retryAfterSeconds);
  return new ServiceUnavailableError(message, retryAfter > 0 ? retryAfter : 1);
}

export const PEER_STREAM_TYPE = 'application/x-recording-gateway-peer';

const CHUNK_BYTES = 256 * 1024;
const MAX_MESSAGE_CHARS = 200;
const NEWLINE = 0x0a;

/** A recording to send to a peer: its head once known, and a reader of its bytes. */
export interface PeerSource {
  size: number;
  contentType: string;
  lastModified: string | undefined;
  /** A stored copy's fetch time (retention counts from it); absent for a download under way. */
  fetchedAt?: number | undefined;
  reader: RecordingReader;
}

/**
 * The body of a peer answer: the head line, then the bytes as they can be
 * read, pulled as the peer takes them. A failure after the head line cuts
 * the connection (`abort`), so the peer never takes a short body for a whole one.
 */
export function peerStream(open: () => Promise<PeerSource>, abort: () => boolean): ReadableStream<Uint8Array> {
  let source: PeerSource | undefined;
  let position = 0;
  const release = () => source?.reader.release();
  const line = (head: PeerHead) => Buffer.from(`${JSON.stringify(head)}\n`);
  return new ReadableStream<Uint8Array>(
    {
      async start(controller) {
        try {
          source = await open();
        } catch (error) {
          controller.enqueue(line(failureHead(error)));
          controller.close();
          return;
        }
        const { size, contentType, lastModified, fetchedAt } = source;
        controller.enqueue(line({ size, contentType, lastModified, fetchedAt }));
      },
      async pull(controller) {
        if (!source) return;
        try {
          if (position >= source.size) {
            release();
            controller.close();
            return;
          }
          const chunk = await source.reader.readAt(position, Math.min(CHUNK_BYTES, source.size - position));
          if (chunk === null || chunk.length === 0) throw new Error('recording ended early');
          position += chunk.length;
          controller.enqueue(chunk);
        } catch (error) {
          release();
          if (abort()) controller.close();
          else controller.error(error);
        }
      },
      cancel() {
        release();
      },
    },
    { highWaterMark: 0 },
  );
}

/**
 * Reads a peer answer's head line. Resolves with the head and whatever bytes
 * came after it in the same read.
 * @throws Error when the stream ends or breaks before a whole line.
 */
export async function readPeerHead(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<{ head: PeerHead; rest: Uint8Array }> {
  let buffered = Buffer.alloc(0);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) throw new Error('the peer closed its answer before its head');
    buffered = Buffer.concat([buffered, value]);
    const end = buffered.indexOf(NEWLINE);
    if (end === -1) {
      if (buffered.length > 4096) throw new Error('the peer sent no head line');
      continue;
    }
    const head = JSON.parse(buffered.subarray(0, end).toString('utf8')) as PeerHead;
    return { head, rest: buffered.subarray(end + 1) };
  }
}
