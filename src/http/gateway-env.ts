import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Caller } from '../auth/authenticate.js';

/** What handlers leave on the Hono context for the error handler and the request log. */
export interface GatewayEnv {
  /** Set by @hono/node-server; absent under app.request(). */
  Bindings: { incoming?: IncomingMessage; outgoing?: ServerResponse };
  Variables: {
    caller: Caller | undefined;
    callId: string | undefined;
    requestId: string;
    /** Milliseconds this request waited for the upstream's head, when it did. */
    upstreamMs: number | undefined;
  };
}
