import { describe, expect, test } from 'vitest';
import { type PlainRequestHead, readPlainRequestHead } from '../src/http/plain-request-head.js';

const PROBE = 'GET /v1/call/recording/1.mp3 HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer k\r\nRange: bytes=0-1\r\n\r\n';

const FIELD_NAMES = [
  'host',
  'authorization',
  'range',
  'ifRange',
  'ifMatch',
  'ifNoneMatch',
  'ifModifiedSince',
  'ifUnmodifiedSince',
  'origin',
  'requestId',
  'userAgent',
] as const;

/** Every field a memory hit reads, named: undefined for those the head lacks. */
function fieldsOf(head: PlainRequestHead | undefined) {
  return head && Object.fromEntries(FIELD_NAMES.map((name) => [name, head.fields[name]]));
}

function read(head: string) {
  return readPlainRequestHead(Buffer.from(head, 'latin1'));
}

/** A plain head with `line` as its last field. */
function withField(line: string): string {
  return `GET / HTTP/1.1\r\nHost: gw.example\r\n${line}\r\n\r\n`;
}

describe('readPlainRequestHead', () => {
  test('a probe: method, target, its fields, the length up to its blank line', () => {
    const head = read(`${PROBE}GET /next HTTP/1.1\r\n`);
    expect(head?.method).toBe('GET');
    expect(head?.target).toBe('/v1/call/recording/1.mp3');
    expect(head?.length).toBe(PROBE.length);
    expect(fieldsOf(head)).toEqual({
      host: 'gw.example',
      authorization: 'Bearer k',
      range: 'bytes=0-1',
    });
  });

  test('every field a memory hit reads, its name in any case, in its own slot; the others only counted', () => {
    const head = read(
      [
        'GET / HTTP/1.1',
        'HOST: h',
        'authorization: a',
        'RaNgE: r',
        'If-Range: ir',
        'If-Match: im',
        'If-None-Match: inm',
        'If-Modified-Since: ims',
        'If-Unmodified-Since: ius',
        'Origin: o',
        'X-Request-Id: rid',
        'User-Agent: ua',
        'Accept: */*',
        'Connection: keep-alive',
        '',
        '',
      ].join('\r\n'),
    );
    expect(fieldsOf(head)).toEqual({
      host: 'h',
      authorization: 'a',
      range: 'r',
      ifRange: 'ir',
      ifMatch: 'im',
      ifNoneMatch: 'inm',
      ifModifiedSince: 'ims',
      ifUnmodifiedSince: 'ius',
      origin: 'o',
      requestId: 'rid',
      userAgent: 'ua',
    });
  });

  test('HEAD with a query; values lose the spaces and tabs around them, keep those inside; an empty value is kept', () => {
    const head = read(
      'HEAD /v1/call/recording/2.mp3?tenant=a&sig=x HTTP/1.1\r\nhost: \t gw \t\r\nOrigin:\r\nX-Request-Id: \t \r\nUser-Agent: a  b\r\n\r\n',
    );
    expect(head?.method).toBe('HEAD');
    expect(head?.target).toBe('/v1/call/recording/2.mp3?tenant=a&sig=x');
    expect(fieldsOf(head)).toEqual({ host: 'gw', origin: '', requestId: '', userAgent: 'a  b' });
  });

  test('Connection: keep-alive in any case is plain; fields named __proto__ or constructor are fields like any other', () => {
    expect(read(withField('Connection: Keep-Alive'))).toBeDefined();
    const odd = read(withField('__proto__: x\r\nconstructor: y\r\nhasOwnProperty: z'));
    expect(fieldsOf(odd)).toEqual({ host: 'gw.example' });
  });

  test('a field no memory hit reads may come twice: Node would join it, and no answer reads it', () => {
    expect(fieldsOf(read(withField('X-A: 1\r\nx-a: 2\r\n__proto__: x\r\n__PROTO__: y')))).toEqual({ host: 'gw.example' });
  });

  test('a name one character off a known one, or longer, is a field no memory hit reads', () => {
    const head = read(
      withField('Rangf: bytes=0-1\r\nHosts: x\r\nOrigin2: o\r\nContent-Lengthy: 5\r\nExpecu: x\r\nUpgradf: h2c\r\nX-Host: y'),
    );
    expect(fieldsOf(head)).toEqual({ host: 'gw.example' });
  });

  test.each([
    ['an incomplete head', PROBE.slice(0, -2)],
    ['no Host', 'GET / HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n'],
    ['only a request line', 'GET / HTTP/1.1\r\n\r\n'],
    ['HTTP/1.0', 'GET / HTTP/1.0\r\nHost: a\r\n\r\n'],
    ['POST', 'POST / HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['a lowercase method', 'get / HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['an absolute-form target', 'GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['an asterisk target', 'GET * HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['a quote in the target', 'GET /a"b HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['a fragment', 'GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['two spaces before the version', 'GET /a  HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['a tab in the request line', 'GET\t/a HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['a bare LF ending the request line', 'GET / HTTP/1.1\nHost: a\r\n\r\n'],
    ['a bare LF inside a value', withField('X-A: a\nb')],
    ['a bare CR inside a value', withField('X-A: a\rb')],
    ['a field with no colon', withField('X-A')],
    ['a field with no name', withField(': a')],
    ['a space before the colon', withField('X-A : a')],
    ['obs-fold', withField('X-A: a\r\n b')],
    ['a non-token character in a name', withField('X(A): a')],
    ['obs-text in a value', withField('X-A: caf\u00e9')],
    ['a control character in a value', withField('X-A: a\u0000')],
    ['DEL in a value', withField('X-A: a\u007f')],
    ['a field a memory hit reads twice', withField('If-None-Match: "a"\r\nif-none-match: "b"')],
    ['Authorization twice', withField('Authorization: Bearer a\r\nAuthorization: Bearer a')],
    ['Host twice', withField('Host: b')],
    ['Content-Length', withField('Content-Length: 0')],
    ['Transfer-Encoding', withField('Transfer-Encoding: chunked')],
    ['Expect', withField('Expect: 100-continue')],
    ['Upgrade', withField('Upgrade: websocket')],
    ['Proxy-Connection', withField('Proxy-Connection: keep-alive')],
    ['Connection: close', withField('Connection: close')],
    ['Connection with a second option', withField('Connection: keep-alive, Upgrade')],
    ['a head over 8 KiB', withField(`X-A: ${'a'.repeat(8200)}`)],
  ])('%s goes to Node', (_why, head) => {
    expect(read(head)).toBeUndefined();
  });

  test('64 fields are plain, 65 go to Node', () => {
    const fields = (count: number) => Array.from({ length: count - 1 }, (_, i) => `X-${i}: v`).join('\r\n');
    expect(read(withField(fields(64)))).toBeDefined();
    expect(read(withField(fields(65)))).toBeUndefined();
  });

  test('every token character is allowed in a name, every visible character and the tab in a value', () => {
    const name = "!#$%&'*+-.^_`|~09AZaz";
    const value = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i)).join('');
    const head = read(withField(`${name}: x\r\nUser-Agent:\t${value} \t${value}`));
    expect(head?.fields.userAgent).toBe(`${value} \t${value}`);
  });
});
