import type { Caller } from '../auth/authenticate.js';

/** What handlers leave on the Hono context for the error handler and the request log. */
export interface GatewayEnv {
  Variables: {
    caller: Caller | undefined;
    callId: string | undefined;
  };
}
