import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config/index.js';

const env = { FLYFLOW_API_KEY: 'ff-server-key-for-disk-share-tests' };

function tenant(id: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { id, api_keys: [`sha256:${createHash('sha256').update(id).digest('hex')}`], ...extra };
}

function parse(raw: Record<string, unknown>) {
  return parseConfig(raw, { env, cwd: '/' });
}

function messageOf(raw: Record<string, unknown>): string {
  try {
    parse(raw);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  throw new Error('expected a ConfigError');
}

describe('tenants[].disk_share', () => {
  it('takes a byte size like the other sizes, as a string or a whole number of bytes', () => {
    const config = parse({
      cache: { max_disk_bytes: '10GiB' },
      tenants: [tenant('acme', { disk_share: '2GiB' }), tenant('beta', { disk_share: 1_048_576 }), tenant('cora')],
    });
    expect(config.tenants.map((each) => each.diskShare)).toEqual([2 * 1024 ** 3, 1_048_576, undefined]);
    expect('diskShare' in config.tenants[2]!).toBe(false);
  });

  it.each([
    ['lots', /^tenants\[0\]\.disk_share: "lots" is not a byte size \(use an integer or a string like 512MiB/],
    [0, /^tenants\[0\]\.disk_share: 0 is not a positive whole number of bytes/],
    [-5, /^tenants\[0\]\.disk_share: -5 is not a positive whole number of bytes/],
    [0.25, /^tenants\[0\]\.disk_share: 0\.25 is not a positive whole number of bytes/],
  ])('refuses %j at start-up with a message naming the field', (value, expected) => {
    expect(messageOf({ tenants: [tenant('acme', { disk_share: value })] })).toMatch(expected);
  });

  it('refuses shares that together exceed cache.max_disk_bytes, naming the tenant whose share goes over', () => {
    const message = messageOf({
      cache: { max_disk_bytes: '10GiB', max_recording_bytes: '1GiB' },
      tenants: [tenant('acme', { disk_share: '6GiB' }), tenant('beta'), tenant('cora', { disk_share: '5GiB' })],
    });
    expect(message).toBe(
      "tenants[2].disk_share: with this one the tenants' disk shares add up to 11 GB, more than cache.max_disk_bytes (10 GB)",
    );
  });

  it('accepts shares that add up to exactly cache.max_disk_bytes', () => {
    const config = parse({
      cache: { max_disk_bytes: 1000, max_recording_bytes: 100 },
      tenants: [tenant('acme', { disk_share: 600 }), tenant('beta', { disk_share: 400 })],
    });
    expect(config.tenants.map((each) => each.diskShare)).toEqual([600, 400]);
  });
});
