import { BadGatewayError } from '../errors.js';
import { RetryableUpstreamError } from '../upstream/errors.js';
import type { UpstreamRecording } from '../upstream/flyflow-client.js';

/** The internal routes replicas call on each other; each needs the peer secret. */
export const PEER_RECORDING_PATH = '/internal/v1/recordings';
export const PEER_PURGE_PATH = '/internal/v1/purge';
/** The volume a peer's answer comes from, so a replica on the same volume does not store it twice. */
export const PEER_VOLUME_HEADER = 'X-Recording-Volume';

/** A recording streamed from another replica. */
export interface PeerRecording extends UpstreamRecording {
  volume: string | undefined;
}

/** The peer neither downloads nor holds the recording (any more). */
export class PeerMissError extends Error {}
/** The peer did not answer at all: it is gone, or out of reach. */
export class PeerUnreachableError extends Error {}

export interface PeerClientOptions {
  peerSecret: string;
  /** Longest wait for a peer's head. */
  headTimeoutMs: number;
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
   * Opens another replica's copy or download of a recording, streaming as it lands there.
   * @throws PeerMissError (it has none), PeerUnreachableError (no answer)
   */
  async openRecording(base: string, namespace: string, callId: string, signal?: AbortSignal): Promise<PeerRecording> {
    const abort = new AbortController();
    const headTimer = setTimeout(() => abort.abort(), this.options.headTimeoutMs);
    const onAbort = () => abort.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    let response: Response;
    try {
      response = await fetch(peerRecordingUrl(base, namespace, callId), {
        headers: { authorization: `Bearer ${this.options.peerSecret}` },
        signal: abort.signal,
      });
    } catch (error) {
      throw new PeerUnreachableError(`peer ${base} did not answer`, { cause: error });
    } finally {
      clearTimeout(headTimer);
      signal?.removeEventListener('abort', onAbort);
    }
    if (response.status !== 200 || !response.body) {
      await response.body?.cancel().catch(() => {});
      if (response.status === 404) throw new PeerMissError(`peer ${base} has no copy or download`);
      throw new PeerUnreachableError(`peer ${base} answered ${response.status}`);
    }
    const lengthHeader = response.headers.get('content-length');
    const body = response.body;
    const idleMs = this.options.bodyIdleTimeoutMs;
    return {
      contentType: response.headers.get('content-type') ?? 'audio/mpeg',
      contentLength: lengthHeader === null ? undefined : Number(lengthHeader),
      lastModified: response.headers.get('last-modified') ?? undefined,
      volume: response.headers.get(PEER_VOLUME_HEADER) ?? undefined,
      async *chunks() {
        const reader = body.getReader();
        try {
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
          reader.releaseLock();
          abort.abort();
        }
      },
      cancel() {
        abort.abort();
        void body.cancel().catch(() => {});
      },
    };
  }

  /** Asks a peer to drop a recording from its tiers and its volume now. @throws when it did not confirm */
  async purge(base: string, namespace: string, callId: string): Promise<void> {
    const response = await fetch(`${base}${PEER_PURGE_PATH}/${encodeURIComponent(namespace)}/${callId}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.options.peerSecret}` },
      signal: AbortSignal.timeout(this.options.headTimeoutMs),
    });
    await response.body?.cancel().catch(() => {});
    if (response.status !== 204) throw new BadGatewayError(`peer ${base} answered ${response.status} to a purge`);
  }
}
