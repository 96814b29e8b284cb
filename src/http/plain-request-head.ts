import type { IncomingHttpHeaders } from 'node:http';

/** A request head that a memory hit may answer without Node's parser. */
export interface PlainRequestHead {
  method: 'GET' | 'HEAD';
  target: string;
  /** Lowercase names, each once, values without surrounding whitespace: as Node would give them. */
  headers: IncomingHttpHeaders & Record<string, string>;
  /** The head's length in bytes, its blank line included. */
  length: number;
}

const HEAD_END = Buffer.from('\r\n\r\n');
// Longer heads are Node's to judge (its limit, its 431).
const MAX_HEAD_BYTES = 8192;
const MAX_FIELDS = 64;
// RFC 9112 3: origin-form of RFC 3986's path and query characters only; anything else is Node's to judge.
const REQUEST_LINE = /^(GET|HEAD) (\/[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*) HTTP\/1\.1$/;
// RFC 9110 5.6.2.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Visible ASCII, spaces and tabs: no obs-text, no control character.
const PLAIN_VALUE = /^[\t\x20-\x7e]*$/;
// What would make Node treat the request other than as one bodiless GET or HEAD: the fields
// llhttp reads itself (`proxy-connection` as it reads `connection`), and an expectation.
const NOT_PLAIN = new Set(['content-length', 'transfer-encoding', 'expect', 'upgrade', 'proxy-connection']);

function trimWhitespace(value: string): string {
  let start = 0;
  let end = value.length;
  while (start < end && (value.charCodeAt(start) === 0x20 || value.charCodeAt(start) === 0x09)) start++;
  while (end > start && (value.charCodeAt(end - 1) === 0x20 || value.charCodeAt(end - 1) === 0x09)) end--;
  return value.slice(start, end);
}

/**
 * The request head at the start of `buffer`, when it is whole and as plain as a
 * player's or a benchmark's: `GET` or `HEAD` of an origin-form target,
 * HTTP/1.1, CRLF line ends, one Host, no header twice, no body, no
 * connection option but `keep-alive`. Undefined for anything else, an
 * incomplete head included: Node's parser then reads the request, and
 * judges it as it always does.
 */
export function readPlainRequestHead(buffer: Buffer): PlainRequestHead | undefined {
  const end = buffer.indexOf(HEAD_END);
  if (end === -1 || end > MAX_HEAD_BYTES) return undefined;
  const lines = buffer.toString('latin1', 0, end).split('\r\n');
  const requestLine = REQUEST_LINE.exec(lines[0]!);
  if (!requestLine || lines.length > MAX_FIELDS + 1) return undefined;
  // No prototype: a field named `constructor` or `__proto__` is a field like any other.
  const headers: Record<string, string> = Object.create(null);
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) return undefined;
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1);
    if (!TOKEN.test(name) || !PLAIN_VALUE.test(value) || headers[name] !== undefined || NOT_PLAIN.has(name)) return undefined;
    headers[name] = trimWhitespace(value);
  }
  if (headers.host === undefined) return undefined;
  if (headers.connection !== undefined && headers.connection.toLowerCase() !== 'keep-alive') return undefined;
  return { method: requestLine[1] as 'GET' | 'HEAD', target: requestLine[2]!, headers, length: end + HEAD_END.length };
}
