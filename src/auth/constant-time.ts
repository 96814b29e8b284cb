import { timingSafeEqual } from 'node:crypto';

/** Compares a presented secret with the expected one without leaking, by timing, how much matched. */
export function constantTimeEqual(presented: string, expected: string): boolean {
  const a = Buffer.from(presented);
  const b = Buffer.from(expected);
  // timingSafeEqual needs equal lengths; comparing b with itself keeps the time independent of a.
  return a.length === b.length ? timingSafeEqual(a, b) : !timingSafeEqual(b, b);
}
