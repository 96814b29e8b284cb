import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config/index.js';
import { defaultMaxConnections } from '../src/server.js';

const SERVER_KEY = 'ff-server-key-for-listen-tests-0001';

function parse(listen: Record<string, unknown> = {}) {
  const raw = { listen, tenants: [{ id: 'acme', api_keys: [`sha256:${'a'.repeat(64)}`] }] };
  return parseConfig(raw, { env: { FLYFLOW_API_KEY: SERVER_KEY }, cwd: '/tmp' });
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('listen: connection limits and timeouts', () => {
  it('an operator who sets nothing gets timeouts suited to a proxy and a cap derived at start-up', () => {
    expect(parse().listen).toEqual({
      host: '127.0.0.1',
      port: 8080,
      maxConnections: undefined,
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      keepAliveTimeoutMs: 5_000,
    });
  });

  it('max_connections and the three timeouts are read from the file', () => {
    const listen = parse({
      max_connections: 500,
      headers_timeout_ms: 2000,
      request_timeout_ms: 4000,
      keep_alive_timeout_ms: 65_000,
    }).listen;
    expect(listen).toMatchObject({ maxConnections: 500, headersTimeoutMs: 2000, requestTimeoutMs: 4000, keepAliveTimeoutMs: 65_000 });
  });

  it('a headers timeout longer than the request timeout stops start-up naming the field', () => {
    expect(messageOf(() => parse({ headers_timeout_ms: 5000, request_timeout_ms: 1000 }))).toBe(
      'listen.headers_timeout_ms: must be at most request_timeout_ms (1000)',
    );
  });

  it.each([
    ['max_connections', 0],
    ['headers_timeout_ms', 0],
    ['keep_alive_timeout_ms', -1],
  ])('%s %s is refused at start-up', (field, value) => {
    expect(messageOf(() => parse({ [field]: value }))).toBe(`listen.${field}: must be at least 1`);
  });

  it('a misspelt connection option is an error, not a silently missing cap', () => {
    expect(messageOf(() => parse({ max_connection: 100 }))).toContain('max_connection');
  });
});

describe('the default connection cap', () => {
  it.each([
    ['a process allowed 256 files serves at most 128 connections', 256, 128],
    ['a process allowed 1024 files serves at most 512', 1024, 512],
    ['a generous limit is still capped at 4096', 1_048_576, 4096],
    ['where the limit is unknown, 4096', undefined, 4096],
  ])('%s', (_name, limit, expected) => {
    expect(defaultMaxConnections(limit)).toBe(expected);
  });
});
