/**
 * Linear-time helpers for header values. A trimming regex such as
 * `/^[ \t]+|[ \t]+$/` retries its second branch from every position of a run
 * of whitespace, which is quadratic in the run's length: 16 KB of spaces
 * followed by one other character blocked the event loop for ~90 ms.
 * Header values are the client's to choose, so they are scanned by hand.
 */

const SPACE = 0x20;
const TAB = 0x09;
const ZERO = 0x30;

/** The value without optional whitespace (RFC 9110 5.6.3: SP and HTAB) at either end. */
export function trimOws(value: string): string {
  let start = 0;
  let end = value.length;
  while (start < end && isOws(value.charCodeAt(start))) start++;
  while (end > start && isOws(value.charCodeAt(end - 1))) end--;
  return start === 0 && end === value.length ? value : value.slice(start, end);
}

/**
 * Compares two strings of ASCII digits as the numbers they write, whatever
 * their length: negative, zero or positive. `BigInt(text)` would do it, but
 * costs quadratic time in the number of digits.
 */
export function compareDecimal(a: string, b: string): number {
  const x = a.slice(leadingZeros(a));
  const y = b.slice(leadingZeros(b));
  if (x.length !== y.length) return x.length - y.length;
  return x < y ? -1 : x > y ? 1 : 0;
}

function isOws(code: number): boolean {
  return code === SPACE || code === TAB;
}

function leadingZeros(digits: string): number {
  let i = 0;
  while (i < digits.length - 1 && digits.charCodeAt(i) === ZERO) i++;
  return i;
}
