/**
 * Conditional requests (RFC 9110 section 13): `If-Match`, `If-None-Match`,
 * `If-Modified-Since`, `If-Unmodified-Since` and `If-Range`, evaluated against
 * the validators of a recording we have. Pure functions, no I/O.
 *
 * Written by hand: `fresh` (Express) only answers "is it a 304?", splits tag
 * lists on every comma and parses dates with `Date.parse`, which accepts
 * garbage such as "1" and reads asctime dates in local time.
 *
 * Every field is the client's to choose, so each is parsed in time linear in
 * its length: whitespace is trimmed by hand (see ./ows.ts), entity-tag lists
 * are scanned once, and the date patterns are anchored and fixed-width.
 */
import { trimOws } from './ows.js';

/** The current representation's validators. */
export interface Validators {
  /** Strong, quoted entity-tag, e.g. `"abc"`. */
  etag?: string;
  lastModified?: Date;
}

/** The request's method and raw conditional fields; `undefined` means absent. */
export interface ConditionalHeaders {
  method: string;
  ifMatch?: string;
  ifNoneMatch?: string;
  ifModifiedSince?: string;
  ifUnmodifiedSince?: string;
  ifRange?: string;
}

/** `proceed`: answer normally (200/206); `not-modified`: 304; `precondition-failed`: 412. */
export type ConditionalOutcome = 'proceed' | 'not-modified' | 'precondition-failed';

interface EntityTag {
  weak: boolean;
  /** The quoted opaque-tag, quotes included. */
  opaque: string;
}

// entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text (8.8.3).
// "W/" is case-sensitive. For one tag; lists are scanned by hand (someEntityTag).
const ENTITY_TAG = /^(W\/)?("[\x21\x23-\x7e\x80-\xff]*")$/;
const SP = 0x20;
const HTAB = 0x09;
const COMMA = 0x2c;
const DQUOTE = 0x22;

const DAY = '(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)';
const LONG_DAY = '(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)';
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = `(${MONTHS.join('|')})`;
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';
// The three HTTP-date forms a recipient must accept (RFC 9110 5.6.7).
const IMF_FIXDATE = new RegExp(`^${DAY}, (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`);
const RFC850_DATE = new RegExp(`^${LONG_DAY}, (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`);
const ASCTIME_DATE = new RegExp(`^${DAY} ${MONTH} (\\d{2}| \\d) ${TIME} (\\d{4})$`);

/**
 * Evaluates the request's preconditions in the order of RFC 9110 13.2.2:
 * If-Match, else If-Unmodified-Since; then If-None-Match, else
 * If-Modified-Since (GET and HEAD only). If-Range is separate, see
 * {@link rangeIsApplicable}. `current` is undefined when there is no current
 * representation (a DELETE of a copy not held): If-Match then fails, `*`
 * too, and If-None-Match holds (13.1.1, 13.1.2).
 *
 * 13.2.2 lets a state-changing request that appears already applied (a
 * DELETE of a copy already gone) answer 2xx; the gateway does not take that
 * MAY: a failed precondition is always 412.
 */
export function evaluatePreconditions(headers: ConditionalHeaders, current: Validators | undefined): ConditionalOutcome {
  // Most requests carry no precondition: nothing of `current` is parsed for them.
  if (
    headers.ifMatch === undefined &&
    headers.ifNoneMatch === undefined &&
    headers.ifUnmodifiedSince === undefined &&
    headers.ifModifiedSince === undefined
  ) {
    return 'proceed';
  }
  // Methods are case-sensitive (9.1).
  const safeRead = headers.method === 'GET' || headers.method === 'HEAD';
  const exists = current !== undefined;
  const etag = current?.etag === undefined ? undefined : parseEntityTag(current.etag);
  const modified = current === undefined ? undefined : lastModifiedMs(current);

  // Step 1 and 2. If-Unmodified-Since is ignored when If-Match is present
  // (13.1.4), and when there is no modification date to compare.
  if (headers.ifMatch !== undefined) {
    if (!ifMatchHolds(headers.ifMatch, exists, etag)) return 'precondition-failed';
  } else if (headers.ifUnmodifiedSince !== undefined && modified !== undefined) {
    const since = parseHttpDate(headers.ifUnmodifiedSince);
    if (since !== undefined && modified > since) return 'precondition-failed';
  }

  // Step 3 and 4. If-Modified-Since counts only without If-None-Match, which
  // is the more precise validator (13.1.3).
  if (headers.ifNoneMatch !== undefined) {
    if (!ifNoneMatchHolds(headers.ifNoneMatch, exists, etag)) {
      return safeRead ? 'not-modified' : 'precondition-failed';
    }
  } else if (safeRead && headers.ifModifiedSince !== undefined && modified !== undefined) {
    const since = parseHttpDate(headers.ifModifiedSince);
    if (since !== undefined && modified <= since) return 'not-modified';
  }
  return 'proceed';
}

/**
 * Whether a Range request's `If-Range` condition holds (RFC 9110 13.1.5), so
 * that the range is served; when it does not, the whole body is sent.
 *
 * No If-Range: true. An entity-tag must match the current ETag by strong
 * comparison, so a weak tag never does. An HTTP-date must equal the
 * Last-Modified time to the second. Anything else: false.
 */
export function rangeIsApplicable(ifRange: string | undefined, current: Validators): boolean {
  if (ifRange === undefined) return true;
  const value = trimOws(ifRange);
  if (value.startsWith('"') || value.startsWith('W/"')) {
    const tag = parseEntityTag(value);
    const etag = current.etag === undefined ? undefined : parseEntityTag(current.etag);
    return tag !== undefined && etag !== undefined && strongMatch(tag, etag);
  }
  // 13.1.5 also wants the date to be a strong validator (8.8.2.2), which needs
  // the Date we sent with it; we do not keep that, but a recording never
  // changes in place, so an exact match is safe.
  const date = parseHttpDate(value);
  const modified = lastModifiedMs(current);
  return date !== undefined && modified !== undefined && date === modified;
}

/**
 * Parses an `If-Match` / `If-None-Match` value (`"*" / #entity-tag`, RFC 9110
 * 13.1.1) into its entity-tags, each as written (`"x"` or `W/"x"`), or `'*'`.
 *
 * Commas inside quoted tags are kept; empty list elements are skipped
 * (5.6.1.2). A malformed member (an unquoted tag, say) is dropped up to the
 * next comma, so it can match nothing: If-None-Match then falls back to a
 * full answer and If-Match to a 412, the safe side of each.
 */
export function parseEntityTagList(value: string): string[] | '*' {
  const text = trimOws(value);
  if (text === '*') return '*';
  const tags: string[] = [];
  someEntityTag(text, (weak, start, end) => {
    tags.push(`${weak ? 'W/' : ''}${text.slice(start, end)}`);
    return false;
  });
  return tags;
}

/**
 * Walks the entity-tags of a list (as {@link parseEntityTagList} reads it) in
 * one pass, handing each to `visit` as its weakness and the bounds of its
 * quoted opaque-tag in `text`; stops at, and returns true for, the first tag
 * `visit` accepts. No copies, so a list of thousands of tags stays cheap.
 */
function someEntityTag(text: string, visit: (weak: boolean, start: number, end: number) => boolean): boolean {
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === SP || c === HTAB || c === COMMA) {
      i += 1;
      continue;
    }
    const weak = c === 0x57 /* W */ && text.charCodeAt(i + 1) === 0x2f; /* / */
    const start = weak ? i + 2 : i;
    const end = quotedTagEnd(text, start);
    const next = text.charCodeAt(end);
    if (end !== -1 && (end === text.length || next === SP || next === HTAB || next === COMMA)) {
      if (visit(weak, start, end)) return true;
      i = end;
      continue;
    }
    i = skipMember(text, i);
  }
  return false;
}

/** The index after the opaque-tag (`DQUOTE *etagc DQUOTE`, 8.8.3) that starts at `i`, or -1. */
function quotedTagEnd(text: string, i: number): number {
  if (text.charCodeAt(i) !== DQUOTE) return -1;
  for (let j = i + 1; j < text.length; j++) {
    const c = text.charCodeAt(j);
    if (c === DQUOTE) return j + 1;
    if (!(c === 0x21 || (c >= 0x23 && c <= 0x7e) || (c >= 0x80 && c <= 0xff))) return -1;
  }
  return -1;
}

/**
 * Formats a date as an IMF-fixdate (RFC 9110 5.6.7), e.g.
 * `Sun, 06 Nov 1994 08:49:37 GMT`, for `Last-Modified` and friends.
 *
 * @throws RangeError when the date is invalid or its year is outside 0..9999
 */
export function httpDate(date: Date): string {
  const year = date.getUTCFullYear();
  if (Number.isNaN(date.getTime()) || year < 0 || year > 9999) {
    throw new RangeError(`httpDate: date must be valid with a four-digit year, got ${String(date)}`);
  }
  // ECMAScript fixes toUTCString() to exactly this format.
  return date.toUTCString();
}

/** If-Match (13.1.1): `*` holds when the recording exists; tags compare strongly. */
function ifMatchHolds(value: string, exists: boolean, etag: EntityTag | undefined): boolean {
  const text = trimOws(value);
  if (text === '*') return exists;
  return etag !== undefined && !etag.weak && someEntityTag(text, (weak, start, end) => !weak && sameOpaque(text, start, end, etag));
}

/** If-None-Match (13.1.2): false when `*` and the recording exists, or any tag matches by weak comparison. */
function ifNoneMatchHolds(value: string, exists: boolean, etag: EntityTag | undefined): boolean {
  const text = trimOws(value);
  if (text === '*') return !exists;
  return !(etag !== undefined && someEntityTag(text, (_weak, start, end) => sameOpaque(text, start, end, etag)));
}

/** Whether `text[start, end)` is the opaque-tag of `etag`, compared in place. */
function sameOpaque(text: string, start: number, end: number, etag: EntityTag): boolean {
  return end - start === etag.opaque.length && text.startsWith(etag.opaque, start);
}

/** Strong comparison (8.8.3.2): neither weak, same opaque-tag. */
function strongMatch(a: EntityTag, b: EntityTag): boolean {
  return !a.weak && !b.weak && a.opaque === b.opaque;
}

function parseEntityTag(value: string): EntityTag | undefined {
  const match = ENTITY_TAG.exec(value);
  if (match === null || match[2] === undefined) return undefined;
  return { weak: match[1] !== undefined, opaque: match[2] };
}

/** Index of the comma ending the malformed member at `i` (or the end), stepping over quoted text. */
function skipMember(text: string, i: number): number {
  let j = i;
  while (j < text.length && text[j] !== ',') {
    if (text[j] === '"') {
      const close = text.indexOf('"', j + 1);
      j = close === -1 ? text.length : close + 1;
    } else {
      j += 1;
    }
  }
  return j;
}

/** Last-Modified in ms, truncated to the second as it went out on the wire. */
function lastModifiedMs(current: Validators): number | undefined {
  const ms = current.lastModified?.getTime();
  if (ms === undefined || Number.isNaN(ms)) return undefined;
  return Math.floor(ms / 1000) * 1000;
}

/**
 * Parses any of the three HTTP-date forms (RFC 9110 5.6.7) to epoch ms, or
 * `undefined` when the value is not exactly one valid date; callers then
 * ignore the field, as 13.1.3 and 13.1.4 require.
 */
function parseHttpDate(value: string, now: Date = new Date()): number | undefined {
  const text = trimOws(value);
  const imf = IMF_FIXDATE.exec(text);
  if (imf !== null) {
    const [, day, month, year, h, min, s] = imf;
    return utcMs(Number(year), month, day, h, min, s);
  }
  const rfc850 = RFC850_DATE.exec(text);
  if (rfc850 !== null) {
    const [, day, month, yy, h, min, s] = rfc850;
    // A two-digit year more than 50 years ahead is in the past century (5.6.7).
    const thisYear = now.getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + Number(yy);
    if (year > thisYear + 50) year -= 100;
    return utcMs(year, month, day, h, min, s);
  }
  const asctime = ASCTIME_DATE.exec(text);
  if (asctime !== null) {
    const [, month, day, h, min, s, year] = asctime;
    return utcMs(Number(year), month, day, h, min, s);
  }
  return undefined;
}

/**
 * Epoch ms from the regex groups, or `undefined` for an impossible date such
 * as 31 Feb or 24:00:00; second 60 (a leap second) is allowed.
 */
function utcMs(year: number, monthName = '', day = '', hour = '', minute = '', second = ''): number | undefined {
  const month = MONTHS.indexOf(monthName);
  const [d, h, min, s] = [day, hour, minute, second].map(Number) as [number, number, number, number];
  if (month === -1 || !(h <= 23 && min <= 59 && s <= 60)) return undefined;
  const date = new Date(0);
  // setUTCFullYear, not Date.UTC, which maps years 0..99 to 1900..1999.
  date.setUTCFullYear(year, month, d);
  if (date.getUTCMonth() !== month || date.getUTCDate() !== d) return undefined;
  date.setUTCHours(h, min, s, 0);
  return date.getTime();
}
