/**
 * Replicas prove the peer secret to each other without sending it (README,
 * "How replicas talk to each other"). A process that binds a dead replica's
 * port learns no secret from the requests it gets, and cannot pass off a
 * stream of its own: the asking replica downloads from the upstream instead,
 * and never stores or serves the forged bytes. The internal routes refuse
 * anything but a fresh signed request, the old `Bearer <peer secret>` too,
 * and take each signed request once: a replay is refused on every replica.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { afterAll, describe, expect, test } from 'vitest';
import { namespaceFor } from '../dev/gateway-harness.js';
import { eventually, storedRecordingFiles, syntheticRecording } from '../dev/recording-bytes.js';
import { PEER_PROOF_HEADER, peerAnswerValid, signPeerRequest } from '../src/cluster/peer-auth.js';
import { ACME_AUTH, answerOf, clusterFor, fakeUpstream, recordingPath, streamGet } from './support/cluster.js';

const KIB = 1024;

const upstream = fakeUpstream();

const cluster = clusterFor(() => upstream().baseUrl, {
  replicas: 2,
  volumes: 'own',
  upstreamYaml: ['timeout_ms: 20000'],
  clusterYaml: ['redis_timeout_ms: 1000'],
});

/** Everything an impostor was sent: request lines, headers and bodies. */
interface Captured {
  method: string;
  url: string;
  headers: Record<string, unknown>;
  body: string;
}

/**
 * An HTTP server on `port` that answers a recording request with a stream
 * shaped like a replica's (a head line with a made-up proof, the forged
 * bytes, a trailer with their true sha256) and every other request with 204.
 */
async function startImpostor(port: number, forged: Buffer): Promise<{ server: Server; captured: Captured[] }> {
  const captured: Captured[] = [];
  const fakeProof = () => randomBytes(32).toString('hex');
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      captured.push({
        method: request.method ?? '',
        url: request.url ?? '',
        headers: { ...request.headers },
        body: Buffer.concat(chunks).toString('latin1'),
      });
      if (!request.url?.startsWith('/internal/v1/recordings/')) {
        response.writeHead(204, { [PEER_PROOF_HEADER]: fakeProof() }).end();
        return;
      }
      const head = JSON.stringify({ size: forged.length, contentType: 'audio/mpeg', lastModified: 'Wed, 02 Dec 2026 10:00:00 GMT' });
      const trailer = JSON.stringify({ sha256: createHash('sha256').update(forged).digest('hex'), size: forged.length });
      response.writeHead(200, { 'content-type': 'application/x-recording-gateway-peer', 'x-recording-volume': 'impostor-volume' });
      response.end(Buffer.concat([Buffer.from(`${fakeProof()} ${head}\n`), forged, Buffer.from(`${fakeProof()} ${trailer}\n`)]));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return { server, captured };
}

describe.sequential('the internal routes take only a fresh request signed with the peer secret', () => {
  const route = () => `/internal/v1/recordings/${namespaceFor(upstream().baseUrl)}/7301`;
  const signed = (path: string, method = 'GET', now?: number) =>
    signPeerRequest(cluster().peerSecret, { method, path, node: 'gw-test' }, now);

  test('a missing header, the old Bearer secret, a wrong mac, a stale or future time, or another path: 401 with a challenge', async () => {
    const { authorization } = signed(route());
    const badMac = authorization.replace(/mac=(.)/, (_, c: string) => `mac=${c === '0' ? '1' : '0'}`);
    const refused: Array<[string, Record<string, string>]> = [
      ['missing', {}],
      ['old bearer form', { authorization: `Bearer ${cluster().peerSecret}` }],
      ['wrong mac', { authorization: badMac }],
      ['stale', { authorization: signed(route(), 'GET', Math.floor(Date.now() / 1000) - 120).authorization }],
      ['future', { authorization: signed(route(), 'GET', Math.floor(Date.now() / 1000) + 120).authorization }],
      ['another path', { authorization: signed(route().replace('7301', '7302')).authorization }],
      ['another method', { authorization: signed(route(), 'POST').authorization }],
    ];
    for (const [what, headers] of refused) {
      const response = await cluster().at(1, route(), { headers });
      expect(response.status, what).toBe(401);
      // RFC 9110 11.6.1: the challenge names the scheme these routes take.
      expect(response.headers.get('www-authenticate'), what).toBe('RecordingGatewayPeer realm="recording-gateway"');
      const body = JSON.stringify(await response.json());
      expect(body).not.toContain(cluster().peerSecret);
    }
  });

  test('a signed request gets a stream whose head and trailer carry proofs bound to its nonce', async () => {
    const id = 7301;
    const recording = syntheticRecording(48 * KIB);
    upstream().setRecording(id, recording);
    expect((await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }))).status).toBe(200);
    expect(await eventually(async () => (await storedRecordingFiles(cluster().replicas[1]!.cacheDir)).length > 0)).toBe(true);

    const { authorization, nonce } = signed(route());
    const copy = await answerOf(cluster().at(1, route(), { headers: { authorization } }));
    expect(copy.status).toBe(200);
    const headEnd = copy.bytes.indexOf(0x0a);
    const [headProof, headText] = splitLine(copy.bytes.subarray(0, headEnd).toString('utf8'));
    expect(peerAnswerValid(cluster().peerSecret, nonce, 'head', headText, headProof)).toBe(true);
    expect(JSON.parse(headText)).toMatchObject({ size: recording.length });
    const body = copy.bytes.subarray(headEnd + 1, headEnd + 1 + recording.length);
    expect(body.equals(recording)).toBe(true);
    const [trailerProof, trailerText] = splitLine(
      copy.bytes
        .subarray(headEnd + 1 + recording.length)
        .toString('utf8')
        .trimEnd(),
    );
    expect(peerAnswerValid(cluster().peerSecret, nonce, 'trailer', trailerText, trailerProof)).toBe(true);
    expect(JSON.parse(trailerText)).toEqual({ sha256: createHash('sha256').update(recording).digest('hex'), size: recording.length });
  });

  test('a request captured on the wire and replayed is refused, by the replica it was for and by another', async () => {
    const { authorization } = signed(route());
    const first = await cluster().at(1, route(), { headers: { authorization } });
    expect(first.status).not.toBe(401);
    await first.body?.cancel();
    for (const replica of [1, 0]) {
      const replayed = await cluster().at(replica, route(), { headers: { authorization } });
      expect(replayed.status, `replayed to replica ${replica}`).toBe(401);
      expect(replayed.headers.get('www-authenticate')).toBe('RecordingGatewayPeer realm="recording-gateway"');
      expect(await replayed.json()).toEqual({ error: 'Unauthorized', message: expect.stringContaining('nonce was already used') });
    }
  });

  test('the purge and redis answers carry a proof bound to the nonce', async () => {
    const namespace = namespaceFor(upstream().baseUrl);
    const purgePath = `/internal/v1/purge/${namespace}/999999`;
    const purge = signed(purgePath, 'POST');
    const purged = await cluster().at(1, purgePath, { method: 'POST', headers: { authorization: purge.authorization } });
    expect(purged.status).toBe(204);
    expect(peerAnswerValid(cluster().peerSecret, purge.nonce, 'purge', '204', purged.headers.get(PEER_PROOF_HEADER))).toBe(true);

    const redis = signed('/internal/v1/redis');
    const answer = await cluster().at(1, '/internal/v1/redis', { headers: { authorization: redis.authorization } });
    expect(await answer.json()).toEqual({ redis: 'up' });
    expect(peerAnswerValid(cluster().peerSecret, redis.nonce, 'redis', 'up', answer.headers.get(PEER_PROOF_HEADER))).toBe(true);
  });
});

describe.sequential('an impostor on the port of a replica killed mid-download', () => {
  let impostor: Server | undefined;

  afterAll(async () => {
    await new Promise((resolve) => (impostor ? impostor.close(resolve) : resolve(undefined)));
  });

  test('learns no peer secret, and its forged stream is neither served nor stored: the client gets the true bytes', async () => {
    const id = 7401;
    const recording = syntheticRecording(256 * KIB);
    const forged = Buffer.from(recording);
    forged.fill(0x55, 20 * KIB, 40 * KIB);
    upstream().setRecording(id, recording);
    upstream().setBehaviour(id, { kind: 'slow-body', chunkBytes: 16 * KIB, intervalMs: 200 });
    const [a, b] = cluster().replicas;
    const holder = await streamGet(`${a!.url}${recordingPath(id)}`, ACME_AUTH);
    await holder.reached(16 * KIB);
    await cluster().kill(0, 'SIGKILL');
    await holder.body.catch(() => {});
    upstream().setBehaviour(id, undefined);

    const started = await startImpostor(a!.process.port, forged);
    impostor = started.server;
    const onB = await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }));
    expect(onB.status).toBe(200);
    expect(onB.bytes.equals(recording)).toBe(true);
    expect(onB.cacheStatus).not.toContain('detail=peer');
    // A purge on B reaches the impostor too (A is still listed): it must not carry the secret either.
    const purged = await cluster().at(1, recordingPath(7402), { method: 'DELETE', headers: ACME_AUTH });
    expect(purged.status).toBeLessThan(500);

    expect(started.captured.some((request) => request.url.startsWith('/internal/v1/recordings/'))).toBe(true);
    const sent = JSON.stringify(started.captured);
    expect(sent).not.toContain(cluster().peerSecret);
    expect(sent).not.toContain(Buffer.from(cluster().peerSecret).toString('hex'));
    const warned = await b!.process.waitForLog((line) => String(line.msg).includes('no valid proof of the peer secret'), 5_000);
    expect(warned.peer).toBe(a!.url);
    expect(JSON.stringify(b!.process.logs)).not.toContain(cluster().peerSecret.slice(0, 20));

    // What B stored (if anything) is the true recording: the next answer is a hit with the true bytes, or the upstream's.
    await eventually(async () => (await storedRecordingFiles(b!.cacheDir)).some((file) => file.path.endsWith(`/${id}.mp3`)));
    const again = await answerOf(cluster().at(1, recordingPath(id), { headers: ACME_AUTH }));
    expect(again.status).toBe(200);
    expect(again.bytes.equals(recording)).toBe(true);
    expect(again.bytes.equals(forged)).toBe(false);
  }, 60_000);
});

/** `<proof> <json>` */
function splitLine(line: string): [string, string] {
  const gap = line.indexOf(' ');
  return [line.slice(0, gap), line.slice(gap + 1)];
}
