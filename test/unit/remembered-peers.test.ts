/**
 * The replicas a volume remembers, for a replica that cannot reach Redis from
 * its start: written whole, read back without the reader itself, and never a
 * reason to fail.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { RememberedPeers } from '../../src/cluster/remembered-peers.js';
import { silentLogger } from '../../src/logger.js';
import { capturingLogger } from '../support/capturing-logger.js';

let dir: string;
beforeEach(async () => {
  dir = path.join(tmpdir(), `rg-remembered-${process.pid}-${Date.now()}`);
  await mkdir(dir);
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const GW1 = { node: 'gw-1', url: 'http://10.0.0.1:8080' };
const GW2 = { node: 'gw-2', url: 'http://10.0.0.2:8080' };
const GW3 = { node: 'gw-3', url: 'http://10.0.0.3:8080' };

test('what one replica writes, another reads back, the reader itself left out', async () => {
  await new RememberedPeers(dir, silentLogger()).remember(GW2, [GW3, { ...GW1, volume: 'v1' } as typeof GW1]);
  expect(await new RememberedPeers(dir, silentLogger()).read('gw-2')).toEqual([GW1, GW3]);
  expect(await new RememberedPeers(dir, silentLogger()).read('gw-1')).toEqual([GW2, GW3]);
});

test('replicas sharing a volume write the same list: the writer and the peers it saw', async () => {
  await new RememberedPeers(dir, silentLogger()).remember(GW1, [GW2, GW3]);
  const first = await readFile(path.join(dir, 'cluster-peers.json'), 'utf8');
  await new RememberedPeers(dir, silentLogger()).remember(GW3, [GW2, GW1]);
  expect(await readFile(path.join(dir, 'cluster-peers.json'), 'utf8')).toBe(first);
});

test('a missing, damaged or foreign file remembers nobody; entries that are not replicas are skipped', async () => {
  const remembered = new RememberedPeers(dir, silentLogger());
  expect(await remembered.read('gw-1')).toEqual([]);
  const file = path.join(dir, 'cluster-peers.json');
  await writeFile(file, '[{"node": "gw-2", "url": "http://10.0.0.2:8080"');
  expect(await remembered.read('gw-1')).toEqual([]);
  await writeFile(file, '{"gw-2": "http://10.0.0.2:8080"}');
  expect(await remembered.read('gw-1')).toEqual([]);
  await writeFile(file, JSON.stringify([GW2, { node: 'gw-4' }, { node: 'gw-5', url: 'file:///etc/passwd' }, null, 7]));
  expect(await remembered.read('gw-1')).toEqual([GW2]);
});

test('only an origin is asked, as cluster.advertise_url is one: no path, query, fragment or credentials', async () => {
  const file = path.join(dir, 'cluster-peers.json');
  await writeFile(
    file,
    JSON.stringify([
      { node: 'gw-4', url: 'http://10.0.0.4:8080/admin/flush?confirm=yes&x=' },
      { node: 'gw-5', url: 'http://10.0.0.5:8080#' },
      { node: 'gw-6', url: 'http://user:secret@10.0.0.6:8080' },
      { node: 'gw-7', url: 'http://10.0.0.7:8080?x=1' },
      { node: 'gw-8', url: 'HTTP://GW-8.example:80' },
      { node: 'gw-9', url: 'http://10.0.0.2:8080' },
      GW2,
    ]),
  );
  // Asked as the origin (an empty fragment is none); the same URL twice is asked once.
  expect(await new RememberedPeers(dir, silentLogger()).read('gw-1')).toEqual([
    { node: 'gw-5', url: 'http://10.0.0.5:8080' },
    { node: 'gw-8', url: 'http://gw-8.example' },
    { node: 'gw-9', url: 'http://10.0.0.2:8080' },
  ]);
});

test('a list that cannot be written is said once, and the replica goes on', async () => {
  const { logger, lines } = capturingLogger();
  const remembered = new RememberedPeers(path.join(dir, 'missing'), logger);
  await remembered.remember(GW1, [GW2]);
  await remembered.remember(GW1, [GW3]);
  const warnings = lines.filter((line) => String(line.msg).includes('could not remember the replicas'));
  expect(warnings).toHaveLength(1);
  expect(warnings[0]!.err).toMatchObject({ code: 'ENOENT' });
});

test('writes under way one after another: the last list is the one on disk', async () => {
  const remembered = new RememberedPeers(dir, silentLogger());
  await Promise.all([remembered.remember(GW1, [GW2]), remembered.remember(GW1, [GW3]), remembered.remember(GW1, [])]);
  expect(await new RememberedPeers(dir, silentLogger()).read('gw-2')).toEqual([GW1]);
});

test('a file grown past any cluster is not asked all at once: 64 replicas at most, and none from a file over 64 KiB', async () => {
  const file = path.join(dir, 'cluster-peers.json');
  const many = Array.from({ length: 500 }, (_, i) => ({ node: `gw-${i}`, url: `http://10.0.${i >> 8}.${i & 255}:8080` }));
  await writeFile(file, JSON.stringify(many));
  expect((await new RememberedPeers(dir, silentLogger()).read('gw-0')).length).toBe(64);
  await writeFile(file, JSON.stringify([GW1, { node: 'pad', url: `http://x/${'a'.repeat(70_000)}` }]));
  expect(await new RememberedPeers(dir, silentLogger()).read('gw-2')).toEqual([]);
});

test('a FIFO, a device or a directory in its place is not waited on nor read: nobody is asked, and that is said', async () => {
  const file = path.join(dir, 'cluster-peers.json');
  for (const place of [() => execFileSync('mkfifo', [file]), () => symlink('/dev/zero', file), () => mkdir(file)]) {
    await place();
    const { logger, lines } = capturingLogger();
    expect(await new RememberedPeers(dir, logger).read('gw-1')).toEqual([]);
    expect(lines.filter((line) => String(line.msg).includes('remembered replicas file cannot be used'))).toHaveLength(1);
    await rm(file, { recursive: true });
  }
});
