import { createHash } from 'node:crypto';
import { BadGatewayError, GatewayError, GatewayTimeoutError, NotFoundError, ServiceUnavailableError } from '../errors.js';
import type { RecordingReader } from '../recordings/recording-service.js';
import type { AnswerSigner, PeerAnswerKind } from './peer-auth.js';

/**
 * What a peer answer starts with, as one signed JSON line before the bytes:
 * its response head goes out at once (so a replica that does not answer is
 * told from one still waiting for Flyflow within a second), and the
 * recording's own head follows when it is known.
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
const MAX_LINE_BYTES = 4096;
const NEWLINE = 0x0a;
const SPACE = 0x20;

/** The line after the last body byte: what the holder sent, for the caller to check before it stores anything. */
export interface PeerTrailer {
  sha256: string;
  size: number;
}

/** A recording to send to a peer: its head once known, and a reader of its bytes. */
export interface PeerSource {
  size: number;
  contentType: string;
  lastModified: string | undefined;
  /** A stored copy's fetch time (retention counts from it); absent for a download under way. */
  fetchedAt?: number | undefined;
  reader: RecordingReader;
}

/** `<proof> <json>\n`: the proof is over the JSON text exactly as sent. */
function signedLine(sign: AnswerSigner, kind: PeerAnswerKind, value: PeerHead | PeerTrailer): Buffer {
  const text = JSON.stringify(value);
  return Buffer.from(`${sign(kind, text)} ${text}\n`);
}

/**
 * The body of a peer answer: the signed head line, then the bytes as they can
 * be read, pulled as the peer takes them, then a signed trailer line with
 * their sha256. A failure after the head line cuts the connection (`abort`),
 * so the peer never takes a short body for a whole one.
 */
export function peerStream(open: () => Promise<PeerSource>, abort: () => boolean, sign: AnswerSigner): ReadableStream<Uint8Array> {
  let source: PeerSource | undefined;
  let position = 0;
  const hash = createHash('sha256');
  const release = () => source?.reader.release();
  return new ReadableStream<Uint8Array>(
    {
      async start(controller) {
        try {
          source = await open();
        } catch (error) {
          controller.enqueue(signedLine(sign, 'head', failureHead(error)));
          controller.close();
          return;
        }
        const { size, contentType, lastModified, fetchedAt } = source;
        controller.enqueue(signedLine(sign, 'head', { size, contentType, lastModified, fetchedAt }));
      },
      async pull(controller) {
        if (!source) return;
        try {
          if (position >= source.size) {
            release();
            controller.enqueue(signedLine(sign, 'trailer', { sha256: hash.digest('hex'), size: position }));
            controller.close();
            return;
          }
          const chunk = await source.reader.readAt(position, Math.min(CHUNK_BYTES, source.size - position));
          if (chunk === null || chunk.length === 0) throw new Error('recording ended early');
          position += chunk.length;
          hash.update(chunk);
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

/** A peer answer's line whose proof is missing or wrong: not the replica it should be, or not of this version. */
export class UnprovenPeerAnswerError extends Error {}

export type AnswerVerifier = (kind: PeerAnswerKind, content: string, proof: string) => boolean;

/**
 * Reads a peer stream: signed lines, each checked before it is parsed, and the
 * body bytes between them. `read` is one read of the connection (the caller
 * bounds it in time); it resolves done at the end of the stream.
 */
export class PeerStreamReader {
  #buffered: Buffer = Buffer.alloc(0);

  constructor(
    private readonly read: () => Promise<ReadableStreamReadResult<Uint8Array>>,
    private readonly verify: AnswerVerifier,
  ) {}

  /**
   * The next line, once its proof is checked.
   * @throws UnprovenPeerAnswerError on a missing or wrong proof; Error when the stream ends or breaks first
   */
  async signed<T extends PeerHead | PeerTrailer>(kind: PeerAnswerKind): Promise<T> {
    for (;;) {
      const end = this.#buffered.indexOf(NEWLINE);
      if (end !== -1) {
        const line = this.#buffered.subarray(0, end);
        this.#buffered = this.#buffered.subarray(end + 1);
        const gap = line.indexOf(SPACE);
        const proof = gap === -1 ? '' : line.subarray(0, gap).toString('latin1');
        const text = line.subarray(gap + 1).toString('utf8');
        if (gap === -1 || !this.verify(kind, text, proof))
          throw new UnprovenPeerAnswerError(`the peer's ${kind} line carries no valid proof`);
        return JSON.parse(text) as T;
      }
      if (this.#buffered.length > MAX_LINE_BYTES) throw new Error(`the peer sent no ${kind} line`);
      const { done, value } = await this.read();
      if (done) throw new Error(`the peer closed its answer before its ${kind} line`);
      this.#buffered = Buffer.concat([this.#buffered, value]);
    }
  }

  /** Up to `max` body bytes; null once the stream has ended. */
  async bytes(max: number): Promise<Buffer | null> {
    if (this.#buffered.length === 0) {
      const { done, value } = await this.read();
      if (done) return null;
      this.#buffered = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    }
    const piece = this.#buffered.subarray(0, max);
    this.#buffered = this.#buffered.subarray(piece.length);
    return piece;
  }
}
