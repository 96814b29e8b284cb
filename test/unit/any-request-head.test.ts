import { expect, test } from 'vitest';
import { readAnyRequestHead } from '../../src/http/any-request-head.js';

const bytes = (text: string) => Buffer.from(text, 'latin1');

test('any request line and fields: the method, the target, the first of each field, and where the next request starts', () => {
  const first =
    'POST /v1/call/recording/1/signed-url?x=1 HTTP/1.0\r\nX-Request-Id: one-1234\r\nx-request-id: two-1234\r\nContent-Length: 2\r\n\r\n{}';
  const head = readAnyRequestHead(bytes(`${first}GET / HTTP/1.1\r\n\r\n`));
  expect(head).toMatchObject({ method: 'POST', target: '/v1/call/recording/1/signed-url?x=1', length: first.length });
  expect(head?.fields.requestId).toBe('one-1234');
});

test('two credentials vouch for nothing: the app refuses such a request', () => {
  const head = readAnyRequestHead(bytes('GET /a HTTP/1.1\r\nAuthorization: Bearer one\r\nAuthorization: Bearer two\r\n\r\n'));
  expect(head?.fields.authorization).toBeUndefined();
  expect(readAnyRequestHead(bytes('GET /a HTTP/1.1\r\nAuthorization: Bearer one\r\n\r\n'))?.fields.authorization).toBe('Bearer one');
});

test('nothing where the head or its body is not whole, the body cannot be measured, or the line is no request line', () => {
  expect(readAnyRequestHead(bytes('GET /a HTTP/1.1\r\nHost: x\r\n'))).toBeUndefined();
  expect(readAnyRequestHead(bytes('POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}'))).toBeUndefined();
  expect(readAnyRequestHead(bytes('POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'))).toBeUndefined();
  expect(readAnyRequestHead(bytes('POST /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n'))).toBeUndefined();
  expect(readAnyRequestHead(bytes('GARBAGE\r\n\r\n'))).toBeUndefined();
  expect(readAnyRequestHead(bytes(`GET /${'a'.repeat(9000)} HTTP/1.1\r\n\r\n`))).toBeUndefined();
});
