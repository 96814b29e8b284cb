/**
 * Before any load: each server fetches the recording once, then must answer
 * it from its cache (its hit header says so and the upstream sees no new
 * request), and every case's answer is checked byte for byte once, so the
 * load runs measure right answers.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { LoadCase } from './peers-load.js';
import type { PeerServer, PeersUpstream } from './peers-servers.js';

// A server may still be storing the first answer when the second arrives.
const HIT_ATTEMPTS = 50;
const HIT_RETRY_MS = 100;

interface Answer {
  status: number;
  headers: Headers;
  body: Buffer;
}

async function get(url: string, headers: Record<string, string>): Promise<Answer> {
  const response = await fetch(url, { headers });
  return { status: response.status, headers: response.headers, body: Buffer.from(await response.arrayBuffer()) };
}

/** Fetches `path` until `server` answers it from its cache; resolves with the whole body and the hit header's words. */
export async function warmUntilHit(
  server: PeerServer,
  upstream: PeersUpstream,
  path: string,
  size: number,
): Promise<{ body: Buffer; said: string }> {
  const first = await get(`${server.url}${path}`, server.headers);
  if (first.status !== 200 || first.body.length !== size) {
    throw new Error(`${server.label}: warming answered ${first.status} with ${first.body.length} bytes, expected 200 with ${size}`);
  }
  let said = '';
  for (let attempt = 0; attempt < HIT_ATTEMPTS; attempt++) {
    const before = await upstream.recordingGets();
    const again = await get(`${server.url}${path}`, server.headers);
    const after = await upstream.recordingGets();
    const cache = server.cacheResult(again.headers);
    said = cache.said;
    if (cache.hit && after === before && again.status === 200 && again.body.equals(first.body)) return { body: first.body, said };
    await sleep(HIT_RETRY_MS);
  }
  throw new Error(`${server.label}: no cache hit after warming (its last answer said ${JSON.stringify(said)})`);
}

/** Checks one answer of `loadCase` against the whole body; undefined when right, else what is wrong. */
export async function checkCase(server: PeerServer, loadCase: LoadCase, whole: Buffer): Promise<string | undefined> {
  const spec = loadCase.range;
  let headers = server.headers;
  let start = 0;
  let end = whole.length - 1;
  if (spec) {
    if ('header' in spec) [start, end] = (/^bytes=(\d+)-(\d+)$/.exec(spec.header) ?? []).slice(1).map(Number) as [number, number];
    else {
      start = Math.floor(spec.size / 2) - Math.floor(spec.randomLength / 2);
      end = start + spec.randomLength - 1;
    }
    headers = { ...headers, range: `bytes=${start}-${end}` };
  }
  const answer = await get(`${server.url}${loadCase.path}`, headers);
  const expected = whole.subarray(start, end + 1);
  if (answer.status !== loadCase.status) return `status ${answer.status}, expected ${loadCase.status}`;
  if (!answer.body.equals(expected)) return `a ${answer.body.length}-byte body that is not bytes ${start}-${end} of the recording`;
  const contentRange = answer.headers.get('content-range');
  if (spec && contentRange !== `bytes ${start}-${end}/${whole.length}`) return `Content-Range ${contentRange}`;
  if (!server.cacheResult(answer.headers).hit) return `not a hit: ${JSON.stringify(server.cacheResult(answer.headers).said)}`;
  return undefined;
}

/** The key of one server's run of one case. */
export function caseOf(server: PeerServer, loadCase: LoadCase): string {
  return `${server.label}/${loadCase.key}`;
}

/**
 * Warms every server and checks every case once: the runs to skip (see
 * {@link caseOf}) because a server did not cache or answered wrong, and a line for each server.
 */
export async function warmAndCheck(
  servers: PeerServer[],
  upstream: PeersUpstream,
  cases: LoadCase[],
  recording: { path: string; size: number },
): Promise<{ skipped: Set<string>; lines: string[] }> {
  const skipped = new Set<string>();
  const lines: string[] = [];
  for (const server of servers) {
    try {
      const { body, said } = await warmUntilHit(server, upstream, recording.path, recording.size);
      lines.push(`${server.label} warmed: its second answer said ${JSON.stringify(said)}, the upstream saw no new request`);
      for (const loadCase of cases) {
        const problem = await checkCase(server, loadCase, body);
        if (problem === undefined) continue;
        skipped.add(caseOf(server, loadCase));
        lines.push(`**Wrong answer, run skipped:** ${server.label}, ${loadCase.title}: ${problem}`);
      }
    } catch (error) {
      for (const loadCase of cases) skipped.add(caseOf(server, loadCase));
      lines.push(`**${server.label} skipped:** ${(error as Error).message}`);
    }
  }
  return { skipped, lines };
}
