/**
 * Peer requests and answers prove knowledge of the peer secret without ever
 * carrying it: the canonical strings, the signatures, and the refusal of every
 * tampered field, a stale time, and the old `Bearer <peer secret>` form.
 */
import { describe, expect, test } from 'vitest';
import {
  PEER_CLOCK_SKEW_SECONDS,
  checkPeerRequest,
  peerAnswerCanonical,
  peerAnswerValid,
  peerRequestCanonical,
  signPeerAnswer,
  signPeerRequest,
} from '../../src/cluster/peer-auth.js';

const SECRET = 'peer-secret-for-unit-tests-0123456789abcdef';
const NOW = 1_800_000_000;
const REQUEST = { method: 'GET', path: '/internal/v1/recordings/0123456789abcdef0123456789abcdef/42', node: 'gw-1' };

function fields(authorization: string): Record<string, string> {
  const [, params] = /^RecordingGatewayPeer v1 (.*)$/.exec(authorization)!;
  return Object.fromEntries(params!.split(', ').map((pair) => pair.split('=') as [string, string]));
}

function header(values: Record<string, string>): string {
  return `RecordingGatewayPeer v1 node=${values.node}, nonce=${values.nonce}, ts=${values.ts}, mac=${values.mac}`;
}

describe('peer requests', () => {
  test('the canonical string is the label, method, path, node, nonce and time, one a line', () => {
    expect(peerRequestCanonical({ ...REQUEST, method: 'get', nonce: 'ab', timestamp: 7 })).toBe(
      'recording-gateway peer request v1\nGET\n/internal/v1/recordings/0123456789abcdef0123456789abcdef/42\ngw-1\nab\n7',
    );
  });

  test('a signed request is accepted, and its header holds no part of the secret', () => {
    const { authorization, nonce } = signPeerRequest(SECRET, REQUEST, NOW);
    expect(authorization).toMatch(/^RecordingGatewayPeer v1 node=gw-1, nonce=[0-9a-f]{32}, ts=1800000000, mac=[0-9a-f]{64}$/);
    expect(authorization).not.toContain(SECRET.slice(0, 12));
    expect(checkPeerRequest(SECRET, authorization, REQUEST, NOW)).toEqual({ ok: true, nonce, node: 'gw-1' });
    expect(checkPeerRequest(SECRET, authorization, REQUEST, NOW + PEER_CLOCK_SKEW_SECONDS)).toMatchObject({ ok: true });
  });

  test('each request has a nonce of its own', () => {
    const first = signPeerRequest(SECRET, REQUEST, NOW);
    const second = signPeerRequest(SECRET, REQUEST, NOW);
    expect(first.nonce).not.toBe(second.nonce);
  });

  test('a tampered field, another method or path, or another secret is refused as invalid', () => {
    const { authorization } = signPeerRequest(SECRET, REQUEST, NOW);
    const signed = fields(authorization);
    const flip = (hex: string) => (hex[0] === '0' ? '1' : '0') + hex.slice(1);
    const tampered = [
      header({ ...signed, node: 'gw-2' }),
      header({ ...signed, nonce: flip(signed.nonce!) }),
      header({ ...signed, ts: String(NOW + 1) }),
      header({ ...signed, mac: flip(signed.mac!) }),
      `${authorization} `,
      authorization.replace('v1', 'v2'),
    ];
    for (const presented of tampered)
      expect(checkPeerRequest(SECRET, presented, REQUEST, NOW), presented).toEqual({ ok: false, problem: 'invalid' });
    expect(checkPeerRequest(SECRET, authorization, { ...REQUEST, method: 'POST' }, NOW)).toEqual({ ok: false, problem: 'invalid' });
    expect(checkPeerRequest(SECRET, authorization, { ...REQUEST, path: REQUEST.path.replace('/42', '/43') }, NOW)).toEqual({
      ok: false,
      problem: 'invalid',
    });
    expect(checkPeerRequest(`${SECRET}x`, authorization, REQUEST, NOW)).toEqual({ ok: false, problem: 'invalid' });
  });

  test('a time more than the allowed skew away, either way, is refused as expired', () => {
    const { authorization } = signPeerRequest(SECRET, REQUEST, NOW);
    expect(checkPeerRequest(SECRET, authorization, REQUEST, NOW + PEER_CLOCK_SKEW_SECONDS + 1)).toEqual({ ok: false, problem: 'expired' });
    expect(checkPeerRequest(SECRET, authorization, REQUEST, NOW - PEER_CLOCK_SKEW_SECONDS - 1)).toEqual({ ok: false, problem: 'expired' });
  });

  test('no header is missing; the old bearer form with the secret itself is invalid', () => {
    expect(checkPeerRequest(SECRET, undefined, REQUEST, NOW)).toEqual({ ok: false, problem: 'missing' });
    expect(checkPeerRequest(SECRET, `Bearer ${SECRET}`, REQUEST, NOW)).toEqual({ ok: false, problem: 'invalid' });
    expect(checkPeerRequest(SECRET, SECRET, REQUEST, NOW)).toEqual({ ok: false, problem: 'invalid' });
  });
});

describe('peer answers', () => {
  const nonce = '0123456789abcdef0123456789abcdef';
  const content = '{"size":10,"contentType":"audio/mpeg"}';

  test('the canonical string is the label, nonce, kind and content, one a line', () => {
    expect(peerAnswerCanonical(nonce, 'head', content)).toBe(`recording-gateway peer answer v1\n${nonce}\nhead\n${content}`);
  });

  test('a proof is accepted for its own nonce, kind and content, and for nothing else', () => {
    const proof = signPeerAnswer(SECRET, nonce, 'head', content);
    expect(peerAnswerValid(SECRET, nonce, 'head', content, proof)).toBe(true);
    expect(peerAnswerValid(SECRET, `${nonce.slice(1)}0`, 'head', content, proof)).toBe(false);
    expect(peerAnswerValid(SECRET, nonce, 'trailer', content, proof)).toBe(false);
    expect(peerAnswerValid(SECRET, nonce, 'head', content.replace('10', '11'), proof)).toBe(false);
    expect(peerAnswerValid(`${SECRET}x`, nonce, 'head', content, proof)).toBe(false);
    expect(
      peerAnswerValid(
        SECRET,
        nonce,
        'head',
        content,
        proof.replace(/^./, (c) => (c === '0' ? '1' : '0')),
      ),
    ).toBe(false);
    expect(peerAnswerValid(SECRET, nonce, 'head', content, null)).toBe(false);
    expect(peerAnswerValid(SECRET, nonce, 'head', content, '')).toBe(false);
  });

  test('a purge or redis proof does not pass for the other', () => {
    const purge = signPeerAnswer(SECRET, nonce, 'purge', '204');
    expect(peerAnswerValid(SECRET, nonce, 'purge', '204', purge)).toBe(true);
    expect(peerAnswerValid(SECRET, nonce, 'redis', '204', purge)).toBe(false);
    const redis = signPeerAnswer(SECRET, nonce, 'redis', 'up');
    expect(peerAnswerValid(SECRET, nonce, 'redis', 'unreachable', redis)).toBe(false);
  });
});
