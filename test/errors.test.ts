import { describe, expect, test } from 'vitest';
import { BadGatewayError, GatewayError, NotFoundError, TooManyRequestsError, UnauthorizedError } from '../src/errors.js';

const FRAME = /\n\s+at /;

function madeThroughFrames(make: () => GatewayError, depth = 5): GatewayError {
  if (depth === 0) return make();
  return madeThroughFrames(make, depth - 1);
}

describe('the stacks of GatewayErrors', () => {
  test("a client's error (4xx) captures no frames: it is an answer, and capturing them costs more than the answer", () => {
    for (const error of [
      madeThroughFrames(() => new UnauthorizedError('missing')),
      madeThroughFrames(() => new NotFoundError()),
      madeThroughFrames(() => new TooManyRequestsError(3)),
    ]) {
      expect(error.stack).not.toMatch(FRAME);
      expect(error.stack).toContain(error.message);
    }
  });

  test("a server error (5xx) keeps its frames, and its cause's, for the debug log", () => {
    const cause = new Error('connect ECONNREFUSED');
    const error = madeThroughFrames(() => new BadGatewayError('Upstream unreachable', { cause }));
    expect(error.stack).toMatch(FRAME);
    expect((error.cause as Error).stack).toMatch(FRAME);
  });

  test("the process's stack trace limit is left as it was, for every other error", () => {
    const before = Error.stackTraceLimit;
    new UnauthorizedError('invalid');
    new GatewayError(418, "I'm a teapot", 'short and stout');
    expect(Error.stackTraceLimit).toBe(before);
    expect(new Error('a bug').stack).toMatch(FRAME);
  });
});
