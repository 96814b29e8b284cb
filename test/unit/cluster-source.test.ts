/**
 * Where a replica gets a recording it does not hold (src/cluster/cluster-source.ts),
 * with the directory, the leases and the other replicas faked: the order of
 * their answers is what decides whether the cluster downloads a recording once.
 */
import { describe, expect, test } from 'vitest';
import type { RecordingMeta } from '../../src/cache/recording-meta.js';
import type { ClusterCopy, ClusterDirectory } from '../../src/cluster/cluster-directory.js';
import { FAILED_PEER_TTL_MS, clusterSource } from '../../src/cluster/cluster-source.js';
import type { DownloadLeases, LeaseAttempt, LeaseHolder } from '../../src/cluster/download-lease.js';
import type { Peer } from '../../src/cluster/membership.js';
import { PeerBodyUnprovenError, PeerUnreachableError, type PeerClient, type PeerRecording } from '../../src/cluster/peer-client.js';
import type { SourcedRecording } from '../../src/download/recording-download.js';
import type { Clock } from '../../src/clock.js';
import { BadGatewayError } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { RetryableUpstreamError } from '../../src/upstream/errors.js';

const OWNER = { namespace: 'ns', upstreamApiKey: 'server-key' };
const META: RecordingMeta = { namespace: 'ns', callId: '42', size: 3, sha256: 'ab'.repeat(32), contentType: 'audio/mpeg', fetchedAt: 1 };

function body(label: string): PeerRecording & SourcedRecording {
  return {
    contentType: 'audio/mpeg',
    contentLength: 3,
    lastModified: undefined,
    volume: undefined,
    async *chunks() {
      yield Buffer.from(label);
    },
    cancel() {},
  };
}

interface World {
  /** Each lookup's copies, in order; the last repeats. */
  lookups: ClusterCopy[][];
  peers: Peer[];
  /** Replicas this one sees only from its next heartbeat on (started after it). */
  joining?: Peer[];
  /** URLs of listed replicas that do not answer (killed since their last beat). */
  dead?: string[];
  /** URLs of replicas whose answers' bodies fail after their first byte (a trailer that does not prove them, a cut). */
  bodyFails?: Record<string, Error>;
  /** Another replica holding the recording's lease, until it is taken over. */
  holder?: LeaseHolder;
  clock?: Clock;
  ownVolume?: string;
  /** This replica's cache.max_recording_bytes; default far above every body here. */
  maxRecordingBytes?: number;
}

function world({
  lookups,
  peers,
  joining = [],
  dead = [],
  bodyFails = {},
  holder,
  clock,
  ownVolume = 'vol-a',
  maxRecordingBytes = 1 << 30,
}: World) {
  const calls = { lookups: 0, upstream: 0, peerFetches: [] as string[], releases: 0, beats: 0, removes: 0, takeOvers: 0, cancels: 0 };
  const seen = [...peers];
  let holding = holder;
  const membership = {
    get peers() {
      return seen;
    },
    async beat() {
      calls.beats++;
      seen.push(...joining.filter((peer) => !seen.includes(peer)));
    },
  };
  const directory = {
    async lookup() {
      const copies = lookups[Math.min(calls.lookups, lookups.length - 1)]!;
      calls.lookups++;
      return { copies, generation: 7 };
    },
    async remove() {
      calls.removes++;
    },
  } as unknown as ClusterDirectory;
  const leases = {
    async acquire(): Promise<LeaseAttempt> {
      if (holding) return { acquired: false, holder: holding, generation: 7 };
      return { acquired: true, generation: 7, lease: { value: 'token|a|url', held: true, release: () => calls.releases++ } };
    },
    async takeOver() {
      calls.takeOvers++;
      holding = undefined;
    },
  } as unknown as DownloadLeases;
  const peerClient = {
    async openRecording(url: string) {
      calls.peerFetches.push(url);
      if (dead.includes(url)) throw new PeerUnreachableError(`${url} does not answer`);
      const failure = bodyFails[url];
      const answer = { ...body('peer'), volume: seen.find((peer) => peer.url === url)?.volume, cancel: () => calls.cancels++ };
      if (!failure) return answer;
      return {
        ...answer,
        async *chunks() {
          yield Buffer.from('p');
          throw failure;
        },
      };
    },
  } as unknown as PeerClient;
  const source = clusterSource({
    directory,
    leases,
    membership,
    peers: peerClient,
    nodeId: 'a',
    volume: ownVolume,
    advertiseUrl: () => 'http://a.internal',
    upstream: async () => {
      calls.upstream++;
      return body('upstream');
    },
    logger: silentLogger(),
    maxRecordingBytes,
    ...(clock ? { clock } : {}),
  });
  return { source, calls };
}

/** Reads a recording's body to its end; the error it ends in, if any. */
async function drain(recording: SourcedRecording): Promise<unknown> {
  try {
    for await (const _ of recording.chunks()) {
      // read on
    }
    return undefined;
  } catch (error) {
    return error;
  }
}

describe('a replica that takes the lease', () => {
  test('downloads from upstream when no copy is listed before or after it took the lease, and lets the lease go once settled', async () => {
    const { source, calls } = world({ lookups: [[]], peers: [{ node: 'b', url: 'http://b.internal', volume: 'vol-b' }] });
    const recording = await source(OWNER, '42', undefined);
    expect(recording.origin).toBe('upstream');
    expect(calls.upstream).toBe(1);
    expect(calls.lookups).toBe(2);
    expect(calls.releases).toBe(0);
    recording.settle?.();
    expect(calls.releases).toBe(1);
  });

  test('says it goes upstream as soon as it holds the lease, before asking the upstream: the others may stream its download from then on', async () => {
    const { source, calls } = world({ lookups: [[]], peers: [{ node: 'b', url: 'http://b.internal', volume: 'vol-b' }] });
    const said: number[] = [];
    await source(OWNER, '42', undefined, () => said.push(calls.upstream));
    // Said once, while the upstream had not been asked yet.
    expect(said).toEqual([0]);
    expect(calls.upstream).toBe(1);
  });

  test('does not say it goes upstream when another replica streams it a copy: while choosing, it is no source', async () => {
    const { source } = world({
      lookups: [[{ volume: 'vol-b', meta: META }]],
      peers: [{ node: 'b', url: 'http://b.internal', volume: 'vol-b' }],
    });
    let said = 0;
    const recording = await source(OWNER, '42', undefined, () => said++);
    expect(recording.origin).toBe('peer-copy');
    expect(said).toBe(0);
  });

  test('takes the copy another replica stored between its lookup and its acquire, instead of downloading again', async () => {
    const { source, calls } = world({
      lookups: [[], [{ volume: 'vol-b', meta: META }]],
      peers: [{ node: 'b', url: 'http://b.internal', volume: 'vol-b' }],
    });
    const recording = await source(OWNER, '42', undefined);
    expect(calls.upstream).toBe(0);
    expect(calls.peerFetches).toEqual(['http://b.internal']);
    expect(recording.origin).toBe('peer-copy');
    expect(recording.generation).toBe(7);
    // Its copy is there for everyone: the lease is of no more use.
    expect(calls.releases).toBe(1);
  });

  test('on a shared volume, a copy stored there meanwhile comes through the replica that stored it, and is not stored twice', async () => {
    const { source, calls } = world({
      lookups: [[], [{ volume: 'shared', meta: META }]],
      peers: [{ node: 'b', url: 'http://b.internal', volume: 'shared' }],
      ownVolume: 'shared',
    });
    const recording = await source(OWNER, '42', undefined);
    expect(calls.upstream).toBe(0);
    expect(recording.origin).toBe('peer-copy');
    expect(recording.persist).toBe(false);
  });

  test('takes a copy stored meanwhile by a replica started after this one, which it sees from its next heartbeat on', async () => {
    const b = { node: 'b', url: 'http://b.internal', volume: 'vol-b' };
    const { source, calls } = world({ lookups: [[], [{ volume: 'vol-b', meta: META }]], peers: [], joining: [b] });
    const recording = await source(OWNER, '42', undefined);
    expect(calls.beats).toBe(1);
    expect(calls.upstream).toBe(0);
    expect(calls.peerFetches).toEqual(['http://b.internal']);
    expect(recording.origin).toBe('peer-copy');
  });

  test('downloads after all when no replica serves the volume of the copy found meanwhile, asking for one heartbeat a second at most', async () => {
    const { source, calls } = world({
      lookups: [[], [{ volume: 'vol-c', meta: META }]],
      peers: [],
    });
    const recording = await source(OWNER, '42', undefined);
    expect(recording.origin).toBe('upstream');
    expect(calls.upstream).toBe(1);
    expect(calls.releases).toBe(0);
    await source(OWNER, '43', undefined);
    expect(calls.upstream).toBe(2);
    expect(calls.beats).toBe(1);
  });

  test('on a volume two replicas serve, one killed since its last beat, the copy comes through the other, not from upstream', async () => {
    const { source, calls } = world({
      lookups: [[{ volume: 'vol-b', meta: META }]],
      peers: [
        { node: 'b1', url: 'http://b1.internal', volume: 'vol-b' },
        { node: 'b2', url: 'http://b2.internal', volume: 'vol-b' },
      ],
      dead: ['http://b1.internal'],
    });
    const recording = await source(OWNER, '42', undefined);
    expect(calls.peerFetches).toEqual(['http://b1.internal', 'http://b2.internal']);
    expect(recording.origin).toBe('peer-copy');
    expect(calls.upstream).toBe(0);
  });
});

describe("a recording another replica offers over this replica's cache.max_recording_bytes", () => {
  const b = { node: 'b', url: 'http://b.internal', volume: 'vol-b' };

  test("a stored copy is refused with the upstream's 502, its transfer cancelled, and the upstream is not asked", async () => {
    const { source, calls } = world({ lookups: [[{ volume: 'vol-b', meta: META }]], peers: [b], maxRecordingBytes: 2 });
    await expect(source(OWNER, '42', undefined)).rejects.toThrow(new BadGatewayError('Recording is larger than cache.max_recording_bytes'));
    expect(calls.peerFetches).toEqual(['http://b.internal']);
    expect(calls.cancels).toBe(1);
    expect(calls.upstream).toBe(0);
  });

  test('so is the download under way on the replica holding the lease', async () => {
    const { source, calls } = world({
      lookups: [[]],
      peers: [b],
      holder: { value: 't|b|http://b.internal', node: 'b', url: 'http://b.internal' },
      maxRecordingBytes: 2,
    });
    await expect(source(OWNER, '42', undefined)).rejects.toBeInstanceOf(BadGatewayError);
    expect(calls.cancels).toBe(1);
    expect(calls.takeOvers).toBe(0);
    expect(calls.upstream).toBe(0);
  });

  test('one of exactly the limit is taken', async () => {
    const { source, calls } = world({ lookups: [[{ volume: 'vol-b', meta: META }]], peers: [b], maxRecordingBytes: 3 });
    expect((await source(OWNER, '42', undefined)).origin).toBe('peer-copy');
    expect(calls.cancels).toBe(0);
  });
});

describe('a peer whose answer for a recording failed its proof or broke off', () => {
  const b = { node: 'b', url: 'http://b.internal', volume: 'vol-b' };
  const unproven = () => new PeerBodyUnprovenError("the peer's body does not match its trailer");

  test('is passed over for that recording: the next attempt goes to the upstream, and the copy stays listed', async () => {
    const { source, calls } = world({ lookups: [[{ volume: 'vol-b', meta: META }]], peers: [b], bodyFails: { [b.url]: unproven() } });
    const first = await source(OWNER, '42', undefined);
    expect(first.origin).toBe('peer-copy');
    expect(await drain(first)).toBeInstanceOf(PeerBodyUnprovenError);
    const next = await source(OWNER, '42', undefined);
    expect(next.origin).toBe('upstream');
    expect(calls.peerFetches).toEqual([b.url]);
    expect(calls.upstream).toBe(1);
    // The fault may be on the path to it, not in its copy: the cluster's listing is left alone.
    expect(calls.removes).toBe(0);
  });

  test('a body cut short counts the same', async () => {
    const { source, calls } = world({
      lookups: [[{ volume: 'vol-b', meta: META }]],
      peers: [b],
      bodyFails: { [b.url]: new RetryableUpstreamError('A peer ended the recording before its size') },
    });
    await drain(await source(OWNER, '42', undefined));
    expect((await source(OWNER, '42', undefined)).origin).toBe('upstream');
    expect(calls.peerFetches).toEqual([b.url]);
  });

  test('another replica serving the same volume is asked instead', async () => {
    const b2 = { node: 'b2', url: 'http://b2.internal', volume: 'vol-b' };
    const { source, calls } = world({ lookups: [[{ volume: 'vol-b', meta: META }]], peers: [b, b2], bodyFails: { [b.url]: unproven() } });
    await drain(await source(OWNER, '42', undefined));
    const next = await source(OWNER, '42', undefined);
    expect(next.origin).toBe('peer-copy');
    expect(await drain(next)).toBeUndefined();
    expect(calls.peerFetches).toEqual([b.url, b2.url]);
    expect(calls.upstream).toBe(0);
  });

  test('only for that recording, and only for a while: then it is asked again', async () => {
    let now = 1_000_000;
    const clock = { now: () => now };
    const { source, calls } = world({
      lookups: [[{ volume: 'vol-b', meta: META }]],
      peers: [b],
      bodyFails: { [b.url]: unproven() },
      clock,
    });
    await drain(await source(OWNER, '42', undefined));
    expect((await source(OWNER, '43', undefined)).origin).toBe('peer-copy');
    expect((await source(OWNER, '42', undefined)).origin).toBe('upstream');
    now += FAILED_PEER_TTL_MS - 1;
    expect((await source(OWNER, '42', undefined)).origin).toBe('upstream');
    now += 2;
    expect((await source(OWNER, '42', undefined)).origin).toBe('peer-copy');
    expect(calls.peerFetches).toEqual([b.url, b.url, b.url]);
  });

  test('a reader that stops early (nobody wants the rest) is no failure of the peer', async () => {
    const { source, calls } = world({ lookups: [[{ volume: 'vol-b', meta: META }]], peers: [b] });
    const first = await source(OWNER, '42', undefined);
    const reading = first.chunks()[Symbol.asyncIterator]();
    await reading.next();
    await reading.return?.(undefined);
    expect((await source(OWNER, '42', undefined)).origin).toBe('peer-copy');
    expect(calls.peerFetches).toEqual([b.url, b.url]);
  });

  test('a copy that does not have its listed sha256 is withdrawn, and passed over even while Redis still lists it', async () => {
    const { source, calls } = world({ lookups: [[{ volume: 'vol-b', meta: META }]], peers: [b] });
    const first = await source(OWNER, '42', undefined);
    first.copyOf?.withdraw();
    expect(calls.removes).toBe(1);
    expect((await source(OWNER, '42', undefined)).origin).toBe('upstream');
    expect(calls.peerFetches).toEqual([b.url]);
  });

  test("the lease's holder, whose download's stream failed here: its lease is taken over and the recording downloaded here", async () => {
    const holder = { value: '3|b|http://b.internal', node: 'b', url: b.url };
    const { source, calls } = world({ lookups: [[]], peers: [b], holder, bodyFails: { [b.url]: unproven() } });
    const first = await source(OWNER, '42', undefined);
    expect(first.origin).toBe('peer-download');
    await drain(first);
    const next = await source(OWNER, '42', undefined);
    expect(next.origin).toBe('upstream');
    expect(calls.takeOvers).toBe(1);
    expect(calls.peerFetches).toEqual([b.url]);
    expect(calls.upstream).toBe(1);
  });
});
