import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ConfigError,
  configPathFrom,
  DEFAULT_MAX_DISK_BYTES,
  DEFAULT_MAX_MEMORY_BYTES,
  DEFAULT_MAX_RECORDING_BYTES,
  loadConfig,
  parseConfig,
} from '../src/config/index.js';
import { runCliInProcess } from './support/run-cli-in-process.js';

const ROOT = resolve(import.meta.dirname, '..');
const DIGEST = 'a'.repeat(64);
const SERVER_KEY = 'ff-server-key-do-not-leak-0001';
const SIGNING_SECRET = 'signing-secret-do-not-leak-0002';
const ADMIN_TOKEN = 'admin-token-do-not-leak-0003';
const WEBHOOK_TOKEN = 'webhook-token-do-not-leak-0004';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gateway-config-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function minimal(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`] }], ...overrides };
}

function parse(raw: unknown, env: Record<string, string | undefined> = { FLYFLOW_API_KEY: SERVER_KEY }, requireSecrets?: boolean) {
  return parseConfig(raw, { env, cwd: dir, ...(requireSecrets === undefined ? {} : { requireSecrets }) });
}

/** The ConfigError `fn` throws. */
function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

async function asyncErrorOf(promise: Promise<unknown>): Promise<ConfigError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConfigError);
  return error as ConfigError;
}

describe('the example config/gateway.yaml', () => {
  it('starts the gateway as shipped when FLYFLOW_API_KEY is set', async () => {
    const { config, path } = await loadConfig({ env: { FLYFLOW_API_KEY: SERVER_KEY }, cwd: ROOT });
    expect(path).toBe(join(ROOT, 'config/gateway.yaml'));
    expect(config.upstream.apiKey).toBe(SERVER_KEY);
    expect(config.cache.dir).toBe(join(ROOT, 'data/cache'));
    expect(config.tenants.map((t) => t.id)).toEqual(['acme']);
    expect(config.tenants[0]?.apiKeyDigests[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(config.tenants[0]?.allowedOrigins).toEqual(['https://app.acme.example']);
  });

  it('fails start-up with one clear message when the server key is missing', async () => {
    const error = await asyncErrorOf(loadConfig({ env: {}, cwd: ROOT }));
    expect(error.message).toBe(
      'config/gateway.yaml: upstream.api_key_env: environment variable FLYFLOW_API_KEY is not set (it holds the Flyflow server key)',
    );
  });
});

describe('defaults', () => {
  it('applies every default when the file only lists a tenant', () => {
    const config = parse(minimal());
    expect(config).toEqual({
      // The connection limits and timeouts have their own tests.
      listen: expect.objectContaining({ host: '127.0.0.1', port: 8080 }),
      upstream: {
        baseUrl: 'https://api.flyflow.dev/v1',
        apiKey: SERVER_KEY,
        timeoutMs: 30_000,
        bodyIdleTimeoutMs: 15_000,
        maxConcurrentDownloads: 16,
        circuitBreaker: { failureThreshold: 5, cooldownSeconds: 30 },
      },
      cache: {
        dir: join(dir, 'data/cache'),
        maxDiskBytes: 10 * 1024 ** 3,
        maxMemoryBytes: 256 * 1024 ** 2,
        maxRecordingBytes: 512 * 1024 ** 2,
        index: { kind: 'sqlite' },
        notFoundTtlSeconds: 30,
        maxAgeSeconds: 86_400,
      },
      webhooks: { rateLimitPerMinute: 120, maxQueuedPrefetches: 100 },
      tenants: [{ id: 'acme', apiKeyDigests: [DIGEST], signingKeys: [], allowedOrigins: [], maxSignedUrlTtlSeconds: 3600 }],
    });
    expect(DEFAULT_MAX_DISK_BYTES).toBe(config.cache.maxDiskBytes);
  });

  it('reads the server key from the variable api_key_env names', () => {
    const config = parse(minimal({ upstream: { api_key_env: 'MY_FLYFLOW_KEY' } }), { MY_FLYFLOW_KEY: 'k-1' });
    expect(config.upstream.apiKey).toBe('k-1');
  });

  it('strips the trailing slash of upstream.base_url and public_base_url', () => {
    const config = parse(minimal({ upstream: { base_url: 'https://flyflow.internal/v1/' }, public_base_url: 'https://rec.example.com/' }));
    expect(config.upstream.baseUrl).toBe('https://flyflow.internal/v1');
    expect(config.publicBaseUrl).toBe('https://rec.example.com');
  });
});

describe('byte sizes', () => {
  it.each([
    [1048576, 1048576],
    ['512MiB', 512 * 1024 ** 2],
    ['10GiB', 10 * 1024 ** 3],
    ['10GB', 10 * 1024 ** 3],
    ['1.5GB', 1.5 * 1024 ** 3],
    ['64 kb', 64 * 1024],
    ['4096', 4096],
    ['2TiB', 2 * 1024 ** 4],
  ])('accepts %j as %d bytes', (value, expected) => {
    const config = parse(minimal({ cache: { max_disk_bytes: value, max_recording_bytes: 1024 } }));
    expect(config.cache.maxDiskBytes).toBe(expected);
  });

  it.each(['12 parsecs', '1.5', '-1GiB', '0', 0, 1.5, 'GiB', true])('rejects %j with the field named', (value) => {
    const error = errorOf(() => parse(minimal({ cache: { max_memory_bytes: value } })));
    expect(error.message).toMatch(/^cache\.max_memory_bytes: /);
  });

  it('names the bad value in the message', () => {
    const error = errorOf(() => parse(minimal({ cache: { max_memory_bytes: '12 parsecs' } })));
    expect(error.message).toBe(
      'cache.max_memory_bytes: "12 parsecs" is not a byte size (use an integer or a string like 512MiB, 10GiB or 1.5GB)',
    );
  });

  it('refuses a max_recording_bytes that the disk tier could never hold', () => {
    const error = errorOf(() => parse(minimal({ cache: { max_disk_bytes: '1GiB', max_recording_bytes: '2GiB' } })));
    expect(error.message).toMatch(/^cache\.max_recording_bytes: is larger than cache\.max_disk_bytes/);
    expect(DEFAULT_MAX_RECORDING_BYTES).toBeLessThan(DEFAULT_MAX_DISK_BYTES);
    expect(DEFAULT_MAX_MEMORY_BYTES).toBeGreaterThan(0);
  });
});

describe('environment overrides', () => {
  const base = { FLYFLOW_API_KEY: SERVER_KEY };

  it('PORT and HOST replace listen', () => {
    const config = parse(minimal({ listen: { host: '10.0.0.1', port: 9000 } }), { ...base, PORT: '3000', HOST: '0.0.0.0' });
    expect(config.listen).toMatchObject({ host: '0.0.0.0', port: 3000 });
  });

  it('FLYFLOW_BASE_URL replaces upstream.base_url', () => {
    const config = parse(minimal(), { ...base, FLYFLOW_BASE_URL: 'http://127.0.0.1:4010/v1/' });
    expect(config.upstream.baseUrl).toBe('http://127.0.0.1:4010/v1');
  });

  it('FLYFLOW_API_KEY is the server key even when the file names a key file', () => {
    const config = parse(minimal({ upstream: { api_key_file: join(dir, 'missing') } }), { FLYFLOW_API_KEY: 'from-env' });
    expect(config.upstream.apiKey).toBe('from-env');
  });

  it('credentials in FLYFLOW_BASE_URL are refused as coming from the environment, not the file', () => {
    const error = errorOf(() => parse(minimal(), { ...base, FLYFLOW_BASE_URL: 'http://user:pass@127.0.0.1:4010/v1' }));
    expect(error.message).toBe(
      'environment variable FLYFLOW_BASE_URL: credentials do not belong in a URL in the environment; it overrides upstream.base_url',
    );
    expect(error.message).not.toContain('pass');
  });

  it('CACHE_DIR replaces cache.dir, resolved against the working directory', () => {
    const config = parse(minimal({ cache: { dir: '/var/cache/x' } }), { ...base, CACHE_DIR: 'elsewhere' });
    expect(config.cache.dir).toBe(join(dir, 'elsewhere'));
  });

  it('AUDIT_DIR moves an audit trail the file turns on (as the Docker image does, onto /data), and turns none on by itself', () => {
    const config = parse(minimal({ audit: {} }), { ...base, AUDIT_DIR: '/data/audit' });
    expect(config.audit?.dir).toBe('/data/audit');
    expect(parse(minimal({ audit: { dir: 'x' } }), { ...base, AUDIT_DIR: 'elsewhere' }).audit?.dir).toBe(join(dir, 'elsewhere'));
    expect('audit' in parse(minimal(), { ...base, AUDIT_DIR: '/data/audit' })).toBe(false);
  });

  it('ADMIN_TOKEN becomes the admin token, with or without an admin section', () => {
    expect(parse(minimal(), { ...base, ADMIN_TOKEN }).adminToken).toBe(ADMIN_TOKEN);
    expect(parse(minimal({ admin: { token_env: 'UNSET_ADMIN' } }), { ...base, ADMIN_TOKEN }).adminToken).toBe(ADMIN_TOKEN);
    expect(parse(minimal()).adminToken).toBeUndefined();
  });

  it('an empty variable counts as unset', () => {
    const config = parse(minimal(), { ...base, PORT: '', HOST: '', CACHE_DIR: '' });
    expect(config.listen).toMatchObject({ host: '127.0.0.1', port: 8080 });
  });

  it('a bad PORT names the variable, not a field in the file', async () => {
    const path = join(dir, 'gateway.json');
    await writeFile(path, JSON.stringify(minimal()));
    const error = await asyncErrorOf(loadConfig({ path, env: { ...base, PORT: 'http' }, cwd: dir }));
    expect(error.message).toBe('environment variable PORT: "http" is not a port number (0-65535); it overrides listen.port');
  });

  it('a bad FLYFLOW_BASE_URL is refused', () => {
    const error = errorOf(() => parse(minimal(), { ...base, FLYFLOW_BASE_URL: 'ftp://x' }));
    expect(error.message).toMatch(/^environment variable FLYFLOW_BASE_URL: expected an http:\/\/ or https:\/\/ URL/);
  });

  it('configPathFrom prefers --config, then GATEWAY_CONFIG, then config/gateway.yaml', () => {
    expect(configPathFrom('a.yaml', { GATEWAY_CONFIG: 'b.yaml' })).toBe('a.yaml');
    expect(configPathFrom(undefined, { GATEWAY_CONFIG: 'b.yaml' })).toBe('b.yaml');
    expect(configPathFrom(undefined, {})).toBe('config/gateway.yaml');
  });
});

describe('secrets', () => {
  it('reads a secret from a file and drops its trailing newline', async () => {
    await writeFile(join(dir, 'flyflow.key'), `${SERVER_KEY}\n`);
    await writeFile(join(dir, 'signing'), `${SIGNING_SECRET}\r\n`);
    const raw = minimal({
      upstream: { api_key_file: 'flyflow.key' },
      tenants: [{ id: 'acme', signing_keys: [{ kid: 'k1', secret_file: join(dir, 'signing') }] }],
    });
    expect(parse(raw, {}).upstream.apiKey).toBe(SERVER_KEY);
    expect(parse(raw, {}).tenants[0]?.signingKeys).toEqual([{ kid: 'k1', secret: SIGNING_SECRET }]);

    const path = join(dir, 'gateway.yaml');
    await writeFile(path, JSON.stringify(raw));
    const { config } = await loadConfig({ path, env: {}, cwd: dir });
    expect(config.upstream.apiKey).toBe(SERVER_KEY);
    expect(config.tenants[0]?.signingKeys[0]?.secret).toBe(SIGNING_SECRET);
  });

  it('a missing key file is named, with what it holds', () => {
    const error = errorOf(() => parse(minimal({ upstream: { api_key_file: 'nope.key' } }), {}));
    expect(error.message).toBe('upstream.api_key_file: file nope.key does not exist (it holds the Flyflow server key)');
  });

  it('resolves per-tenant upstream keys, webhook tokens and signing keys from the environment', () => {
    const config = parse(
      minimal({
        tenants: [
          {
            id: 'acme',
            signing_keys: [
              { kid: 'k1', secret_env: 'ACME_SIGNING' },
              { kid: 'k2', secret_env: 'ACME_SIGNING_OLD' },
            ],
            upstream_api_key_env: 'FLYFLOW_API_KEY_ACME',
            webhook_token_env: 'ACME_WEBHOOK',
            rate_limit_per_minute: 600,
            max_signed_url_ttl_seconds: 60,
          },
        ],
      }),
      {
        FLYFLOW_API_KEY: SERVER_KEY,
        ACME_SIGNING: SIGNING_SECRET,
        ACME_SIGNING_OLD: `${SIGNING_SECRET}-old`,
        FLYFLOW_API_KEY_ACME: 'acme-key',
        ACME_WEBHOOK: WEBHOOK_TOKEN,
      },
    );
    expect(config.tenants[0]).toEqual({
      id: 'acme',
      apiKeyDigests: [],
      signingKeys: [
        { kid: 'k1', secret: SIGNING_SECRET },
        { kid: 'k2', secret: `${SIGNING_SECRET}-old` },
      ],
      allowedOrigins: [],
      upstreamApiKey: 'acme-key',
      rateLimitPerMinute: 600,
      maxSignedUrlTtlSeconds: 60,
      webhookToken: WEBHOOK_TOKEN,
    });
  });

  it('lists every missing secret at once', () => {
    const error = errorOf(() =>
      parse(minimal({ tenants: [{ id: 'acme', signing_keys: [{ kid: 'k1', secret_env: 'ACME_SIGNING' }] }] }), {}),
    );
    expect(error.message.split('\n')).toEqual([
      'upstream.api_key_env: environment variable FLYFLOW_API_KEY is not set (it holds the Flyflow server key)',
      'tenants[0].signing_keys[0].secret_env: environment variable ACME_SIGNING is not set (it holds signing key "k1" of tenant "acme")',
    ]);
  });

  it('requireSecrets: false loads without secrets for commands that never call upstream', () => {
    const config = parse(minimal({ tenants: [{ id: 'acme', signing_keys: [{ kid: 'k1', secret_env: 'ACME_SIGNING' }] }] }), {}, false);
    expect(config.upstream.apiKey).toBe('');
    expect(config.tenants[0]?.signingKeys).toEqual([]);
  });

  it('requireSecrets: false still rejects a malformed file', () => {
    expect(() => parse({ tenants: [] }, {}, false)).toThrow('tenants: at least one tenant is required');
  });

  it('a short signing secret is refused, naming the variable and never the secret', () => {
    const error = errorOf(() =>
      parse(minimal({ tenants: [{ id: 'acme', signing_keys: [{ kid: 'k1', secret_env: 'ACME_SIGNING' }] }] }), {
        FLYFLOW_API_KEY: SERVER_KEY,
        ACME_SIGNING: 'tooShort9',
      }),
    );
    expect(error.message).toMatch(
      /^tenants\[0\]\.signing_keys\[0\]\.secret_env: the secret in environment variable ACME_SIGNING is shorter than 16 bytes/,
    );
    expect(error.message).not.toContain('tooShort9');
  });

  it('an empty secret variable is reported as empty', () => {
    const error = errorOf(() => parse(minimal(), { FLYFLOW_API_KEY: '' }));
    expect(error.message).toBe('upstream.api_key_env: environment variable FLYFLOW_API_KEY is empty (it holds the Flyflow server key)');
  });

  describe('blank and short secrets are refused at start-up', () => {
    const GENERATE = 'generate one with `openssl rand -base64 32` or `recording-gateway new-key`';

    it.each([
      [
        'FLYFLOW_API_KEY',
        minimal(),
        { FLYFLOW_API_KEY: ' ' },
        'environment variable FLYFLOW_API_KEY is blank, only whitespace (it holds the Flyflow server key)',
      ],
      [
        'api_key_env',
        minimal({ upstream: { api_key_env: 'MY_KEY' } }),
        { MY_KEY: '\t \t' },
        'upstream.api_key_env: environment variable MY_KEY is blank, only whitespace (it holds the Flyflow server key)',
      ],
      [
        "a tenant's own Flyflow key",
        minimal({ tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`], upstream_api_key_env: 'ACME_FLYFLOW' }] }),
        { FLYFLOW_API_KEY: SERVER_KEY, ACME_FLYFLOW: '   ' },
        'tenants[0].upstream_api_key_env: environment variable ACME_FLYFLOW is blank, only whitespace (it holds tenant "acme"\'s own Flyflow key)',
      ],
    ])('a blank Flyflow key in %s', (_where, raw, env, message) => {
      expect(errorOf(() => parse(raw, env)).message).toBe(message);
    });

    it('a Flyflow key file holding only whitespace is blank', async () => {
      await writeFile(join(dir, 'flyflow.key'), '  \n');
      const error = errorOf(() => parse(minimal({ upstream: { api_key_file: 'flyflow.key' } }), {}));
      expect(error.message).toBe('upstream.api_key_file: file flyflow.key is blank, only whitespace (it holds the Flyflow server key)');
    });

    it('Flyflow keys of any length are accepted: Flyflow chooses them', () => {
      const config = parse(minimal({ tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`], upstream_api_key_env: 'ACME_FLYFLOW' }] }), {
        FLYFLOW_API_KEY: 'k',
        ACME_FLYFLOW: 'a',
      });
      expect(config.upstream.apiKey).toBe('k');
      expect(config.tenants[0]?.upstreamApiKey).toBe('a');
    });

    it.each([
      ['ADMIN_TOKEN', minimal(), { ADMIN_TOKEN: 'x' }, 'environment variable ADMIN_TOKEN', 'the admin token'],
      [
        'admin.token_env',
        minimal({ admin: { token_env: 'GW_ADMIN' } }),
        { GW_ADMIN: 'fifteen-bytes-x' },
        'admin.token_env',
        'the admin token',
      ],
      [
        'webhook_token_env',
        minimal({ tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`], webhook_token_env: 'ACME_HOOK' }] }),
        { ACME_HOOK: 'h' },
        'tenants[0].webhook_token_env',
        'tenant "acme"\'s webhook token',
      ],
      [
        'a signing key',
        minimal({ tenants: [{ id: 'acme', signing_keys: [{ kid: 'k1', secret_env: 'ACME_SIGNING' }] }] }),
        { ACME_SIGNING: 's' },
        'tenants[0].signing_keys[0].secret_env',
        'signing key "k1" of tenant "acme"',
      ],
    ])('a short secret in %s is refused with how to generate one', (_where, raw, env, field, purpose) => {
      const error = errorOf(() => parse(raw, { FLYFLOW_API_KEY: SERVER_KEY, ...env }));
      const variable = Object.keys(env)[0];
      const prefix = field.startsWith('environment') ? '' : `${field}: `;
      expect(error.message).toBe(
        `${prefix}the secret in environment variable ${variable} is shorter than 16 bytes (it holds ${purpose}); ${GENERATE}`,
      );
    });

    it('an operator secret of only whitespace is blank, however long, and the message says how to generate one', () => {
      const error = errorOf(() => parse(minimal(), { FLYFLOW_API_KEY: SERVER_KEY, ADMIN_TOKEN: ' '.repeat(40) }));
      expect(error.message).toBe(`environment variable ADMIN_TOKEN is blank, only whitespace (it holds the admin token); ${GENERATE}`);
    });

    it('16-byte admin and webhook tokens are accepted', () => {
      const sixteen = '0123456789abcdef';
      const config = parse(minimal({ tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`], webhook_token_env: 'ACME_HOOK' }] }), {
        FLYFLOW_API_KEY: SERVER_KEY,
        ADMIN_TOKEN: sixteen,
        ACME_HOOK: sixteen,
      });
      expect(config.adminToken).toBe(sixteen);
      expect(config.tenants[0]?.webhookToken).toBe(sixteen);
    });

    it('every problem is listed at once, and no secret value appears', () => {
      const error = errorOf(() =>
        parse(minimal({ tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`], webhook_token_env: 'ACME_HOOK' }] }), {
          FLYFLOW_API_KEY: ' ',
          ADMIN_TOKEN: 'adm1n',
          ACME_HOOK: 'h00k',
        }),
      );
      expect(error.issues).toHaveLength(3);
      expect(error.message).not.toMatch(/adm1n|h00k/);
    });

    it('requireSecrets: false leaves a short admin token unset instead of failing', () => {
      expect(parse(minimal(), { ADMIN_TOKEN: 'x', FLYFLOW_API_KEY: ' ' }, false)).toMatchObject({ upstream: { apiKey: '' } });
      expect(parse(minimal(), { ADMIN_TOKEN: 'x' }, false).adminToken).toBeUndefined();
    });
  });

  it('naming a secret both ways is refused', () => {
    const error = errorOf(() => parse(minimal({ upstream: { api_key_env: 'A', api_key_file: 'b' } })));
    expect(error.message).toBe('upstream.api_key_file: set api_key_env or api_key_file, not both');
  });

  it('never puts a secret value into any error message', async () => {
    const env = { FLYFLOW_API_KEY: SERVER_KEY, ACME_SIGNING: SIGNING_SECRET.slice(0, 8), PORT: 'x' };
    await writeFile(join(dir, 'short'), `${SIGNING_SECRET.slice(0, 10)}\n`);
    const cases: unknown[] = [
      // A secret pasted where the file expects a name or a digest.
      minimal({ upstream: { api_key_env: SERVER_KEY } }),
      minimal({ upstream: { api_key: SERVER_KEY } }),
      minimal({ tenants: [{ id: 'acme', api_keys: [SERVER_KEY] }] }),
      minimal({ tenants: [{ id: 'acme', api_keys: [`sha256:${SERVER_KEY}`] }] }),
      minimal({ tenants: [{ id: 'acme', signing_keys: [{ kid: 'k1', secret: SIGNING_SECRET }] }] }),
      minimal({ tenants: [{ id: 'acme', signing_keys: [{ kid: 'k1', secret_env: SIGNING_SECRET }] }] }),
      minimal({ tenants: [{ id: 'acme', signing_keys: [{ kid: 'k1', secret_env: 'ACME_SIGNING' }] }] }),
      minimal({ tenants: [{ id: 'acme', signing_keys: [{ kid: 'k1', secret_file: join(dir, 'short') }] }] }),
      minimal({ tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`], upstream_api_key_env: 7 }] }),
      minimal({ cache: { index: `redis://:${SERVER_KEY}@` } }),
      minimal({ upstream: { base_url: `ftp://user:${SERVER_KEY}@host` } }),
    ];
    for (const raw of cases) {
      const error = errorOf(() => parse(raw, env));
      expect(error.message).not.toContain(SERVER_KEY);
      expect(error.message).not.toContain(SIGNING_SECRET.slice(0, 8));
    }
  });

  it('tells someone who wrote a secret into the file where it belongs', () => {
    const error = errorOf(() => parse(minimal({ upstream: { api_key: 'x' } })));
    expect(error.message).toBe(
      'upstream.api_key: unknown key; secrets do not go in this file: name the environment variable or file that holds it with api_key_env or api_key_file',
    );
  });
});

describe('tenants', () => {
  it('are required', () => {
    expect(errorOf(() => parse({})).message).toBe('tenants: at least one tenant is required');
    expect(errorOf(() => parse({ tenants: [] })).message).toBe('tenants: at least one tenant is required');
  });

  it('normalise API key digests to lowercase hex without the prefix', () => {
    const config = parse(minimal({ tenants: [{ id: 'acme', api_keys: [`sha256:${'AbC0'.repeat(16)}`] }] }));
    expect(config.tenants[0]?.apiKeyDigests).toEqual(['abc0'.repeat(16)]);
  });

  it('a malformed digest names the tenant and the entry', () => {
    const error = errorOf(() => parse(minimal({ tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`, 'sha256:abc'] }] })));
    expect(error.message).toBe('tenants[0].api_keys[1]: expected "sha256:" followed by 64 hex digits');
  });

  it('a duplicate tenant id is refused', () => {
    const tenant = { id: 'acme', api_keys: [`sha256:${DIGEST}`] };
    const error = errorOf(() => parse({ tenants: [tenant, { ...tenant, api_keys: [`sha256:${'b'.repeat(64)}`] }] }));
    expect(error.message).toBe('tenants[1].id: duplicate tenant id "acme" (also tenants[0])');
  });

  it('one API key cannot belong to two tenants', () => {
    const error = errorOf(() =>
      parse({
        tenants: [
          { id: 'a', api_keys: [`sha256:${DIGEST}`] },
          { id: 'b', api_keys: [`sha256:${DIGEST.toUpperCase()}`] },
        ],
      }),
    );
    expect(error.message).toBe('tenants[1].api_keys[0]: this key digest is already listed for tenant "a"');
  });

  it('a duplicate kid within a tenant is refused', () => {
    const error = errorOf(() =>
      parse(
        minimal({
          tenants: [
            {
              id: 'acme',
              signing_keys: [
                { kid: 'k1', secret_env: 'A' },
                { kid: 'k1', secret_env: 'B' },
              ],
            },
          ],
        }),
      ),
    );
    expect(error.message).toBe('tenants[0].signing_keys[1].kid: kid "k1" is used twice in this tenant');
  });

  it('a tenant without API keys or signing keys is refused', () => {
    expect(errorOf(() => parse({ tenants: [{ id: 'acme' }] })).message).toMatch(
      /^tenants\[0\]: needs at least one entry in api_keys or signing_keys/,
    );
  });

  it.each(['Acme', '-acme', 'a'.repeat(64), 'ac me'])('tenant id %j is refused', (id) => {
    expect(errorOf(() => parse(minimal({ tenants: [{ id, api_keys: [`sha256:${DIGEST}`] }] }))).message).toMatch(
      /^tenants\[0\]\.id: expected/,
    );
  });

  it.each([
    ['*', "tenants[0].allowed_origins[0]: '*' is not allowed: list each origin that may play recordings"],
    [
      'https://app.acme.example/',
      'tenants[0].allowed_origins[0]: "https://app.acme.example/" is not an exact origin (no path, lowercase host); write "https://app.acme.example"',
    ],
    [
      'https://app.acme.example/player',
      'tenants[0].allowed_origins[0]: "https://app.acme.example/player" is not an exact origin (no path, lowercase host); write "https://app.acme.example"',
    ],
    [
      'app.acme.example',
      'tenants[0].allowed_origins[0]: "app.acme.example" is not an origin (expected scheme://host[:port], e.g. https://app.example.com)',
    ],
  ])('origin %j is refused with a fix', (value, message) => {
    const error = errorOf(() => parse(minimal({ tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`], allowed_origins: [value] }] })));
    expect(error.message).toBe(message);
  });

  it('origins with a port are accepted', () => {
    const config = parse(
      minimal({ tenants: [{ id: 'acme', api_keys: [`sha256:${DIGEST}`], allowed_origins: ['http://localhost:5173'] }] }),
    );
    expect(config.tenants[0]?.allowedOrigins).toEqual(['http://localhost:5173']);
  });
});

describe('typos and bad values', () => {
  it('an unknown key is refused with the key it probably meant', () => {
    expect(errorOf(() => parse(minimal({ upstream: { timeout: 5 } }))).message).toMatch(/^upstream\.timeout: unknown key/);
    expect(errorOf(() => parse(minimal({ cahce: {} }))).message).toBe('cahce: unknown key; did you mean "cache"?');
    expect(errorOf(() => parse({ tenants: [{ id: 'acme', apiKeys: [`sha256:${DIGEST}`] }] })).message).toContain(
      'tenants[0].apiKeys: unknown key; did you mean "api_keys"?',
    );
  });

  it('a wrong type names the field and the expected type', () => {
    expect(errorOf(() => parse(minimal({ listen: { port: '8080' } }))).message).toBe('listen.port: expected a number, got a string');
    expect(errorOf(() => parse(minimal({ listen: { port: 70000 } }))).message).toBe('listen.port: must be at most 65535');
    expect(errorOf(() => parse(minimal({ upstream: { timeout_ms: 0 } }))).message).toBe('upstream.timeout_ms: must be at least 1');
    expect(errorOf(() => parse(minimal({ upstream: { timeout_ms: 1.5 } }))).message).toBe(
      'upstream.timeout_ms: expected a whole number, got a fraction',
    );
    expect(errorOf(() => parse(minimal({ listen: 8080 }))).message).toBe('listen: expected a mapping (key: value), got a number');
  });

  it('a number YAML reads as infinite or NaN (1e400, .inf, .nan) is called that, not a fraction', async () => {
    const path = join(dir, 'gateway.yaml');
    const messageFor = async (yaml: string) => {
      await writeFile(path, `tenants: [{ id: acme, api_keys: ["sha256:${DIGEST}"] }]\n${yaml}\n`);
      return (await asyncErrorOf(loadConfig({ path, env: { FLYFLOW_API_KEY: SERVER_KEY }, cwd: dir }))).message;
    };
    expect(await messageFor('cache: { retention_days: 1e400 }')).toBe(
      `${path}: cache.retention_days: expected a number, got one too large to be finite (it reads as infinity)`,
    );
    expect(await messageFor('upstream: { timeout_ms: -.inf }')).toBe(
      `${path}: upstream.timeout_ms: expected a number, got one too large to be finite (it reads as infinity)`,
    );
    expect(await messageFor('listen: { port: .nan }')).toBe(`${path}: listen.port: expected a number, got NaN (not a number)`);
  });

  it('cache.index accepts a redis URL for a shared index', () => {
    expect(parse(minimal({ cache: { index: 'redis://redis:6379/0' } })).cache.index).toEqual({
      kind: 'redis',
      url: 'redis://redis:6379/0',
    });
    expect(parse(minimal({ cache: { index: 'rediss://r.example:6380' } })).cache.index).toEqual({
      kind: 'redis',
      url: 'rediss://r.example:6380',
    });
    expect(errorOf(() => parse(minimal({ cache: { index: 'postgres://x' } }))).message).toBe(
      'cache.index: expected "sqlite" or a redis:// or rediss:// URL',
    );
  });
});

describe('config files', () => {
  it('reads JSON by its .json extension', async () => {
    const path = join(dir, 'gateway.json');
    await writeFile(path, JSON.stringify(minimal({ listen: { port: 9001 } })));
    const { config } = await loadConfig({ path, env: { FLYFLOW_API_KEY: SERVER_KEY }, cwd: dir });
    expect(config.listen.port).toBe(9001);
  });

  it('reads .yml like .yaml', async () => {
    await writeFile(join(dir, 'g.yml'), `tenants:\n  - id: acme\n    api_keys: ["sha256:${DIGEST}"]\ncache:\n  max_memory_bytes: 1MiB\n`);
    const { config } = await loadConfig({ path: 'g.yml', env: { FLYFLOW_API_KEY: SERVER_KEY }, cwd: dir });
    expect(config.cache.maxMemoryBytes).toBe(1024 ** 2);
  });

  it('finds the file from GATEWAY_CONFIG', async () => {
    await writeFile(join(dir, 'from-env.json'), JSON.stringify(minimal()));
    const { path } = await loadConfig({ env: { FLYFLOW_API_KEY: SERVER_KEY, GATEWAY_CONFIG: 'from-env.json' }, cwd: dir });
    expect(path).toBe(join(dir, 'from-env.json'));
  });

  it('refuses an unknown extension', async () => {
    const error = await asyncErrorOf(loadConfig({ path: 'gateway.toml', env: {}, cwd: dir }));
    expect(error.message).toBe('config file must end in .yaml, .yml or .json: gateway.toml');
  });

  it('a missing file says which file', async () => {
    const error = await asyncErrorOf(loadConfig({ path: 'missing.yaml', env: {}, cwd: dir }));
    expect(error.message).toBe(
      `config file not found: missing.yaml (${join(dir, 'missing.yaml')}); pass --config PATH or set GATEWAY_CONFIG`,
    );
  });

  it('a YAML syntax error gives the line', async () => {
    await writeFile(join(dir, 'bad.yaml'), 'listen:\n  port: 1\n   host: x\ntenants: [\n');
    const error = await asyncErrorOf(loadConfig({ path: 'bad.yaml', env: {}, cwd: dir }));
    expect(error.message).toMatch(/^bad\.yaml: YAML syntax error at line \d+, column \d+: /);
  });

  it('a JSON syntax error gives the line', async () => {
    await writeFile(join(dir, 'bad.json'), '{\n  "tenants": [\n    {"id": "acme",}\n  ]\n}\n');
    const error = await asyncErrorOf(loadConfig({ path: 'bad.json', env: {}, cwd: dir }));
    expect(error.message).toBe('bad.json: JSON syntax error at line 3, column 19: a trailing comma before } is not allowed in JSON');
  });

  it.each([
    ['a file cut short', '{\n  "tenants": [\n    {"id": "acme"}\n', 'line 4, column 1: unexpected end of file; expected "," or "]"'],
    [
      'a misspelt literal',
      '{\n  "listen": {"host": "x", "port": 1},\n  "tenants": tru\n}',
      'line 3, column 14: unexpected "t"; expected a value',
    ],
    ['a missing comma', '{\n  "listen": {}\n  "tenants": []\n}', 'line 3, column 3: unexpected "\\""; expected "," or "}"'],
    ['an unquoted key', '{\n  tenants: []\n}', 'line 2, column 3: unexpected "t"; expected a property name in double quotes'],
    [
      'a line break in a string',
      '{"public_base_url": "https://x\n"}',
      'line 1, column 31: a line break or control character inside a string',
    ],
    ['a second document', '{}\n{}', 'line 2, column 1: unexpected "{" after the end of the JSON document'],
  ])('a JSON syntax error gives the line and column: %s', async (_case, text, where) => {
    await writeFile(join(dir, 'bad.json'), text);
    const error = await asyncErrorOf(loadConfig({ path: 'bad.json', env: {}, cwd: dir }));
    const expected = `bad.json: JSON syntax error at ${where}`;
    expect(error.message.slice(0, expected.length)).toBe(expected);
  });

  it('a JSON syntax error never quotes the file, which may hold a secret pasted in', async () => {
    await writeFile(join(dir, 'bad.json'), `{"upstream": {"api_key": ${SERVER_KEY}}}`);
    const error = await asyncErrorOf(loadConfig({ path: 'bad.json', env: {}, cwd: dir }));
    expect(error.message).toBe(
      'bad.json: JSON syntax error at line 1, column 26: unexpected "f"; expected a value (a string in double quotes, a number, true, false, null, an object or a list)',
    );
    expect(error.message).not.toContain(SERVER_KEY.slice(2));
  });

  it('an empty JSON file says what it needs', async () => {
    await writeFile(join(dir, 'empty.json'), ' \n');
    const error = await asyncErrorOf(loadConfig({ path: 'empty.json', env: {}, cwd: dir }));
    expect(error.message).toBe('empty.json: the file is empty; it needs at least a tenants list');
  });

  it.each([
    ['at the top', 'listen:\n  port: 1\nlisten:\n  port: 2\ntenants: []\n', 'listen', 'line 3, column 1'],
    ['in a mapping', 'tenants: []\nlisten:\n  port: 1\n  port: 2\n', 'listen.port', 'line 4, column 3'],
    ['in a list item', 'tenants:\n  - id: a\n  - id: b\n    api_keys: []\n    id: c\n', 'tenants[1].id', 'line 5, column 5'],
    ['quoted once and plain once', 'listen:\n  port: 1\n  "port": 2\ntenants: []\n', 'listen.port', 'line 3, column 3'],
    ['in a flow mapping, single-quoted', "listen: { port: 1, 'port': 2 }\n", 'listen.port', 'line 1, column 20'],
  ])('a duplicate YAML key is an error naming its path, as in JSON: %s', async (_case, text, path, where) => {
    await writeFile(join(dir, 'dup.yaml'), text);
    const error = await asyncErrorOf(loadConfig({ path: 'dup.yaml', env: {}, cwd: dir }));
    expect(error.message).toBe(
      `dup.yaml: ${path}: the key is given twice (again at ${where}); a YAML mapping takes each key once: give it once`,
    );
  });

  it('a YAML merge key (<<) is no duplicate, and a key given beside it overrides the merged one', async () => {
    await writeFile(
      join(dir, 'merge.yaml'),
      `%YAML 1.1\n---\nlisten:\n  <<: { port: 1, host: merged }\n  <<: { max_connections: 7 }\n  port: 2\ntenants:\n  - id: acme\n    api_keys: ["sha256:${DIGEST}"]\n`,
    );
    const { config } = await loadConfig({ path: 'merge.yaml', env: { FLYFLOW_API_KEY: SERVER_KEY }, cwd: dir });
    expect(config.listen).toMatchObject({ port: 2, host: 'merged', maxConnections: 7 });
  });

  it.each([
    ['YAML', 'dup.yaml', 'tenants: []\nlisten:\n  port: 1\n  port: 2\n', 'line 4, column 3', 'a YAML mapping takes each key once'],
    [
      'JSON',
      'dup.json',
      '{\n  "listen": {\n    "port": 1,\n    "port": 2\n  }\n}',
      'line 4, column 5',
      'JSON would keep only the last value',
    ],
  ])('serve stops at start-up, exit 1, on a key given twice in %s', async (_format, file, text, where, why) => {
    await writeFile(join(dir, file), text);
    const { code, stderr } = await runCliInProcess(['--config', file, 'serve'], { cwd: dir, env: { FLYFLOW_API_KEY: SERVER_KEY } });
    expect(code).toBe(1);
    expect(stderr).toBe(`error: ${file}: listen.port: the key is given twice (again at ${where}); ${why}: give it once`);
  });

  it.each([
    ['at the top', '{\n  "listen": {"port": 1},\n  "listen": {"port": 2},\n  "tenants": []\n}', 'listen', 'line 3, column 3'],
    ['in an object', '{\n  "listen": {\n    "port": 1,\n    "port": 2\n  }\n}', 'listen.port', 'line 4, column 5'],
    [
      'in a list item, written with an escape',
      '{"tenants": [{"id": "a"}, {"id": "b", "api_keys": [], "\\u0069d": "c"}]}',
      'tenants[1].id',
      'line 1, column 55',
    ],
  ])('a duplicate JSON key is an error naming its path, as in YAML: %s', async (_case, text, path, where) => {
    await writeFile(join(dir, 'dup.json'), text);
    const error = await asyncErrorOf(loadConfig({ path: 'dup.json', env: {}, cwd: dir }));
    expect(error.message).toBe(
      `dup.json: ${path}: the key is given twice (again at ${where}); JSON would keep only the last value: give it once`,
    );
  });

  it('the same key in two different JSON objects is fine', async () => {
    await writeFile(join(dir, 'twice.json'), '{"tenants": [{"id": "a"}, {"id": "b"}], "listen": {"port": 1, "host": "x"}}');
    const error = await asyncErrorOf(loadConfig({ path: 'twice.json', env: {}, cwd: dir }));
    expect(error.message).not.toMatch(/given twice/);
  });

  it('an empty file says what it needs', async () => {
    await writeFile(join(dir, 'empty.yaml'), '# nothing\n');
    const error = await asyncErrorOf(loadConfig({ path: 'empty.yaml', env: {}, cwd: dir }));
    expect(error.message).toBe('empty.yaml: the file is empty; it needs at least a tenants list');
  });

  it('prefixes every problem with the file name, one line each', async () => {
    await writeFile(join(dir, 'two.yaml'), `listen: { port: -1 }\ntenants:\n  - id: acme\n    api_keys: ["sha256:zz"]\n`);
    const error = await asyncErrorOf(loadConfig({ path: 'two.yaml', env: {}, cwd: dir }));
    expect(error.message.split('\n')).toEqual([
      'two.yaml: listen.port: must be at least 0',
      'two.yaml: tenants[0].api_keys[0]: expected "sha256:" followed by 64 hex digits',
    ]);
    expect(error.issues).toHaveLength(2);
  });
});
