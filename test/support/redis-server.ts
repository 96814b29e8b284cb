/**
 * A real, throw-away `redis-server` for the tests that need a shared index:
 * loopback only, a free port, nothing written to disk.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer, type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface RunningRedis {
  /** `redis://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  /** The server's process ID, e.g. to pause it with SIGSTOP. */
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
}

const INSTALL_HINT = 'install it: apt-get install -y redis-server';

// Every server this process started, killed when it exits so that a crashed or
// interrupted test run never leaves a redis-server behind.
const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function killAllOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
}

/** A port nobody listens on right now: bind port 0, read it, close. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
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
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
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

/** Starts `redis-server` on 127.0.0.1 and resolves once it answers PING. */
export async function startRedisServer(options: StartRedisOptions = {}): Promise<RunningRedis> {
  const command = options.command ?? 'redis-server';
  const readyTimeoutMs = options.readyTimeoutMs ?? 10_000;
  // The port may be taken between freePort() and redis binding it; then redis
  // exits at once and we try another.
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < (options.port === undefined ? 3 : 1); attempt++) {
    const port = options.port ?? (await freePort());
    try {
      return await startOn(command, port, readyTimeoutMs);
    } catch (error) {
      lastError = error as Error;
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') break;
    }
  }
  throw lastError ?? new Error('redis-server did not start');
}

async function startOn(command: string, port: number, readyTimeoutMs: number): Promise<RunningRedis> {
  const child = spawn(
    command,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes', '--loglevel', 'warning'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);

  const spawnError = new Promise<never>((_, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      const message =
        error.code === 'ENOENT' ? `redis-server is not installed (${command} not found); ${INSTALL_HINT}` : `cannot run ${command}: ${error.message}`;
      reject(Object.assign(new Error(message, { cause: error }), { code: error.code }));
    });
    child.once('exit', (code, signal) => {
      reject(new Error(`redis-server exited before it answered PING (code ${code}, signal ${signal}): ${output.trim()}`));
    });
  });
  spawnError.catch(() => {});
  running.add(child);
  killAllOnExit();
  child.once('exit', () => running.delete(child));

  const stop = async () => {
    if (!hasExited(child)) child.kill('SIGKILL');
    await waitForExit(child);
  };

  const deadline = Date.now() + readyTimeoutMs;
  try {
    for (;;) {
      const ready = await Promise.race([answersPing(port), spawnError]);
      if (ready) break;
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING within ${readyTimeoutMs} ms: ${output.trim()}`);
      await Promise.race([sleep(25), spawnError]);
    }
  } catch (error) {
    await stop();
    throw error;
  }

  let stopping: Promise<void> | undefined;
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: child.pid as number,
    stop() {
      stopping ??= stop();
      return stopping;
    },
  };
}
