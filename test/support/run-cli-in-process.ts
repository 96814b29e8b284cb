import { runCli } from '../../src/cli.js';

export interface InProcessCliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI in this process with only the environment given: the same
 * commands and exit codes as `runCliProcess` (dev/run-cli.ts), without the
 * second a child process takes to start. For what only a real process shows
 * (a closed pipe, the entry point), use `runCliProcess`.
 */
export async function runCliInProcess(args: string[], options: { env?: Record<string, string>; cwd: string }): Promise<InProcessCliResult> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await runCli(args, {
    env: options.env ?? {},
    cwd: options.cwd,
    stdout: (line) => stdout.push(line),
    stderr: (line) => stderr.push(line),
  });
  return { code, stdout: stdout.join('\n'), stderr: stderr.join('\n') };
}
