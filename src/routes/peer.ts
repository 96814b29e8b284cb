import type { Context } from 'hono';
import { cacheKey } from '../cache/recording-meta.js';
import type { DownloadManager } from '../download/download-manager.js';
import { BadRequestError, type CredentialProblem, NotFoundError, UnauthorizedError } from '../errors.js';
import { parseCallId } from '../recordings/call-id.js';
import type { RecordingService } from '../recordings/recording-service.js';
import type { GatewayEnv } from './gateway-env.js';
import type { PeerNonces } from '../cluster/peer-nonces.js';
import { PEER_STREAM_TYPE, type PeerSource, peerStream } from '../cluster/peer-stream.js';
import {
  type AnswerSigner,
  PEER_AUTH_SCHEME,
  PEER_CLOCK_SKEW_SECONDS,
  PEER_PROOF_HEADER,
  answerSigner,
  checkPeerRequest,
} from '../cluster/peer-auth.js';

export interface PeerRoutesDeps {
  peerSecret: string;
  /** This replica's volume id, sent with each answer. */
  volume: string;
  recordings: Pick<RecordingService, 'find' | 'purgeLocal'>;
  downloads: Pick<DownloadManager, 'peek'>;
  volumeHeader: string;
  /** Whether this replica reaches the cluster's Redis now. */
  redisUp: () => boolean;
  /** Refuses a request whose nonce was used before: a replay of one captured on the wire. */
  nonces: Pick<PeerNonces, 'claim'>;
}

const PEER_CREDENTIALS_MISSING = `Missing credentials: this route is for the other replicas of a cluster (Authorization: ${PEER_AUTH_SCHEME} v1 ..., signed with the peer secret)`;
const PEER_CREDENTIALS_EXPIRED = `The request was signed more than ${PEER_CLOCK_SKEW_SECONDS} s from this replica's time: check the replicas' clocks`;
const PEER_NONCE_USED = "The request's nonce was already used: each peer request is signed afresh";

// A download still choosing its source: how long to wait for it to take the lease and go upstream.
const CHOOSING_WAIT_MS = 1_000;

// Namespaces are hex digests of the upstream account (upstreamNamespace).
const NAMESPACE = /^[0-9a-f]{32}$/;

function target(c: Context<GatewayEnv>): { namespace: string; callId: string } {
  const namespace = c.req.param('namespace') ?? '';
  if (!NAMESPACE.test(namespace)) throw new BadRequestError('Expected a namespace of 32 hex digits');
  return { namespace, callId: parseCallId(c.req.param('callId') ?? '') };
}

/** A peer route's 401, its challenge naming the scheme these routes take (RFC 9110 11.6.1). */
function peerRefusal(problem: CredentialProblem, message?: string): UnauthorizedError {
  return new UnauthorizedError(problem, message, PEER_AUTH_SCHEME);
}

/**
 * The routes replicas call on each other (README, Cluster), and only they:
 * each needs a request signed with the peer secret, and signs its answer. One streams a recording this replica holds or is
 * downloading from upstream; the other drops a recording here (a purge
 * elsewhere). Neither ever asks the upstream.
 */
export function createPeerHandlers(deps: PeerRoutesDeps) {
  /** Checks the request's signature and that its nonce is new; resolves with the signer of its answers. */
  async function authorize(c: Context<GatewayEnv>): Promise<AnswerSigner> {
    const checked = checkPeerRequest(deps.peerSecret, c.req.header('authorization'), {
      method: c.req.method,
      path: new URL(c.req.url).pathname,
    });
    if (checked.ok) {
      if (!(await deps.nonces.claim(checked.node, checked.nonce))) throw peerRefusal('invalid', PEER_NONCE_USED);
      return answerSigner(deps.peerSecret, checked.nonce);
    }
    if (checked.problem === 'missing') throw peerRefusal('missing', PEER_CREDENTIALS_MISSING);
    throw peerRefusal(checked.problem, checked.problem === 'expired' ? PEER_CREDENTIALS_EXPIRED : undefined);
  }

  return {
    /**
     * GET /internal/v1/recordings/{namespace}/{callId}: a stored copy, or the
     * download under way from Flyflow, streamed as it lands here (see peer-stream.ts).
     */
    async recording(c: Context<GatewayEnv>): Promise<Response> {
      const sign = await authorize(c);
      const { namespace, callId } = target(c);
      const found = await Promise.resolve(deps.recordings.find(namespace, callId)).catch((error: unknown) => {
        if (error instanceof NotFoundError) return undefined;
        throw error;
      });
      // Only a download from the upstream itself: a replica streaming from another is no source.
      const download = found ? undefined : deps.downloads.peek(cacheKey(namespace, callId));
      if (!found && (await download?.originWithin(CHOOSING_WAIT_MS)) !== 'upstream') {
        throw new NotFoundError('No copy or download of this recording here');
      }
      const open = async (): Promise<PeerSource> => {
        if (found) {
          const { meta } = found.entry;
          const body = found.body;
          const reader = body
            ? { readAt: async (offset: number, max: number) => body.subarray(offset, offset + max), release() {} }
            : found.reader;
          return { size: meta.size, contentType: meta.contentType, lastModified: meta.lastModified, fetchedAt: meta.fetchedAt, reader };
        }
        const release = download!.acquire();
        try {
          const head = await download!.head;
          return { ...head, reader: { readAt: (offset, max) => download!.readAt(offset, max), release } };
        } catch (error) {
          release();
          throw error;
        }
      };
      return new Response(
        peerStream(
          open,
          () => {
            const outgoing = c.env?.outgoing;
            outgoing?.destroy();
            return outgoing !== undefined;
          },
          sign,
        ),
        {
          status: 200,
          headers: { 'Content-Type': PEER_STREAM_TYPE, 'Cache-Control': 'no-store', [deps.volumeHeader]: deps.volume },
        },
      );
    },

    /** POST /internal/v1/purge/{namespace}/{callId}: 204 once it is gone from this replica. */
    async purge(c: Context<GatewayEnv>): Promise<Response> {
      const sign = await authorize(c);
      const { namespace, callId } = target(c);
      await deps.recordings.purgeLocal(namespace, callId);
      return new Response(null, { status: 204, headers: { [PEER_PROOF_HEADER]: sign('purge', '204') } });
    },

    /**
     * GET /internal/v1/redis: whether this replica reaches Redis. A replica
     * that lost its own link asks, to tell that from an outage for everyone.
     */
    async redis(c: Context<GatewayEnv>): Promise<Response> {
      const sign = await authorize(c);
      const redis = deps.redisUp() ? 'up' : 'unreachable';
      return Response.json({ redis }, { headers: { 'Cache-Control': 'no-store', [PEER_PROOF_HEADER]: sign('redis', redis) } });
    },
  };
}
