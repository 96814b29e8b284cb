/**
 * The three measurements of `npm run bench:cluster`, each against a running
 * cluster: upstream GETs for 100 cold requests, the late joiner's first byte
 * on another replica, and hit throughput at fixed concurrency.
 */
import { performance } from 'node:perf_hooks';
import type { FakeFlyflow } from '../dev/fake-flyflow.js';
import { ACME_AUTH, recordingPath, streamGet, upstreamFetches, type Cluster } from '../test/support/cluster.js';
import { checkedGet, coldFanOut, type FanOutResult } from './cluster-probes.js';
import { groupCpuSeconds } from './peers-process.js';
import type { LoadResult } from './load.js';
import type { LoadProcess } from './load-process.js';

const MIB = 2 ** 20;
export const COLD_REQUESTS = 100;
// 40 chunks of 512 KiB, one every 50 ms: the download lasts about 2 s.
export const LARGE_BYTES = 20 * MIB;
export const LARGE_DRIP = { kind: 'slow-body', chunkBytes: 512 * 1024, intervalMs: 50 } as const;
// 16 chunks of 256 KiB, one every 50 ms: 1 MiB has arrived after ~150 ms, ~600 ms are left for the joiners.
export const JOINER_BYTES = 4 * MIB;
export const JOINER_DRIP = { kind: 'slow-body', chunkBytes: 256 * 1024, intervalMs: 50 } as const;
export const JOIN_AFTER_BYTES = MIB;
export const CONCURRENCY = 32;
const WARM_ATTEMPTS = 5;
const STEP_TIMEOUT_MS = 30_000;

/** What every part needs, the same for every cluster. */
export interface BenchInputs {
  upstream: FakeFlyflow;
  load: LoadProcess;
  /** The 23 KB fixture: cold in the fan-out, then warm for the hit load. */
  small: Buffer;
  large: Buffer;
  joiner: Buffer;
  durationMs: number;
  warmupMs: number;
  joinerCount: number;
}

export interface FanOut {
  /** GETs the upstream received for the recording. */
  fetches: number;
  fanOut: FanOutResult;
}

export interface LateJoiners {
  /** First-byte times of the joiners whose answers were right. */
  firstByteMs: number[];
  /** Where the joiners went, e.g. `gw-2, gw-3`. */
  where: string;
  kinds: Map<string, number>;
  wrong: number;
  problems: string[];
  /** Upstream GETs for all the joiner recordings together: one each is right. */
  fetches: number;
}

export interface LoadCase {
  via: string;
  result: LoadResult;
  /** CPU as % of one core over the case (warm-up included), summed over the replicas. */
  gatewaysCpu: number;
  nginxCpu: number | undefined;
}

/** 100 concurrent cold GETs round robin over the replicas, and how often the upstream was asked. */
export async function fanOut(inputs: BenchInputs, cluster: Cluster, id: number, bytes: Buffer, drip?: typeof LARGE_DRIP): Promise<FanOut> {
  inputs.upstream.setRecording(id, bytes);
  if (drip) inputs.upstream.setBehaviour(id, drip);
  const result = await coldFanOut(cluster.urls, recordingPath(id), ACME_AUTH, COLD_REQUESTS, bytes);
  return { fetches: upstreamFetches(inputs.upstream, id), fanOut: result };
}

/**
 * A slow download runs on replica 1 for one client; once 1 MiB has reached it,
 * a GET on each other replica (on replica 1 itself when alone) is timed to its
 * first body byte. `firstId` and the ids after it must be new to the cluster.
 */
export async function lateJoiners(inputs: BenchInputs, cluster: Cluster, firstId: number): Promise<LateJoiners> {
  const targets = cluster.urls.length === 1 ? [0] : cluster.urls.map((_, i) => i).slice(1);
  const firstByteMs: number[] = [];
  const kinds = new Map<string, number>();
  const problems: string[] = [];
  let wrong = 0;
  let fetches = 0;
  for (let i = 0; i < inputs.joinerCount; i++) {
    const id = firstId + i;
    const path = recordingPath(id);
    inputs.upstream.setRecording(id, inputs.joiner);
    inputs.upstream.setBehaviour(id, JOINER_DRIP);
    const first = await streamGet(`${cluster.urls[0]}${path}`, ACME_AUTH);
    if (first.status !== 200) throw new Error(`the first client of recording ${id} got ${first.status}`);
    await first.reached(JOIN_AFTER_BYTES, STEP_TIMEOUT_MS);
    // All at once, so each joiner arrives while the download is under way.
    const answers = await Promise.all(targets.map((target) => checkedGet(`${cluster.urls[target]}${path}`, ACME_AUTH, inputs.joiner)));
    const whole = await first.body;
    if (!whole.complete || !whole.bytes.equals(inputs.joiner)) {
      wrong += 1;
      problems.push(`the first client of ${id} got ${whole.bytes.length} bytes${whole.complete ? '' : ', cut short'}`);
    }
    for (const answer of answers) {
      const kind = answer.cacheStatus.replace(/^recording-gateway; /, '');
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      if (answer.problem === undefined) {
        firstByteMs.push(answer.firstByteMs);
        continue;
      }
      wrong += 1;
      if (problems.length < 3) problems.push(answer.problem);
    }
    fetches += upstreamFetches(inputs.upstream, id);
  }
  const where = cluster.urls.length === 1 ? 'gw-1 itself' : targets.map((t) => `gw-${t + 1}`).join(', ');
  return { firstByteMs, where, kinds, wrong, problems, fetches };
}

/** GETs the recording on every replica until each answers it from memory (a few tries at most). */
export async function warmEveryReplica(cluster: Cluster, path: string, bytes: Buffer): Promise<void> {
  for (const url of cluster.urls) {
    for (let attempt = 0; ; attempt++) {
      const answer = await checkedGet(`${url}${path}`, ACME_AUTH, bytes);
      if (answer.problem) throw new Error(`warming ${url}: ${answer.problem}`);
      if (answer.cacheStatus.includes('hit; detail=memory')) break;
      if (attempt === WARM_ATTEMPTS) throw new Error(`warming ${url}: still \`${answer.cacheStatus}\` after ${WARM_ATTEMPTS + 1} GETs`);
    }
  }
}

/** Fixed-concurrency hits of the warm small recording at `baseUrl`, with the CPU of the replicas (and nginx) over it. */
export async function hitLoad(
  inputs: BenchInputs,
  cluster: Cluster,
  target: { via: string; baseUrl: string; path: string; nginxGroup?: number },
): Promise<LoadCase> {
  const gatewayGroups = cluster.replicas.map((replica) => replica.process.child.pid!);
  const gatewaysCpu = () => gatewayGroups.reduce((sum, pgid) => sum + groupCpuSeconds(pgid), 0);
  const nginxCpu = () => (target.nginxGroup === undefined ? 0 : groupCpuSeconds(target.nginxGroup));
  const gatewaysBefore = gatewaysCpu();
  const nginxBefore = nginxCpu();
  const started = performance.now();
  const result = await inputs.load.run({
    baseUrl: target.baseUrl,
    paths: [target.path],
    headers: ACME_AUTH,
    concurrency: CONCURRENCY,
    durationMs: inputs.durationMs,
    warmupMs: inputs.warmupMs,
    expect: { status: 200, contentLength: inputs.small.length, cacheStatus: 'hit' },
  });
  const percent = (seconds: number) => (100 * seconds * 1000) / (performance.now() - started);
  return {
    via: target.via,
    result,
    gatewaysCpu: percent(gatewaysCpu() - gatewaysBefore),
    nginxCpu: target.nginxGroup === undefined ? undefined : percent(nginxCpu() - nginxBefore),
  };
}
