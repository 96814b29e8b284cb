import { setTimeout as sleep } from 'node:timers/promises';
import { cacheKey } from '../cache/recording-meta.js';
import type { DownloadOwner, RecordingSource } from '../download/download-manager.js';
import type { SourcedRecording } from '../download/recording-download.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import { recordingTooLarge } from '../upstream/errors.js';
import type { ClusterDirectory } from './cluster-directory.js';
import type { DownloadLeases } from './download-lease.js';
import { FailedPeers } from './failed-peers.js';
import type { Membership, Peer } from './membership.js';
import { type PeerClient, PeerMissError, PeerRejectedError, PeerUnreachableError } from './peer-client.js';

type DirectoryLookup = Awaited<ReturnType<ClusterDirectory['lookup']>>;

export interface ClusterSourceOptions {
  directory: ClusterDirectory;
  leases: DownloadLeases;
  membership: Pick<Membership, 'peers' | 'beat'>;
  peers: PeerClient;
  nodeId: string;
  volume: string;
  /** Where the other replicas reach this one; undefined until the server listens. */
  advertiseUrl: () => string | undefined;
  /** The upstream itself. */
  upstream: RecordingSource;
  /**
   * This replica's cache.max_recording_bytes. Another replica's download or
   * copy of a larger recording (its limit may be higher) is refused with the
   * upstream's 502, so that nothing over it is served or stored here,
   * whichever replica fetched the recording first.
   */
  maxRecordingBytes: number;
  logger: Logger;
  onPeerFetch?: (origin: 'peer-download' | 'peer-copy') => void;
  /** Times the memory of peers whose answer failed; default the system clock. */
  clock?: Clock;
}

// Rounds of "ask the holder, else take over" before downloading anyway: one
// extra upstream download is better than a failed answer.
const MAX_ROUNDS = 4;
const RETRY_DELAY_MS = 15;
// A copy on a volume nobody serves (its replica gone) asks for a heartbeat at most this often.
const EXTRA_BEAT_GAP_MS = 1_000;
// A peer whose answer for a recording failed its proof or broke off is passed
// over for that recording this long (by then this replica has stored its own
// copy, unless it could not), for at most this many recordings at once.
export const FAILED_PEER_TTL_MS = 10 * 60_000;
const FAILED_PEER_MAX_ENTRIES = 10_000;

/**
 * Where a replica gets a recording it does not hold, so that the cluster
 * downloads each recording once: a copy on another volume, through the replica
 * serving that volume; else the download under way on the replica holding the
 * recording's lease; else, holding the lease itself, the upstream. A holder
 * that does not answer is taken to be dead and its lease taken over. While
 * Redis is out, the upstream, directly. A peer whose answer for a recording
 * failed its proof or broke off is passed over for that recording for a
 * while (a holder's lease is taken over), so the next attempt goes to the
 * next source instead of meeting the same failure again.
 */
export function clusterSource(options: ClusterSourceOptions): RecordingSource {
  const { directory, leases, membership, peers, logger } = options;

  // Peers whose answer for a recording failed its proof or broke off: passed
  // over for that recording for a while, here only. The fault may be on the
  // path between the replicas, not in the holder's copy, so the cluster's
  // listing (and the holder's files) stay as they are.
  const failedPeers = new FailedPeers({
    ttlMs: FAILED_PEER_TTL_MS,
    maxEntries: FAILED_PEER_MAX_ENTRIES,
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const passOver = (key: string, url: string, error: unknown) => {
    if (failedPeers.failed(key, url)) return;
    failedPeers.remember(key, url);
    logger.warn(
      { key, peer: url, problem: error instanceof Error ? error.message : String(error) },
      "cluster: a replica's answer for a recording failed its proof or broke off; that replica is passed over for it, the next source asked",
    );
  };

  async function fromPeer(
    url: string,
    origin: 'peer-download' | 'peer-copy',
    owner: DownloadOwner,
    callId: string,
    generation: number,
    signal: AbortSignal | undefined,
  ): Promise<SourcedRecording> {
    const recording = await peers.openRecording(url, owner.namespace, callId, signal);
    if (recording.contentLength !== undefined && recording.contentLength > options.maxRecordingBytes) {
      recording.cancel();
      throw recordingTooLarge();
    }
    options.onPeerFetch?.(origin);
    const key = cacheKey(owner.namespace, callId);
    const { chunks } = recording;
    return {
      ...recording,
      // A body that fails its proof or breaks off is no answer: the next
      // attempt (this download's, if no caller has a byte of it yet, else the
      // next request's) goes to the next source instead of this peer again.
      async *chunks() {
        try {
          yield* chunks.call(recording);
        } catch (error) {
          if (!signal?.aborted) passOver(key, url, error);
          throw error;
        }
      },
      origin,
      // Streamed from a replica on our own volume: that replica stores the file, this one must not.
      persist: recording.volume !== options.volume,
      generation,
    };
  }

  // Said once per peer: a replica with another peer secret is a configuration error, not an outage.
  const rejectedBy = new Set<string>();
  const rejected = (node: string) => {
    if (rejectedBy.has(node)) return;
    rejectedBy.add(node);
    logger.error({ peer: node }, 'cluster: a replica refused our peer secret; every replica needs the same cluster peer secret');
  };

  let extraBeat: Promise<void> | undefined;
  let extraBeatAt = Number.NEGATIVE_INFINITY;

  /**
   * The live replicas serving `volume`. When none is known, after one
   * heartbeat more: a replica started after this one is seen only at the
   * next beat, and may be the one that just stored the copy.
   */
  async function servingReplicas(volume: string): Promise<Peer[]> {
    const serving = () => membership.peers.filter((candidate) => candidate.volume === volume);
    const known = serving();
    if (known.length > 0) return known;
    if (!extraBeat && Date.now() - extraBeatAt >= EXTRA_BEAT_GAP_MS) {
      extraBeatAt = Date.now();
      extraBeat = membership.beat().finally(() => {
        extraBeat = undefined;
      });
    }
    await extraBeat;
    return serving();
  }

  /**
   * A stored copy, through a replica serving its volume; undefined when no
   * replica gives one. Every replica serving a volume is asked in turn: one
   * that died a moment ago is still listed until its beats are missed. A copy
   * on this replica's own volume is left out unless `ownVolume`: the local
   * lookup before the miss would have found it.
   */
  async function fromCopy(
    lookup: DirectoryLookup,
    ownVolume: boolean,
    owner: DownloadOwner,
    callId: string,
    signal: AbortSignal | undefined,
  ): Promise<SourcedRecording | undefined> {
    const key = cacheKey(owner.namespace, callId);
    for (const copy of lookup.copies) {
      if (copy.volume === options.volume && !ownVolume) continue;
      for (const peer of await servingReplicas(copy.volume)) {
        if (failedPeers.failed(key, peer.url)) continue;
        const copyOf = {
          sha256: copy.meta.sha256,
          withdraw: () => {
            logger.warn(
              { key, volume: copy.volume },
              'cluster: a stored copy does not match its sha256; no longer listed (run cache verify on that volume)',
            );
            failedPeers.remember(key, peer.url);
            void directory.remove(copy.volume, key, false).catch(() => {});
          },
        };
        try {
          return { ...(await fromPeer(peer.url, 'peer-copy', owner, callId, lookup.generation, signal)), copyOf };
        } catch (error) {
          if (error instanceof PeerRejectedError) rejected(peer.node);
          else if (!(error instanceof PeerMissError || error instanceof PeerUnreachableError)) throw error;
        }
      }
    }
    return undefined;
  }

  return async (owner, callId, signal, goingUpstream) => {
    const key = cacheKey(owner.namespace, callId);
    const advertised = options.advertiseUrl();
    for (let round = 0; round < MAX_ROUNDS && advertised !== undefined; round++) {
      let lookup: DirectoryLookup;
      try {
        lookup = await directory.lookup(key);
      } catch {
        break;
      }
      const copied = await fromCopy(lookup, false, owner, callId, signal);
      if (copied) return copied;
      let attempt: Awaited<ReturnType<DownloadLeases['acquire']>>;
      try {
        attempt = await leases.acquire(key, advertised);
      } catch {
        break;
      }
      if (attempt.acquired) {
        const { lease, generation } = attempt;
        // The lease's holder is where the others come for the recording from now on.
        goingUpstream?.();
        let recording: SourcedRecording;
        try {
          // The replica that held the lease may have stored its copy and let
          // the lease go between our lookup and our acquire: look once more
          // rather than download the recording a second time.
          const meanwhile = await directory.lookup(key).catch(() => undefined);
          const copied = meanwhile && (await fromCopy(meanwhile, true, owner, callId, signal));
          if (copied) {
            lease.release();
            return copied;
          }
          recording = await options.upstream(owner, callId, signal);
        } catch (error) {
          lease.release();
          throw error;
        }
        return { ...recording, origin: 'upstream', generation, settle: () => lease.release() };
      }
      const { holder, generation } = attempt;
      if (holder.node !== options.nodeId && failedPeers.failed(key, holder.url)) {
        // Its stream of this recording reached us failing its proof or cut: download it ourselves.
        logger.warn({ key, holder: holder.node }, 'cluster: the stream of the replica downloading a recording failed here; taking over');
      } else if (holder.node !== options.nodeId) {
        try {
          return await fromPeer(holder.url, 'peer-download', owner, callId, generation, signal);
        } catch (error) {
          if (error instanceof PeerMissError) {
            // It finished (its copy is listed now) or failed: look again.
            await sleep(RETRY_DELAY_MS * (round + 1));
            continue;
          }
          if (error instanceof PeerRejectedError) {
            rejected(holder.node);
            break;
          }
          if (!(error instanceof PeerUnreachableError)) throw error;
          logger.warn({ key, holder: holder.node }, 'cluster: the replica downloading a recording does not answer; taking over');
        }
      }
      // A holder that is gone, or this replica's own lease from before a restart.
      await leases.takeOver(key, holder).catch(() => {});
    }
    // Redis out, or no agreement reached: download it ourselves.
    goingUpstream?.();
    const recording = await options.upstream(owner, callId, signal);
    return { ...recording, origin: 'upstream' };
  };
}
