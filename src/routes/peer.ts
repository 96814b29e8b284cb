import type { Context } from 'hono';
import { bearerToken } from '../auth/bearer.js';
import { constantTimeEqual } from '../auth/constant-time.js';
import { cacheKey } from '../cache/recording-meta.js';
import type { DownloadManager } from '../download/download-manager.js';
import { BadRequestError, NotFoundError, UnauthorizedError } from '../errors.js';
import { parseCallId } from '../recordings/call-id.js';
import type { RecordingService } from '../recordings/recording-service.js';
import type { GatewayEnv } from './gateway-env.js';
import { downloadRepresentation, storedRepresentation } from './recording-headers.js';
import { memoryResponse, type RecordingRequest, streamedResponse } from './recording-response.js';
import { connectionAborter } from './recordings.js';

export interface PeerRoutesDeps {
  peerSecret: string;
  /** This replica's volume id, sent with each answer. */
  volume: string;
  recordings: Pick<RecordingService, 'find' | 'purgeLocal'>;
  downloads: Pick<DownloadManager, 'peek'>;
  volumeHeader: string;
}

// Namespaces are hex digests of the upstream account (upstreamNamespace).
const NAMESPACE = /^[0-9a-f]{32}$/;
const WHOLE_BODY: RecordingRequest = {
  method: 'GET',
  range: undefined,
  ifRange: undefined,
  ifMatch: undefined,
  ifNoneMatch: undefined,
  ifModifiedSince: undefined,
  ifUnmodifiedSince: undefined,
};

function target(c: Context<GatewayEnv>): { namespace: string; callId: string } {
  const namespace = c.req.param('namespace') ?? '';
  if (!NAMESPACE.test(namespace)) throw new BadRequestError('Expected a namespace of 32 hex digits');
  return { namespace, callId: parseCallId(c.req.param('callId') ?? '') };
}

/**
 * The routes replicas call on each other (README, Cluster), and only they:
 * each needs the peer secret. One streams a recording this replica holds or is
 * downloading from upstream; the other drops a recording here (a purge
 * elsewhere). Neither ever asks the upstream.
 */
export function createPeerHandlers(deps: PeerRoutesDeps) {
  function authorize(c: Context<GatewayEnv>): void {
    const header = c.req.header('authorization');
    if (header === undefined) throw new UnauthorizedError('missing');
    const token = bearerToken(header);
    if (token === undefined || !constantTimeEqual(token, deps.peerSecret)) throw new UnauthorizedError('invalid');
  }

  return {
    /** GET /internal/v1/recordings/{namespace}/{callId}: the whole body, streamed as it lands here. */
    async recording(c: Context<GatewayEnv>): Promise<Response> {
      authorize(c);
      const { namespace, callId } = target(c);
      const extra = { 'Cache-Control': 'no-store', [deps.volumeHeader]: deps.volume };
      const found = await Promise.resolve(deps.recordings.find(namespace, callId)).catch((error: unknown) => {
        if (error instanceof NotFoundError) return undefined;
        throw error;
      });
      if (found) {
        const representation = storedRepresentation(found.entry);
        if (found.body) return memoryResponse(WHOLE_BODY, representation, found.body, extra);
        return streamedResponse(WHOLE_BODY, representation, found.entry.meta.size, found.reader, extra, connectionAborter(c));
      }
      // Only a download from the upstream itself: a replica streaming from another is no source.
      const download = deps.downloads.peek(cacheKey(namespace, callId));
      if (!download || download.origin !== 'upstream') throw new NotFoundError('No copy or download of this recording here');
      const release = download.acquire();
      let head: Awaited<typeof download.head>;
      try {
        head = await download.head;
      } catch {
        release();
        throw new NotFoundError('No copy or download of this recording here');
      }
      const reader = { readAt: (offset: number, maxBytes: number) => download.readAt(offset, maxBytes), release };
      // A download that breaks cuts the connection, so the peer never takes a short body for a whole one.
      return streamedResponse(WHOLE_BODY, downloadRepresentation(callId, head), head.size, reader, extra, connectionAborter(c));
    },

    /** POST /internal/v1/purge/{namespace}/{callId}: 204 once it is gone from this replica. */
    async purge(c: Context<GatewayEnv>): Promise<Response> {
      authorize(c);
      const { namespace, callId } = target(c);
      await deps.recordings.purgeLocal(namespace, callId);
      return new Response(null, { status: 204 });
    },
  };
}
