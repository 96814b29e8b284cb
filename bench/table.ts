/** Markdown tables for the bench output: numbers right-aligned, so columns read at a glance. */
import type { LoadResult } from './load.js';

export type Cell = string | number;

/** A fixed number of decimals, or `-` for a missing value. */
export function fmt(value: number | undefined, decimals = 1): string {
  if (value === undefined || !Number.isFinite(value)) return '-';
  return value.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

export function mib(bytes: number): string {
  return fmt(bytes / 1024 ** 2, 1);
}

/** Renders a GitHub-flavoured markdown table; numeric columns are right-aligned. */
export function markdownTable(header: string[], rows: Cell[][]): string {
  const text = rows.map((row) => row.map((cell) => (typeof cell === 'number' ? fmt(cell, 0) : cell)));
  const numeric = header.map(
    (_, col) => rows.length > 0 && rows.every((row) => typeof row[col] === 'number' || /^[-\d.,]+( ?[a-zA-Z%]*)?$/.test(String(row[col]))),
  );
  const widths = header.map((title, col) => Math.max(title.length, 3, ...text.map((row) => row[col]?.length ?? 0)));
  const pad = (cell: string, col: number) => (numeric[col] ? cell.padStart(widths[col]!) : cell.padEnd(widths[col]!));
  const line = (cells: string[]) => `| ${cells.map(pad).join(' | ')} |`;
  const rule = `|${widths.map((width, col) => (numeric[col] ? `${'-'.repeat(width + 1)}:` : `${'-'.repeat(width + 2)}`)).join('|')}|`;
  return [line(header), rule, ...text.map(line)].join('\n');
}

/** The columns every throughput row has. */
export const LOAD_HEADER = [
  'case',
  'conc',
  'requests',
  'req/s',
  'MB/s',
  'p50 ms',
  'p90 ms',
  'p99 ms',
  'max ms',
  'errors',
  'gw CPU',
  'client CPU',
];

/** `gatewayCpuPercent`: this process's CPU over the case (warm-up included), as % of one core. */
export function loadRow(label: string, result: LoadResult, gatewayCpuPercent: number): Cell[] {
  const { latencyMs: l } = result;
  return [
    label,
    result.concurrency,
    result.requests,
    fmt(result.requestsPerSecond, 0),
    fmt(result.megabytesPerSecond, 1),
    fmt(l.p50, 2),
    fmt(l.p90, 2),
    fmt(l.p99, 2),
    fmt(l.max, 1),
    result.errors,
    `${fmt(gatewayCpuPercent, 0)} %`,
    `${fmt(result.clientCpuPercent, 0)} %`,
  ];
}
