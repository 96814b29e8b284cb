import { createHmac, randomBytes } from 'node:crypto';
import { constantTimeEqual } from '../auth/constant-time.js';

/**
 * How replicas prove to each other that they hold the peer secret without
 * ever sending it (README, "How replicas talk to each other"): a request
 * carries an HMAC over its method, path, a fresh nonce and the time; each
 * answer the caller acts on carries an HMAC over that nonce and the answer's
 * content, so whatever binds a dead replica's port can neither learn the
 * secret nor pass off an answer of its own.
 */

export const PEER_AUTH_SCHEME = 'RecordingGatewayPeer';
/** The response header carrying an answer's proof (the recording stream carries its proofs in its lines instead). */
export const PEER_PROOF_HEADER = 'X-Peer-Proof';
/** How far a request's time may be from ours, either way. */
export const PEER_CLOCK_SKEW_SECONDS = 60;

const REQUEST_LABEL = 'recording-gateway peer request v1';
const ANSWER_LABEL = 'recording-gateway peer answer v1';
const NONCE_BYTES = 16;
const AUTHORIZATION = new RegExp(
  `^${PEER_AUTH_SCHEME} v1 node=([A-Za-z0-9._-]{1,64}), nonce=([0-9a-f]{${NONCE_BYTES * 2}}), ts=([0-9]{1,12}), mac=([0-9a-f]{64})$`,
);

/** What a peer request is signed over. */
export interface PeerRequest {
  method: string;
  path: string;
  node: string;
  nonce: string;
  timestamp: number;
}

/** The answers a caller acts on; each kind is a separate domain, so one proof never passes for another. */
export type PeerAnswerKind = 'head' | 'trailer' | 'purge' | 'redis';

export function peerRequestCanonical(request: PeerRequest): string {
  return [REQUEST_LABEL, request.method.toUpperCase(), request.path, request.node, request.nonce, String(request.timestamp)].join('\n');
}

export function peerAnswerCanonical(nonce: string, kind: PeerAnswerKind, content: string): string {
  return [ANSWER_LABEL, nonce, kind, content].join('\n');
}

function mac(secret: string, canonical: string): string {
  return createHmac('sha256', secret).update(canonical).digest('hex');
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** The `Authorization` header for one peer request, and the nonce its answer's proofs are bound to. */
export function signPeerRequest(
  secret: string,
  request: { method: string; path: string; node: string },
  now = nowSeconds(),
): { authorization: string; nonce: string } {
  const nonce = randomBytes(NONCE_BYTES).toString('hex');
  const signed = { ...request, nonce, timestamp: now };
  const authorization = `${PEER_AUTH_SCHEME} v1 node=${request.node}, nonce=${nonce}, ts=${now}, mac=${mac(secret, peerRequestCanonical(signed))}`;
  return { authorization, nonce };
}

/** Why a peer request was refused, or the nonce to bind the answer's proofs to. */
export type PeerRequestCheck = { ok: true; nonce: string; node: string } | { ok: false; problem: 'missing' | 'invalid' | 'expired' };

export function checkPeerRequest(
  secret: string,
  authorization: string | undefined,
  request: { method: string; path: string },
  now = nowSeconds(),
): PeerRequestCheck {
  if (authorization === undefined) return { ok: false, problem: 'missing' };
  const match = AUTHORIZATION.exec(authorization);
  if (!match) return { ok: false, problem: 'invalid' };
  const [, node, nonce, ts, presented] = match as unknown as [string, string, string, string, string];
  const timestamp = Number(ts);
  const expected = mac(secret, peerRequestCanonical({ ...request, node, nonce, timestamp }));
  if (!constantTimeEqual(presented, expected)) return { ok: false, problem: 'invalid' };
  // Checked after the MAC, so a stale request is told apart only when it was genuine.
  if (Math.abs(now - timestamp) > PEER_CLOCK_SKEW_SECONDS) return { ok: false, problem: 'expired' };
  return { ok: true, nonce, node };
}

export function signPeerAnswer(secret: string, nonce: string, kind: PeerAnswerKind, content: string): string {
  return mac(secret, peerAnswerCanonical(nonce, kind, content));
}

export function peerAnswerValid(
  secret: string,
  nonce: string,
  kind: PeerAnswerKind,
  content: string,
  proof: string | null | undefined,
): boolean {
  if (typeof proof !== 'string') return false;
  return constantTimeEqual(proof, signPeerAnswer(secret, nonce, kind, content));
}

/** Signs the answers to one request: what a route hands the code that writes them. */
export type AnswerSigner = (kind: PeerAnswerKind, content: string) => string;

export function answerSigner(secret: string, nonce: string): AnswerSigner {
  return (kind, content) => signPeerAnswer(secret, nonce, kind, content);
}
