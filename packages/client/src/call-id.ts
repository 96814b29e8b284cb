const MAX_CALL_ID = Number.MAX_SAFE_INTEGER;
// The contract's canonical spelling: no sign, no leading zero, no exponent.
const CANONICAL_CALL_ID = /^[1-9][0-9]{0,15}$/;

/** A short, safe rendering of a bad argument for an error message. */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  return value === null ? 'null' : typeof value;
}

/**
 * The call id in the contract's canonical decimal form.
 * @throws TypeError for anything but an integer from 1 to 2^53-1 (a number or its decimal string).
 */
export function canonicalCallId(callId: unknown): string {
  const valid =
    typeof callId === 'number'
      ? Number.isSafeInteger(callId) && callId >= 1
      : typeof callId === 'string' && CANONICAL_CALL_ID.test(callId) && Number(callId) <= MAX_CALL_ID;
  if (!valid) {
    throw new TypeError(`callId must be an integer from 1 to ${MAX_CALL_ID}, got ${describeValue(callId)}`);
  }
  return String(callId);
}
