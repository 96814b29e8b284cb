/* The field types of the configuration file: sizes, URLs, origins, key digests, secret sources. */
import bytes from 'bytes';
import { z } from 'zod';

export const TENANT_ID = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const KID = /^[A-Za-z0-9._-]{1,64}$/;
/** A cluster replica's id: it goes into Redis keys and logs, so a short plain name. */
export const NODE_ID = /^[A-Za-z0-9._-]{1,64}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const API_KEY_DIGEST = /^sha256:([0-9a-fA-F]{64})$/;
// `bytes` alone would read "12 parsecs" as 12 (it falls back to parseInt) and
// knows no KiB/MiB/GiB, so the syntax is checked here and the arithmetic left to it.
const BYTE_SIZE = /^(\d+(?:\.\d+)?)\s*(?:([kmgtp])i?b|b)?$/i;

function fail(ctx: z.RefinementCtx, value: unknown, message: string): never {
  ctx.issues.push({ code: 'custom', message, input: value });
  return z.NEVER;
}

export const positiveInt = z.int().min(1);
export const nonNegativeInt = z.int().min(0);
/** A number of days, fractions allowed (0.5 = 12 hours); 0 allowed. */
export const nonNegativeDays = z.number().min(0);
/** A number of days, fractions allowed, more than 0. */
export const positiveDays = z.number().positive();
export const envName = z.string().regex(ENV_NAME, {
  // Someone who pastes the secret itself here must not see it echoed into logs.
  message: 'expected the name of an environment variable (letters, digits and _), not the secret itself',
});
export const filePath = z.string().min(1, 'expected a file path');

/** A byte count: a positive integer, or a string like `512MiB`, `10GiB`, `1.5GB` (1024-based either way). */
export const byteSize = z.unknown().transform((value, ctx): number => {
  const hint = 'use an integer or a string like 512MiB, 10GiB or 1.5GB';
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value > 0) return value;
    return fail(ctx, value, `${value} is not a positive whole number of bytes`);
  }
  if (typeof value !== 'string') return fail(ctx, value, `expected a byte size (${hint})`);
  const [, amount = '', prefix] = BYTE_SIZE.exec(value.trim()) ?? [];
  // Without a multiple the count is whole bytes, so "1.5" or "1.5B" is a typo.
  const parsed =
    amount === '' || (prefix === undefined && amount.includes('.'))
      ? null
      : bytes.parse(prefix === undefined ? amount : `${amount}${prefix}b`);
  if (parsed === null || !Number.isSafeInteger(parsed) || parsed <= 0) {
    return fail(ctx, value, `${JSON.stringify(value)} is not a byte size (${hint})`);
  }
  return parsed;
});

/**
 * An absolute http(s) URL without credentials, query or fragment; the trailing
 * slash is dropped. With `origin: true` a path is refused too (`scheme://host[:port]`).
 */
export function httpUrl(what: string, options: { origin?: boolean; fromEnvironment?: boolean } = {}) {
  // The value is never echoed: a URL may carry a password.
  return z.string().transform((value, ctx): string => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      return fail(ctx, value, `expected an absolute http:// or https:// URL for ${what}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      return fail(ctx, value, `expected an http:// or https:// URL for ${what}, got ${url.protocol}//`);
    }
    if (url.username !== '' || url.password !== '') {
      return fail(ctx, value, `credentials do not belong in a URL ${options.fromEnvironment ? 'in the environment' : 'in this file'}`);
    }
    if (url.search !== '' || url.hash !== '') {
      return fail(ctx, value, `the URL for ${what} must not have a query or fragment`);
    }
    if (options.origin === true && url.pathname !== '/') {
      return fail(ctx, value, `the URL for ${what} must not have a path (expected scheme://host[:port])`);
    }
    return url.href.replace(/\/+$/, '');
  });
}

/** An exact browser origin as sent in the `Origin` header. */
export const origin = z.string().transform((value, ctx): string => {
  if (value === '*') return fail(ctx, value, "'*' is not allowed: list each origin that may play recordings");
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '') {
    return fail(ctx, value, `${JSON.stringify(value)} is not an origin (expected scheme://host[:port], e.g. https://app.example.com)`);
  }
  // Browsers send the serialized origin exactly, so anything else would never match.
  if (url.origin !== value) {
    return fail(
      ctx,
      value,
      `${JSON.stringify(value)} is not an exact origin (no path, lowercase host); write ${JSON.stringify(url.origin)}`,
    );
  }
  return value;
});

export const apiKeyDigest = z.string().transform((value, ctx): string => {
  const match = API_KEY_DIGEST.exec(value);
  if (match?.[1] !== undefined) return match[1].toLowerCase();
  // Never echo it: it may be a real key pasted in by mistake.
  const hint = value.startsWith('sha256:') ? '' : ' (the file holds digests only; `recording-gateway hash-key KEY` prints one)';
  return fail(ctx, value, `expected "sha256:" followed by 64 hex digits${hint}`);
});

export type CacheIndexConfig = { kind: 'sqlite' } | { kind: 'redis'; url: string };

/** What is wrong with a Redis URL, or undefined when it is one; never quotes it, since it may carry a password. */
function redisUrlProblem(value: string, expected: string): string | undefined {
  if (!/^rediss?:\/\//i.test(value)) return expected;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `${expected}; this one does not parse`;
  }
  if (url.hostname === '') return `${expected} with a host`;
  // The Redis client takes the path as the database's number, and refuses anything else.
  if (!/^\/?(?:\d+)?$/.test(url.pathname)) return `${expected}; its path is a database number (redis://host:6379/0)`;
  try {
    decodeURIComponent(url.username);
    decodeURIComponent(url.password);
  } catch {
    return `${expected}; percent-encode the user name and password (a % in them is %25)`;
  }
  return undefined;
}

export const cacheIndex = z.string().transform((value, ctx): CacheIndexConfig => {
  if (value === 'sqlite') return { kind: 'sqlite' };
  const problem = redisUrlProblem(value, 'expected "sqlite" or a redis:// or rediss:// URL');
  return problem === undefined ? { kind: 'redis', url: value } : fail(ctx, value, problem);
});

/** A `redis://` or `rediss://` URL with a host, kept as written (the Redis client reads it). */
export const redisUrl = z.string().transform((value, ctx): string => {
  const problem = redisUrlProblem(value, 'expected a redis:// or rediss:// URL');
  return problem === undefined ? value : fail(ctx, value, problem);
});

const REDIS_DEFAULT_PORT = '6379';

/** The server and database a valid Redis URL names, with the client's defaults (port 6379, database 0) filled in. */
function redisTarget(url: string): string {
  const { protocol, hostname, port, pathname } = new URL(url);
  return `${protocol}//${hostname}:${port || REDIS_DEFAULT_PORT}/${pathname.slice(1) || '0'}`;
}

/**
 * Whether two valid Redis URLs name the same server and database: scheme and
 * host case, escapes, the default port and database 0 left out make no
 * difference; nor do credentials, which reach the same data.
 */
export function sameRedisUrl(a: string, b: string): boolean {
  return redisTarget(a) === redisTarget(b);
}

type SecretFields = Record<string, unknown>;

/** Checks that a secret is named by `<base>_env` or `<base>_file` (one of them when `required`), never both. */
export function checkSecretSource(obj: SecretFields, base: string, required: boolean, ctx: z.RefinementCtx): void {
  const hasEnv = obj[`${base}_env`] !== undefined;
  const hasFile = obj[`${base}_file`] !== undefined;
  if (hasEnv && hasFile) {
    ctx.issues.push({ code: 'custom', message: `set ${base}_env or ${base}_file, not both`, input: obj, path: [`${base}_file`] });
  } else if (required && !hasEnv && !hasFile) {
    ctx.issues.push({
      code: 'custom',
      message: `set ${base}_env (an environment variable) or ${base}_file (a file) holding the secret`,
      input: obj,
    });
  }
}
