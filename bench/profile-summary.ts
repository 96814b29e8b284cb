/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): the functions with
 * the most self time, then the inclusive (self + callees) time of the
 * gateway's own and Hono's functions, which is where per-request cost shows.
 *
 *   npx tsx bench/profile-summary.ts PROFILE.cpuprofile [top=25]
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { markdownTable, fmt } from './table.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function where(frame: ProfileNode['callFrame']): string {
  if (!frame.url) return '';
  const url = frame.url.replace(/^file:\/\//, '');
  const short = url.includes('node_modules/') ? url.slice(url.lastIndexOf('node_modules/') + 13) : path.relative(process.cwd(), url);
  return `${short}:${frame.lineNumber + 1}`;
}

async function main(): Promise<void> {
  const [file, topArg] = process.argv.slice(2);
  if (!file) throw new Error('usage: tsx bench/profile-summary.ts PROFILE.cpuprofile [top]');
  const top = Number(topArg ?? 25);
  const profile = JSON.parse(await readFile(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const total = [...selfUs.values()].reduce((sum, us) => sum + us, 0);
  const idle = [...selfUs].filter(([id]) => byId.get(id)?.callFrame.functionName === '(idle)').reduce((sum, [, us]) => sum + us, 0);

  const grouped = new Map<string, { name: string; at: string; us: number }>();
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    const name = frame.functionName || '(anonymous)';
    const at = where(frame);
    const key = `${name} ${at}`;
    const entry = grouped.get(key) ?? { name, at, us: 0 };
    entry.us += us;
    grouped.set(key, entry);
  }
  const busy = total - idle;
  const rows = [...grouped.values()]
    .filter((entry) => entry.name !== '(idle)')
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((entry) => [entry.name, entry.at, fmt(entry.us / 1000, 0), `${fmt((100 * entry.us) / busy, 1)} %`]);
  console.log(`${fmt(total / 1e6, 1)} s sampled, ${fmt((100 * idle) / total, 0)} % idle\n`);
  console.log(markdownTable(['function (self time)', 'where', 'ms', 'of busy'], rows));

  // Inclusive time: each sample counts once for every distinct function on its stack.
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const inclusive = new Map<string, { name: string; at: string; us: number }>();
  for (const [id, us] of selfUs) {
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)!.callFrame;
      if (!/\/src\/|hono/.test(frame.url)) continue;
      const name = frame.functionName || '(anonymous)';
      const key = `${name} ${where(frame)}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const entry = inclusive.get(key) ?? { name, at: where(frame), us: 0 };
      entry.us += us;
      inclusive.set(key, entry);
    }
  }
  const inclusiveRows = [...inclusive.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((entry) => [entry.name, entry.at, fmt(entry.us / 1000, 0), `${fmt((100 * entry.us) / busy, 1)} %`]);
  console.log('\n');
  console.log(markdownTable(['gateway / Hono function (inclusive)', 'where', 'ms', 'of busy'], inclusiveRows));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
