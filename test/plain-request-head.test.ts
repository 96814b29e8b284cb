import { describe, expect, test } from 'vitest';
import { readPlainRequestHead } from '../src/http/plain-request-head.js';

const PROBE = 'GET /v1/call/recording/1.mp3 HTTP/1.1\r\nHost: gw.example\r\nAuthorization: Bearer k\r\nRange: bytes=0-1\r\n\r\n';

function read(head: string) {
  return readPlainRequestHead(Buffer.from(head, 'latin1'));
}

/** A plain head with `line` as its last field. */
function withField(line: string): string {
  return `GET / HTTP/1.1\r\nHost: gw.example\r\n${line}\r\n\r\n`;
}

describe('readPlainRequestHead', () => {
  test('a probe: method, target, lowercase names, the length up to its blank line', () => {
    const head = read(`${PROBE}GET /next HTTP/1.1\r\n`);
    expect(head).toEqual({
      method: 'GET',
      target: '/v1/call/recording/1.mp3',
      headers: { host: 'gw.example', authorization: 'Bearer k', range: 'bytes=0-1' },
      length: PROBE.length,
    });
    expect(Object.getPrototypeOf(head!.headers)).toBeNull();
  });

  test('HEAD with a query; values lose the spaces and tabs around them, keep those inside; an empty value is kept', () => {
    const head = read(
      'HEAD /v1/call/recording/2.mp3?tenant=a&sig=x HTTP/1.1\r\nhost: \t gw \t\r\nX-Empty:\r\nX-Blank: \t \r\nUser-Agent: a  b\r\n\r\n',
    );
    expect(head?.method).toBe('HEAD');
    expect(head?.target).toBe('/v1/call/recording/2.mp3?tenant=a&sig=x');
    expect({ ...head?.headers }).toEqual({ host: 'gw', 'x-empty': '', 'x-blank': '', 'user-agent': 'a  b' });
  });

  test('Connection: keep-alive in any case is plain; a field named __proto__ is a field like any other', () => {
    expect(read(withField('Connection: Keep-Alive'))?.headers.connection).toBe('Keep-Alive');
    expect(Object.entries(read(withField('__proto__: x'))!.headers)).toContainEqual(['__proto__', 'x']);
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
    ['a field twice', withField('X-A: 1\r\nx-a: 2')],
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
    const head = read(withField(`${name}:\t${value} \t${value}`));
    expect(head?.headers[name.toLowerCase()]).toBe(`${value} \t${value}`);
  });
});
