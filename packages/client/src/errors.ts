/**
 * The client library's error hierarchy (after ky's): every failure of a call
 * to the gateway is a `RecordingGatewayError` carrying what was asked (method,
 * URL, call id), what came back (status, reason phrase) and the underlying
 * `cause`. Messages never contain the API key: it is only ever put in a
 * request header, and text taken from an answer is scrubbed of it as well.
 *
 * `status` is the HTTP status the gateway answered, or 0 when no usable answer
 * arrived (the gateway was unreachable, this client's timeout ran out, or the
 * body broke off), as in the Fetch standard's network error.
 */

/** The request a {@link RecordingGatewayError} is about. The URL never holds a credential. */
export interface RecordingGatewayRequest {
  method: string;
  url: string;
}

export interface RecordingGatewayErrorOptions {
  /** The HTTP status, or 0 when no usable answer arrived. */
  status: number;
  /** The contract's JSON `error` (the reason phrase), or one this client chose. */
  reason: string;
  request: RecordingGatewayRequest;
  callId?: string | undefined;
  /** Seconds from `Retry-After` (429 and 503 answers). */
  retryAfterSeconds?: number | undefined;
  /** The gateway's JSON `message`, as it sent it. */
  gatewayMessage?: string | undefined;
  cause?: unknown;
}

/** A call to the recording gateway failed; see `status` and `reason` for how. */
export class RecordingGatewayError extends Error {
  /** The HTTP status, or 0 when no usable answer arrived. */
  readonly status: number;
  /** The gateway's JSON `error` field (`"Not Found"`), or this client's own phrase (`"Timeout"`). */
  readonly reason: string;
  /** The call id the request was about, in canonical decimal form. */
  readonly callId: string | undefined;
  readonly request: RecordingGatewayRequest;
  /** From `Retry-After`, when the gateway said how long to wait (429, 503). */
  readonly retryAfterSeconds: number | undefined;
  /**
   * The gateway's JSON `message` word for word (`"Expired signature"`), for
   * code that tells failures apart; undefined when no JSON error came back.
   * `message` says the same for people, with the status and call id.
   */
  readonly gatewayMessage: string | undefined;

  constructor(message: string, options: RecordingGatewayErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.status = options.status;
    this.reason = options.reason;
    this.callId = options.callId;
    this.request = options.request;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.gatewayMessage = options.gatewayMessage;
  }
}

/**
 * This client gave up: no answer, or no body bytes, for `timeoutMs`. Status 0.
 * The gateway's own 504 (Flyflow timed out) is a plain {@link RecordingGatewayError}
 * with status 504, since the gateway did answer.
 */
export class RecordingGatewayTimeoutError extends RecordingGatewayError {
  readonly timeoutMs: number;

  constructor(message: string, options: Omit<RecordingGatewayErrorOptions, 'status' | 'reason'> & { timeoutMs: number }) {
    super(message, { ...options, status: 0, reason: 'Timeout' });
    this.timeoutMs = options.timeoutMs;
  }
}

/**
 * The recording's body ended before its Content-Length, or the connection broke
 * while it arrived. Status 0: the 200 the head promised never completed. Nothing
 * was written at the output path; retrying is safe.
 */
export class IncompleteDownloadError extends RecordingGatewayError {
  readonly receivedBytes: number;
  /** The answer's Content-Length, when it had one. */
  readonly expectedBytes: number | undefined;

  constructor(
    message: string,
    options: Omit<RecordingGatewayErrorOptions, 'status' | 'reason'> & {
      receivedBytes: number;
      expectedBytes: number | undefined;
    },
  ) {
    super(message, { ...options, status: 0, reason: 'Incomplete Download' });
    this.receivedBytes = options.receivedBytes;
    this.expectedBytes = options.expectedBytes;
  }
}
