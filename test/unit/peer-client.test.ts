/**
 * The peer client uses nothing of an answer before its proof is checked: a
 * head line without a valid proof is no answer, and a recording's last bytes
 * wait for the holder's signed trailer, which must match the sha256 and size
 * of what arrived. Against a loopback HTTP server that plays the holder.
 */
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { PEER_PROOF_HEADER, checkPeerRequest, signPeerAnswer } from '../../src/cluster/peer-auth.js';
import { PeerBodyUnprovenError, PeerClient, PeerUnprovenError } from '../../src/cluster/peer-client.js';
import { silentLogger } from '../../src/logger.js';
import { RetryableUpstreamError } from '../../src/upstream/errors.js';

const SECRET = 'peer-secret-for-peer-client-tests-0123456789';
const NAMESPACE = '0123456789abcdef0123456789abcdef';
const RECORDING = Buffer.concat([Buffer.from('ID3'), Buffer.alloc(64 * 1024, 7)]);

/** How the holder answers: which proofs it gets right, and what it sends after the head. */
interface Behaviour {
  headProof?: 'right' | 'wrong';
  body?: Buffer;
  trailer?: 'right' | 'wrong-proof' | 'wrong-sha256' | 'none';
  proofHeader?: 'right' | 'wrong' | 'none';
}

let behaviour: Behaviour = {};
let server: Server;
let base: string;
const warnings: unknown[] = [];

function client(): PeerClient {
  const logger = { ...silentLogger(), warn: (...args: unknown[]) => warnings.push(args) } as unknown as ReturnType<typeof silentLogger>;
  return new PeerClient({
    peerSecret: SECRET,
    nodeId: 'gw-test',
    logger,
    headTimeoutMs: 2_000,
    purgeTimeoutMs: 2_000,
    bodyIdleTimeoutMs: 2_000,
  });
}

beforeAll(async () => {
  server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://holder');
    const checked = checkPeerRequest(SECRET, request.headers.authorization, { method: request.method ?? '', path: url.pathname });
    if (!checked.ok) {
      response.writeHead(401).end();
      return;
    }
    const sign = (kind: 'head' | 'trailer' | 'purge' | 'redis', content: string) => signPeerAnswer(SECRET, checked.nonce, kind, content);
    const proofHeader = (kind: 'purge' | 'redis', content: string) =>
      behaviour.proofHeader === 'none'
        ? {}
        : { [PEER_PROOF_HEADER]: behaviour.proofHeader === 'wrong' ? '0'.repeat(64) : sign(kind, content) };
    if (url.pathname.startsWith('/internal/v1/purge/')) {
      response.writeHead(204, proofHeader('purge', '204')).end();
      return;
    }
    if (url.pathname === '/internal/v1/redis') {
      response.writeHead(200, { 'content-type': 'application/json', ...proofHeader('redis', 'up') }).end('{"redis":"up"}');
      return;
    }
    const head = JSON.stringify({ size: RECORDING.length, contentType: 'audio/mpeg' });
    const body = behaviour.body ?? RECORDING;
    const sha256 = createHash('sha256')
      .update(behaviour.trailer === 'wrong-sha256' ? Buffer.from('other') : RECORDING)
      .digest('hex');
    const trailer = JSON.stringify({ sha256, size: RECORDING.length });
    const trailerProof = behaviour.trailer === 'wrong-proof' ? '0'.repeat(64) : sign('trailer', trailer);
    response.writeHead(200, { 'content-type': 'application/x-recording-gateway-peer' });
    response.write(`${behaviour.headProof === 'wrong' ? '0'.repeat(64) : sign('head', head)} ${head}\n`);
    response.write(body);
    response.end(behaviour.trailer === 'none' ? '' : `${trailerProof} ${trailer}\n`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

/** Every chunk the client yields, and how reading ended. */
async function drain(answer: { chunks(): AsyncIterable<Uint8Array> }): Promise<{ bytes: Buffer; error: unknown }> {
  const pieces: Buffer[] = [];
  try {
    for await (const piece of answer.chunks()) pieces.push(Buffer.from(piece));
    return { bytes: Buffer.concat(pieces), error: undefined };
  } catch (error) {
    return { bytes: Buffer.concat(pieces), error };
  }
}

describe('PeerClient.openRecording', () => {
  test('a holder that proves head and trailer: the whole recording', async () => {
    behaviour = {};
    const { bytes, error } = await drain(await client().openRecording(base, NAMESPACE, '1'));
    expect(error).toBeUndefined();
    expect(bytes.equals(RECORDING)).toBe(true);
  });

  test('a head without a valid proof is no answer, and is said once', async () => {
    behaviour = { headProof: 'wrong' };
    warnings.length = 0;
    const peers = client();
    await expect(peers.openRecording(base, NAMESPACE, '1')).rejects.toBeInstanceOf(PeerUnprovenError);
    await expect(peers.openRecording(base, NAMESPACE, '1')).rejects.toBeInstanceOf(PeerUnprovenError);
    expect(warnings).toHaveLength(1);
    expect(JSON.stringify(warnings)).not.toContain(SECRET);
  });

  for (const [what, setup] of [
    ['a body other than the one the trailer proves', { body: Buffer.concat([RECORDING.subarray(0, -1), Buffer.from([0])]) }],
    ['a trailer with a wrong proof', { trailer: 'wrong-proof' }],
    ['a trailer naming another sha256', { trailer: 'wrong-sha256' }],
    ['no trailer', { trailer: 'none' }],
  ] as Array<[string, Behaviour]>) {
    test(`${what}: the read fails before the last bytes are given out, as one worth fetching again (from the next source)`, async () => {
      behaviour = setup;
      const { bytes, error } = await drain(await client().openRecording(base, NAMESPACE, '1'));
      expect(error).toBeInstanceOf(Error);
      expect(bytes.length).toBeLessThan(RECORDING.length);
      // A download nobody has a byte of yet is fetched again at once, not answered 502.
      expect(error).toBeInstanceOf(RetryableUpstreamError);
      if (setup.trailer !== 'none') expect(error).toBeInstanceOf(PeerBodyUnprovenError);
    });
  }
});

describe('PeerClient.purge and redisUp', () => {
  test('a proven answer is taken', async () => {
    behaviour = {};
    await expect(client().purge(base, NAMESPACE, '1')).resolves.toBeUndefined();
    await expect(client().redisUp(base)).resolves.toBe(true);
  });

  test('a missing or wrong proof is no confirmation', async () => {
    for (const proofHeader of ['none', 'wrong'] as const) {
      behaviour = { proofHeader };
      await expect(client().purge(base, NAMESPACE, '1'), proofHeader).rejects.toThrow(/no valid proof/);
      await expect(client().redisUp(base), proofHeader).rejects.toThrow(/no valid proof/);
    }
  });
});
