import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/index.js';
import { configParsers } from './support/config-parse.js';

const ROOT = resolve(import.meta.dirname, '..');
const DIGEST = 'c'.repeat(64);
const SERVER_KEY = 'ff-server-key-for-compliance-tests';
const GENERATE = 'generate one with `openssl rand -base64 32`';
const KEY = randomBytes(32);
const OLD_KEY = randomBytes(32);
const OLDER_KEY = randomBytes(32);

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gateway-config-compliance-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const baseEnv = { FLYFLOW_API_KEY: SERVER_KEY, CACHE_ENCRYPTION_KEY: KEY.toString('base64') };

function file(extra: Record<string, unknown> = {}, tenant: Record<string, unknown> = {}): Record<string, unknown> {
  return { tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`], ...tenant }], ...extra };
}

const { parse, messageOf } = configParsers(() => ({ env: baseEnv, cwd: dir }));

describe('without the compliance keys', () => {
  it('copies are kept until evicted, stored in the clear, and nothing is audited', () => {
    const config = parse(file());
    expect('retentionDays' in config.cache).toBe(false);
    expect('encryption' in config.cache).toBe(false);
    expect('audit' in config).toBe(false);
    expect('retentionDays' in (config.tenants[0] ?? {})).toBe(false);
  });
});

describe('retention_days', () => {
  it.each([90, 0.5, 0, 36_500])('cache.retention_days %s is taken as written', (days) => {
    expect(parse(file({ cache: { retention_days: days } })).cache.retentionDays).toBe(days);
  });

  it('a tenant has its own, beside or without the cache-wide one', () => {
    expect(parse(file({ cache: { retention_days: 90 } }, { retention_days: 7 })).tenants[0]?.retentionDays).toBe(7);
    const config = parse(file({}, { retention_days: 0.25 }));
    expect(config.tenants[0]?.retentionDays).toBe(0.25);
    expect('retentionDays' in config.cache).toBe(false);
  });

  it.each([
    ['a negative cache.retention_days', file({ cache: { retention_days: -1 } }), 'cache.retention_days: must be at least 0'],
    ['a string with a unit', file({ cache: { retention_days: '30d' } }), 'cache.retention_days: expected a number, got a string'],
    ['null', file({ cache: { retention_days: null } }), 'cache.retention_days: expected a number, got null'],
    ['a negative tenant retention_days', file({}, { retention_days: -0.5 }), 'tenants[0].retention_days: must be at least 0'],
    ['a misspelt key', file({ cache: { retention_day: 30 } }), 'cache.retention_day: unknown key; did you mean "retention_days"?'],
  ])('%s is refused naming the field', (_what, raw, expected) => {
    expect(messageOf(raw)).toBe(expected);
  });
});

describe('cache.encryption', () => {
  it('with neither key_env nor key_file the key is read from CACHE_ENCRYPTION_KEY', () => {
    const encryption = parse(file({ cache: { encryption: {} } })).cache.encryption;
    expect(encryption?.key.equals(KEY)).toBe(true);
    expect(encryption?.previousKeys).toEqual([]);
  });

  it('reads a URL-safe unpadded key from the variable key_env names, and previous keys from a comma-separated list', () => {
    const env = {
      FLYFLOW_API_KEY: SERVER_KEY,
      MY_KEY: KEY.toString('base64url'),
      MY_OLD_KEYS: ` ${OLD_KEY.toString('base64')} ,${OLDER_KEY.toString('base64url')},`,
    };
    const encryption = parse(file({ cache: { encryption: { key_env: 'MY_KEY', previous_keys_env: 'MY_OLD_KEYS' } } }), { env }).cache
      .encryption;
    expect(encryption?.key.equals(KEY)).toBe(true);
    expect(encryption?.previousKeys.map((key) => key.toString('hex'))).toEqual([OLD_KEY.toString('hex'), OLDER_KEY.toString('hex')]);
  });

  it('reads keys from files, dropping the trailing newline and a previous key equal to the current one', async () => {
    await writeFile(join(dir, 'key'), `${KEY.toString('base64')}\n`);
    await writeFile(join(dir, 'old-keys'), `${OLD_KEY.toString('base64')},${KEY.toString('base64')}\n`);
    const encryption = parse(file({ cache: { encryption: { key_file: 'key', previous_keys_file: 'old-keys' } } }), {
      env: { FLYFLOW_API_KEY: SERVER_KEY },
    }).cache.encryption;
    expect(encryption?.key.equals(KEY)).toBe(true);
    expect(encryption?.previousKeys.map((key) => key.toString('hex'))).toEqual([OLD_KEY.toString('hex')]);
  });

  it('a key shorter than 32 bytes is refused with how to generate one, without showing it', () => {
    const short = randomBytes(16).toString('base64');
    const message = messageOf(file({ cache: { encryption: {} } }), { env: { FLYFLOW_API_KEY: SERVER_KEY, CACHE_ENCRYPTION_KEY: short } });
    expect(message).toBe(
      `cache.encryption.key_env: the secret in environment variable CACHE_ENCRYPTION_KEY decodes to 16 bytes, shorter than the 32 an AES-256 key needs (it holds the cache encryption key); ${GENERATE}`,
    );
    expect(message).not.toContain(short);
  });

  it.each([
    ['a 48-byte key', randomBytes(48).toString('base64'), 'decodes to 48 bytes; an AES-256 key is exactly 32'],
    ['a passphrase', 'correct horse battery staple, quite long', 'is not base64 (32 random bytes, standard or URL-safe alphabet)'],
    ['a key mixing both alphabets', `+-${randomBytes(30).toString('base64url')}`, 'is not base64'],
    ['a `recording-gateway new-key` key', `rgk_${randomBytes(32).toString('base64url')}`, 'an AES-256 key is exactly 32'],
  ])('%s is refused, never echoed', (_what, key, expected) => {
    const message = messageOf(file({ cache: { encryption: {} } }), { env: { FLYFLOW_API_KEY: SERVER_KEY, CACHE_ENCRYPTION_KEY: key } });
    expect(message).toContain('cache.encryption.key_env: the secret in environment variable CACHE_ENCRYPTION_KEY');
    expect(message).toContain(expected);
    expect(message).toContain(GENERATE);
    expect(message).not.toContain(key);
  });

  it('a bad previous key is refused by its position, never echoed', async () => {
    const bad = randomBytes(31).toString('base64');
    await writeFile(join(dir, 'old-keys'), `${OLD_KEY.toString('base64')},${bad}`);
    const message = messageOf(file({ cache: { encryption: { previous_keys_file: 'old-keys' } } }));
    expect(message).toBe(
      `cache.encryption.previous_keys_file: the secret in file old-keys key 2 of the comma-separated list decodes to 31 bytes, shorter than the 32 an AES-256 key needs (it holds the previous cache encryption keys, comma-separated); ${GENERATE}`,
    );
    expect(message).not.toContain(bad);
    expect(message).not.toContain(OLD_KEY.toString('base64'));
  });

  it('a missing key stops start-up with how to generate one', () => {
    expect(messageOf(file({ cache: { encryption: {} } }), { env: { FLYFLOW_API_KEY: SERVER_KEY } })).toBe(
      `cache.encryption.key_env: environment variable CACHE_ENCRYPTION_KEY is not set (it holds the cache encryption key)`,
    );
    expect(messageOf(file({ cache: { encryption: {} } }), { env: { FLYFLOW_API_KEY: SERVER_KEY, CACHE_ENCRYPTION_KEY: '' } })).toBe(
      `cache.encryption.key_env: environment variable CACHE_ENCRYPTION_KEY is empty (it holds the cache encryption key); ${GENERATE}`,
    );
  });

  it('a named previous-keys variable that is unset stops start-up', () => {
    expect(messageOf(file({ cache: { encryption: { previous_keys_env: 'OLD_KEYS' } } }))).toBe(
      'cache.encryption.previous_keys_env: environment variable OLD_KEYS is not set (it holds the previous cache encryption keys, comma-separated)',
    );
  });

  it.each([
    ['both key_env and key_file', { key_env: 'K', key_file: 'k' }, 'cache.encryption.key_file: set key_env or key_file, not both'],
    [
      'both previous_keys_env and previous_keys_file',
      { previous_keys_env: 'K', previous_keys_file: 'k' },
      'cache.encryption.previous_keys_file: set previous_keys_env or previous_keys_file, not both',
    ],
    ['a misspelt key', { key_evn: 'K' }, 'cache.encryption.key_evn: unknown key; did you mean "key_env"?'],
  ])('%s is refused naming the field', (_what, encryption, expected) => {
    expect(messageOf(file({ cache: { encryption } }))).toBe(expected);
  });

  it('a key written into the file is refused without echoing it', () => {
    const key = KEY.toString('base64');
    for (const encryption of [{ key }, { key_env: key }]) {
      const message = messageOf(file({ cache: { encryption } }));
      expect(message).toMatch(/^cache\.encryption\.key(_env)?: /);
      expect(message).not.toContain(key);
    }
  });

  it('CLI commands that never need the key load without it, with an empty key', () => {
    const encryption = parse(file({ cache: { encryption: { previous_keys_env: 'OLD_KEYS' } } }), {
      env: {},
      requireSecrets: false,
    }).cache.encryption;
    expect(encryption?.key.length).toBe(0);
    expect(encryption?.previousKeys).toEqual([]);
  });

  it('loaded without requiring secrets, a configured key that cannot be read is listed, so it is not taken for "no previous keys"', () => {
    const encryption = parse(file({ cache: { encryption: { previous_keys_env: 'OLD_KEYS' } } }), { requireSecrets: false }).cache
      .encryption;
    expect(encryption?.key.equals(KEY)).toBe(true);
    expect(encryption?.previousKeys).toEqual([]);
    expect(encryption?.unreadable).toEqual([
      {
        field: 'cache.encryption.previous_keys_env',
        problem: 'environment variable OLD_KEYS is not set (it holds the previous cache encryption keys, comma-separated)',
      },
    ]);
  });

  it('lists an unreadable current key and a missing previous-keys file, naming where each was looked for', () => {
    const encryption = parse(file({ cache: { encryption: { key_env: 'GW_KEY', previous_keys_file: 'old-keys' } } }), {
      env: { FLYFLOW_API_KEY: SERVER_KEY },
      requireSecrets: false,
    }).cache.encryption;
    expect(encryption?.key.length).toBe(0);
    expect(encryption?.unreadable).toEqual([
      { field: 'cache.encryption.key_env', problem: 'environment variable GW_KEY is not set (it holds the cache encryption key)' },
      {
        field: 'cache.encryption.previous_keys_file',
        problem: 'file old-keys does not exist (it holds the previous cache encryption keys, comma-separated)',
      },
    ]);
  });

  it('lists a malformed key without its value and without advice to generate a new one', async () => {
    const bad = randomBytes(31).toString('base64');
    await writeFile(join(dir, 'old-keys'), `${OLD_KEY.toString('base64')},${bad}`);
    const encryption = parse(file({ cache: { encryption: { previous_keys_file: 'old-keys' } } }), { requireSecrets: false }).cache
      .encryption;
    expect(encryption?.key.equals(KEY)).toBe(true);
    // The list is refused whole: a half-read list would hide the key that failed.
    expect(encryption?.previousKeys).toEqual([]);
    expect(encryption?.unreadable).toEqual([
      {
        field: 'cache.encryption.previous_keys_file',
        problem:
          'the secret in file old-keys key 2 of the comma-separated list decodes to 31 bytes, shorter than the 32 an AES-256 key needs (it holds the previous cache encryption keys, comma-separated)',
      },
    ]);
    expect(JSON.stringify(encryption?.unreadable)).not.toContain(bad);
  });

  it('with every key read, or when required, nothing is listed as unreadable', () => {
    const env = { ...baseEnv, OLD_KEYS: OLD_KEY.toString('base64') };
    const raw = file({ cache: { encryption: { previous_keys_env: 'OLD_KEYS' } } });
    for (const requireSecrets of [false, true]) {
      const encryption = parse(raw, { env, requireSecrets }).cache.encryption;
      expect(encryption?.previousKeys).toHaveLength(1);
      expect(encryption && 'unreadable' in encryption).toBe(false);
    }
  });

  it('secrets other than the encryption keys are never listed among its unreadable keys', () => {
    const encryption = parse(file({ cache: { encryption: {} }, admin: { token_env: 'NO_SUCH_TOKEN' } }), {
      env: { CACHE_ENCRYPTION_KEY: KEY.toString('base64') },
      requireSecrets: false,
    }).cache.encryption;
    expect(encryption?.key.equals(KEY)).toBe(true);
    expect(encryption && 'unreadable' in encryption).toBe(false);
  });
});

describe('audit', () => {
  it('an empty block writes to ./data/audit under the working directory and keeps files 365 days', () => {
    expect(parse(file({ audit: {} })).audit).toEqual({ dir: join(dir, 'data', 'audit'), retentionDays: 365 });
  });

  it('takes dir (absolute or relative) and fractional retention_days', () => {
    expect(parse(file({ audit: { dir: 'trail', retention_days: 1.5 } })).audit).toEqual({ dir: join(dir, 'trail'), retentionDays: 1.5 });
    expect(parse(file({ audit: { dir: '/var/log/gateway-audit' } })).audit?.dir).toBe('/var/log/gateway-audit');
  });

  it.each([
    ['retention_days 0', { retention_days: 0 }, 'audit.retention_days: must be more than 0'],
    ['a negative retention_days', { retention_days: -3 }, 'audit.retention_days: must be more than 0'],
    ['an empty dir', { dir: '' }, 'audit.dir: must not be empty'],
    ['a misspelt key', { retention_day: 30 }, 'audit.retention_day: unknown key; did you mean "retention_days"?'],
  ])('%s is refused naming the field', (_what, audit, expected) => {
    expect(messageOf(file({ audit }))).toBe(expected);
  });
});

describe('from a YAML file', () => {
  it('reads every compliance key', async () => {
    const path = join(dir, 'gateway.yaml');
    await writeFile(
      path,
      [
        'cache:',
        '  retention_days: 0.5',
        '  encryption:',
        '    key_env: GW_KEY',
        '    previous_keys_env: GW_OLD_KEYS',
        'audit:',
        '  dir: ./audit',
        '  retention_days: 30',
        'tenants:',
        '  - id: acme',
        `    api_keys: ["sha256:${DIGEST}"]`,
        '    retention_days: 7',
        '',
      ].join('\n'),
    );
    const env = { FLYFLOW_API_KEY: SERVER_KEY, GW_KEY: KEY.toString('base64'), GW_OLD_KEYS: OLD_KEY.toString('base64') };
    const { config } = await loadConfig({ path, env, cwd: dir });
    expect(config.cache.retentionDays).toBe(0.5);
    expect(config.cache.encryption?.key.equals(KEY)).toBe(true);
    expect(config.cache.encryption?.previousKeys.map((key) => key.toString('hex'))).toEqual([OLD_KEY.toString('hex')]);
    expect(config.audit).toEqual({ dir: join(dir, 'audit'), retentionDays: 30 });
    expect(config.tenants[0]?.retentionDays).toBe(7);
  });

  it('the commented compliance examples in config/gateway.yaml are valid once uncommented', async () => {
    const example = await readFile(join(ROOT, 'config/gateway.yaml'), 'utf8');
    const uncommented = example
      .split('\n')
      .map((line) => line.replace(/^(\s*)# (\s*(?:retention_days|encryption|key_env|previous_keys_env|audit|dir):.*)$/, '$1$2'))
      .join('\n');
    const path = join(dir, 'gateway.yaml');
    await writeFile(path, uncommented);
    const env = {
      FLYFLOW_API_KEY: SERVER_KEY,
      CACHE_ENCRYPTION_KEY: KEY.toString('base64'),
      CACHE_ENCRYPTION_PREVIOUS_KEYS: OLD_KEY.toString('base64'),
    };
    const { config } = await loadConfig({ path, env, cwd: dir });
    expect(config.cache.retentionDays).toBe(90);
    expect(config.cache.encryption?.key.equals(KEY)).toBe(true);
    expect(config.cache.encryption?.previousKeys).toHaveLength(1);
    expect(config.audit).toEqual({ dir: join(dir, 'data', 'audit'), retentionDays: 365 });
    expect(config.tenants[0]?.retentionDays).toBe(30);
  });
});
