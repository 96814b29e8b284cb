/**
 * A real, throw-away `redis-server` for the tests that need a shared index:
 * loopback only, a free port, nothing written to disk, and never left behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../../dev/free-port.js';

export interface RunningRedis {
  /** `redis://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  /** The redis-server's process ID, e.g. to pause it with SIGSTOP. */
  readonly pid: number;
  /** Kills the server and resolves once it has exited. Safe to call twice. */
  stop(): Promise<void>;
}

export interface StartRedisOptions {
  /** The binary; default `redis-server` from PATH. */
  command?: string;
  /** How long to wait for the first PONG. Default 10 s. */
  readyTimeoutMs?: number;
  /** A fixed port, e.g. to restart a server where clients expect it. Default: a free one. */
  port?: number;
  /** More redis-server arguments, e.g. `['--requirepass', '...']` (the PING readiness check then accepts NOAUTH). */
  args?: string[];
}

const INSTALL_HINT = 'install it: apt-get install -y redis-server';

// vitest ends its workers with SIGTERM, then SIGKILL, and neither runs 'exit'
// handlers. So redis runs under a small shell that holds our end of a pipe:
// when this process goes, however it goes, the pipe reaches end-of-file and the
// shell kills redis. The shell prints redis's PID, then exits when redis does.
const LIFELINE = `
exec 3<&0 0</dev/null
"$0" "$@" &
pid=$!
echo "$pid"
( read _ <&3; kill -9 "$pid" 2>/dev/null ) &
wait "$pid"
`;
const COMMAND_NOT_FOUND = 127;

const running = new Set<number>();
let exitHookInstalled = false;

/** Belt and braces for a normal exit with servers still running. */
function killAllOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const pid of running) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

/** True when the server at `port` answers `PING` with `+PONG`. */
async function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      // A server with a password answers `-NOAUTH`: it is up all the same.
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG') || reply.startsWith('-NOAUTH'));
    });
  });
}

function hasExited(child: ChildProcess): boolean {
  // No pid: the spawn itself failed, so there is nothing to wait for.
  return child.pid === undefined || child.exitCode !== null || child.signalCode !== null;
}

function waitForExit(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
}

/**
 * Starts `redis-server` on 127.0.0.1 with persistence off and resolves once it
 * answers PING. Rejects with an install hint when redis-server is missing.
 */
export async function startRedisServer(options: StartRedisOptions = {}): Promise<RunningRedis> {
  const command = options.command ?? 'redis-server';
  const readyTimeoutMs = options.readyTimeoutMs ?? 10_000;
  // The port may be taken between freePort() and redis binding it; then redis
  // exits at once and we try another.
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < (options.port === undefined ? 3 : 1); attempt++) {
    const port = options.port ?? (await freePort());
    try {
      return await startOn(command, port, readyTimeoutMs, options.args ?? []);
    } catch (error) {
      lastError = error as Error;
      if ((error as { notInstalled?: boolean }).notInstalled) break;
    }
  }
  throw lastError ?? new Error('redis-server did not start');
}

async function startOn(command: string, port: number, readyTimeoutMs: number, extra: string[]): Promise<RunningRedis> {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning', ...extra];
  const child = spawn('sh', ['-c', LIFELINE, command, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  let firstLine = '';
  let redisPid: number | undefined;
  child.stdout.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4_000);
    if (redisPid === undefined) {
      firstLine += chunk.toString('utf8');
      const match = /^(\d+)\n/.exec(firstLine);
      if (match?.[1]) {
        redisPid = Number(match[1]);
        running.add(redisPid);
      }
    }
  });
  child.stderr.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4_000);
  });
  child.stdin.on('error', () => {});
  killAllOnExit();

  const exited = new Promise<never>((_, reject) => {
    child.once('error', (error) => reject(new Error(`cannot run sh to start ${command}: ${error.message}`, { cause: error })));
    child.once('exit', (code, signal) => {
      if (code === COMMAND_NOT_FOUND) {
        reject(Object.assign(new Error(`redis-server is not installed (${command} not found); ${INSTALL_HINT}`), { notInstalled: true }));
      } else {
        reject(new Error(`redis-server exited before it answered PING (code ${code}, signal ${signal}): ${output.trim()}`));
      }
    });
  });
  exited.catch(() => {});
  child.once('exit', () => {
    if (redisPid !== undefined) running.delete(redisPid);
  });

  const stop = async () => {
    // Closing the lifeline kills redis; the shell exits once redis has.
    child.stdin.end();
    await waitForExit(child);
  };

  const deadline = Date.now() + readyTimeoutMs;
  let pid: number;
  try {
    for (;;) {
      const ready = await Promise.race([answersPing(port), exited]);
      if (ready && redisPid !== undefined) {
        pid = redisPid;
        break;
      }
      if (Date.now() > deadline)
        throw new Error(`redis-server on port ${port} did not answer PING within ${readyTimeoutMs} ms: ${output.trim()}`);
      await Promise.race([sleep(25), exited]);
    }
  } catch (error) {
    await stop();
    throw error;
  }

  let stopping: Promise<void> | undefined;
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid,
    stop() {
      stopping ??= stop();
      return stopping;
    },
  };
}
