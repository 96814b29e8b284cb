import { BadRequestError } from '../errors.js';

// Flyflow call ids are sequential integers; anything that is not the canonical
// decimal spelling (no sign, no leading zero, no exponent, no encoding) is
// refused before it can reach the cache or the upstream.
const CANONICAL_ID = /^[1-9][0-9]{0,15}$/;
/** What a call id must be, as a refusal says it. */
export const CALL_ID_RULE = 'Call id must be a decimal integer from 1 to 9007199254740991';

/**
 * Parses the `{id}` path segment of `/v1/call/recording/{id}.mp3`.
 * Returns the id as its canonical decimal string, which is also its cache key part.
 * @throws BadRequestError when the segment is not an integer from 1 to 2^53-1.
 */
export function parseCallId(segment: string): string {
  if (!isCanonicalCallId(segment)) {
    throw new BadRequestError(CALL_ID_RULE);
  }
  return segment;
}

/** True for a call id in its canonical spelling, which is exact as a JSON number. */
export function isCanonicalCallId(value: string): boolean {
  return CANONICAL_ID.test(value) && Number(value) <= Number.MAX_SAFE_INTEGER;
}

/** A call id as the HTTP API writes it in JSON, a number; anything else (a damaged index entry) as it is. */
export function callIdJson(callId: string): number | string {
  return isCanonicalCallId(callId) ? Number(callId) : callId;
}
