import type { IncomingMessage } from 'node:http';
import { GatewayTimeoutError } from '../errors.js';
import { RetryableUpstreamError } from './errors.js';

/**
 * The next bytes of an upstream response's body: those it holds already,
 * at once, without a promise; else the next to arrive. Null at the body's
 * end. Not Node's async iterator: its end-of-stream watch and generator
 * took about 0.04 ms of a cold miss's first byte on the project's VM (issue
 * 11), and the idle timer was set for every chunk; here only for a wait.
 * @throws (rejects) RetryableUpstreamError when the body ends before it
 *   should (the connection broke or closed), GatewayTimeoutError after
 *   `idleMs` without bytes: the response is then destroyed.
 */
export function nextBodyChunk(response: IncomingMessage, idleMs: number): Buffer | null | Promise<Buffer | null> {
  const chunk = response.destroyed ? null : (response.read() as Buffer | null);
  if (chunk !== null) return chunk;
  if (response.readableEnded) return null;
  if (response.destroyed) return Promise.reject(endedEarly(response.errored));
  return new Promise((resolve, reject) => {
    const settle = () => {
      clearTimeout(idle);
      response.off('readable', onReadable);
      response.off('end', onEnd);
      response.off('error', onError);
      response.off('close', onClose);
    };
    const onReadable = () => {
      const next = response.read() as Buffer | null;
      if (next === null) return;
      settle();
      resolve(next);
    };
    const onEnd = () => {
      settle();
      resolve(null);
    };
    const onError = (error: Error) => {
      settle();
      reject(endedEarly(error));
    };
    // Destroyed without an error; a body without Content-Length that ends with its connection gets 'end' first.
    const onClose = () => {
      settle();
      if (response.readableEnded) resolve(null);
      else reject(endedEarly(undefined));
    };
    const idle = setTimeout(() => {
      settle();
      response.destroy();
      reject(new GatewayTimeoutError('Upstream body stalled'));
    }, idleMs);
    response.on('readable', onReadable);
    response.on('end', onEnd);
    response.on('error', onError);
    response.on('close', onClose);
  });
}

function endedEarly(cause: Error | null | undefined): RetryableUpstreamError {
  return new RetryableUpstreamError('Upstream body ended early', cause ? { cause } : undefined);
}
