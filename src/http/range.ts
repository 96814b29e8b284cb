/**
 * Byte-range decisions for `Range` requests (RFC 9110 section 14). Pure
 * functions: the route asks what to answer, then streams it.
 *
 * Why `range-parser` plus a wrapper: it is the parser Express and `send` use,
 * and its clamping and `combine` (merging overlapping and adjacent ranges) are
 * what we want. It gets four RFC cases wrong for us, so a strict syntax pass
 * runs first and hands it only well-formed, normalised input:
 * - `bytes=5-2` (last-pos < first-pos) is an *invalid* range-spec (14.1.1), so
 *   the header must be ignored (200); range-parser calls it unsatisfiable (416).
 * - `bytes=-1000` on a 500-byte body means the whole body (14.1.3);
 *   range-parser computes a negative start and calls it unsatisfiable.
 * - The unit is case-insensitive (14.1) and whitespace inside a range-spec is
 *   not allowed by the grammar; range-parser keeps the unit's case and trims
 *   whitespace inside specs.
 * - Empty list elements (`bytes=0-1,,3-4`) must be accepted (5.6.1.2);
 *   range-parser calls the whole header malformed.
 *
 * The header is the client's to choose, so every step costs time linear in
 * its length (see ./ows.ts): no trimming regex, no BigInt of a position, and
 * a cap on the number of ranges.
 */
import rangeParser from 'range-parser';
import { compareDecimal, trimOws } from './ows.js';

/** One byte range, both ends inclusive, already clamped to `size - 1`. */
export interface ByteRange {
  start: number;
  end: number;
}

export type RangeDecision =
  /** No Range, Range ignored (malformed, another unit, not GET), or several ranges that stay several. */
  | { kind: 'full' }
  /** Answer 206 with `Content-Range: bytes start-end/size`. */
  | { kind: 'partial'; range: ByteRange }
  /** Answer 416 with the unsatisfied-range `Content-Range` from {@link unsatisfiedContentRange}. */
  | { kind: 'unsatisfiable' };

const FULL: RangeDecision = Object.freeze({ kind: 'full' });
const UNSATISFIABLE: RangeDecision = Object.freeze({ kind: 'unsatisfiable' });

/**
 * The one int-range nearly every client sends (`bytes=0-1`, `bytes=1000-`),
 * with positions short enough to be exact as numbers: decided without the
 * general parser below, which costs a 2-byte probe about 1.5 µs.
 */
const SINGLE_INT_RANGE = /^bytes=(\d{1,15})-(\d{0,15})$/i;
/** int-range (`first-last`, `first-`) or suffix-range (`-length`), RFC 9110 14.1.1. */
const RANGE_SPEC = /^(?:(\d+)-(\d*)|-(\d+))$/;
/**
 * More range-specs than this and the header is ignored (a 200): RFC 9110 14.2
 * lets a server ignore many small ranges as a sign of a broken client or a
 * denial-of-service attempt (17.15). Apache's MaxRanges default, too.
 */
export const MAX_RANGE_SPECS = 200;
const COMMA = 0x2c;
const SP = 0x20;
const HTAB = 0x09;

type RangeSpec = { kind: 'int'; first: string; last: string } | { kind: 'suffix'; length: string };

/**
 * Decides how to answer a GET for a representation of `size` bytes given its
 * `Range` header.
 *
 * Range only applies to GET (RFC 9110 14.2): for any other method, and when
 * `If-Range` does not hold, the caller passes `undefined`.
 *
 * Several ranges are coalesced when they overlap or touch; if one range
 * results it is answered as a 206, otherwise the whole body is sent (a server
 * MAY ignore Range, 14.2), so the gateway never sends multipart/byteranges.
 * Unsatisfiable ranges among satisfiable ones are dropped (14.1.1).
 *
 * @param rangeHeader the raw `Range` field value, `undefined` when absent
 * @param size the representation's length in bytes
 */
export function decideRange(rangeHeader: string | undefined, size: number): RangeDecision {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new RangeError(`decideRange: size must be a non-negative integer, got ${size}`);
  }
  if (rangeHeader === undefined) return FULL;
  const single = SINGLE_INT_RANGE.exec(rangeHeader);
  if (single !== null && size > 0) return decideSingleIntRange(Number(single[1]), single[2] === '' ? undefined : Number(single[2]), size);
  const specs = parseByteRangesSpecifier(rangeHeader);
  if (specs === undefined) return FULL;

  if (size === 0) {
    // 14.1.1: on an empty representation only a non-zero suffix-range is
    // satisfiable, yet Content-Range cannot describe an empty range; the whole
    // (empty) body is the honest answer.
    return specs.some((s) => s.kind === 'suffix' && compareDecimal(s.length, '0') > 0) ? FULL : UNSATISFIABLE;
  }

  const sizeText = String(size);
  // A position at or past the end means the same as the size itself (a first
  // position there is unsatisfiable, a last one is clamped), so range-parser
  // never sees a number longer than the size.
  const capped = (position: string) => (compareDecimal(position, sizeText) >= 0 ? sizeText : position);
  const normalised = specs.map((spec) => {
    if (spec.kind === 'int') return `${capped(spec.first)}-${spec.last === '' ? '' : capped(spec.last)}`;
    // 14.1.3: a suffix longer than the representation selects all of it.
    return compareDecimal(spec.length, sizeText) > 0 ? '0-' : `-${spec.length}`;
  });
  const parsed = rangeParser(size, `bytes=${normalised.join(',')}`, { combine: true });
  if (parsed === -1) return UNSATISFIABLE;
  // -2 (malformed) cannot happen after our own syntax pass; ignoring the header is the safe answer.
  const only = parsed === -2 || parsed.length !== 1 ? undefined : parsed[0];
  if (only === undefined) return FULL;
  return { kind: 'partial', range: { start: only.start, end: only.end } };
}

/** `first-last` or `first-` with no whitespace: what players send, decided as {@link decideRange}'s general path would. */
function decideSingleIntRange(first: number, last: number | undefined, size: number): RangeDecision {
  if (last !== undefined && last < first) return FULL;
  if (first >= size) return UNSATISFIABLE;
  return { kind: 'partial', range: { start: first, end: last === undefined ? size - 1 : Math.min(last, size - 1) } };
}

/** The `Content-Range` value of a 206: `bytes 0-99/1000` (RFC 9110 14.4). */
export function contentRange(range: ByteRange, size: number): string {
  return `bytes ${range.start}-${range.end}/${size}`;
}

/**
 * The `Content-Range` value of a 416 (RFC 9110 14.4, 15.5.17): the
 * unsatisfied-range form, an asterisk in place of the range, then the size.
 */
export function unsatisfiedContentRange(size: number): string {
  return `bytes */${size}`;
}

/**
 * Parses `bytes=<range-set>` (RFC 9110 14.1.2) into its range-specs, or
 * `undefined` when the header must be ignored: another unit, bad syntax, or an
 * int-range whose last-pos is below its first-pos (14.1.1 calls that invalid).
 */
function parseByteRangesSpecifier(value: string): RangeSpec[] | undefined {
  const trimmed = trimOws(value);
  const eq = trimmed.indexOf('=');
  // No whitespace is allowed between the unit and "=" (ranges-specifier grammar).
  if (eq !== 'bytes'.length || trimmed.slice(0, eq).toLowerCase() !== 'bytes') return undefined;

  const specs: RangeSpec[] = [];
  // A list element may be surrounded by OWS and may be empty (5.6.1.2); we
  // also accept OWS right after "=", as nginx and range-parser do. Walked in
  // place rather than split(), so a flood of elements stops at the cap.
  for (let from = eq + 1; from < trimmed.length; ) {
    const c = trimmed.charCodeAt(from);
    if (c === COMMA || c === SP || c === HTAB) {
      from++;
      continue;
    }
    const comma = trimmed.indexOf(',', from);
    const end = comma === -1 ? trimmed.length : comma;
    const text = trimOws(trimmed.slice(from, end));
    from = end + 1;
    if (specs.length === MAX_RANGE_SPECS) return undefined;
    const match = RANGE_SPEC.exec(text);
    if (match === null) return undefined;
    const [, first, last, suffix] = match;
    if (suffix !== undefined) {
      specs.push({ kind: 'suffix', length: suffix });
    } else if (first !== undefined && last !== undefined) {
      // Compared as digit strings, so that 20-digit positions compare exactly.
      if (last !== '' && compareDecimal(last, first) < 0) return undefined;
      specs.push({ kind: 'int', first, last });
    }
  }
  return specs.length > 0 ? specs : undefined;
}
