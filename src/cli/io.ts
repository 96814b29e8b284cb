import { statSync } from 'node:fs';
import bytes from 'bytes';
import { InvalidArgumentError } from 'commander';
import { parseCallId } from '../recordings/call-id.js';

/** Where a command writes its lines: stdout in the CLI, an array in tests. */
export type Print = (line: string) => void;

/** Exit codes, the same for every command (README, Command line). */
export const EXIT_OK = 0;
/** The command failed, or found damage (`cache verify`). */
export const EXIT_FAILURE = 1;
/** The command line was wrong: an unknown command or option, a bad value, a missing argument. */
export const EXIT_USAGE = 2;

/** A mistake in the command line: printed as one line, never with a stack; exit code 2. */
export class UsageError extends Error {}

/** The command ran and could not do its job: printed as one line, never with a stack; exit code 1. */
export class CommandFailure extends Error {}

/**
 * Whether the directory a setting names exists: false when nothing is there
 * yet (a cache or trail never written); a file in its place, or in the place
 * of a folder on its path, is a CommandFailure naming `setting`.
 */
export function directoryExists(dir: string, setting: string): boolean {
  const notADirectory = () => new CommandFailure(`${setting}: ${dir} is not a directory`);
  let found: ReturnType<typeof statSync>;
  try {
    found = statSync(dir, { throwIfNoEntry: false });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') throw notADirectory();
    throw error;
  }
  if (found && !found.isDirectory()) throw notADirectory();
  return found !== undefined;
}

/** `22.63 KB`: a byte count as operators read it. */
export function formatBytes(value: number): string {
  return bytes.format(value, { unitSeparator: ' ' }) ?? `${value} B`;
}

/** `--json`: the command's one JSON document on stdout, keys in snake_case like the HTTP API's. */
export function printJson(print: Print, value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

/**
 * An option value's parser that refuses the option given twice (`--call 1
 * --call 2`), as the config loader refuses a key given twice: commander
 * would keep the last one without a word. `parse` checks the value (as is
 * without one).
 */
export function givenOnce<T = string>(parse?: (value: string) => T): (value: string, previous: T | undefined) => T {
  return (value, previous) => {
    if (previous !== undefined) throw new InvalidArgumentError('The option was given more than once; give it once.');
    return parse ? parse(value) : (value as T);
  };
}

/** A call id on the command line, as the HTTP routes take it. */
export function callIdArgument(value: string): string {
  try {
    return parseCallId(value);
  } catch {
    throw new InvalidArgumentError('expected a call id: a decimal integer from 1 to 9007199254740991');
  }
}
