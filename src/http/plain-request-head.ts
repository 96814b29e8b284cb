import type { RequestFields } from './request-fields.js';

/** A request head that a memory hit may answer without Node's parser. */
export interface PlainRequestHead {
  method: 'GET' | 'HEAD';
  target: string;
  /** Each field at most once, its value without surrounding whitespace: as Node would give it. */
  fields: RequestFields;
  /** The head's length in bytes, its blank line included. */
  length: number;
}

export const HEAD_END = Buffer.from('\r\n\r\n');
// Longer heads are Node's to judge (its limit, its 431).
export const MAX_HEAD_BYTES = 8192;
const MAX_FIELDS = 64;

const SP = 0x20;
const HTAB = 0x09;
const VERSION = ' HTTP/1.1';

const ALPHANUMERIC = 'A-Za-z0-9';
// RFC 9112 3: origin-form of RFC 3986's path and query characters only; anything else is Node's to judge.
const TARGET = `${ALPHANUMERIC}\\-._~%!$&'()*+,;=:@/?`;
// RFC 9110 5.6.2.
const TOKEN = `${ALPHANUMERIC}!#$%&'*+.^_\`|~\\-`;
/**
 * The head without its blank line: `GET` or `HEAD`, `/`, target characters,
 * ` HTTP/1.1`, then fields, each a token, a colon and visible ASCII, spaces
 * and tabs (no obs-text, no control character, no bare CR or LF), after a
 * CRLF. Checked in one pass of the regular expression engine, not character
 * by character in JavaScript. No character a quantifier takes can also begin
 * what follows it, so it never backtracks.
 */
const PLAIN_HEAD = new RegExp(`^(?:GET|HEAD) /[${TARGET}]* HTTP/1\\.1(?:\\r\\n[${TOKEN}]+:[\\t\\x20-\\x7e]*)+$`);

function isBlank(code: number): boolean {
  return code === SP || code === HTAB;
}

// Where each field a memory hit reads is kept while a head is read: an index, so that keeping one is a
// store into a small array rather than into a property named by a variable (a generic, megamorphic store).
const HOST = 0;
const AUTHORIZATION = 1;
const RANGE = 2;
const IF_RANGE = 3;
const IF_MATCH = 4;
const IF_NONE_MATCH = 5;
const IF_MODIFIED_SINCE = 6;
const IF_UNMODIFIED_SINCE = 7;
const ORIGIN = 8;
const REQUEST_ID = 9;
const USER_AGENT = 10;
const CONNECTION = 11;

const NOT_PLAIN = null;

/**
 * The fields a memory hit reads, by their lowercase names, and NOT_PLAIN for
 * those that would make Node treat the request other than as one bodiless
 * GET or HEAD: the fields llhttp reads itself (`proxy-connection` as it
 * reads `connection`), and an expectation. Any other field changes nothing a
 * hit answers, whatever its value or however often it comes.
 */
const KNOWN_FIELDS: ReadonlyArray<readonly [string, number | typeof NOT_PLAIN]> = [
  ['host', HOST],
  ['authorization', AUTHORIZATION],
  ['range', RANGE],
  ['if-range', IF_RANGE],
  ['if-match', IF_MATCH],
  ['if-none-match', IF_NONE_MATCH],
  ['if-modified-since', IF_MODIFIED_SINCE],
  ['if-unmodified-since', IF_UNMODIFIED_SINCE],
  ['origin', ORIGIN],
  ['x-request-id', REQUEST_ID],
  ['user-agent', USER_AGENT],
  ['connection', CONNECTION],
  ['content-length', NOT_PLAIN],
  ['transfer-encoding', NOT_PLAIN],
  ['expect', NOT_PLAIN],
  ['upgrade', NOT_PLAIN],
  ['proxy-connection', NOT_PLAIN],
];

// By name length: a field's line is matched against the few names of its length, without making its name a string.
const KNOWN_BY_LENGTH: Array<Array<readonly [string, number | typeof NOT_PLAIN]> | undefined> = [];
for (const known of KNOWN_FIELDS) {
  const sameLength = KNOWN_BY_LENGTH[known[0].length] ?? [];
  sameLength.push(known);
  KNOWN_BY_LENGTH[known[0].length] = sameLength;
}

const TO_LOWER_CASE = 0x20;

/**
 * Where the field named by `text` from `start` to `end` is kept; undefined
 * for one no memory hit reads; NOT_PLAIN for one Node must judge. The name is
 * a token (the head's pattern checked it) and every known name is letters and
 * `-`: setting the 0x20 bit lowercases a letter, and turns no other token
 * character into a lowercase letter or `-`.
 */
function slotOf(text: string, start: number, end: number): number | undefined | typeof NOT_PLAIN {
  const candidates = KNOWN_BY_LENGTH[end - start];
  if (candidates === undefined) return undefined;
  for (const [name, slot] of candidates) {
    let i = 0;
    while (i < name.length && (text.charCodeAt(start + i) | TO_LOWER_CASE) === name.charCodeAt(i)) i++;
    if (i === name.length) return slot;
  }
  return undefined;
}

/**
 * The request head at the start of `buffer`, when it is whole and as plain as a
 * player's or a benchmark's: `GET` or `HEAD` of an origin-form target,
 * HTTP/1.1, CRLF line ends, one Host, no field a hit reads twice, no body, no
 * connection option but `keep-alive`. Undefined for anything else, an
 * incomplete head included: Node's parser then reads the request, and
 * judges it as it always does.
 */
export function readPlainRequestHead(buffer: Buffer): PlainRequestHead | undefined {
  const end = buffer.indexOf(HEAD_END);
  if (end === -1 || end > MAX_HEAD_BYTES) return undefined;
  const text = buffer.toString('latin1', 0, end);
  if (!PLAIN_HEAD.test(text)) return undefined;
  const method = text.charCodeAt(0) === 0x47 ? 'GET' : 'HEAD';
  const firstLineEnd = text.indexOf('\r\n');
  const target = text.slice(method.length + 1, firstLineEnd - VERSION.length);
  const values: Array<string | undefined> = [
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
  ];
  let count = 0;
  for (let lineStart = firstLineEnd + 2; lineStart < end; ) {
    if (++count > MAX_FIELDS) return undefined;
    const found = text.indexOf('\r\n', lineStart);
    const lineEnd = found === -1 ? end : found;
    // The name is a token: its line's first colon ends it.
    const colon = text.indexOf(':', lineStart);
    const slot = slotOf(text, lineStart, colon);
    lineStart = lineEnd + 2;
    if (slot === NOT_PLAIN) return undefined;
    if (slot === undefined) continue;
    if (values[slot] !== undefined) return undefined;
    let valueStart = colon + 1;
    let valueEnd = lineEnd;
    while (valueStart < valueEnd && isBlank(text.charCodeAt(valueStart))) valueStart++;
    while (valueEnd > valueStart && isBlank(text.charCodeAt(valueEnd - 1))) valueEnd--;
    values[slot] = text.slice(valueStart, valueEnd);
  }
  const host = values[HOST];
  if (host === undefined) return undefined;
  const connection = values[CONNECTION];
  if (connection !== undefined && connection.toLowerCase() !== 'keep-alive') return undefined;
  const fields: RequestFields = {
    host,
    authorization: values[AUTHORIZATION],
    range: values[RANGE],
    ifRange: values[IF_RANGE],
    ifMatch: values[IF_MATCH],
    ifNoneMatch: values[IF_NONE_MATCH],
    ifModifiedSince: values[IF_MODIFIED_SINCE],
    ifUnmodifiedSince: values[IF_UNMODIFIED_SINCE],
    origin: values[ORIGIN],
    requestId: values[REQUEST_ID],
    userAgent: values[USER_AGENT],
  };
  return { method, target, fields, length: end + HEAD_END.length };
}
