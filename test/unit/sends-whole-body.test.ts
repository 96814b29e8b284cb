import { describe, expect, test } from 'vitest';
import type { CachedRecording } from '../../src/cache/recording-cache.js';
import { etagFor } from '../../src/cache/recording-meta.js';
import { type RecordingRequest, sendsWholeBody } from '../../src/routes/recording-response.js';

const SIZE = 1000;
const SHA256 = 'a'.repeat(64);
const stored: CachedRecording = {
  key: 'ns/1',
  meta: { namespace: 'ns', callId: '1', size: SIZE, sha256: SHA256, contentType: 'audio/mpeg', fetchedAt: Date.UTC(2026, 0, 1) },
  onDisk: true,
};

function request(headers: Partial<RecordingRequest> = {}): RecordingRequest {
  return {
    method: 'GET',
    range: undefined,
    ifRange: undefined,
    ifMatch: undefined,
    ifNoneMatch: undefined,
    ifModifiedSince: undefined,
    ifUnmodifiedSince: undefined,
    ...headers,
  };
}

describe('whether an answer sends a stored recording whole', () => {
  test.each<[string, Partial<RecordingRequest>]>([
    ['a GET without Range', {}],
    ["a range of every byte (Chrome's bytes=0-)", { range: 'bytes=0-' }],
    ['a range past the end from 0', { range: `bytes=0-${SIZE + 500}` }],
    ['ranges that join into every byte', { range: 'bytes=0-499,500-' }],
    ['a suffix longer than the body', { range: `bytes=-${SIZE * 2}` }],
    ['a malformed Range (ignored: 200)', { range: 'bytes=5-2' }],
    ['another unit (ignored)', { range: 'items=0-1' }],
    ['several ranges that stay several (answered whole)', { range: 'bytes=0-1,10-20' }],
    ['a Range under an If-Range that no longer holds', { range: 'bytes=0-1', ifRange: '"other"' }],
    ['an If-None-Match that does not match', { ifNoneMatch: '"other"' }],
  ])('yes: %s', (_case, headers) => {
    expect(sendsWholeBody(request(headers), stored)).toBe(true);
  });

  test.each<[string, Partial<RecordingRequest>]>([
    ["Safari's probe, bytes=0-1", { range: 'bytes=0-1' }],
    ['100 bytes in the middle', { range: 'bytes=500-599' }],
    ['all but the first byte', { range: 'bytes=1-' }],
    ['the last byte', { range: 'bytes=-1' }],
    ['a HEAD', { method: 'HEAD' }],
    ['a match of If-None-Match (304)', { ifNoneMatch: etagFor(SHA256) }],
    ['an If-Match that fails (412)', { ifMatch: '"other"' }],
    ['an unsatisfiable range (416)', { range: `bytes=${SIZE}-` }],
    ['a range under an If-Range that holds', { range: 'bytes=0-1', ifRange: etagFor(SHA256) }],
  ])('no: %s', (_case, headers) => {
    expect(sendsWholeBody(request(headers), stored)).toBe(false);
  });
});
