import { BadGatewayError, GatewayError, GatewayTimeoutError, NotFoundError } from '../http/errors.js';

/** Flyflow itself is failing (5xx, unreachable, broken connection): what the circuit breaker counts. */
export class UpstreamOutageError extends BadGatewayError {}

/** An outage worth another attempt: connection errors and upstream 502, 503, 504. */
export class RetryableUpstreamError extends UpstreamOutageError {}

const RETRYABLE_STATUSES = new Set([502, 503, 504]);

/** Maps a non-200 upstream status to the contract's answer (section 4). */
export function errorForUpstreamStatus(status: number): GatewayError {
  if (status === 404) return new NotFoundError();
  if (status === 401 || status === 403) return new BadGatewayError('Upstream rejected the server key');
  if (RETRYABLE_STATUSES.has(status)) return new RetryableUpstreamError(`Upstream answered ${status}`);
  if (status >= 500) return new UpstreamOutageError(`Upstream answered ${status}`);
  return new BadGatewayError(`Upstream answered an unexpected ${status}`);
}

/** True for failures that say Flyflow is down or overloaded, not that one request was wrong. */
export function isUpstreamOutage(error: unknown): boolean {
  return error instanceof UpstreamOutageError || error instanceof GatewayTimeoutError;
}

export function upstreamTimeout(cause?: unknown): GatewayTimeoutError {
  return new GatewayTimeoutError('Upstream timed out', { cause });
}

export function upstreamUnreachable(cause: unknown): RetryableUpstreamError {
  return new RetryableUpstreamError('Could not reach upstream', { cause });
}
