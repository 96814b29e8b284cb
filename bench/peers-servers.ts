/**
 * Starts what the peers bench compares: the generated upstream, and in front
 * of it the compiled gateway, the two floors (bare `node:http` and `net`
 * servers), nginx and Varnish,
 * each in a process group of its own (see peers-process.ts) with its files in
 * a temp dir.
 */
import { spawnSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { gatewayYaml, nginxConf, varnishVcl } from './peers-configs.js';
import { executable, freePort, pinned, startGroup, waitForPort, type ProcessGroup } from './peers-process.js';
import { GATEWAY, GATEWAY_AUDIT, NET_FLOOR, NODE_FLOOR, NODE_FLOOR_RAW_UPSTREAM } from './peers-report.js';
import { startScriptNodeFlags } from '../dev/gateway-process.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const GATEWAY_CLI = path.join(ROOT, 'dist/cli.js');
/** The recording the peers upstream serves for every id: 932 KiB of MP3. */
export const PEERS_RECORDING_BYTES = 932 * 1024;
export const NGINX_BINARY = '/usr/sbin/nginx';
export const VARNISHD_BINARY = '/usr/sbin/varnishd';
export const PEERS_INSTALL_HINT = 'apt-get install -y nginx-light varnish';

const START_TIMEOUT_MS = 15_000;
/** The gateway's own grace period for open requests is 10 s; its clients are gone by then anyway. */
const SHUTDOWN_TIMEOUT_MS = 30_000;
const UPSTREAM_SCRIPT = fileURLToPath(new URL('./peers-upstream.ts', import.meta.url));
const NODE_FLOOR_SCRIPT = fileURLToPath(new URL('./peers-node-floor.ts', import.meta.url));
const NET_FLOOR_SCRIPT = fileURLToPath(new URL('./peers-net-floor.ts', import.meta.url));

export interface PeersUpstream {
  /** `http://127.0.0.1:PORT/v1` */
  baseUrl: string;
  port: number;
  group: ProcessGroup;
  /** GET requests for recordings it has answered so far. */
  recordingGets(): Promise<number>;
  stop(): Promise<void>;
}

/** One server under test, as the bench's clients see it. */
export interface PeerServer {
  label: string;
  /** e.g. `nginx/1.22.1`. */
  version: string;
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** What each client request carries: the tenant's key for the gateway, nothing for the others. */
  headers: Record<string, string>;
  group: ProcessGroup;
  /** What the answer says about the cache: its hit header, and whether that means a hit. */
  cacheResult(headers: Headers): { hit: boolean; said: string };
  /**
   * The file of one line per request, whose size the bench reports; undefined
   * for Varnish, which logs to shared memory, and for the node:http floor, which keeps no log.
   */
  requestLog: string | undefined;
  stop(): Promise<void>;
}

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  // nginx's workers and Varnish's child drop root: they must reach their paths.
  await chmod(dir, 0o755);
  return dir;
}

function stopper(group: ProcessGroup, dir: string): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  return () => {
    stopping ??= (async () => {
      group.kill();
      await group.exited;
      await rm(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
}

/** What a bench adds to a Node server's command line and environment, such as a `--import` preload. */
export interface Instrumentation {
  nodeFlags: string[];
  env: Record<string, string>;
}

/** The gateway's RFC 9211 `Cache-Status` (which the floor answers too): a hit says `; hit`. */
function cacheStatusResult(headers: Headers): { hit: boolean; said: string } {
  const said = headers.get('cache-status') ?? '';
  return { hit: /;\s*hit/.test(said), said };
}

/** Waits for the port, or kills the group, removes its dir and rethrows with what it logged. */
async function ready(group: ProcessGroup, port: number, dir: string, logFile: string): Promise<void> {
  try {
    await waitForPort(group, port, START_TIMEOUT_MS);
  } catch (error) {
    group.kill();
    await group.exited;
    const log = await readFile(logFile, 'utf8').catch(() => '');
    await rm(dir, { recursive: true, force: true });
    throw new Error(`${(error as Error).message}:\n${log.slice(-3_000).trim() || '(nothing logged)'}`);
  }
}

/** The version line a binary prints for `flag` (on stderr, for nginx and varnishd). */
export function binaryVersion(binary: string, flag: string, pattern: RegExp): string {
  const result = spawnSync(binary, [flag], { encoding: 'utf8' });
  const text = `${result.stdout ?? ''}${result.stderr ?? ''}`;
  return pattern.exec(text)?.[0] ?? (text.trim().split('\n')[0] || binary);
}

/** `npm run build`, its output shown, unless `PEERS_SKIP_BUILD=1` says to use dist/ as it is. */
export function buildUnlessSkipped(): void {
  if (process.env.PEERS_SKIP_BUILD === '1') return;
  const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
  if (build.status !== 0) throw new Error('npm run build failed');
}

/** The generated upstream (peers-upstream.ts) as its own process on `core`. */
export async function startPeersUpstream(options: { core: number | undefined; size: number; serverKey: string }): Promise<PeersUpstream> {
  const dir = await tempDir('rg-peers-upstream-');
  const group = startGroup('upstream', pinned(options.core, process.execPath, ['--import', 'tsx', UPSTREAM_SCRIPT]), {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', PEERS_UPSTREAM_SIZE: String(options.size), PEERS_UPSTREAM_KEY: options.serverKey },
  });
  const stop = stopper(group, dir);
  const deadline = Date.now() + START_TIMEOUT_MS;
  let port: number | undefined;
  while (port === undefined && Date.now() < deadline && !group.hasExited()) {
    port = Number(/\{"port":(\d+)\}/.exec(group.output())?.[1]) || undefined;
    if (port === undefined) await sleep(50);
  }
  if (port === undefined) {
    await stop();
    throw new Error(`the upstream did not start: ${group.output().trim() || 'no output'}`);
  }
  const baseUrl = `http://127.0.0.1:${port}/v1`;
  return {
    baseUrl,
    port,
    group,
    async recordingGets() {
      const response = await fetch(`http://127.0.0.1:${port}/__bench/requests`);
      return ((await response.json()) as { recordingGets: number }).recordingGets;
    },
    stop,
  };
}

/** A gateway under test, which the bench may also stop as a service manager would. */
export interface GatewayServer extends PeerServer {
  /** Its audit directory (`audit.dir`), when it keeps an audit trail. */
  auditDir: string | undefined;
  /**
   * SIGTERM, then waits for the graceful shutdown (the audit trail's last
   * batch written): the exit code, or undefined when it took over
   * {@link SHUTDOWN_TIMEOUT_MS} and was killed. Its files stay until `stop`.
   */
  shutDown(): Promise<number | undefined>;
}

/**
 * `node [npm start's flags] dist/cli.js --config <yaml> serve` on `core`: the build must exist
 * (`npm run build`). With `audit`, the same gateway with an audit trail in
 * its temp dir, labelled {@link GATEWAY_AUDIT}.
 */
export async function startGatewayServer(options: {
  core: number | undefined;
  upstream: PeersUpstream;
  serverKey: string;
  tenantKey: string;
  version: string;
  audit?: boolean;
  /** Node flags before npm start's, and variables added to its environment (bench:cold-timeline's preload). */
  instrument?: Instrumentation;
  /** Another build's `cli.js` in place of this checkout's (bench:cold-ab's baseline). */
  cli?: string;
}): Promise<GatewayServer> {
  const dir = await tempDir(options.audit ? 'rg-peers-gateway-audit-' : 'rg-peers-gateway-');
  const port = await freePort();
  const configPath = path.join(dir, 'gateway.yaml');
  const logFile = path.join(dir, 'gateway.log');
  const auditDir = options.audit ? path.join(dir, 'audit') : undefined;
  await writeFile(
    configPath,
    gatewayYaml({
      port,
      upstreamBaseUrl: options.upstream.baseUrl,
      cacheDir: path.join(dir, 'cache'),
      tenantKey: options.tenantKey,
      ...(auditDir === undefined ? {} : { auditDir }),
    }),
  );
  const group = startGroup(
    'the gateway',
    pinned(options.core, process.execPath, [
      ...(options.instrument?.nodeFlags ?? []),
      ...startScriptNodeFlags(),
      options.cli ?? GATEWAY_CLI,
      '--config',
      configPath,
      'serve',
    ]),
    {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', FLYFLOW_API_KEY: options.serverKey, ...options.instrument?.env },
      logFile,
    },
  );
  await ready(group, port, dir, logFile);
  return {
    label: options.audit ? GATEWAY_AUDIT : GATEWAY,
    version: options.audit ? `${options.version} + audit` : options.version,
    url: `http://127.0.0.1:${port}`,
    headers: { authorization: `Bearer ${options.tenantKey}` },
    group,
    cacheResult: cacheStatusResult,
    requestLog: logFile,
    auditDir,
    shutDown: () => group.terminate(SHUTDOWN_TIMEOUT_MS),
    stop: stopper(group, dir),
  };
}

/**
 * The floors: a bare `node:http` server, a bare `net` server that answers as
 * the gateway's door does, and the first with the second's raw upstream connection.
 */
const FLOORS = {
  [NODE_FLOOR]: { script: NODE_FLOOR_SCRIPT, kind: 'node:http', tempPrefix: 'rg-peers-node-floor-', env: {} },
  [NET_FLOOR]: { script: NET_FLOOR_SCRIPT, kind: 'node:net', tempPrefix: 'rg-peers-net-floor-', env: {} },
  [NODE_FLOOR_RAW_UPSTREAM]: {
    script: NODE_FLOOR_SCRIPT,
    kind: 'node:http, raw upstream',
    tempPrefix: 'rg-peers-node-floor-raw-',
    env: { PEERS_FLOOR_UPSTREAM_CLIENT: 'raw' },
  },
} as const;

/**
 * A floor (peers-node-floor.ts, peers-net-floor.ts) as its own process on
 * `core`: what Node alone costs a caching proxy, labelled as {@link FLOORS}
 * names it. Its temp dir holds only what it prints (nothing,
 * unless it fails).
 */
export async function startFloorServer(
  label: keyof typeof FLOORS,
  options: {
    core: number | undefined;
    upstream: PeersUpstream;
    serverKey: string;
    instrument?: Instrumentation;
  },
): Promise<PeerServer> {
  const floor = FLOORS[label];
  const dir = await tempDir(floor.tempPrefix);
  const port = await freePort();
  const logFile = path.join(dir, 'output.log');
  const flags = ['--import', 'tsx', ...(options.instrument?.nodeFlags ?? [])];
  const group = startGroup(`the ${label}`, pinned(options.core, process.execPath, [...flags, floor.script]), {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      PEERS_FLOOR_PORT: String(port),
      PEERS_FLOOR_UPSTREAM: options.upstream.baseUrl,
      PEERS_FLOOR_KEY: options.serverKey,
      ...floor.env,
      ...options.instrument?.env,
    },
    logFile,
  });
  await ready(group, port, dir, logFile);
  return {
    label,
    version: `${floor.kind} floor (node ${process.version})`,
    url: `http://127.0.0.1:${port}`,
    headers: {},
    group,
    cacheResult: cacheStatusResult,
    requestLog: undefined,
    stop: stopper(group, dir),
  };
}

/** nginx (proxy_cache, one worker) on `core`, everything it writes in a temp dir. */
export async function startNginxServer(options: {
  core: number | undefined;
  upstream: PeersUpstream;
  serverKey: string;
}): Promise<PeerServer> {
  const dir = await tempDir('rg-peers-nginx-');
  const port = await freePort();
  const configPath = path.join(dir, 'nginx.conf');
  const errorLog = path.join(dir, 'error.log');
  await writeFile(configPath, nginxConf({ dir, port, upstreamPort: options.upstream.port, serverKey: options.serverKey }));
  const group = startGroup('nginx', pinned(options.core, NGINX_BINARY, ['-p', dir, '-e', errorLog, '-c', configPath]), {
    logFile: errorLog,
  });
  await ready(group, port, dir, errorLog);
  return {
    label: 'nginx',
    version: binaryVersion(NGINX_BINARY, '-v', /nginx\/\S+/),
    url: `http://127.0.0.1:${port}`,
    headers: {},
    group,
    cacheResult(headers) {
      const said = headers.get('x-cache-status') ?? '';
      return { hit: said === 'HIT', said };
    },
    requestLog: path.join(dir, 'access.log'),
    stop: stopper(group, dir),
  };
}

/** varnishd in the foreground on `core`, its working dir (`-n`) and VCL in a temp dir. */
export async function startVarnishServer(options: {
  core: number | undefined;
  upstream: PeersUpstream;
  serverKey: string;
}): Promise<PeerServer> {
  const dir = await tempDir('rg-peers-varnish-');
  const port = await freePort();
  const vclPath = path.join(dir, 'bench.vcl');
  const logFile = path.join(dir, 'varnishd.log');
  await writeFile(vclPath, varnishVcl({ upstreamPort: options.upstream.port, serverKey: options.serverKey }));
  const args = ['-F', '-a', `127.0.0.1:${port}`, '-n', path.join(dir, 'work'), '-f', vclPath, '-s', 'malloc,256m', '-p', 'thread_pools=1'];
  const group = startGroup('varnishd', pinned(options.core, VARNISHD_BINARY, args), { logFile });
  await ready(group, port, dir, logFile);
  return {
    label: 'Varnish',
    version: binaryVersion(VARNISHD_BINARY, '-V', /varnish-[\d.]+/),
    url: `http://127.0.0.1:${port}`,
    headers: {},
    group,
    cacheResult(headers) {
      const said = headers.get('x-cache') ?? '';
      return { hit: said === 'HIT', said };
    },
    requestLog: undefined,
    stop: stopper(group, dir),
  };
}

/** Which peers are installed (see {@link PEERS_INSTALL_HINT} for the others). */
export function installedPeers(): { nginx: boolean; varnish: boolean } {
  return { nginx: executable(NGINX_BINARY), varnish: executable(VARNISHD_BINARY) };
}
