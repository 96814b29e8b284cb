/**
 * The gateway's error hierarchy. Every error a client can see is a
 * `GatewayError`: it carries the HTTP status, the reason phrase and a message
 * that is safe to show (never a key, a signature or a stack). `cause` keeps the
 * underlying error for the logs.
 */
export class GatewayError extends Error {
  readonly status: number;
  readonly reason: string;
  /** Extra response headers the error needs (`Retry-After`, `Content-Range`). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(status: number, reason: string, message: string, options: { cause?: unknown; headers?: Record<string, string> } = {}) {
    // A client's error (4xx) is an answer, not a fault: its stack would tell
    // nobody anything, and capturing one through optimised frames cost half
    // of a 401's instructions (bench:instructions). Server errors keep theirs.
    const stackTraceLimit = Error.stackTraceLimit;
    if (status < 500) Error.stackTraceLimit = 0;
    try {
      super(message, options.cause === undefined ? undefined : { cause: options.cause });
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
    this.name = new.target.name;
    this.status = status;
    this.reason = reason;
    this.headers = options.headers ?? {};
  }

  /** The contract's JSON body: `{"error": "<reason phrase>", "message": "..."}`. */
  toJSON(): { error: string; message: string } {
    return { error: this.reason, message: this.message };
  }
}

export class BadRequestError extends GatewayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(400, 'Bad Request', message, options);
  }
}

/**
 * Which credential problem: the message says which, never whether a tenant
 * or key exists. `unsupported`: an Authorization header of another scheme
 * than Bearer (Basic, a bare key), which carries no bearer token at all.
 */
export type CredentialProblem = 'missing' | 'unsupported' | 'invalid' | 'expired';

const CREDENTIAL_MESSAGES: Record<CredentialProblem, string> = {
  missing: 'Missing credentials: send Authorization: Bearer <key> or a signed URL',
  unsupported: 'Unsupported authorization scheme: send Authorization: Bearer <token>',
  invalid: 'Invalid credentials',
  expired: 'Expired signature',
};

// RFC 9110 15.5.2: a 401 carries a challenge. RFC 6750 3.1: no error code when
// no bearer credentials were sent (none, or another scheme's), `invalid_token`
// when they were wrong or expired.
const CHALLENGES: Record<CredentialProblem, string> = {
  missing: 'Bearer realm="recording-gateway"',
  unsupported: 'Bearer realm="recording-gateway"',
  invalid: 'Bearer realm="recording-gateway", error="invalid_token"',
  expired: 'Bearer realm="recording-gateway", error="invalid_token"',
};

export class UnauthorizedError extends GatewayError {
  readonly problem: CredentialProblem;
  /**
   * `message` replaces the standard one for the problem; it must not tell
   * whether a tenant or key exists. `scheme`: the one the route takes, which
   * its challenge names (RFC 9110 11.6.1); the error codes are Bearer's own.
   */
  constructor(problem: CredentialProblem, message: string = CREDENTIAL_MESSAGES[problem], scheme = 'Bearer') {
    const challenge = scheme === 'Bearer' ? CHALLENGES[problem] : `${scheme} realm="recording-gateway"`;
    super(401, 'Unauthorized', message, { headers: { 'WWW-Authenticate': challenge } });
    this.problem = problem;
  }
}

export class NotFoundError extends GatewayError {
  constructor(message = 'Recording not found') {
    super(404, 'Not Found', message);
  }
}

export class MethodNotAllowedError extends GatewayError {
  constructor(allow: string) {
    super(405, 'Method Not Allowed', `Use one of: ${allow}`, { headers: { Allow: allow } });
  }
}

export class PreconditionFailedError extends GatewayError {
  constructor(message = 'Precondition failed') {
    super(412, 'Precondition Failed', message);
  }
}

export class RangeNotSatisfiableError extends GatewayError {
  constructor(size: number) {
    super(416, 'Range Not Satisfiable', `The requested range is outside the recording's ${size} bytes`, {
      headers: { 'Content-Range': `bytes */${size}` },
    });
  }
}

/** A request body over the route's limit (RFC 9110 15.5.14). */
export class ContentTooLargeError extends GatewayError {
  constructor(maxBytes: number) {
    super(413, 'Content Too Large', `The request body is over the ${maxBytes} bytes this route takes`);
  }
}

export class TooManyRequestsError extends GatewayError {
  constructor(retryAfterSeconds: number, headers: Record<string, string> = {}) {
    super(429, 'Too Many Requests', `Rate limit exceeded; retry in ${retryAfterSeconds} s`, {
      headers: { 'Retry-After': String(retryAfterSeconds), ...headers },
    });
  }
}

/** Upstream misbehaved: rejected the server key, answered 5xx, or sent a bad or truncated body. */
export class BadGatewayError extends GatewayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(502, 'Bad Gateway', message, options);
  }
}

export class ServiceUnavailableError extends GatewayError {
  constructor(message: string, retryAfterSeconds: number, options?: { cause?: unknown }) {
    super(503, 'Service Unavailable', message, {
      ...options,
      headers: { 'Retry-After': String(retryAfterSeconds) },
    });
  }
}

export class GatewayTimeoutError extends GatewayError {
  constructor(message = 'Upstream timed out', options?: { cause?: unknown }) {
    super(504, 'Gateway Timeout', message, options);
  }
}

/** What an error says, for a one-line message: its message, or the thrown value itself. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A JSON error response in the contract's shape. */
export function errorResponse(error: GatewayError, extraHeaders: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(error.toJSON()), { status: error.status, headers: errorHeaders(error, extraHeaders) });
}

/**
 * The header fields of an error answer but its length: the JSON type,
 * `no-store` (a 404 is cacheable by default, RFC 9110 15.1, and a recording
 * not found may be there a minute later), the error's own, then
 * `extraHeaders` (CORS, X-Request-Id).
 */
export function errorHeaders(error: GatewayError, extraHeaders: Record<string, string>): Record<string, string> {
  return { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...error.headers, ...extraHeaders };
}
