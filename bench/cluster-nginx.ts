/**
 * nginx in front of the bench's replicas, set up as config/nginx-cluster.conf
 * sets it up in front of the reference cluster (round robin, upstream
 * keep-alive, no buffering), but on loopback with every path in a temp dir.
 * It runs as a child in a process group of its own, tied to this process by a
 * pipe: when this process goes, however it goes, the group is killed.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeTempDir, removeDir } from '../dev/gateway-harness.js';
import { tryConnect } from '../dev/gateway-process.js';

/** The Debian package's binary. */
export const NGINX_BINARY = '/usr/sbin/nginx';
export const NGINX_INSTALL_HINT = 'apt-get install -y nginx-light';

const READY_TIMEOUT_MS = 5_000;
const PORT_ATTEMPTS = 3;
/** Upstream connections nginx keeps open, per worker. */
const UPSTREAM_KEEPALIVE = 64;
// Below the replicas' listen.keep_alive_timeout_ms default (5 s), so nginx
// never reuses a connection a replica is closing.
const UPSTREAM_KEEPALIVE_TIMEOUT = '4s';

// The lifeline: the shell keeps our end of its stdin, starts nginx, and when
// the pipe reaches end-of-file (this process exited or was killed) kills its
// whole group, nginx's master and workers included.
const LIFELINE = `
exec 3<&0 0</dev/null
"$0" "$@" &
pid=$!
( read _ <&3; kill -KILL 0 ) &
wait "$pid"
`;

export interface RunningNginx {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** The process group: the lifeline shell, nginx's master and its workers. */
  readonly pgid: number;
  /** Kills the group and removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
  /** Kills the group at once, for an `exit` handler. */
  killNow(): void;
}

/** True when the nginx binary is there and executable. */
export function nginxInstalled(binary = NGINX_BINARY): boolean {
  try {
    accessSync(binary, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** nginx's `-v` line, e.g. `nginx/1.22.1`. */
export async function nginxVersion(binary = NGINX_BINARY): Promise<string> {
  const child = spawn(binary, ['-v'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (text += chunk.toString()));
  await new Promise((resolve) => child.once('close', resolve));
  return /nginx\/\S+/.exec(text)?.[0] ?? text.trim();
}

function nginxConfig(dir: string, port: number, replicas: string[]): string {
  const servers = replicas.map((url) => `        server ${new URL(url).host};`).join('\n');
  return `daemon off;
master_process on;
worker_processes auto;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;

    upstream recording_gateway {
${servers}
        keepalive ${UPSTREAM_KEEPALIVE};
        keepalive_timeout ${UPSTREAM_KEEPALIVE_TIMEOUT};
    }

    server {
        listen 127.0.0.1:${port};
        location / {
            proxy_pass http://recording_gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
`;
}

/** A port nobody listens on right now: bind port 0, read it, close. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function hasExited(child: ChildProcessWithoutNullStreams): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Kills the whole group, also after the shell exited (its lifeline subshell may still be there). */
function killGroup(child: ChildProcessWithoutNullStreams): void {
  child.stdin.end();
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/**
 * Starts nginx balancing round robin over `replicas` (base URLs) and resolves
 * once it accepts connections. Rejects with its error log when it cannot start.
 */
export async function startNginx(replicas: string[], binary = NGINX_BINARY): Promise<RunningNginx> {
  const dir = await makeTempDir('rg-bench-nginx-');
  // Run as root, nginx's workers drop to `nobody`: they must be able to reach the temp paths.
  await chmod(dir, 0o755);
  let lastError: Error | undefined;
  try {
    // The port can be taken between freePort() and nginx binding it; then nginx exits and we try another.
    for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
      const port = await freePort();
      const configPath = path.join(dir, 'nginx.conf');
      await writeFile(configPath, nginxConfig(dir, port, replicas));
      const args = ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', configPath];
      const child = spawn('sh', ['-c', LIFELINE, binary, ...args], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4_000)));
      child.stderr.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4_000)));
      child.stdin.on('error', () => {});
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

      const deadline = Date.now() + READY_TIMEOUT_MS;
      while (!hasExited(child) && Date.now() < deadline && (await tryConnect(port)) !== 'connected') await sleep(25);
      if (!hasExited(child) && (await tryConnect(port)) === 'connected') {
        let stopping: Promise<void> | undefined;
        return {
          url: `http://127.0.0.1:${port}`,
          pgid: child.pid!,
          killNow: () => killGroup(child),
          stop() {
            stopping ??= (async () => {
              killGroup(child);
              await exited;
              await removeDir(dir);
            })();
            return stopping;
          },
        };
      }
      killGroup(child);
      await exited;
      const log = await readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '');
      lastError = new Error(`nginx did not start on port ${port}: ${`${output}\n${log}`.trim() || 'no output'}`);
    }
  } catch (error) {
    lastError = error as Error;
  }
  await removeDir(dir);
  throw lastError ?? new Error('nginx did not start');
}
