import { describe, expect, it } from 'vitest';
import { contentRange, decideRange, unsatisfiedContentRange, type RangeDecision } from '../src/http/range.js';

const full: RangeDecision = { kind: 'full' };
const unsatisfiable: RangeDecision = { kind: 'unsatisfiable' };
const partial = (start: number, end: number): RangeDecision => ({ kind: 'partial', range: { start, end } });

interface Case {
  name: string;
  header: string | undefined;
  size: number;
  expected: RangeDecision;
}

// Cases follow RFC 9110 14.1.1 (syntax), 14.1.2 (byte ranges), 14.1.3
// (suffixes and clamping) and 14.2 (when to ignore Range).
const cases: Case[] = [
  // single int-ranges
  { name: 'a player without Range gets the whole recording', header: undefined, size: 1000, expected: full },
  { name: 'Safari probe bytes=0-1 gets the first two bytes', header: 'bytes=0-1', size: 1000, expected: partial(0, 1) },
  { name: 'bytes=0-0 gets exactly the first byte', header: 'bytes=0-0', size: 1000, expected: partial(0, 0) },
  { name: 'Chrome opening bytes=0- gets the whole body as a 206', header: 'bytes=0-', size: 1000, expected: partial(0, 999) },
  { name: 'seeking with bytes=500- gets the rest from byte 500', header: 'bytes=500-', size: 1000, expected: partial(500, 999) },
  { name: 'a range ending past the end is clamped to the last byte', header: 'bytes=0-999999', size: 1000, expected: partial(0, 999) },
  { name: 'a range ending on the last byte is served as asked', header: 'bytes=10-999', size: 1000, expected: partial(10, 999) },
  { name: 'seeking to the very last byte works', header: 'bytes=999-999', size: 1000, expected: partial(999, 999) },
  { name: 'seeking exactly to the end (bytes=500- on 500 bytes) is a 416', header: 'bytes=500-', size: 500, expected: unsatisfiable },
  { name: 'seeking past the end is a 416', header: 'bytes=600-700', size: 500, expected: unsatisfiable },
  { name: 'a 20-digit first-pos is a 416, not a crash', header: 'bytes=99999999999999999999-', size: 500, expected: unsatisfiable },
  { name: 'a 20-digit last-pos is clamped, not a crash', header: 'bytes=0-99999999999999999999', size: 500, expected: partial(0, 499) },
  { name: 'leading zeros in positions are accepted', header: 'bytes=007-010', size: 500, expected: partial(7, 10) },

  // suffix ranges
  { name: 'bytes=-1 gets only the last byte (ID3v1 tag readers)', header: 'bytes=-1', size: 1000, expected: partial(999, 999) },
  { name: 'bytes=-128 gets the last 128 bytes', header: 'bytes=-128', size: 1000, expected: partial(872, 999) },
  { name: 'a suffix as long as the body gets all of it', header: 'bytes=-1000', size: 1000, expected: partial(0, 999) },
  { name: 'a suffix longer than the body gets all of it, not a 416', header: 'bytes=-5000', size: 1000, expected: partial(0, 999) },
  { name: 'bytes=-0 is a 416', header: 'bytes=-0', size: 1000, expected: unsatisfiable },

  // invalid: the header is ignored and the whole body is sent
  { name: 'a backwards range bytes=5-2 is ignored, not a 416', header: 'bytes=5-2', size: 1000, expected: full },
  { name: 'a backwards range among good ones spoils the header', header: 'bytes=0-1,5-2', size: 1000, expected: full },
  { name: 'garbage bytes=abc is ignored', header: 'bytes=abc', size: 1000, expected: full },
  { name: 'an empty range set bytes= is ignored', header: 'bytes=', size: 1000, expected: full },
  { name: 'a range set of only commas is ignored', header: 'bytes=,,', size: 1000, expected: full },
  { name: 'a Range without bytes= is ignored', header: '0-1', size: 1000, expected: full },
  { name: 'an empty Range header is ignored', header: '', size: 1000, expected: full },
  { name: 'a bare dash bytes=- is ignored', header: 'bytes=-', size: 1000, expected: full },
  { name: 'negative numbers are ignored', header: 'bytes=-1-5', size: 1000, expected: full },
  { name: 'decimal positions are ignored', header: 'bytes=0.5-1', size: 1000, expected: full },
  { name: 'whitespace inside a range-spec is ignored', header: 'bytes=0 - 1', size: 1000, expected: full },
  { name: 'whitespace between the unit and = is ignored', header: 'bytes =0-1', size: 1000, expected: full },
  { name: 'another unit items=0-1 is ignored', header: 'items=0-1', size: 1000, expected: full },
  { name: 'a unit that only starts with bytes is ignored', header: 'bytesx=0-1', size: 1000, expected: full },

  // tolerance the RFC allows
  { name: 'the unit is case-insensitive (Bytes=0-1)', header: 'Bytes=0-1', size: 1000, expected: partial(0, 1) },
  { name: 'the unit is case-insensitive (BYTES=0-1)', header: 'BYTES=0-1', size: 1000, expected: partial(0, 1) },
  { name: 'whitespace around the whole value is tolerated', header: '  bytes=0-1\t', size: 1000, expected: partial(0, 1) },
  { name: 'whitespace after = is tolerated (bytes= 0-1)', header: 'bytes= 0-1', size: 1000, expected: partial(0, 1) },
  { name: 'empty list elements are tolerated', header: 'bytes=0-1,,', size: 1000, expected: partial(0, 1) },

  // several ranges
  { name: 'overlapping ranges bytes=0-5,3-10 merge into one 206 of 0-10', header: 'bytes=0-5,3-10', size: 1000, expected: partial(0, 10) },
  { name: 'adjacent ranges bytes=0-4,5-9 merge into one 206 of 0-9', header: 'bytes=0-4,5-9', size: 1000, expected: partial(0, 9) },
  { name: 'adjacent ranges with spaces after commas merge', header: 'bytes=0-4, 5-9', size: 1000, expected: partial(0, 9) },
  { name: 'a range inside another merges into the outer one', header: 'bytes=0-100,10-20', size: 1000, expected: partial(0, 100) },
  { name: 'a suffix overlapping an open range merges', header: 'bytes=900-,-50', size: 1000, expected: partial(900, 999) },
  { name: 'disjoint ranges bytes=0-1 , 3-4 get the whole body, not multipart', header: 'bytes=0-1 , 3-4', size: 1000, expected: full },
  { name: 'out-of-order disjoint ranges bytes=10-20,0-5 get the whole body', header: 'bytes=10-20,0-5', size: 1000, expected: full },
  {
    name: 'a satisfiable range next to an unsatisfiable one is served alone',
    header: 'bytes=0-1,2000-3000',
    size: 1000,
    expected: partial(0, 1),
  },
  { name: 'bytes=-0 next to a good range is dropped', header: 'bytes=-0,5-6', size: 1000, expected: partial(5, 6) },
  { name: 'several ranges all past the end are a 416', header: 'bytes=1000-1001,2000-', size: 1000, expected: unsatisfiable },

  // an empty recording: nothing can be cut out of it
  { name: 'an empty body answers bytes=0-0 with a 416', header: 'bytes=0-0', size: 0, expected: unsatisfiable },
  { name: 'an empty body answers bytes=-0 with a 416', header: 'bytes=-0', size: 0, expected: unsatisfiable },
  { name: 'an empty body answers a suffix with the (empty) whole body', header: 'bytes=-10', size: 0, expected: full },
  { name: 'an empty body ignores a malformed Range', header: 'bytes=abc', size: 0, expected: full },
];

describe('decideRange', () => {
  it.each(cases)('$name', ({ header, size, expected }) => {
    expect(decideRange(header, size)).toEqual(expected);
  });

  // `bytes=a-b` takes a shortcut; with whitespace after "=" the same range goes through the general parser.
  it('a single range decides the same with and without the shortcut', () => {
    const positions = ['0', '1', '2', '9', '10', '499', '500', '501', '999', '1000', '007', '999999999999999', '1234567890123456'];
    let compared = 0;
    for (const size of [1, 2, 10, 500, 1000]) {
      for (const first of positions) {
        for (const last of ['', ...positions]) {
          for (const unit of ['bytes', 'BYTES']) {
            expect(decideRange(`${unit}=${first}-${last}`, size), `${unit}=${first}-${last} of ${size}`).toEqual(
              decideRange(`${unit}= ${first}-${last}`, size),
            );
            compared++;
          }
        }
      }
    }
    expect(compared).toBe(5 * 13 * 14 * 2);
  });

  it('a bad size is a programming error that names the argument', () => {
    expect(() => decideRange('bytes=0-1', -1)).toThrow(/size/);
    expect(() => decideRange('bytes=0-1', 1.5)).toThrow(/size/);
    expect(() => decideRange('bytes=0-1', Number.NaN)).toThrow(/size/);
  });
});

describe('Content-Range values', () => {
  it('a 206 says which bytes of how many it carries', () => {
    expect(contentRange({ start: 0, end: 99 }, 1000)).toBe('bytes 0-99/1000');
    expect(contentRange({ start: 999, end: 999 }, 1000)).toBe('bytes 999-999/1000');
  });

  it('a 416 tells the player the real size so it can seek again', () => {
    expect(unsatisfiedContentRange(1000)).toBe('bytes */1000');
    expect(unsatisfiedContentRange(0)).toBe('bytes */0');
  });
});
