import { BadGatewayError, NotFoundError } from '../errors.js';
import { peerFailure, readPeerHead } from './peer-stream.js';
import { RetryableUpstreamError } from '../upstream/errors.js';
import type { UpstreamRecording } from '../upstream/flyflow-client.js';

/** The internal routes replicas call on each other; each needs the peer secret. */
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
/** The peer answered 401: the replicas do not share one peer secret. */
export class PeerRejectedError extends Error {}

export interface PeerClientOptions {
  peerSecret: string;
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
  constructor(private readonly options: PeerClientOptions) {}

  /**
   * Opens another replica's copy or download of a recording, streaming as it
   * lands there. The peer's response head must come within the head timeout
   * (it is sent at once); the recording's head may take as long as the peer's
   * own download does (bounded by `signal`).
   * @throws PeerMissError (it has none), PeerRejectedError (our secret is not
   *   its secret), PeerUnreachableError (no answer), NotFoundError (Flyflow said 404 to it),
   *   a 502, 503 or 504 GatewayError (its download from Flyflow failed so)
   */
  async openRecording(base: string, namespace: string, callId: string, signal?: AbortSignal): Promise<PeerRecording> {
    const abort = new AbortController();
    const onAbort = () => abort.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const headTimer = setTimeout(() => abort.abort(), this.options.headTimeoutMs);
    let response: Response;
    try {
      response = await fetch(peerRecordingUrl(base, namespace, callId), {
        headers: { authorization: `Bearer ${this.options.peerSecret}` },
        signal: abort.signal,
      });
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
    let first: Awaited<ReturnType<typeof readPeerHead>>;
    try {
      first = await readPeerHead(reader);
    } catch (error) {
      stop();
      throw new PeerUnreachableError(`peer ${base} broke off before the recording's head`, { cause: error });
    }
    const { head, rest } = first;
    if ('error' in head) {
      stop();
      if (head.error === 'not_found') throw new NotFoundError();
      // Its download failed: the same answer here, rather than another attempt at the upstream.
      if (head.error === 'failed') throw peerFailure(head);
      throw new PeerMissError(`peer ${base} could not download it`);
    }
    const idleMs = this.options.bodyIdleTimeoutMs;
    return {
      contentType: head.contentType,
      contentLength: head.size,
      lastModified: head.lastModified,
      ...(typeof head.fetchedAt === 'number' && Number.isFinite(head.fetchedAt) ? { fetchedAt: head.fetchedAt } : {}),
      volume: response.headers.get(PEER_VOLUME_HEADER) ?? undefined,
      async *chunks() {
        try {
          if (rest.length > 0) yield rest;
          for (;;) {
            let idle: NodeJS.Timeout | undefined;
            const stalled = new Promise<never>((_, reject) => {
              idle = setTimeout(() => reject(new RetryableUpstreamError('A peer stopped sending the recording')), idleMs);
            });
            let read: ReadableStreamReadResult<Uint8Array>;
            try {
              read = await Promise.race([reader.read(), stalled]);
            } catch (error) {
              if (error instanceof RetryableUpstreamError) throw error;
              // The peer's connection broke (it died mid-download): nobody may take this as a whole body.
              throw new RetryableUpstreamError('A peer broke off the recording', { cause: error });
            } finally {
              clearTimeout(idle);
            }
            if (read.done) return;
            yield read.value;
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
   * @throws when it did not answer within the head timeout, or not as a replica would
   */
  async redisUp(base: string): Promise<boolean> {
    const response = await fetch(`${base}${PEER_REDIS_PATH}`, {
      headers: { authorization: `Bearer ${this.options.peerSecret}` },
      signal: AbortSignal.timeout(this.options.headTimeoutMs),
    });
    if (response.status !== 200) {
      await response.body?.cancel().catch(() => {});
      throw new BadGatewayError(`peer ${base} answered ${response.status} when asked about redis`);
    }
    const body = (await response.json()) as { redis?: unknown };
    return body.redis === 'up';
  }

  /** Asks a peer to drop a recording from its tiers and its volume now. @throws when it did not confirm */
  async purge(base: string, namespace: string, callId: string): Promise<void> {
    const response = await fetch(`${base}${PEER_PURGE_PATH}/${encodeURIComponent(namespace)}/${callId}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.options.peerSecret}` },
      signal: AbortSignal.timeout(this.options.purgeTimeoutMs),
    });
    await response.body?.cancel().catch(() => {});
    if (response.status !== 204) throw new BadGatewayError(`peer ${base} answered ${response.status} to a purge`);
  }
}
