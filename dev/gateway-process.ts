/**
 * The gateway as an operator runs it: `recording-gateway serve` in a child
 * process (via tsx), for tests that kill, signal or restart it.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { sha256Hex } from '../src/sha256.js';
import { ACME_KEY, SERVER_KEY } from './gateway-harness.js';
import { ROOT } from './run-cli.js';

const CLI = path.join(ROOT, 'src/cli.ts');
const LISTENING = 'recording-gateway listening';
// Preloaded into a child in its own process group: stdin is a pipe from this
// process, so its end (this process exited or was killed) ends the child too.
// The gateway never reads stdin; the socket is unref'd so the child still
// exits on its own after a graceful shutdown.
const LIFELINE =
  'data:text/javascript,import{Socket}from"node:net";const die=()=>process.kill(process.pid,"SIGKILL");' +
  'const stdin=new Socket({fd:0,readable:true,writable:false});stdin.once("end",die);stdin.once("error",die);stdin.resume();stdin.unref();';

const START_SCRIPT = /^exec node((?: --[a-z-]+(?:=\S+)?)*) dist\/cli\.js serve$/;

/**
 * The Node flags `npm start` gives the compiled gateway (package.json's
 * `start` script), so that benches and tests run it exactly as operators do.
 */
export function startScriptNodeFlags(): string[] {
  const { scripts } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } };
  const flags = START_SCRIPT.exec(scripts.start)?.[1];
  if (flags === undefined) throw new Error(`package.json: "start" is not "exec node [--flag ...] dist/cli.js serve": ${scripts.start}`);
  return flags.split(' ').filter(Boolean);
}

export interface GatewayProcess {
  child: ChildProcessWithoutNullStreams;
  /** `http://127.0.0.1:PORT` from the "listening" log line. */
  url: string;
  port: number;
  /** Every pino JSON line the child printed on stdout so far. */
  logs: Array<Record<string, unknown>>;
  /** Everything the child printed on stderr so far. */
  stderr(): string;
  /** Settles when the child exits, with its code and signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first log line (already printed or still to come) that `match` accepts. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
}

/** Writes a minimal YAML config for one tenant (acme, with `ACME_KEY`) and returns its path. */
export async function writeGatewayConfig(
  dir: string,
  options: {
    upstreamBaseUrl: string;
    cacheDir: string;
    upstreamYaml?: string[];
    cacheYaml?: string[];
    /** More lines for the acme tenant, e.g. `rate_limit_per_minute: 10`. */
    tenantYaml?: string[];
    /** More entries under `tenants:`, as written at that level (`- id: other`, `  api_keys: [...]`). */
    moreTenantsYaml?: string[];
    /** Top-level lines after the rest, e.g. a `cluster:` block. */
    topLevelYaml?: string[];
  },
): Promise<string> {
  const configPath = path.join(dir, 'gateway.yaml');
  const lines = [
    'listen: { host: 127.0.0.1, port: 0 }',
    'upstream:',
    `  base_url: ${JSON.stringify(options.upstreamBaseUrl)}`,
    ...(options.upstreamYaml ?? []).map((line) => `  ${line}`),
    'cache:',
    `  dir: ${JSON.stringify(options.cacheDir)}`,
    ...(options.cacheYaml ?? []).map((line) => `  ${line}`),
    'tenants:',
    '  - id: acme',
    `    api_keys: ["sha256:${sha256Hex(ACME_KEY)}"]`,
    ...(options.tenantYaml ?? []).map((line) => `    ${line}`),
    ...(options.moreTenantsYaml ?? []).map((line) => `  ${line}`),
    ...(options.topLevelYaml ?? []),
  ];
  await writeFile(configPath, `${lines.join('\n')}\n`);
  return configPath;
}

/**
 * Spawns `recording-gateway --config PATH serve` with only PATH and the Flyflow
 * key in its environment, and resolves once it logs that it listens. A child
 * that exits first, or stays silent for `startTimeoutMs`, rejects with its stderr.
 */
export async function startGatewayProcess(
  configPath: string,
  options: {
    env?: Record<string, string>;
    startTimeoutMs?: number;
    /** Run dist/cli.js (build first) with npm start's Node flags, as production does, instead of src via tsx. */
    compiled?: boolean;
    /** Open files the process may hold (`ulimit -n`), as a small container allows. */
    fileLimit?: number;
    /**
     * Runs the child in a process group of its own (see {@link signalProcessGroup}),
     * tied to this process by its stdin: it dies with SIGKILL once this process goes,
     * however it goes, so a crashed test run leaves no gateway behind.
     */
    processGroup?: boolean;
  } = {},
): Promise<GatewayProcess> {
  const entry = options.compiled ? [...startScriptNodeFlags(), path.join(ROOT, 'dist/cli.js')] : ['--import', 'tsx', CLI];
  const lifeline = options.processGroup ? ['--import', LIFELINE] : [];
  const command = [process.execPath, ...lifeline, ...entry, '--config', configPath, 'serve'];
  const [program, ...args] =
    options.fileLimit === undefined ? command : ['bash', '-c', `ulimit -n ${options.fileLimit} && exec "$@"`, 'bash', ...command];
  const child = spawn(program!, args, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', FLYFLOW_API_KEY: SERVER_KEY, ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: options.processGroup === true,
  });
  const logs: Array<Record<string, unknown>> = [];
  const listeners = new Set<(line: Record<string, unknown>) => void>();
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  createInterface({ input: child.stdout }).on('line', (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      line = { msg: text };
    }
    logs.push(line);
    for (const listener of listeners) listener(line);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });

  function waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const seen = logs.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        listeners.delete(listener);
        reject(new Error(`gateway process: no matching log line within ${timeoutMs} ms; stderr:\n${stderr}`));
      }, timeoutMs);
      const listener = (line: Record<string, unknown>) => {
        if (!match(line)) return;
        clearTimeout(timer);
        listeners.delete(listener);
        resolve(line);
      };
      listeners.add(listener);
      void exited.then(({ code, signal }) => {
        if (!listeners.has(listener)) return;
        clearTimeout(timer);
        listeners.delete(listener);
        reject(new Error(`gateway process exited (code ${code}, signal ${signal}) before the expected log line; stderr:\n${stderr}`));
      });
    });
  }

  let listening: Record<string, unknown>;
  try {
    listening = await waitForLog((line) => line.msg === LISTENING, options.startTimeoutMs ?? 15_000);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const url = String(listening.url);
  return { child, url, port: Number(new URL(url).port), logs, stderr: () => stderr, exited, waitForLog };
}

/**
 * Sends `signal` to the gateway's whole process group (started with
 * `processGroup: true`); a no-op once it has exited.
 */
export function signalProcessGroup(gateway: GatewayProcess, signal: NodeJS.Signals): void {
  const { pid } = gateway.child;
  if (pid === undefined || gateway.child.exitCode !== null || gateway.child.signalCode !== null) return;
  try {
    process.kill(-pid, signal);
  } catch (error) {
    // ESRCH: the group is already gone.
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/** Kills the child (if still running) and waits for it to be gone. */
export async function stopGatewayProcess(gateway: GatewayProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (gateway.child.exitCode === null && gateway.child.signalCode === null) gateway.child.kill(signal);
  await gateway.exited;
}

/** Tries a fresh TCP connection: 'refused' once nothing listens on the port any more. */
export function tryConnect(port: number, host = '127.0.0.1'): Promise<'connected' | 'refused' | 'other-error'> {
  return new Promise((resolve) => {
    const socket = connect({ port, host });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED' ? 'refused' : 'other-error'));
  });
}
