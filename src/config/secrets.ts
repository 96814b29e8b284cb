import { resolve } from 'node:path';
import type { ConfigIssue } from './config-error.js';
import {
  DEFAULT_ENCRYPTION_KEY_ENV,
  DEFAULT_PEER_SECRET_ENV,
  DEFAULT_UPSTREAM_API_KEY_ENV,
  GENERATE_ENCRYPTION_KEY_HINT,
  GENERATE_SECRET_HINT,
  MIN_KEY_SECRET_BYTES,
  MIN_SECRET_BYTES,
} from './defaults.js';
import { decodeEncryptionKey, decodeEncryptionKeyList } from './encryption-keys.js';
import type { ConfigFile } from './schema.js';

/*
 * Where each secret comes from and how it is checked. The file only names an
 * environment variable or a file; FLYFLOW_API_KEY and ADMIN_TOKEN, when set,
 * are the secrets themselves and win over the file.
 */

/** The result of reading one `*_file` secret: its text, or the error code. */
export type SecretFileRead = { value: string; code?: undefined } | { code: string; value?: undefined };

/** Where one secret comes from and what it is for, so errors can name it without showing it. */
export interface SecretRef {
  /**
   * The lookup key, and the field path an error names, e.g.
   * `tenants[0].signing_keys[1].secret_env`; `environment variable X` for an override.
   */
  field: string;
  env?: string;
  file?: string;
  /** Completes "(it holds ...)". */
  purpose: string;
  /**
   * Set for the secrets the operator chooses. Flyflow's own keys have none:
   * Flyflow decides their length, they only must not be blank.
   */
  minBytes?: number;
  /** An environment override: the problem is the variable's, not a field's in the file. */
  override?: true;
  /** Sent as `Authorization: Bearer <secret>`, so it must be a token RFC 6750 allows: visible ASCII, no spaces. */
  bearer?: true;
  /** What is wrong with the value's format, if anything (completes "the secret in <source> ..."); never quotes it. */
  check?: (value: string) => string | undefined;
  /** How to make a good one, when not {@link GENERATE_SECRET_HINT}. */
  hint?: string;
}

const BEARER_TOKEN = /^[\x21-\x7e]+$/;

/** The field under which the FLYFLOW_API_KEY and ADMIN_TOKEN overrides are resolved. */
export const FLYFLOW_API_KEY_OVERRIDE = 'environment variable FLYFLOW_API_KEY';
export const ADMIN_TOKEN_OVERRIDE = 'environment variable ADMIN_TOKEN';

const SERVER_KEY_PURPOSE = 'the Flyflow server key';

/** Every secret the configuration needs, from the file and from the overrides in `env`. */
export function secretRefs(file: ConfigFile, env: Record<string, string | undefined>): SecretRef[] {
  const refs: SecretRef[] = [];
  if (nonEmpty(env.FLYFLOW_API_KEY) !== undefined) {
    refs.push({ field: FLYFLOW_API_KEY_OVERRIDE, env: 'FLYFLOW_API_KEY', purpose: SERVER_KEY_PURPOSE, override: true });
  } else {
    const { api_key_env, api_key_file } = file.upstream;
    refs.push(
      api_key_file === undefined
        ? { field: 'upstream.api_key_env', env: api_key_env ?? DEFAULT_UPSTREAM_API_KEY_ENV, purpose: SERVER_KEY_PURPOSE }
        : { field: 'upstream.api_key_file', file: api_key_file, purpose: SERVER_KEY_PURPOSE },
    );
  }
  const adminPurpose = 'the admin token';
  if (nonEmpty(env.ADMIN_TOKEN) !== undefined) {
    refs.push({
      field: ADMIN_TOKEN_OVERRIDE,
      env: 'ADMIN_TOKEN',
      purpose: adminPurpose,
      minBytes: MIN_SECRET_BYTES,
      override: true,
      bearer: true,
    });
  } else if (file.admin !== undefined) {
    refs.push({ ...ref('admin', 'token', file.admin, adminPurpose), minBytes: MIN_SECRET_BYTES, bearer: true });
  }
  file.tenants.forEach((tenant, i) => {
    const at = `tenants[${i}]`;
    tenant.signing_keys.forEach((key, k) => {
      refs.push({
        ...ref(`${at}.signing_keys[${k}]`, 'secret', key, `signing key "${key.kid}" of tenant "${tenant.id}"`),
        minBytes: MIN_SECRET_BYTES,
      });
    });
    if (tenant.upstream_api_key_env !== undefined || tenant.upstream_api_key_file !== undefined) {
      refs.push(ref(at, 'upstream_api_key', tenant, `tenant "${tenant.id}"'s own Flyflow key`));
    }
    if (tenant.webhook_token_env !== undefined || tenant.webhook_token_file !== undefined) {
      refs.push({ ...ref(at, 'webhook_token', tenant, `tenant "${tenant.id}"'s webhook token`), minBytes: MIN_SECRET_BYTES });
    }
  });
  if (file.cluster !== undefined) {
    const { peer_secret_env, peer_secret_file } = file.cluster;
    const purpose = 'the peer secret, the same on every replica';
    refs.push({
      ...(peer_secret_file === undefined
        ? { field: 'cluster.peer_secret_env', env: peer_secret_env ?? DEFAULT_PEER_SECRET_ENV, purpose }
        : { field: 'cluster.peer_secret_file', file: peer_secret_file, purpose }),
      minBytes: MIN_KEY_SECRET_BYTES,
      bearer: true,
    });
  }
  const encryption = file.cache.encryption;
  if (encryption !== undefined) {
    const { key_env, key_file, previous_keys_env, previous_keys_file } = encryption;
    const at = 'cache.encryption';
    const purpose = 'the cache encryption key';
    const hint = GENERATE_ENCRYPTION_KEY_HINT;
    refs.push({
      ...(key_file === undefined
        ? { field: `${at}.key_env`, env: key_env ?? DEFAULT_ENCRYPTION_KEY_ENV, purpose }
        : { field: `${at}.key_file`, file: key_file, purpose }),
      hint,
      check: (value) => {
        const key = decodeEncryptionKey(value);
        return Buffer.isBuffer(key) ? undefined : key.problem;
      },
    });
    if (previous_keys_env !== undefined || previous_keys_file !== undefined) {
      refs.push({
        ...ref(at, 'previous_keys', encryption, 'the previous cache encryption keys, comma-separated'),
        hint,
        check: (value) => {
          const keys = decodeEncryptionKeyList(value);
          return Array.isArray(keys) ? undefined : keys.problem;
        },
      });
    }
  }
  return refs;
}

function ref(at: string, base: string, fields: Record<string, unknown>, purpose: string): SecretRef {
  const file = fields[`${base}_file`];
  if (typeof file === 'string') return { field: `${at}.${base}_file`, file, purpose };
  return { field: `${at}.${base}_env`, env: String(fields[`${base}_env`]), purpose };
}

/**
 * What is wrong with one secret: the problem names the variable or file, never
 * the value; the hint, when there is one, says how to make a good secret.
 */
export interface SecretProblem {
  problem: string;
  hint?: string;
}

/** A secret's value, or what is wrong with it. */
export function resolveSecret(
  secretRef: SecretRef,
  env: Record<string, string | undefined>,
  cwd: string,
  read: (absolutePath: string) => SecretFileRead,
): string | SecretProblem {
  const purpose = `(it holds ${secretRef.purpose})`;
  let value: string;
  let source: string;
  if (secretRef.file !== undefined) {
    source = `file ${secretRef.file}`;
    const result = read(resolve(cwd, secretRef.file));
    if (result.value === undefined) {
      const why = result.code === 'ENOENT' ? 'does not exist' : `cannot be read (${result.code})`;
      return { problem: `${source} ${why} ${purpose}` };
    }
    // `echo secret > file` leaves a newline that is not part of the secret.
    value = result.value.replace(/[\r\n]+$/, '');
  } else {
    source = `environment variable ${secretRef.env}`;
    const fromEnv = env[secretRef.env ?? ''];
    if (fromEnv === undefined) return { problem: `${source} is not set ${purpose}` };
    value = fromEnv;
  }
  const hint = secretRef.hint ?? GENERATE_SECRET_HINT;
  // An operator-chosen secret that is missing gets the same advice as a short one.
  const advice = secretRef.minBytes === undefined && secretRef.check === undefined ? {} : { hint };
  if (value === '') return { problem: `${source} is empty ${purpose}`, ...advice };
  // `FLYFLOW_API_KEY=' '` is a typo, never a key: no one issues or chooses a blank secret.
  if (value.trim() === '') return { problem: `${source} is blank, only whitespace ${purpose}`, ...advice };
  if (secretRef.minBytes !== undefined && Buffer.byteLength(value) < secretRef.minBytes) {
    return { problem: `the secret in ${source} is shorter than ${secretRef.minBytes} bytes ${purpose}`, hint };
  }
  const formatProblem = secretRef.check?.(value);
  if (formatProblem !== undefined) return { problem: `the secret in ${source} ${formatProblem} ${purpose}`, hint };
  if (secretRef.bearer && !BEARER_TOKEN.test(value)) {
    return {
      problem: `the secret in ${source} has a space, a control character or a non-ASCII character, which an Authorization: Bearer header cannot carry ${purpose}`,
      hint,
    };
  }
  return value;
}

/** The problem of one secret as a config issue: an override names its variable, anything else its field. */
export function secretIssue(secretRef: SecretRef, { problem, hint }: SecretProblem): ConfigIssue {
  const message = hint === undefined ? problem : `${problem}; ${hint}`;
  return secretRef.override ? { path: '', message, source: 'environment' } : { path: secretRef.field, message };
}

/** An unset and an empty variable mean the same: `PORT=` in a compose file should not break start-up. */
export function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}
