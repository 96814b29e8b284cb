import { describe, expect, test } from 'vitest';
import { bearerToken } from '../../src/auth/bearer.js';

// RFC 6750 2.1: `Bearer` in any case, one or more spaces, a token of visible ASCII, optional spaces.
describe('bearerToken', () => {
  test.each([
    ['Bearer abc', 'abc'],
    ['bearer abc', 'abc'],
    ['BEARER abc', 'abc'],
    ['bEaReR   abc  ', 'abc'],
    ['Bearer rg_live_0123456789abcdef', 'rg_live_0123456789abcdef'],
    ['Bearer !~"', '!~"'],
    ['Bearer a', 'a'],
  ])('%j is the token %j', (header, token) => {
    expect(bearerToken(header)).toBe(token);
  });

  test.each([
    '',
    'Bearer',
    'Bearer ',
    'Bearer    ',
    'Bearerabc',
    'Bearer\tabc',
    'Bearer abc def',
    'Bearer abc\t',
    'Bearer abc\u0001',
    'Bearer ab\u00e9',
    'Basic abc',
    'Bearex abc',
    'Bearer\u00a0abc',
    ' Bearer abc',
    'Bearer abc\u017f',
    '\u017fearer abc',
  ])('%j has no bearer token', (header) => {
    expect(bearerToken(header)).toBeUndefined();
  });
});
