import { BadGatewayError, GatewayError, GatewayTimeoutError, NotFoundError } from '../http/errors.js';

/** A failure worth another attempt: connection errors and upstream 502, 503, 504. */
export class RetryableUpstreamError extends BadGatewayError {}

const RETRYABLE_STATUSES = new Set([502, 503, 504]);

/** Maps a non-200 upstream status to the contract's answer (section 4). */
export function errorForUpstreamStatus(status: number): GatewayError {
  if (status === 404) return new NotFoundError();
  if (status === 401 || status === 403) return new BadGatewayError('Upstream rejected the server key');
  if (RETRYABLE_STATUSES.has(status)) return new RetryableUpstreamError(`Upstream answered ${status}`);
  if (status >= 500) return new BadGatewayError(`Upstream answered ${status}`);
  return new BadGatewayError(`Upstream answered an unexpected ${status}`);
}

export function upstreamTimeout(cause?: unknown): GatewayTimeoutError {
  return new GatewayTimeoutError('Upstream timed out', { cause });
}

export function upstreamUnreachable(cause: unknown): RetryableUpstreamError {
  return new RetryableUpstreamError('Could not reach upstream', { cause });
}
