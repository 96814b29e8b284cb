import { describe, expect, it } from 'vitest';
import {
  evaluatePreconditions,
  httpDate,
  parseEntityTagList,
  rangeIsApplicable,
  type ConditionalHeaders,
  type ConditionalOutcome,
  type Validators,
} from '../src/http/conditional.js';

const ETAG = '"sha256-abc"';
const MODIFIED = new Date('1994-11-06T08:49:37.250Z'); // sub-second part never reaches the wire
const MODIFIED_HTTP = 'Sun, 06 Nov 1994 08:49:37 GMT';
const EARLIER_HTTP = 'Sun, 06 Nov 1994 08:49:36 GMT';
const LATER_HTTP = 'Sun, 06 Nov 1994 08:49:38 GMT';
const current: Validators = { etag: ETAG, lastModified: MODIFIED };

interface PreconditionCase {
  name: string;
  headers: Partial<ConditionalHeaders>;
  validators?: Validators;
  expected: ConditionalOutcome;
}

// RFC 9110 13.1.1 to 13.1.4 and the evaluation order of 13.2.2.
const preconditionCases: PreconditionCase[] = [
  { name: 'a plain GET is answered normally', headers: {}, expected: 'proceed' },

  // If-None-Match (13.1.2): weak comparison, 304 for GET and HEAD
  { name: 'a browser revalidating with the current ETag gets a 304', headers: { ifNoneMatch: ETAG }, expected: 'not-modified' },
  {
    name: 'a HEAD revalidating with the current ETag gets a 304',
    headers: { method: 'HEAD', ifNoneMatch: ETAG },
    expected: 'not-modified',
  },
  { name: 'a browser holding another ETag gets the recording', headers: { ifNoneMatch: '"other"' }, expected: 'proceed' },
  {
    name: 'a weak copy of the current ETag still gets a 304 (weak comparison)',
    headers: { ifNoneMatch: `W/${ETAG}` },
    expected: 'not-modified',
  },
  { name: 'If-None-Match: * gets a 304 because the recording exists', headers: { ifNoneMatch: '*' }, expected: 'not-modified' },
  { name: 'the current ETag anywhere in a list gets a 304', headers: { ifNoneMatch: `"a", W/"b", ${ETAG}` }, expected: 'not-modified' },
  { name: 'a list without the current ETag gets the recording', headers: { ifNoneMatch: '"a", W/"b"' }, expected: 'proceed' },
  {
    name: 'a tag with a comma inside is not split into a false match',
    headers: { ifNoneMatch: '"x,sha256-abc"' },
    validators: { etag: '"x"' },
    expected: 'proceed',
  },
  {
    name: 'a current ETag with a comma inside still matches in a list',
    headers: { ifNoneMatch: '"a", "x,y"' },
    validators: { etag: '"x,y"' },
    expected: 'not-modified',
  },
  { name: 'the ETag without quotes never matches (malformed)', headers: { ifNoneMatch: 'sha256-abc' }, expected: 'proceed' },
  { name: 'a lower-case w/ prefix is malformed and never matches', headers: { ifNoneMatch: `w/${ETAG}` }, expected: 'proceed' },
  {
    name: 'a recording without ETag never matches a tag list',
    headers: { ifNoneMatch: ETAG },
    validators: { lastModified: MODIFIED },
    expected: 'proceed',
  },
  {
    name: 'a matching If-None-Match on a POST is a 412, not a 304',
    headers: { method: 'POST', ifNoneMatch: ETAG },
    expected: 'precondition-failed',
  },

  // If-Modified-Since (13.1.3)
  { name: 'If-Modified-Since equal to Last-Modified gets a 304', headers: { ifModifiedSince: MODIFIED_HTTP }, expected: 'not-modified' },
  { name: 'If-Modified-Since after Last-Modified gets a 304', headers: { ifModifiedSince: LATER_HTTP }, expected: 'not-modified' },
  { name: 'If-Modified-Since before Last-Modified gets the recording', headers: { ifModifiedSince: EARLIER_HTTP }, expected: 'proceed' },
  {
    name: 'an RFC 850 If-Modified-Since date is understood',
    headers: { ifModifiedSince: 'Sunday, 06-Nov-94 08:49:37 GMT' },
    expected: 'not-modified',
  },
  {
    name: 'an asctime If-Modified-Since date is understood (as GMT)',
    headers: { ifModifiedSince: 'Sun Nov  6 08:49:37 1994' },
    expected: 'not-modified',
  },
  { name: 'a garbage If-Modified-Since is ignored', headers: { ifModifiedSince: 'yesterday' }, expected: 'proceed' },
  { name: 'a number as If-Modified-Since is not read as a year', headers: { ifModifiedSince: '3000' }, expected: 'proceed' },
  { name: 'an ISO date as If-Modified-Since is ignored', headers: { ifModifiedSince: '2099-01-01T00:00:00Z' }, expected: 'proceed' },
  { name: 'an impossible date (31 Feb) is ignored', headers: { ifModifiedSince: 'Thu, 31 Feb 2099 00:00:00 GMT' }, expected: 'proceed' },
  {
    name: 'a list of dates in If-Modified-Since is ignored',
    headers: { ifModifiedSince: `${LATER_HTTP}, ${LATER_HTTP}` },
    expected: 'proceed',
  },
  { name: 'If-Modified-Since on a POST is ignored', headers: { method: 'POST', ifModifiedSince: LATER_HTTP }, expected: 'proceed' },
  {
    name: 'If-Modified-Since is ignored when the recording has no date',
    headers: { ifModifiedSince: LATER_HTTP },
    validators: { etag: ETAG },
    expected: 'proceed',
  },

  // 13.2.2: If-None-Match takes precedence over If-Modified-Since
  {
    name: 'a stale ETag wins over a fresh If-Modified-Since: full answer, not 304',
    headers: { ifNoneMatch: '"old"', ifModifiedSince: LATER_HTTP },
    expected: 'proceed',
  },
  {
    name: 'a matching ETag wins over an old If-Modified-Since: 304',
    headers: { ifNoneMatch: ETAG, ifModifiedSince: EARLIER_HTTP },
    expected: 'not-modified',
  },

  // If-Match (13.1.1): strong comparison
  { name: 'If-Match with the current ETag proceeds', headers: { ifMatch: ETAG }, expected: 'proceed' },
  { name: 'If-Match with another ETag is a 412', headers: { ifMatch: '"other"' }, expected: 'precondition-failed' },
  {
    name: 'If-Match with a weak copy of the ETag is a 412 (strong comparison)',
    headers: { ifMatch: `W/${ETAG}` },
    expected: 'precondition-failed',
  },
  { name: 'If-Match: * proceeds because the recording exists', headers: { ifMatch: '*' }, expected: 'proceed' },
  { name: 'If-Match with the ETag in a list proceeds', headers: { ifMatch: `"a", ${ETAG}` }, expected: 'proceed' },
  {
    name: 'If-Match on a recording without ETag is a 412',
    headers: { ifMatch: ETAG },
    validators: { lastModified: MODIFIED },
    expected: 'precondition-failed',
  },
  {
    name: 'a failing If-Match is a 412 even when If-None-Match would 304',
    headers: { ifMatch: '"other"', ifNoneMatch: ETAG },
    expected: 'precondition-failed',
  },

  // If-Unmodified-Since (13.1.4)
  {
    name: 'If-Unmodified-Since before Last-Modified is a 412',
    headers: { ifUnmodifiedSince: EARLIER_HTTP },
    expected: 'precondition-failed',
  },
  { name: 'If-Unmodified-Since equal to Last-Modified proceeds', headers: { ifUnmodifiedSince: MODIFIED_HTTP }, expected: 'proceed' },
  { name: 'a garbage If-Unmodified-Since is ignored', headers: { ifUnmodifiedSince: 'not a date' }, expected: 'proceed' },
  {
    name: 'If-Unmodified-Since is ignored when If-Match is present',
    headers: { ifMatch: ETAG, ifUnmodifiedSince: EARLIER_HTTP },
    expected: 'proceed',
  },
  {
    name: 'a passing If-Unmodified-Since still lets If-None-Match 304',
    headers: { ifUnmodifiedSince: LATER_HTTP, ifNoneMatch: ETAG },
    expected: 'not-modified',
  },
];

describe('evaluatePreconditions', () => {
  it.each(preconditionCases)('$name', ({ headers, validators = current, expected }) => {
    expect(evaluatePreconditions({ method: 'GET', ...headers }, validators)).toBe(expected);
  });
});

describe('evaluatePreconditions on a DELETE (13.1.1, 13.1.2)', () => {
  it.each([
    { name: 'If-Match: * holds when the recording exists', headers: { ifMatch: '*' }, validators: current, expected: 'proceed' },
    { name: 'If-Match: * fails when there is none', headers: { ifMatch: '*' }, validators: undefined, expected: 'precondition-failed' },
    {
      name: 'If-Match with a tag fails when there is none',
      headers: { ifMatch: ETAG },
      validators: undefined,
      expected: 'precondition-failed',
    },
    { name: 'If-None-Match: * fails when it exists', headers: { ifNoneMatch: '*' }, validators: current, expected: 'precondition-failed' },
    { name: 'If-None-Match: * holds when there is none', headers: { ifNoneMatch: '*' }, validators: undefined, expected: 'proceed' },
    {
      name: 'If-Unmodified-Since is ignored when there is none',
      headers: { ifUnmodifiedSince: EARLIER_HTTP },
      validators: undefined,
      expected: 'proceed',
    },
  ] as const)('$name', ({ headers, validators, expected }) => {
    expect(evaluatePreconditions({ method: 'DELETE', ...headers }, validators)).toBe(expected);
  });
});

interface IfRangeCase {
  name: string;
  ifRange: string | undefined;
  validators?: Validators;
  expected: boolean;
}

// RFC 9110 13.1.5
const ifRangeCases: IfRangeCase[] = [
  { name: 'a Range without If-Range is served as a 206', ifRange: undefined, expected: true },
  { name: 'resuming with the current ETag gets the 206', ifRange: ETAG, expected: true },
  { name: 'resuming with another ETag gets the whole new recording', ifRange: '"other"', expected: false },
  { name: 'a weak ETag in If-Range never resumes (strong comparison)', ifRange: `W/${ETAG}`, expected: false },
  { name: 'a weak current ETag never resumes', ifRange: ETAG, validators: { etag: `W/${ETAG}` }, expected: false },
  {
    name: 'an ETag If-Range on a recording without ETag gets the whole body',
    ifRange: ETAG,
    validators: { lastModified: MODIFIED },
    expected: false,
  },
  { name: 'a list of ETags in If-Range is not an entity-tag: whole body', ifRange: `${ETAG}, "other"`, expected: false },
  { name: 'resuming with the exact Last-Modified date gets the 206', ifRange: MODIFIED_HTTP, expected: true },
  { name: 'resuming with an earlier date gets the whole body', ifRange: EARLIER_HTTP, expected: false },
  { name: 'resuming with a later date gets the whole body', ifRange: LATER_HTTP, expected: false },
  {
    name: 'a date If-Range on a recording without date gets the whole body',
    ifRange: MODIFIED_HTTP,
    validators: { etag: ETAG },
    expected: false,
  },
  { name: 'garbage If-Range gets the whole body', ifRange: 'whatever', expected: false },
  { name: 'an empty If-Range gets the whole body', ifRange: '', expected: false },
  { name: 'an unquoted ETag in If-Range gets the whole body', ifRange: 'sha256-abc', expected: false },
];

describe('rangeIsApplicable', () => {
  it.each(ifRangeCases)('$name', ({ ifRange, validators = current, expected }) => {
    expect(rangeIsApplicable(ifRange, validators)).toBe(expected);
  });
});

describe('parseEntityTagList', () => {
  it.each([
    { name: 'a single tag is read', value: '"a"', expected: ['"a"'] },
    { name: 'a star is read as any', value: ' * ', expected: '*' },
    { name: 'weak and strong tags keep their W/ prefix', value: 'W/"a", "b"', expected: ['W/"a"', '"b"'] },
    { name: 'a comma inside a quoted tag does not split it', value: '"a,b", "c"', expected: ['"a,b"', '"c"'] },
    { name: 'extra commas and spaces are skipped', value: ' , "a" ,, "b" ,', expected: ['"a"', '"b"'] },
    { name: 'an unquoted member is dropped, the rest kept', value: 'abc, "d"', expected: ['"d"'] },
    { name: 'a member with junk after the quote is dropped', value: '"a"x, "b"', expected: ['"b"'] },
    { name: 'an unterminated quote drops the rest', value: '"a", "b', expected: ['"a"'] },
    { name: 'a star inside a list is not "any"', value: '"a", *', expected: ['"a"'] },
    { name: 'an empty value is an empty list', value: '', expected: [] },
  ])('$name', ({ value, expected }) => {
    expect(parseEntityTagList(value)).toEqual(expected);
  });
});

describe('httpDate', () => {
  it('Last-Modified goes out as an IMF-fixdate browsers send back', () => {
    expect(httpDate(MODIFIED)).toBe(MODIFIED_HTTP);
    expect(httpDate(new Date('2024-01-05T03:04:05Z'))).toBe('Fri, 05 Jan 2024 03:04:05 GMT');
  });

  it('a date we sent round-trips through If-Modified-Since as a 304', () => {
    const sent = httpDate(MODIFIED);
    expect(evaluatePreconditions({ method: 'GET', ifModifiedSince: sent }, current)).toBe('not-modified');
    expect(rangeIsApplicable(sent, current)).toBe(true);
  });

  it('an invalid date is a programming error, not a bogus header', () => {
    expect(() => httpDate(new Date(Number.NaN))).toThrow(RangeError);
    expect(() => httpDate(new Date('+012000-01-01T00:00:00Z'))).toThrow(RangeError);
  });
});
