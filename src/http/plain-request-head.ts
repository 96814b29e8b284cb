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
// What would make Node treat the request other than as one bodiless GET or HEAD: the fields
// llhttp reads itself (`proxy-connection` as it reads `connection`), and an expectation.
const NOT_PLAIN = new Set(['content-length', 'transfer-encoding', 'expect', 'upgrade', 'proxy-connection']);

const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
const VERSION = ' HTTP/1.1';

/** The characters from `first` to `last`. */
function span(first: string, last: string): string {
  let chars = '';
  for (let code = first.charCodeAt(0); code <= last.charCodeAt(0); code++) chars += String.fromCharCode(code);
  return chars;
}

/** A table of latin1 codes, 1 for each of `chars`: one lookup per character read. */
function charTable(chars: string): Uint8Array {
  const table = new Uint8Array(256);
  for (let i = 0; i < chars.length; i++) table[chars.charCodeAt(i)] = 1;
  return table;
}

const ALPHANUMERIC = span('A', 'Z') + span('a', 'z') + span('0', '9');
// RFC 9112 3: origin-form of RFC 3986's path and query characters only; anything else is Node's to judge.
const TARGET = charTable(`${ALPHANUMERIC}-._~%!$&'()*+,;=:@/?`);
// RFC 9110 5.6.2.
const TOKEN = charTable(`${ALPHANUMERIC}!#$%&'*+.^_\`|~-`);
// Visible ASCII, spaces and tabs: no obs-text, no control character.
const PLAIN_VALUE = charTable(`\t${span(' ', '~')}`);

/** `GET` or `HEAD`, `/`, target characters, ` HTTP/1.1`: the target, or undefined. */
function requestLineParts(text: string, end: number): { method: 'GET' | 'HEAD'; target: string } | undefined {
  const method = text.startsWith('GET /') ? 'GET' : text.startsWith('HEAD /') ? 'HEAD' : undefined;
  if (method === undefined || !text.startsWith(VERSION, end - VERSION.length)) return undefined;
  const targetStart = method.length + 1;
  const targetEnd = end - VERSION.length;
  for (let i = targetStart; i < targetEnd; i++) if (TARGET[text.charCodeAt(i)] !== 1) return undefined;
  return { method, target: text.slice(targetStart, targetEnd) };
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
  const text = buffer.toString('latin1', 0, end);
  const firstLineEnd = text.indexOf('\r\n');
  // A request line alone has no Host.
  if (firstLineEnd === -1) return undefined;
  const requestLine = requestLineParts(text, firstLineEnd);
  if (!requestLine) return undefined;
  // No prototype: a field named `constructor` or `__proto__` is a field like any other.
  const headers: Record<string, string> = Object.create(null);
  let fields = 0;
  for (let lineStart = firstLineEnd + 2; lineStart < end; ) {
    const found = text.indexOf('\r\n', lineStart);
    const lineEnd = found === -1 ? end : found;
    if (++fields > MAX_FIELDS) return undefined;
    let colon = lineStart;
    let upperCase = false;
    for (; colon < lineEnd; colon++) {
      const code = text.charCodeAt(colon);
      if (code === COLON) break;
      if (TOKEN[code] !== 1) return undefined;
      if (code >= 0x41 && code <= 0x5a) upperCase = true;
    }
    if (colon === lineStart || colon === lineEnd) return undefined;
    // The value without the spaces and tabs around it; every character of the line checked.
    let valueStart = lineEnd;
    let valueEnd = colon + 1;
    for (let i = colon + 1; i < lineEnd; i++) {
      const code = text.charCodeAt(i);
      if (PLAIN_VALUE[code] !== 1) return undefined;
      if (code !== SP && code !== HTAB) {
        if (valueStart === lineEnd) valueStart = i;
        valueEnd = i + 1;
      }
    }
    const name = upperCase ? text.slice(lineStart, colon).toLowerCase() : text.slice(lineStart, colon);
    if (headers[name] !== undefined || NOT_PLAIN.has(name)) return undefined;
    headers[name] = valueStart < valueEnd ? text.slice(valueStart, valueEnd) : '';
    lineStart = lineEnd + 2;
  }
  if (headers.host === undefined) return undefined;
  if (headers.connection !== undefined && headers.connection.toLowerCase() !== 'keep-alive') return undefined;
  return { method: requestLine.method, target: requestLine.target, headers, length: end + HEAD_END.length };
}
