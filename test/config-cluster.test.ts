import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/index.js';
import { configParsers } from './support/config-parse.js';

const ROOT = resolve(import.meta.dirname, '..');
const DIGEST = 'b'.repeat(64);
const SERVER_KEY = 'ff-server-key-for-cluster-tests';
const PEER_SECRET = 'peer-secret-do-not-leak-0123456789abcdef';
const REDIS_PASSWORD = 'redis-pass-do-not-leak-42';
const REDIS_URL = 'redis://redis:6379/0';
const GENERATE = 'generate one with `openssl rand -base64 32` or `recording-gateway new-key`';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gateway-config-cluster-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const baseEnv = { FLYFLOW_API_KEY: SERVER_KEY, GATEWAY_PEER_SECRET: PEER_SECRET };

function withCluster(cluster: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`] }], cluster, ...extra };
}

const { parse, messageOf } = configParsers(() => ({ env: baseEnv, cwd: dir }));

describe('the cluster block', () => {
  it('with only redis_url, the replica is named after its host, waits 250 ms on Redis and reads GATEWAY_PEER_SECRET', () => {
    const config = parse(withCluster({ redis_url: REDIS_URL }));
    expect(config.cluster).toEqual({ redisUrl: REDIS_URL, nodeId: hostname(), peerSecret: PEER_SECRET, redisTimeoutMs: 250 });
    expect(config.cluster && 'advertiseUrl' in config.cluster).toBe(false);
  });

  it('without it the gateway runs on its own', () => {
    const config = parse({ tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`] }] }, { env: { FLYFLOW_API_KEY: SERVER_KEY } });
    expect(config.cluster).toBeUndefined();
    expect('cluster' in config).toBe(false);
  });

  it('takes every field as written, dropping the trailing slash of advertise_url', async () => {
    await writeFile(join(dir, 'peer.secret'), `${PEER_SECRET}\n`);
    const config = parse(
      withCluster({
        redis_url: `rediss://:${REDIS_PASSWORD}@redis.internal:6380/2`,
        node_id: 'gw-1.eu_west',
        advertise_url: 'http://gw-1:8080/',
        peer_secret_file: 'peer.secret',
        redis_timeout_ms: 1000,
      }),
      { env: { FLYFLOW_API_KEY: SERVER_KEY } },
    );
    expect(config.cluster).toEqual({
      redisUrl: `rediss://:${REDIS_PASSWORD}@redis.internal:6380/2`,
      nodeId: 'gw-1.eu_west',
      advertiseUrl: 'http://gw-1:8080',
      peerSecret: PEER_SECRET,
      redisTimeoutMs: 1000,
    });
  });

  it('reads the peer secret from the variable peer_secret_env names', () => {
    const config = parse(withCluster({ redis_url: REDIS_URL, peer_secret_env: 'MY_PEER' }), {
      env: { FLYFLOW_API_KEY: SERVER_KEY, MY_PEER: PEER_SECRET },
    });
    expect(config.cluster?.peerSecret).toBe(PEER_SECRET);
  });

  it('accepts redis_timeout_ms at both ends of 10..60000', () => {
    expect(parse(withCluster({ redis_url: REDIS_URL, redis_timeout_ms: 10 })).cluster?.redisTimeoutMs).toBe(10);
    expect(parse(withCluster({ redis_url: REDIS_URL, redis_timeout_ms: 60_000 })).cluster?.redisTimeoutMs).toBe(60_000);
  });

  it('loads from a YAML file', async () => {
    const path = join(dir, 'gateway.yaml');
    await writeFile(
      path,
      `tenants:\n  - id: acme\n    api_keys: ["sha256:${DIGEST}"]\ncluster:\n  redis_url: ${REDIS_URL}\n  node_id: gw-2\n  redis_timeout_ms: 500\n`,
    );
    const { config } = await loadConfig({ path, env: baseEnv, cwd: dir });
    expect(config.cluster).toEqual({ redisUrl: REDIS_URL, nodeId: 'gw-2', peerSecret: PEER_SECRET, redisTimeoutMs: 500 });
  });

  it('the commented block in config/gateway.yaml is valid once uncommented', async () => {
    const example = await readFile(join(ROOT, 'config/gateway.yaml'), 'utf8');
    const lines = example.split('\n');
    const start = lines.indexOf('# cluster:');
    expect(start).toBeGreaterThan(0);
    for (let i = start; i < lines.length && lines[i]?.startsWith('#'); i++) {
      lines[i] = (lines[i] ?? '').replace(/^# /, '');
    }
    const path = join(dir, 'gateway.yaml');
    await writeFile(path, lines.join('\n'));
    const { config } = await loadConfig({ path, env: baseEnv, cwd: dir });
    expect(config.cluster).toEqual({
      redisUrl: REDIS_URL,
      nodeId: 'gw-1',
      advertiseUrl: 'http://gw-1:8080',
      peerSecret: PEER_SECRET,
      redisTimeoutMs: 250,
    });
  });
});

describe('cluster field errors stop start-up naming the field', () => {
  it.each([
    ['no redis_url', {}, 'cluster.redis_url: is required (a string)'],
    ['an http redis_url', { redis_url: 'http://redis:6379' }, 'cluster.redis_url: expected a redis:// or rediss:// URL'],
    ['a redis_url without a host', { redis_url: 'redis://' }, 'cluster.redis_url: expected a redis:// or rediss:// URL with a host'],
    [
      'a node_id with a space',
      { redis_url: REDIS_URL, node_id: 'gw 1' },
      'cluster.node_id: expected 1-64 letters, digits, ".", "_" or "-"',
    ],
    [
      'a 65-character node_id',
      { redis_url: REDIS_URL, node_id: 'n'.repeat(65) },
      'cluster.node_id: expected 1-64 letters, digits, ".", "_" or "-"',
    ],
    ['an empty node_id', { redis_url: REDIS_URL, node_id: '' }, 'cluster.node_id: expected 1-64 letters, digits, ".", "_" or "-"'],
    [
      'an advertise_url with a path',
      { redis_url: REDIS_URL, advertise_url: 'http://gw-1:8080/gateway' },
      'cluster.advertise_url: the URL for cluster.advertise_url must not have a path (expected scheme://host[:port])',
    ],
    [
      'an advertise_url with a query',
      { redis_url: REDIS_URL, advertise_url: 'http://gw-1:8080/?a=1' },
      'cluster.advertise_url: the URL for cluster.advertise_url must not have a query or fragment',
    ],
    [
      'a relative advertise_url',
      { redis_url: REDIS_URL, advertise_url: 'gw-1:8080' },
      'cluster.advertise_url: expected an http:// or https:// URL for cluster.advertise_url, got gw-1://',
    ],
    [
      'an advertise_url that is not a URL',
      { redis_url: REDIS_URL, advertise_url: '/gw-1' },
      'cluster.advertise_url: expected an absolute http:// or https:// URL for cluster.advertise_url',
    ],
    ['redis_timeout_ms below 10', { redis_url: REDIS_URL, redis_timeout_ms: 9 }, 'cluster.redis_timeout_ms: must be at least 10'],
    ['redis_timeout_ms above 60000', { redis_url: REDIS_URL, redis_timeout_ms: 60_001 }, 'cluster.redis_timeout_ms: must be at most 60000'],
    [
      'a fractional redis_timeout_ms',
      { redis_url: REDIS_URL, redis_timeout_ms: 2.5 },
      'cluster.redis_timeout_ms: expected a whole number, got a fraction',
    ],
    [
      'both peer_secret_env and peer_secret_file',
      { redis_url: REDIS_URL, peer_secret_env: 'PEER', peer_secret_file: 'peer.secret' },
      'cluster.peer_secret_file: set peer_secret_env or peer_secret_file, not both',
    ],
    ['a misspelt key', { redis_url: REDIS_URL, node_ld: 'gw-1' }, 'cluster.node_ld: unknown key; did you mean "node_id"?'],
  ])('%s', (_what, cluster, expected) => {
    expect(messageOf(withCluster(cluster))).toBe(expected);
  });

  it('a peer secret written into the file is refused without echoing it', () => {
    const message = messageOf(withCluster({ redis_url: REDIS_URL, peer_secret: PEER_SECRET }));
    expect(message).toBe(
      'cluster.peer_secret: unknown key; secrets do not go in this file: name the environment variable or file that holds it with peer_secret_env or peer_secret_file',
    );
  });

  it('a cluster block that is not a mapping is refused', () => {
    expect(messageOf(withCluster(null))).toBe('cluster: expected a mapping (key: value), got null');
  });

  it('a host name that cannot be a node id asks for cluster.node_id', () => {
    const long = `${'h'.repeat(60)}.example.com`;
    expect(messageOf(withCluster({ redis_url: REDIS_URL }), { hostname: long })).toBe(
      `cluster.node_id: not set, and the host name "${long}" is not a valid node id (1-64 letters, digits, ".", "_" or "-"); set cluster.node_id`,
    );
  });

  it('a password with a raw % is refused with how to write it, never echoed', () => {
    const message = messageOf(withCluster({ redis_url: 'redis://:p%ss-word-secret@redis:6379/0' }));
    expect(message).toBe(
      'cluster.redis_url: expected a redis:// or rediss:// URL; percent-encode the user name and password (a % in them is %25)',
    );
  });

  it('a path that is not a database number is refused with an example, as the Redis client would refuse it', () => {
    for (const path of ['/abc', '/1/2', '/-1']) {
      expect(messageOf(withCluster({ redis_url: `redis://127.0.0.1:6390${path}` }))).toBe(
        'cluster.redis_url: expected a redis:// or rediss:// URL; its path is a database number (redis://host:6379/0)',
      );
    }
    expect(parse(withCluster({ redis_url: 'redis://127.0.0.1:6390/' })).cluster?.redisUrl).toBe('redis://127.0.0.1:6390/');
    expect(parse(withCluster({ redis_url: 'redis://127.0.0.1:6390/12' })).cluster?.redisUrl).toBe('redis://127.0.0.1:6390/12');
  });

  it('never echoes the Redis password, whatever is wrong with the URL', () => {
    const cases = [
      `http://:${REDIS_PASSWORD}@redis:6379`,
      `redis://:${REDIS_PASSWORD}@`,
      `redis://:${REDIS_PASSWORD}@[bad`,
      `redis://user:${REDIS_PASSWORD}@red is:6379/0`,
    ];
    for (const redisUrl of cases) {
      const message = messageOf(withCluster({ redis_url: redisUrl }));
      expect(message).toMatch(/^cluster\.redis_url: expected a redis:\/\/ or rediss:\/\/ URL/);
      expect(message).not.toContain(REDIS_PASSWORD);
    }
  });
});

describe('the peer secret', () => {
  it('missing: names the variable it should be in', () => {
    expect(messageOf(withCluster({ redis_url: REDIS_URL }), { env: { FLYFLOW_API_KEY: SERVER_KEY } })).toBe(
      'cluster.peer_secret_env: environment variable GATEWAY_PEER_SECRET is not set (it holds the peer secret, the same on every replica)',
    );
  });

  it('shorter than 32 bytes: refused with how to generate one, never shown', () => {
    const short = PEER_SECRET.slice(0, 31);
    const message = messageOf(withCluster({ redis_url: REDIS_URL }), { env: { FLYFLOW_API_KEY: SERVER_KEY, GATEWAY_PEER_SECRET: short } });
    expect(message).toBe(
      `cluster.peer_secret_env: the secret in environment variable GATEWAY_PEER_SECRET is shorter than 32 bytes (it holds the peer secret, the same on every replica); ${GENERATE}`,
    );
    expect(message).not.toContain(short);
  });

  it('a secret a Bearer header cannot carry (a space, non-ASCII) is refused, never shown', () => {
    for (const secret of [`${PEER_SECRET.slice(0, 20)} ${PEER_SECRET.slice(20)}`, `${PEER_SECRET}é`, `${PEER_SECRET}\t`]) {
      const message = messageOf(withCluster({ redis_url: REDIS_URL }), {
        env: { FLYFLOW_API_KEY: SERVER_KEY, GATEWAY_PEER_SECRET: secret },
      });
      expect(message).toMatch(
        /^cluster\.peer_secret_env: the secret in environment variable GATEWAY_PEER_SECRET has a space, a control character or a non-ASCII character/,
      );
      expect(message).not.toContain(PEER_SECRET.slice(0, 20));
    }
  });

  it('exactly 32 bytes is accepted', () => {
    const secret = PEER_SECRET.slice(0, 32);
    const config = parse(withCluster({ redis_url: REDIS_URL }), { env: { FLYFLOW_API_KEY: SERVER_KEY, GATEWAY_PEER_SECRET: secret } });
    expect(config.cluster?.peerSecret).toBe(secret);
  });

  it('a short secret file is refused naming the file, never the secret', async () => {
    const short = PEER_SECRET.slice(0, 20);
    await writeFile(join(dir, 'peer.secret'), `${short}\n`);
    const message = messageOf(withCluster({ redis_url: REDIS_URL, peer_secret_file: 'peer.secret' }));
    expect(message).toBe(
      `cluster.peer_secret_file: the secret in file peer.secret is shorter than 32 bytes (it holds the peer secret, the same on every replica); ${GENERATE}`,
    );
    expect(message).not.toContain(short);
  });

  it('a missing secret file is named', () => {
    expect(messageOf(withCluster({ redis_url: REDIS_URL, peer_secret_file: 'nowhere.secret' }))).toBe(
      'cluster.peer_secret_file: file nowhere.secret does not exist (it holds the peer secret, the same on every replica)',
    );
  });

  it('requireSecrets: false (the CLI) loads without it and leaves it empty', () => {
    const config = parse(withCluster({ redis_url: REDIS_URL, node_id: 'gw-1' }), { env: {}, requireSecrets: false });
    expect(config.cluster).toEqual({ redisUrl: REDIS_URL, nodeId: 'gw-1', peerSecret: '', redisTimeoutMs: 250 });
    expect(
      parse(withCluster({ redis_url: REDIS_URL }), { env: { GATEWAY_PEER_SECRET: 'short' }, requireSecrets: false }).cluster?.peerSecret,
    ).toBe('');
  });
});

describe('cache.index in cluster mode', () => {
  it('the default sqlite index is kept', () => {
    expect(parse(withCluster({ redis_url: REDIS_URL })).cache.index).toEqual({ kind: 'sqlite' });
    expect(parse(withCluster({ redis_url: REDIS_URL }, { cache: { index: 'sqlite' } })).cache.index).toEqual({ kind: 'sqlite' });
  });

  it("the same Redis as cluster.redis_url becomes the volume's own sqlite index", () => {
    const url = `redis://:${REDIS_PASSWORD}@redis:6379/0`;
    expect(parse(withCluster({ redis_url: url }, { cache: { index: url } })).cache.index).toEqual({ kind: 'sqlite' });
    expect(parse(withCluster({ redis_url: url }, { cache: { index: url.replace('redis:', 'REDIS:') } })).cache.index).toEqual({
      kind: 'sqlite',
    });
  });

  it('the same server and database written with the defaults left out is the same Redis', () => {
    for (const [cluster, index] of [
      ['redis://127.0.0.1:41720/0', 'redis://127.0.0.1:41720'],
      ['redis://redis', 'redis://redis:6379/0'],
      [`redis://:${REDIS_PASSWORD}@redis:6379/2`, 'redis://redis/2'],
    ] as const) {
      expect(parse(withCluster({ redis_url: cluster }, { cache: { index } })).cache.index).toEqual({ kind: 'sqlite' });
    }
    expect(messageOf(withCluster({ redis_url: 'redis://redis' }, { cache: { index: 'redis://redis:6380' } }))).toContain(
      'cache.index: conflicts with cluster.redis_url',
    );
  });

  it('another Redis is refused, naming cache.index and never either password', () => {
    const message = messageOf(
      withCluster(
        { redis_url: `redis://:${REDIS_PASSWORD}@redis:6379/0` },
        { cache: { index: `redis://:${REDIS_PASSWORD}@redis:6379/1` } },
      ),
    );
    expect(message).toBe(
      'cache.index: conflicts with cluster.redis_url (another Redis server or database); leave cache.index at its default; the cluster keeps its shared state in cluster.redis_url',
    );
  });

  it('without a cluster a Redis index is still used as before', () => {
    const config = parse({ tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`] }], cache: { index: REDIS_URL } });
    expect(config.cache.index).toEqual({ kind: 'redis', url: REDIS_URL });
  });
});
