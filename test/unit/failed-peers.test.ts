/**
 * The memory of peers whose answer for a recording failed (src/cluster/failed-peers.ts):
 * per recording and peer, for a while, and bounded in size.
 */
import { describe, expect, test } from 'vitest';
import { FailedPeers } from '../../src/cluster/failed-peers.js';

function memory(ttlMs: number, maxEntries: number) {
  let now = 1_000;
  const peers = new FailedPeers({ ttlMs, maxEntries, clock: { now: () => now } });
  return { peers, advance: (ms: number) => (now += ms) };
}

describe('FailedPeers', () => {
  test('a peer is passed over only for the recording its answer failed for', () => {
    const { peers } = memory(60_000, 10);
    peers.remember('ns/1', 'http://b');
    expect(peers.failed('ns/1', 'http://b')).toBe(true);
    expect(peers.failed('ns/2', 'http://b')).toBe(false);
    expect(peers.failed('ns/1', 'http://c')).toBe(false);
  });

  test('for its time only; a new failure starts the time again', () => {
    const { peers, advance } = memory(60_000, 10);
    peers.remember('ns/1', 'http://b');
    advance(59_999);
    expect(peers.failed('ns/1', 'http://b')).toBe(true);
    peers.remember('ns/1', 'http://b');
    advance(59_999);
    expect(peers.failed('ns/1', 'http://b')).toBe(true);
    advance(1);
    expect(peers.failed('ns/1', 'http://b')).toBe(false);
    expect(peers.size).toBe(0);
  });

  test('holds at most maxEntries pairs: the oldest go first', () => {
    const { peers } = memory(60_000, 3);
    for (let id = 1; id <= 5; id++) peers.remember(`ns/${id}`, 'http://b');
    expect(peers.size).toBe(3);
    expect(peers.failed('ns/1', 'http://b')).toBe(false);
    expect(peers.failed('ns/2', 'http://b')).toBe(false);
    expect(peers.failed('ns/3', 'http://b')).toBe(true);
    expect(peers.failed('ns/5', 'http://b')).toBe(true);
  });
});
