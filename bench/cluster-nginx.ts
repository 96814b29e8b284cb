/**
 * nginx in front of the bench's replicas, set up as config/nginx-cluster.conf
 * sets it up in front of the reference cluster (round robin, upstream
 * keep-alive, no buffering), but on loopback with every path in a temp dir.
 * It runs as a child in a process group of its own, tied to this process by a
 * pipe: when this process goes, however it goes, the group is killed.
 */
import { chmod, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { makeTempDir, removeDir } from '../dev/gateway-harness.js';
import { executable, freePort, startGroup, waitForPort } from './peers-process.js';
import { binaryVersion } from './peers-servers.js';

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
  return executable(binary);
}

/** nginx's `-v` line, e.g. `nginx/1.22.1`. */
export function nginxVersion(binary = NGINX_BINARY): string {
  return binaryVersion(binary, '-v', /nginx\/\S+/);
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
      const group = startGroup('nginx', [binary, ...args]);
      try {
        await waitForPort(group, port, READY_TIMEOUT_MS);
      } catch {
        group.kill();
        await group.exited;
        const log = await readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '');
        lastError = new Error(`nginx did not start on port ${port}: ${`${group.output()}\n${log}`.trim() || 'no output'}`);
        continue;
      }
      let stopping: Promise<void> | undefined;
      return {
        url: `http://127.0.0.1:${port}`,
        pgid: group.pgid,
        killNow: () => group.kill(),
        stop() {
          stopping ??= (async () => {
            group.kill();
            await group.exited;
            await removeDir(dir);
          })();
          return stopping;
        },
      };
    }
  } catch (error) {
    lastError = error as Error;
  }
  await removeDir(dir);
  throw lastError ?? new Error('nginx did not start');
}
