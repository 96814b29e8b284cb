import { createHash } from 'node:crypto';
import { BadGatewayError, NotFoundError } from '../errors.js';
import type { Logger } from '../logger.js';
import { PEER_PROOF_HEADER, type PeerAnswerKind, peerAnswerValid, signPeerRequest } from './peer-auth.js';
import { type PeerHead, PeerStreamReader, type PeerTrailer, UnprovenPeerAnswerError, peerFailure } from './peer-stream.js';
import { RetryableUpstreamError } from '../upstream/errors.js';
import type { UpstreamRecording } from '../upstream/flyflow-client.js';

/** The internal routes replicas call on each other; each needs a request signed with the peer secret. */
export const PEER_RECORDING_PATH = '/internal/v1/recordings';
export const PEER_PURGE_PATH = '/internal/v1/purge';
export const PEER_REDIS_PATH = '/internal/v1/redis';
/** The volume a peer's answer comes from, so a replica on the same volume does not store it twice. */
export const PEER_VOLUME_HEADER = 'X-Recording-Volume';

/** A recording streamed from another replica. */
export interface PeerRecording extends UpstreamRecording {
  volume: string | undefined;
  /** When the peer's stored copy was fetched from the upstream; absent when it streams a download under way. */
  fetchedAt?: number | undefined;
}

/** The peer neither downloads nor holds the recording (any more). */
export class PeerMissError extends Error {}
/** The peer did not answer at all: it is gone, or out of reach. */
export class PeerUnreachableError extends Error {}
/** What answered carried no valid proof of the peer secret: treated as no answer, as it is not the replica it claims to be. */
export class PeerUnprovenError extends PeerUnreachableError {}
/**
 * A peer's body that its trailer does not prove (no valid proof, or another
 * sha256 or size than what arrived): never whole, never stored. Retryable, as
 * a body cut short is: a download no caller has a byte of yet is fetched
 * again at once, from the next source (the cluster passes this peer over).
 */
export class PeerBodyUnprovenError extends RetryableUpstreamError {}
/** The peer answered 401: the replicas do not share one peer secret. */
export class PeerRejectedError extends Error {}

export interface PeerClientOptions {
  peerSecret: string;
  /** This replica's node id, signed into each request. */
  nodeId: string;
  /** Told once per peer address whose answer carried no valid proof. */
  logger: Pick<Logger, 'warn'>;
  /** Longest wait for a peer's response head, which a live peer sends at once. */
  headTimeoutMs: number;
  /** Longest wait for a peer to confirm a purge. */
  purgeTimeoutMs: number;
  /** Longest silence while a peer's body streams. */
  bodyIdleTimeoutMs: number;
}

export function peerRecordingUrl(base: string, namespace: string, callId: string): string {
  return `${base}${PEER_RECORDING_PATH}/${encodeURIComponent(namespace)}/${callId}`;
}

/** Calls the other replicas' internal routes. */
export class PeerClient {
  readonly #unprovenWarned = new Set<string>();

  constructor(private readonly options: PeerClientOptions) {}

  /** A signed request: the `Authorization` header, and a check of the proofs its answers must carry. */
  #sign(
    method: string,
    url: string,
  ): { authorization: string; proven: (kind: PeerAnswerKind, content: string, proof: string | null) => boolean } {
    const { peerSecret, nodeId } = this.options;
    const { authorization, nonce } = signPeerRequest(peerSecret, { method, path: new URL(url).pathname, node: nodeId });
    return { authorization, proven: (kind, content, proof) => peerAnswerValid(peerSecret, nonce, kind, content, proof) };
  }

  /** Said once per address: an impostor on a dead replica's port, or a replica of an older version. */
  #unproven(base: string, error: Error): UnprovenPeerAnswerError {
    if (!this.#unprovenWarned.has(base)) {
      this.#unprovenWarned.add(base);
      this.options.logger.warn(
        { peer: base, problem: error.message },
        'cluster: an answer at a peer address carried no valid proof of the peer secret; treated as no answer (another process on its port, or a replica of an older version)',
      );
    }
    return error instanceof UnprovenPeerAnswerError ? error : new UnprovenPeerAnswerError(error.message);
  }

  /**
   * Opens another replica's copy or download of a recording, streaming as it
   * lands there. The peer's response head must come within the head timeout
   * (it is sent at once); the recording's head may take as long as the peer's
   * own download does (bounded by `signal`). Nothing of the answer is used
   * before its head line's proof is checked, and its last bytes wait for the
   * trailer's proof of the whole body's sha256 (a body it does not prove
   * fails with PeerBodyUnprovenError, one cut short with another
   * RetryableUpstreamError).
   * @throws PeerMissError (it has none), PeerRejectedError (our secret is not
   *   its secret), PeerUnreachableError (no answer, or PeerUnprovenError: no
   *   valid proof), NotFoundError (Flyflow said 404 to it), a 502, 503 or 504
   *   GatewayError (its download from Flyflow failed so)
   */
  async openRecording(base: string, namespace: string, callId: string, signal?: AbortSignal): Promise<PeerRecording> {
    const url = peerRecordingUrl(base, namespace, callId);
    const { authorization, proven } = this.#sign('GET', url);
    const abort = new AbortController();
    const onAbort = () => abort.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const headTimer = setTimeout(() => abort.abort(), this.options.headTimeoutMs);
    let response: Response;
    try {
      response = await fetch(url, { headers: { authorization }, signal: abort.signal });
    } catch (error) {
      signal?.removeEventListener('abort', onAbort);
      throw new PeerUnreachableError(`peer ${base} did not answer`, { cause: error });
    } finally {
      clearTimeout(headTimer);
    }
    const stop = () => {
      signal?.removeEventListener('abort', onAbort);
      abort.abort();
    };
    if (response.status !== 200 || !response.body) {
      stop();
      await response.body?.cancel().catch(() => {});
      if (response.status === 404) throw new PeerMissError(`peer ${base} has no copy or download`);
      if (response.status === 401) throw new PeerRejectedError(`peer ${base} refused our peer secret`);
      throw new PeerUnreachableError(`peer ${base} answered ${response.status}`);
    }
    const reader = response.body.getReader();
    const idleMs = this.options.bodyIdleTimeoutMs;
    // The head may wait as long as the holder's own download; body reads are bounded by the idle timeout.
    let inBody = false;
    const stream = new PeerStreamReader(() => (inBody ? readWithin(reader, idleMs) : reader.read()), proven);
    let head: PeerHead;
    try {
      head = await stream.signed<PeerHead>('head');
    } catch (error) {
      stop();
      if (error instanceof UnprovenPeerAnswerError) throw new PeerUnprovenError(this.#unproven(base, error).message);
      throw new PeerUnreachableError(`peer ${base} broke off before the recording's head`, { cause: error });
    }
    if ('error' in head) {
      stop();
      if (head.error === 'not_found') throw new NotFoundError();
      // Its download failed: the same answer here, rather than another attempt at the upstream.
      if (head.error === 'failed') throw peerFailure(head);
      throw new PeerMissError(`peer ${base} could not download it`);
    }
    inBody = true;
    const size = head.size;
    const unproven = (error: Error) => this.#unproven(base, error);
    return {
      contentType: head.contentType,
      contentLength: size,
      lastModified: head.lastModified,
      ...(typeof head.fetchedAt === 'number' && Number.isFinite(head.fetchedAt) ? { fetchedAt: head.fetchedAt } : {}),
      volume: response.headers.get(PEER_VOLUME_HEADER) ?? undefined,
      async *chunks() {
        const hash = createHash('sha256');
        let received = 0;
        try {
          for (;;) {
            const piece = await stream.bytes(size - received).catch(brokeOff);
            if (piece === null) throw new RetryableUpstreamError('A peer ended the recording before its size');
            hash.update(piece);
            received += piece.length;
            if (received < size) {
              yield piece;
              continue;
            }
            // The last bytes wait for the holder's proof of the whole body: a body it did not send is never whole, nor stored.
            const trailer = await stream.signed<PeerTrailer>('trailer').catch((error: unknown) => {
              if (error instanceof UnprovenPeerAnswerError) throw new PeerBodyUnprovenError(unproven(error).message);
              return brokeOff(error);
            });
            if (trailer.size !== size || trailer.sha256 !== hash.digest('hex')) {
              throw new PeerBodyUnprovenError(unproven(new UnprovenPeerAnswerError("the peer's body does not match its trailer")).message);
            }
            yield piece;
            return;
          }
        } finally {
          stop();
          try {
            reader.releaseLock();
          } catch {
            // a read still pending: the abort above ends it
          }
        }
      },
      cancel() {
        stop();
        void reader.cancel().catch(() => {});
      },
    };
  }

  /**
   * Whether a peer reaches the cluster's Redis now.
   * @throws when it did not answer within the head timeout, or not as a replica would (no valid proof)
   */
  async redisUp(base: string): Promise<boolean> {
    const url = `${base}${PEER_REDIS_PATH}`;
    const { authorization, proven } = this.#sign('GET', url);
    const response = await fetch(url, { headers: { authorization }, signal: AbortSignal.timeout(this.options.headTimeoutMs) });
    if (response.status !== 200) {
      await response.body?.cancel().catch(() => {});
      throw new BadGatewayError(`peer ${base} answered ${response.status} when asked about redis`);
    }
    const body = (await response.json()) as { redis?: unknown };
    const value = String(body.redis);
    if (!proven('redis', value, response.headers.get(PEER_PROOF_HEADER))) {
      throw this.#unproven(base, new UnprovenPeerAnswerError(`peer ${base}'s redis answer carries no valid proof`));
    }
    return value === 'up';
  }

  /** Asks a peer to drop a recording from its tiers and its volume now. @throws when it did not confirm (with a valid proof) */
  async purge(base: string, namespace: string, callId: string): Promise<void> {
    const url = `${base}${PEER_PURGE_PATH}/${encodeURIComponent(namespace)}/${callId}`;
    const { authorization, proven } = this.#sign('POST', url);
    const response = await fetch(url, {
      method: 'POST',
      headers: { authorization },
      signal: AbortSignal.timeout(this.options.purgeTimeoutMs),
    });
    await response.body?.cancel().catch(() => {});
    if (response.status !== 204) throw new BadGatewayError(`peer ${base} answered ${response.status} to a purge`);
    if (!proven('purge', String(response.status), response.headers.get(PEER_PROOF_HEADER))) {
      throw this.#unproven(base, new UnprovenPeerAnswerError(`peer ${base}'s purge confirmation carries no valid proof`));
    }
  }
}

/** A broken connection mid-body: nobody may take this as a whole body, and it may be fetched again. */
function brokeOff(error: unknown): never {
  if (error instanceof RetryableUpstreamError) throw error;
  throw new RetryableUpstreamError('A peer broke off the recording', { cause: error });
}

/** One read of a peer's body, failing after `idleMs` of silence. */
async function readWithin(reader: ReadableStreamDefaultReader<Uint8Array>, idleMs: number): Promise<ReadableStreamReadResult<Uint8Array>> {
  let idle: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    idle = setTimeout(() => reject(new RetryableUpstreamError('A peer stopped sending the recording')), idleMs);
  });
  try {
    return await Promise.race([reader.read(), stalled]);
  } finally {
    clearTimeout(idle);
  }
}
