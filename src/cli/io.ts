import bytes from 'bytes';

/** Where a command writes its lines: stdout in the CLI, an array in tests. */
export type Print = (line: string) => void;

/** A mistake in the command line: printed as one line, never with a stack. */
export class UsageError extends Error {}

/** `22.63 KB`: a byte count as operators read it. */
export function formatBytes(value: number): string {
  return bytes.format(value, { unitSeparator: ' ' }) ?? `${value} B`;
}
