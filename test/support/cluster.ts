/**
 * A real cluster for the tests of issue 10: one real redis-server and N gateway
 * processes (`recording-gateway serve`, each in a process group of its own),
 * sharing one cache volume or each with its own, in front of a loopback
 * upstream the test process runs. Nothing is mocked; everything listens on
 * 127.0.0.1 and is killed and removed again by `stopAll()`.
 */
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import path from 'node:path';
import { createClient } from '@keyv/redis';
import { ACME_KEY, ACME_SIGNING_SECRET, makeTempDir, namespaceFor, removeDir } from '../../dev/gateway-harness.js';
import { signalProcessGroup, startGatewayProcess, writeGatewayConfig, type GatewayProcess } from '../../dev/gateway-process.js';
import { startFakeFlyflow, type FakeFlyflow } from '../../dev/fake-flyflow.js';
import { eventually, openGet, readBody } from '../../dev/recording-bytes.js';
import type { IncomingHttpHeaders } from 'node:http';
import { afterAll, beforeAll, expect } from 'vitest';
import { cacheKey } from '../../src/cache/recording-meta.js';
import { clusterKeys } from '../../src/cluster/cluster-keys.js';
import { startRedisServer, type RunningRedis } from './redis-server.js';

/** `Authorization` for the acme tenant of every replica's config. */
export const ACME_AUTH = { authorization: `Bearer ${ACME_KEY}` } as const;
/** The admin token every replica gets in `ADMIN_TOKEN` (purge route, /metrics). */
export const CLUSTER_ADMIN_TOKEN = 'cluster-admin-token-for-tests-0123456789';
/** The acme tenant's webhook token, in `ACME_WEBHOOK_TOKEN`. */
export const ACME_WEBHOOK_TOKEN = 'acme-webhook-token-for-tests-0123456789';

/** The log line each replica prints once it has joined the cluster (fields node, volume, advertise). */
const CLUSTER_READY = 'cluster ready';
const START_TIMEOUT_MS = 30_000;
/** How long a replica may take to shut down gracefully before it is killed. */
const STOP_GRACE_MS = 10_000;
/** How long `clusterFor` lets three replicas start one after another on a loaded machine. */
const CLUSTER_START_TIMEOUT_MS = 90_000;

export interface ClusterOptions {
  /** Gateway processes; default 3. */
  replicas?: number;
  /**
   * One cache directory for all (`shared`), one each (`own`), or each
   * replica's volume by number (`[0, 0, 1]`: the first two share one, the
   * third has another; replicas past the list have one each).
   */
  volumes: 'shared' | 'own' | number[];
  /** The fake upstream's `baseUrl`. */
  upstreamBaseUrl: string;
  /** Extra lines in each replica's `upstream:` block, e.g. `timeout_ms: 20000`. */
  upstreamYaml?: string[];
  /** Extra lines in each replica's `cache:` block, e.g. `max_disk_bytes: 150KiB`. */
  cacheYaml?: string[];
  /** Extra lines in replica `index`'s `cache:` block only, e.g. a `max_recording_bytes` of its own. */
  cacheYamlFor?: (index: number) => string[];
  /** Extra lines in each replica's `cluster:` block, e.g. `redis_timeout_ms: 250`. */
  clusterYaml?: string[];
  /** Extra lines in replica `index`'s `cluster:` block only, e.g. an `advertise_url` with a proxy in front of it. */
  clusterYamlFor?: (index: number) => string[];
  /** Extra lines for the acme tenant. */
  tenantYaml?: string[];
  /** More tenants, as written under `tenants:`. */
  moreTenantsYaml?: string[];
  /** More environment for every replica (secrets the extra YAML names). */
  env?: Record<string, string>;
  /** More environment for replica `index` only, e.g. {@link clockOffsetEnv}. */
  envFor?: (index: number) => Record<string, string>;
  /** The Redis URL replica `index` is given, from the cluster's own (`url`): a proxy between them, say. Default: `url`. */
  redisUrlFor?: (index: number, url: string) => string;
  /** A running server to use (and leave running); default: a new one, stopped by `stopAll()`. */
  redis?: RunningRedis;
  /**
   * Leaves out the `cluster:` block: replicas that know nothing of each other
   * (the gateway before clustering). For checking the harness itself.
   */
  withoutCluster?: boolean;
}

export interface Replica {
  readonly index: number;
  /** `gw-<index + 1>`, the `cluster.node_id`. */
  readonly nodeId: string;
  readonly cacheDir: string;
  readonly configPath: string;
  /** The running process; replaced by `restart()`. */
  process: GatewayProcess;
  /** `http://127.0.0.1:PORT`; changes on a restart (port 0). */
  url: string;
  /** The "cluster ready" log line (node, volume, advertise), or undefined without a cluster. */
  ready: Record<string, unknown> | undefined;
}

export interface Cluster {
  readonly replicas: Replica[];
  /** The replicas' base URLs, current after restarts. */
  readonly urls: string[];
  /** Every distinct cache directory: one when shared, one per replica when own. */
  readonly cacheDirs: string[];
  /** The peer secret every replica holds (`GATEWAY_PEER_SECRET`). */
  readonly peerSecret: string;
  /** The cluster's Redis; replaced by `restartRedis()`. */
  readonly redis: RunningRedis;
  /** A request to the next live replica, round robin. */
  get(pathAndQuery: string, init?: RequestInit): Promise<Response>;
  /** A request to replica `index`. */
  at(index: number, pathAndQuery: string, init?: RequestInit): Promise<Response>;
  /** Signals replica `index`'s process group; for SIGKILL and SIGTERM waits until it has exited. */
  kill(index: number, signal?: NodeJS.Signals): Promise<void>;
  /** Stops replica `index` gracefully (SIGTERM, then SIGKILL) and starts it again with the same config and volume. */
  restart(index: number): Promise<Replica>;
  /**
   * Starts one more replica (own volume, or the shared one) and waits until it
   * listens, and, unless `waitForClusterReady` is false, until it is ready.
   */
  addReplica(options?: { waitForClusterReady?: boolean }): Promise<Replica>;
  /** Stops the Redis server (kills it); `restartRedis()` brings it back on the same port, empty. */
  stopRedis(): Promise<void>;
  restartRedis(): Promise<RunningRedis>;
  /** FLUSHALL: the cluster's shared state is gone, as after a restart of a Redis without persistence. */
  flushRedis(): Promise<void>;
  /** Kills every replica (by process group), stops Redis unless it was given, removes the temp dirs. Safe to call twice. */
  stopAll(): Promise<void>;
}

/** Starts Redis (unless given) and the replicas, and resolves once every replica says it is ready. */
export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const replicaCount = options.replicas ?? 3;
  const root = await makeTempDir('rg-cluster-');
  const peerSecret = randomBytes(48).toString('base64');
  const ownsRedis = options.redis === undefined;
  let redis: RunningRedis | undefined = options.redis;
  const replicas: Replica[] = [];
  const sharedCacheDir = path.join(root, 'cache');
  let nextReplica = 0;
  let stopping: Promise<void> | undefined;

  const env: Record<string, string> = {
    GATEWAY_PEER_SECRET: peerSecret,
    ADMIN_TOKEN: CLUSTER_ADMIN_TOKEN,
    ACME_SIGNING_SECRET,
    ACME_WEBHOOK_TOKEN,
    ...options.env,
  };

  async function writeConfig(index: number, redisUrl: string): Promise<{ configPath: string; cacheDir: string }> {
    const dir = path.join(root, `gw-${index + 1}`);
    await mkdir(dir, { recursive: true });
    const volume = Array.isArray(options.volumes) ? options.volumes[index] : undefined;
    const cacheDir =
      options.volumes === 'shared'
        ? sharedCacheDir
        : volume !== undefined
          ? path.join(root, `volume-${volume}`)
          : path.join(root, `cache-${index + 1}`);
    const clusterYaml = options.withoutCluster
      ? []
      : [
          'cluster:',
          `  redis_url: ${JSON.stringify(redisUrl)}`,
          `  node_id: gw-${index + 1}`,
          '  peer_secret_env: GATEWAY_PEER_SECRET',
          ...(options.clusterYaml ?? []).map((line) => `  ${line}`),
          ...(options.clusterYamlFor?.(index) ?? []).map((line) => `  ${line}`),
        ];
    const configPath = await writeGatewayConfig(dir, {
      upstreamBaseUrl: options.upstreamBaseUrl,
      cacheDir,
      upstreamYaml: options.upstreamYaml,
      cacheYaml: [...(options.cacheYaml ?? []), ...(options.cacheYamlFor?.(index) ?? [])],
      tenantYaml: [
        'signing_keys: [{ kid: k1, secret_env: ACME_SIGNING_SECRET }]',
        'webhook_token_env: ACME_WEBHOOK_TOKEN',
        ...(options.tenantYaml ?? []),
      ],
      moreTenantsYaml: options.moreTenantsYaml,
      topLevelYaml: clusterYaml,
    });
    return { configPath, cacheDir };
  }

  async function launch(index: number, configPath: string, waitForClusterReady: boolean) {
    const gateway = await startGatewayProcess(configPath, {
      env: { ...env, ...options.envFor?.(index) },
      processGroup: true,
      startTimeoutMs: START_TIMEOUT_MS,
    });
    if (options.withoutCluster || !waitForClusterReady) return { gateway, ready: undefined };
    try {
      const ready = await gateway.waitForLog((line) => line.msg === CLUSTER_READY, START_TIMEOUT_MS);
      return { gateway, ready };
    } catch (error) {
      signalProcessGroup(gateway, 'SIGKILL');
      await gateway.exited;
      throw error;
    }
  }

  async function startReplica(waitForClusterReady = true): Promise<Replica> {
    const index = nextReplica++;
    const { configPath, cacheDir } = await writeConfig(index, options.redisUrlFor?.(index, redis!.url) ?? redis!.url);
    const { gateway, ready } = await launch(index, configPath, waitForClusterReady);
    const replica: Replica = { index, nodeId: `gw-${index + 1}`, cacheDir, configPath, process: gateway, url: gateway.url, ready };
    replicas[index] = replica;
    return replica;
  }

  function isRunning(replica: Replica): boolean {
    return replica.process.child.exitCode === null && replica.process.child.signalCode === null;
  }

  function replica(index: number): Replica {
    const found = replicas[index];
    if (!found) throw new Error(`cluster: no replica ${index} (there are ${replicas.length})`);
    return found;
  }

  async function stopReplica(target: Replica): Promise<void> {
    if (!isRunning(target)) return;
    signalProcessGroup(target.process, 'SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), STOP_GRACE_MS);
    });
    const outcome = await Promise.race([target.process.exited, graceOver]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      signalProcessGroup(target.process, 'SIGKILL');
      await target.process.exited;
    }
  }

  let roundRobin = 0;
  const cluster: Cluster = {
    replicas,
    get urls() {
      return replicas.map((r) => r.url);
    },
    get cacheDirs() {
      return [...new Set(replicas.map((r) => r.cacheDir))];
    },
    peerSecret,
    get redis() {
      return redis!;
    },

    get(pathAndQuery, init) {
      const live = replicas.filter(isRunning);
      if (live.length === 0) throw new Error('cluster: no replica is running');
      const target = live[roundRobin++ % live.length]!;
      return fetch(`${target.url}${pathAndQuery}`, init);
    },

    at(index, pathAndQuery, init) {
      return fetch(`${replica(index).url}${pathAndQuery}`, init);
    },

    async kill(index, signal = 'SIGKILL') {
      const target = replica(index);
      signalProcessGroup(target.process, signal);
      if (signal === 'SIGKILL' || signal === 'SIGTERM') await target.process.exited;
    },

    async restart(index) {
      const target = replica(index);
      await stopReplica(target);
      const { gateway, ready } = await launch(target.index, target.configPath, true);
      target.process = gateway;
      target.url = gateway.url;
      target.ready = ready;
      return target;
    },

    addReplica(addOptions = {}) {
      return startReplica(addOptions.waitForClusterReady ?? true);
    },

    async stopRedis() {
      await redis?.stop();
    },

    async restartRedis() {
      const port = redis!.port;
      await redis!.stop();
      redis = await startRedisServer({ port });
      return redis;
    },

    flushRedis() {
      return sendRedisCommand(redis!.port, ['FLUSHALL']);
    },

    stopAll() {
      stopping ??= (async () => {
        for (const r of replicas) if (r) signalProcessGroup(r.process, 'SIGKILL');
        await Promise.all(replicas.map((r) => r?.process.exited));
        if (ownsRedis) await redis?.stop();
        await removeDir(root);
      })();
      return stopping;
    },
  };

  try {
    redis ??= await startRedisServer();
    // One at a time: a cold tsx start is CPU-bound, and each start also shows
    // that a replica can join a cluster that is already running.
    for (let i = 0; i < replicaCount; i++) await startReplica();
  } catch (error) {
    await cluster.stopAll();
    throw error;
  }
  return cluster;
}

/**
 * The fake upstream for the tests of one file: started in a `beforeAll` and
 * closed in an `afterAll`. Registered before `clusterFor`, it is up when the
 * cluster starts and closed after the cluster is stopped.
 */
export function fakeUpstream(): () => FakeFlyflow {
  let upstream: FakeFlyflow | undefined;
  beforeAll(async () => {
    upstream = await startFakeFlyflow();
  });
  afterAll(async () => {
    await upstream?.close();
  });
  return () => {
    if (!upstream) throw new Error('fake upstream: not started (fakeUpstream is read in a test or a later hook)');
    return upstream;
  };
}

/**
 * A cluster for the tests of one file or describe block: started in a
 * `beforeAll` and always stopped in an `afterAll`. The upstream's URL is read
 * only when the cluster starts, so an upstream the file starts in an earlier
 * `beforeAll` can be named here; hooks registered after this one run after the
 * cluster is up, and their `afterAll` before it is stopped.
 */
export function clusterFor(upstreamBaseUrl: () => string, options: Omit<ClusterOptions, 'upstreamBaseUrl'>): () => Cluster {
  let cluster: Cluster | undefined;
  beforeAll(async () => {
    cluster = await startCluster({ ...options, upstreamBaseUrl: upstreamBaseUrl() });
  }, CLUSTER_START_TIMEOUT_MS);
  afterAll(async () => {
    await cluster?.stopAll();
  });
  return () => {
    if (!cluster) throw new Error('cluster: not started (clusterFor is read in a test or a later hook)');
    return cluster;
  };
}

/**
 * Environment that runs a replica with its wall clock (`Date`) `offsetMs` off
 * the test's and the other replicas': a preload in `NODE_OPTIONS`. Timers
 * and `performance.now()` are left alone, as on a host whose clock is set wrong.
 */
export function clockOffsetEnv(offsetMs: number): Record<string, string> {
  const preload = `const RealDate = Date;
globalThis.Date = class extends RealDate {
  constructor(...args) { super(...(args.length > 0 ? args : [RealDate.now() + ${offsetMs}])); }
  static now() { return RealDate.now() + ${offsetMs}; }
};`;
  return { NODE_OPTIONS: `--import=data:text/javascript;base64,${Buffer.from(preload).toString('base64')}` };
}

/**
 * Sends one command to Redis as RESP and resolves on its reply (`+OK`); rejects
 * on an error reply or after `timeoutMs`. No client library, no redis-cli.
 */
export function sendRedisCommand(port: number, args: string[], timeoutMs = 5_000): Promise<void> {
  const request = `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`;
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    socket.setTimeout(timeoutMs, () => {
      socket.destroy();
      reject(new Error(`redis ${args[0]}: no reply within ${timeoutMs} ms`));
    });
    socket.once('error', reject);
    socket.once('connect', () => socket.write(request));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('latin1');
      if (!reply.includes('\r\n')) return;
      socket.destroy();
      if (reply.startsWith('-')) reject(new Error(`redis ${args[0]}: ${reply.trim()}`));
      else resolve();
    });
  });
}

/** GET requests the upstream received for recording `id` (HEADs and others left out). */
/**
 * Whether replica `index`'s copy of recording `id` is listed in Redis and its
 * download's lease is gone: from then on another replica gets that copy
 * (`detail=peer`), not the download (`collapsed; detail=peer`). Its file
 * is on disk a moment before: waiting for the file alone raced.
 */
export async function copySettled(gw: Cluster, index: number, id: number, upstreamBaseUrl: string): Promise<boolean> {
  const redis = createClient({ url: gw.redis.url });
  redis.on('error', () => {});
  await redis.connect();
  try {
    const key = cacheKey(namespaceFor(upstreamBaseUrl), String(id));
    return (
      (await redis.hExists(clusterKeys.copies(key), String(gw.replicas[index]!.ready?.volume))) === 1 &&
      (await redis.exists(clusterKeys.lease(key))) === 0
    );
  } finally {
    redis.destroy();
  }
}

export function upstreamFetches(upstream: FakeFlyflow, id: number): number {
  return upstream.recordingRequests(id).filter((request) => request.method === 'GET').length;
}

/** The value of a Prometheus sample, with or without the `recording_` prefix, with any labels or with `label` among them; undefined when absent. */
export function metricValue(text: string, name: string, label?: string): number | undefined {
  const labels = label === undefined ? '(?:\\{[^}]*\\})?' : `\\{(?:[^}]*,)?${label}(?:,[^}]*)?\\}`;
  const pattern = new RegExp(`^(?:recording_)?${name}${labels} (\\S+)$`, 'm');
  const match = pattern.exec(text);
  return match ? Number(match[1]) : undefined;
}

/** The cluster part of `/readyz`, with its status code. */
export async function readiness(
  baseUrl: string,
): Promise<{ status: number; body: { status?: string; cluster?: Record<string, unknown> } }> {
  const response = await fetch(`${baseUrl}/readyz`);
  return { status: response.status, body: (await response.json()) as { status?: string; cluster?: Record<string, unknown> } };
}

/** `/metrics` as text, with the cluster's admin token. */
export async function metricsText(baseUrl: string): Promise<string> {
  const response = await fetch(`${baseUrl}/metrics`, { headers: { authorization: `Bearer ${CLUSTER_ADMIN_TOKEN}` } });
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
  return response.text();
}

/** `/v1/call/recording/<id>.mp3` */
export function recordingPath(id: number): string {
  return `/v1/call/recording/${id}.mp3`;
}

/** A recording answer read whole: status, Cache-Status and body. */
export interface RecordingAnswer {
  status: number;
  cacheStatus: string | null;
  headers: Headers;
  bytes: Buffer;
}

/** Reads a fetch() answer whole. */
export async function answerOf(response: Response | Promise<Response>): Promise<RecordingAnswer> {
  const settled = await response;
  const bytes = Buffer.from(await settled.arrayBuffer());
  return { status: settled.status, cacheStatus: settled.headers.get('cache-status'), headers: settled.headers, bytes };
}

/** A GET whose body arrives while the test watches it (node:http, so a cut connection is seen as one). */
export interface StreamingAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  /** Body bytes received so far. */
  received(): number;
  /** Resolves once at least `bytes` have arrived; rejects if the body ends first or after `timeoutMs`. */
  reached(bytes: number, timeoutMs?: number): Promise<void>;
  /** The whole body, or what came before the connection broke (`complete: false`). */
  body: Promise<{ bytes: Buffer; complete: boolean }>;
}

/** Opens a GET and starts reading its body at once. */
export async function streamGet(url: string, headers: Record<string, string>): Promise<StreamingAnswer> {
  const response = await openGet(url, headers);
  let received = 0;
  const waiters = new Set<{ bytes: number; resolve(): void }>();
  const body = readBody(response, (total) => {
    received = total;
    for (const waiter of waiters) if (total >= waiter.bytes) waiter.resolve();
  });
  return {
    status: response.statusCode ?? 0,
    headers: response.headers,
    received: () => received,
    reached(bytes, timeoutMs = 10_000) {
      if (received >= bytes) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const waiter = {
          bytes,
          resolve: () => {
            settle();
            resolve();
          },
        };
        const timer = setTimeout(() => {
          settle();
          reject(new Error(`only ${received} of ${bytes} bytes arrived within ${timeoutMs} ms`));
        }, timeoutMs);
        const settle = () => {
          clearTimeout(timer);
          waiters.delete(waiter);
        };
        waiters.add(waiter);
        void body.then(() => {
          if (!waiters.has(waiter)) return;
          settle();
          if (received >= bytes) resolve();
          else reject(new Error(`the body ended after ${received} bytes, before ${bytes}`));
        });
      });
    },
    body,
  };
}

/** Whether replica `index` comes to answer `id` with `bytes` as a hit (from its copy) within `withinMs`. */
export function hitsWith(gw: Cluster, index: number, id: number, bytes: Buffer, withinMs?: number): Promise<boolean> {
  return eventually(async () => {
    const answer = await answerOf(gw.at(index, recordingPath(id), { headers: ACME_AUTH }));
    return answer.bytes.equals(bytes) && (answer.cacheStatus ?? '').includes('hit');
  }, withinMs);
}

/**
 * Replica `index` holds `old` for `id` as a hit; it is stopped with `signal`,
 * and `id` purged on replica 0 (the upstream has `fresh` from then on), which
 * answers 204 without it.
 */
export async function purgedWhileReplicaIsDown(
  gw: Cluster,
  upstream: FakeFlyflow,
  { index, id, old, fresh, signal }: { index: number; id: number; old: Buffer; fresh: Buffer; signal: NodeJS.Signals },
): Promise<void> {
  upstream.setRecording(id, old);
  expect(await hitsWith(gw, index, id, old)).toBe(true);
  await gw.kill(index, signal);
  upstream.setRecording(id, fresh);
  expect((await gw.at(0, recordingPath(id), { method: 'DELETE', headers: ACME_AUTH })).status).toBe(204);
}

/**
 * A {@link redisProxy} between replica `index` and Redis, listening for the
 * test file's life; call it before `clusterFor` and give that its `redisUrlFor`.
 */
export function redisProxyFor(index: number) {
  const proxy = redisProxy();
  let port = 0;
  beforeAll(async () => {
    port = await proxy.listen();
  });
  afterAll(() => proxy.close());
  return { proxy, redisUrlFor: (replica: number, url: string) => (replica === index ? proxy.urlFor(url, port) : url) };
}

/**
 * A TCP proxy to Redis for one replica: `cut()` breaks its connections and
 * refuses new ones, `mend()` lets them through again. `stallSubscriptions()`
 * makes every connection that subscribes (now or later) go silent both ways
 * without closing, as behind a dropped flow; `mendSubscriptions()` lets new
 * ones through again, leaving the stalled ones stalled. `delay(ms)` makes
 * Redis that much slower for the replica.
 */
export function redisProxy() {
  let target: { host: string; port: number } | undefined;
  let cut = false;
  let stallSubscribing = false;
  let delayMs = 0;
  const sockets = new Set<Socket>();
  const subscribing = new Set<{ stalled: boolean }>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const server: Server = createServer((client) => {
    track(client);
    if (cut || !target) {
      client.destroy();
      return;
    }
    const redis = connect(target);
    track(redis);
    const flow = { stalled: false };
    // Timers of one delay fire in the order they were set: the bytes keep their order.
    const later = (write: () => void) => (delayMs > 0 ? setTimeout(write, delayMs) : write());
    client.on('data', (data: Buffer) => {
      if (!subscribing.has(flow) && /SUBSCRIBE/i.test(data.toString('latin1'))) {
        subscribing.add(flow);
        if (stallSubscribing) flow.stalled = true;
      }
      if (!flow.stalled) later(() => redis.write(data));
    });
    redis.on('data', (data: Buffer) => {
      if (!flow.stalled) later(() => client.write(data));
    });
    client.on('error', () => redis.destroy());
    redis.on('error', () => client.destroy());
    client.on('close', () => {
      subscribing.delete(flow);
      redis.destroy();
    });
    redis.on('close', () => client.destroy());
  });
  return {
    async listen(): Promise<number> {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return (server.address() as { port: number }).port;
    },
    /** The URL the replica is given, for Redis at `url`. */
    urlFor(url: string, port: number): string {
      const parsed = new URL(url);
      target = { host: parsed.hostname, port: Number(parsed.port) };
      parsed.port = String(port);
      return parsed.toString();
    },
    cut() {
      cut = true;
      for (const socket of sockets) socket.destroy();
    },
    mend() {
      cut = false;
    },
    stallSubscriptions() {
      stallSubscribing = true;
      for (const flow of subscribing) flow.stalled = true;
    },
    mendSubscriptions() {
      stallSubscribing = false;
    },
    /** Holds every byte `ms` before passing it on, each way (0: none). */
    delay(ms: number) {
      delayMs = ms;
    },
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
