import { BadGatewayError, type GatewayError, GatewayTimeoutError, NotFoundError, ServiceUnavailableError } from '../errors.js';

/** Flyflow itself is failing (5xx, unreachable, broken connection): what the circuit breaker counts. */
export class UpstreamOutageError extends BadGatewayError {}

/** An outage worth another attempt: connection errors and upstream 502, 503, 504. */
export class RetryableUpstreamError extends UpstreamOutageError {}

/** Flyflow answered 401 or 403 to the server key: a configuration problem, not an outage. */
export class UpstreamKeyRejectedError extends BadGatewayError {}

/** No connection could be made (refused, DNS, TLS). */
export class UpstreamUnreachableError extends RetryableUpstreamError {}

const RETRYABLE_STATUSES = new Set([502, 503, 504]);

/** Maps a non-200 upstream status to the answer the README's "Responses" table gives. */
export function errorForUpstreamStatus(status: number): GatewayError {
  if (status === 404) return new NotFoundError();
  if (status === 401 || status === 403) return new UpstreamKeyRejectedError('Upstream rejected the server key');
  if (RETRYABLE_STATUSES.has(status)) return new RetryableUpstreamError(`Upstream answered ${status}`);
  if (status >= 500) return new UpstreamOutageError(`Upstream answered ${status}`);
  return new BadGatewayError(`Upstream answered an unexpected ${status}`);
}

/** True for failures that say Flyflow is down or overloaded, not that one request was wrong. */
export function isUpstreamOutage(error: unknown): boolean {
  return error instanceof UpstreamOutageError || error instanceof GatewayTimeoutError;
}

/** A recording over cache.max_recording_bytes, whoever offers it (the upstream, another replica): a 502, never served or stored. */
export function recordingTooLarge(): BadGatewayError {
  return new BadGatewayError('Recording is larger than cache.max_recording_bytes');
}

export function upstreamTimeout(cause?: unknown): GatewayTimeoutError {
  return new GatewayTimeoutError('Upstream timed out', { cause });
}

export function upstreamUnreachable(cause: unknown): RetryableUpstreamError {
  return new UpstreamUnreachableError('Could not reach upstream', { cause });
}

export type UpstreamErrorKind = 'not_found' | 'timeout' | 'unreachable' | 'server_error' | 'rejected_key' | 'bad_response' | 'circuit_open';

/** Names a failed upstream request for metrics and logs. */
export function upstreamErrorKind(error: unknown): UpstreamErrorKind {
  if (error instanceof NotFoundError) return 'not_found';
  if (error instanceof GatewayTimeoutError) return 'timeout';
  if (error instanceof UpstreamUnreachableError) return 'unreachable';
  if (error instanceof UpstreamOutageError) return 'server_error';
  if (error instanceof UpstreamKeyRejectedError) return 'rejected_key';
  if (error instanceof ServiceUnavailableError) return 'circuit_open';
  return 'bad_response';
}
