/**
 * Processes for the peers bench: each server in a process group of its own,
 * pinned to a core with `taskset`, tied to this process by a pipe so it dies
 * with it however this process ends; and the CPU time Linux charged to a
 * group, to the load generator and to the whole machine. Linux only (/proc).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, openSync, closeSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export { freePort } from '../dev/free-port.js';

export const TASKSET = '/usr/bin/taskset';
/** USER_HZ: the unit of /proc's CPU times, 100 on every Linux build that matters. */
export const TICKS_PER_SECOND = 100;
const OUTPUT_TAIL_CHARS = 4_000;

// The lifeline: the shell keeps our end of its stdin, starts the command, and
// when the pipe reaches end-of-file (this process exited or was killed) kills
// its whole group, the command's own children included.
const LIFELINE = `
exec 3<&0 0</dev/null
"$0" "$@" &
pid=$!
( read _ <&3; kill -KILL 0 ) &
wait "$pid"
`;

/** True when `file` exists and may be executed. */
export function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Where each side runs: undefined cores mean "not pinned". */
export interface CorePlan {
  server: number | undefined;
  /** The load generator and this driver. */
  client: number | undefined;
  /**
   * The upstream: a core of its own when there are three, else unpinned. Never
   * the servers' core; nor the client's alone, where its big loopback writes
   * would hold the client back and inflate the cold-miss baseline.
   */
  upstream: number | undefined;
  /** One line for the report. */
  description: string;
}

/** CPUs this process may use, from /proc/self/status (`0-3,6`), in order. */
function allowedCpus(): number[] {
  const list = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '';
  const cpus: number[] = [];
  for (const part of list.split(',')) {
    const [from, to = from] = part.split('-').map(Number);
    if (from === undefined || to === undefined || !Number.isInteger(from) || !Number.isInteger(to)) continue;
    for (let cpu = from; cpu <= to; cpu++) cpus.push(cpu);
  }
  return cpus;
}

/** Servers on the first allowed core, the load generator and this driver on the second, the upstream on the third if there is one. */
export function planCores(): CorePlan {
  const cpus = allowedCpus();
  if (cpus.length < 2 || !executable(TASKSET)) {
    const why = cpus.length < 2 ? `only ${cpus.length} core allowed` : `${TASKSET} missing (apt-get install -y util-linux)`;
    return { server: undefined, client: undefined, upstream: undefined, description: `not pinned: ${why}` };
  }
  const [server, client] = cpus as [number, number];
  const upstream = cpus[2];
  return {
    server,
    client,
    upstream,
    description: `servers on CPU ${server}, load generator and bench driver on CPU ${client}, upstream ${upstream === undefined ? 'not pinned' : `on CPU ${upstream}`}`,
  };
}

/** `command args` run through `taskset -c core` when a core is given. */
export function pinned(core: number | undefined, command: string, args: string[]): [string, ...string[]] {
  return core === undefined ? [command, ...args] : [TASKSET, '-c', String(core), command, ...args];
}

/** Moves every thread of this process to `core` (children forked later inherit it). */
export function pinSelf(core: number | undefined): void {
  if (core === undefined) return;
  spawnSync(TASKSET, ['-a', '-p', '-c', String(core), String(process.pid)], { stdio: 'ignore' });
}

export interface ProcessGroup {
  readonly name: string;
  /** The group id: the lifeline shell's pid. */
  readonly pgid: number;
  readonly child: ChildProcess;
  /** The last few KB the group printed, when its output is captured rather than sent to a file. */
  output(): string;
  /** Settles when the lifeline shell exits (the command exited, or the group was killed). */
  readonly exited: Promise<void>;
  /** True once the command has exited. */
  hasExited(): boolean;
  /** SIGKILLs the whole group now; safe to call twice, and from an `exit` handler. */
  kill(): void;
  /**
   * SIGTERMs the command alone, as a service manager stops it, and waits for
   * it to exit: its exit code, or undefined when it had not exited within
   * `timeoutMs` (then the group is killed). The lifeline stays until then.
   */
  terminate(timeoutMs: number): Promise<number | undefined>;
}

/**
 * Starts `command` in a new process group behind the lifeline. Its stdout and
 * stderr go to `logFile` (appended) or, without one, are kept in memory (the tail).
 */
export function startGroup(
  name: string,
  command: [string, ...string[]],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; logFile?: string } = {},
): ProcessGroup {
  const logFd = options.logFile === undefined ? undefined : openSync(options.logFile, 'a');
  const child = spawn('sh', ['-c', LIFELINE, ...command], {
    stdio: ['pipe', logFd ?? 'pipe', logFd ?? 'pipe'],
    detached: true,
    env: options.env ?? process.env,
    cwd: options.cwd,
  });
  if (logFd !== undefined) closeSync(logFd);
  let output = '';
  const keep = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-OUTPUT_TAIL_CHARS));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.stdin?.on('error', () => {});
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const hasExited = () => child.exitCode !== null || child.signalCode !== null;
  const kill = () => {
    child.stdin?.end();
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  };
  return {
    name,
    pgid: child.pid!,
    child,
    output: () => output,
    exited,
    hasExited,
    kill,
    async terminate(timeoutMs) {
      const command = hasExited() ? undefined : commandPid(child.pid!);
      if (command !== undefined) process.kill(command, 'SIGTERM');
      // The lifeline shell's `wait` returns once the command exits, and the shell exits with its code.
      const done = hasExited() || (await Promise.race([exited.then(() => true), sleep(timeoutMs, false, { ref: false })]));
      const code = done && command !== undefined ? (child.exitCode ?? undefined) : undefined;
      kill();
      await exited;
      return code;
    },
  };
}

/**
 * The pid of the command a lifeline shell started: its child that is not the
 * lifeline's own forked subshell (which keeps the shell's command line).
 */
function commandPid(shellPid: number): number | undefined {
  let shellCommandLine: string;
  try {
    shellCommandLine = readFileSync(`/proc/${shellPid}/cmdline`, 'latin1');
  } catch {
    return undefined; // gone meanwhile
  }
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // field 4 is the parent's pid.
      if (Number(statFields(readFileSync(`/proc/${entry}/stat`, 'utf8'))[1]) !== shellPid) continue;
      if (readFileSync(`/proc/${entry}/cmdline`, 'latin1') !== shellCommandLine) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Resolves once `port` accepts connections; rejects if the group exits first or `timeoutMs` passes. */
export async function waitForPort(group: ProcessGroup, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !group.hasExited()) {
    if (await accepts(port)) return;
    await sleep(50);
  }
  throw new Error(`${group.name} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

/** The fields of a /proc/<pid>/stat line after the command name (which may hold spaces): [0] is field 3, `state`. */
function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** User + system CPU seconds of every live process in group `pgid` (threads included). */
export function groupCpuSeconds(pgid: number): number {
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fields: string[];
    try {
      fields = statFields(readFileSync(`/proc/${entry}/stat`, 'utf8'));
    } catch {
      continue; // gone meanwhile
    }
    // field 5 is the process group; 14 and 15 are utime and stime.
    if (Number(fields[2]) === pgid) ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / TICKS_PER_SECOND;
}

/**
 * CPU seconds the whole machine spent running processes since boot: user,
 * nice, system and steal from /proc/stat. Interrupt and softirq time are left
 * out: that is mostly the kernel moving our own loopback packets, charged to no process.
 */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const [, user = 0, nice = 0, system = 0, , , , , steal = 0] = line.trim().split(/\s+/).map(Number);
  return (user + nice + system + steal) / TICKS_PER_SECOND;
}
