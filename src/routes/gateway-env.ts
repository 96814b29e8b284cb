import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AdminPurgeAudit, MintedUrl } from '../audit/audit-event.js';
import type { Caller } from '../auth/authenticate.js';
import type { ServedTier } from '../metrics/gateway-metrics.js';
import type { RateLimitHeaders } from '../rate-limit/index.js';
import type { ResponseOutcome } from './recording-response.js';

/** What handlers leave on the Hono context for the error handler and the request log. */
export interface GatewayEnv {
  /** Set by @hono/node-server; absent under app.request(). */
  Bindings: { incoming?: IncomingMessage; outgoing?: ServerResponse };
  Variables: {
    caller: Caller | undefined;
    callId: string | undefined;
    requestId: string;
    /** The tenant's RateLimit-* headers once its request was counted: an error answered after that carries them too. */
    rateLimits: RateLimitHeaders | undefined;
    /** Milliseconds this request waited for the upstream's head, when it did. */
    upstreamMs: number | undefined;
    /**
     * Set by a handler that built its answer with X-Request-Id and knows its
     * cache result and body size, so the request log never has to read the
     * answer's headers (which would cost @hono/node-server its fast path).
     * `tier`, where the audio came from, only for audio: its bytes feed
     * recording_gateway_served_bytes_total.
     */
    answered: { cache: 'hit' | 'miss' | 'collapsed'; tier?: ServedTier; outcome: ResponseOutcome } | undefined;
    /** Set by the admin purge route once the caller is authorized: what its audit line names. */
    adminPurge: AdminPurgeAudit | undefined;
    /** Set by the signed-URL route once it signed the URL: what its audit line says was minted. */
    minted: MintedUrl | undefined;
  };
}
