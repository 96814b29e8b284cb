import type { z } from 'zod';

/** One problem with the configuration: where it is, and what is wrong. */
export interface ConfigIssue {
  /**
   * Where: a field path in the file such as `tenants[0].api_keys[1]`, or an
   * environment variable such as `environment variable PORT`; '' when the
   * problem is the file as a whole.
   */
  path: string;
  /** What is wrong. Never contains a secret's value, only the variable or file that holds it. */
  message: string;
  /** `environment` when the value came from an environment override, so the file name is not prefixed. */
  source?: 'file' | 'environment';
}

/**
 * The configuration cannot be used. The message has one line per problem,
 * each naming the file and the field (`config/gateway.yaml:
 * tenants[0].api_keys[1]: expected ...`), so an operator can fix every
 * problem in one go. Start-up prints it and exits non-zero.
 */
export class ConfigError extends Error {
  readonly issues: readonly ConfigIssue[];
  /** The config file as the operator named it, when the problem is in a file. */
  readonly file: string | undefined;

  constructor(issues: ConfigIssue | readonly ConfigIssue[], options: { file?: string; cause?: unknown } = {}) {
    const list = Array.isArray(issues) ? [...(issues as readonly ConfigIssue[])] : [issues as ConfigIssue];
    super(
      list.map((issue) => formatIssue(issue, options.file)).join('\n'),
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = 'ConfigError';
    this.issues = list;
    this.file = options.file;
  }
}

function formatIssue(issue: ConfigIssue, file: string | undefined): string {
  const parts: string[] = [];
  if (file !== undefined && issue.source !== 'environment') parts.push(file);
  if (issue.path !== '') parts.push(issue.path);
  parts.push(issue.message);
  return parts.join(': ');
}

/**
 * Turns zod's issues into one `ConfigIssue` per problem, in the file's own
 * terms: snake_case paths, the expected type, and for a misspelt key the key
 * that was probably meant (looked up in `root`, the schema the issues came from).
 */
export function configIssuesFromZod(issues: readonly z.core.$ZodIssue[], root: z.core.$ZodType): ConfigIssue[] {
  return issues.flatMap((issue) => toConfigIssues(issue, root));
}

/** `['tenants', 0, 'api_keys', 1]` → `tenants[0].api_keys[1]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((out, part) => {
    if (typeof part === 'number') return `${out}[${part}]`;
    return out === '' ? String(part) : `${out}.${String(part)}`;
  }, '');
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  object: 'a mapping (key: value)',
  array: 'a list',
};

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  // YAML reads 1e400 and .inf as Infinity, .nan as NaN: neither is a fraction.
  if (typeof value === 'number' && Number.isNaN(value)) return 'NaN (not a number)';
  if (typeof value === 'number' && !Number.isFinite(value)) return 'one too large to be finite (it reads as infinity)';
  if (typeof value === 'number' && !Number.isInteger(value)) return 'a fraction';
  return TYPE_NAMES[typeof value] ?? typeof value;
}

function toConfigIssues(issue: z.core.$ZodIssue, root: z.core.$ZodType): ConfigIssue[] {
  const path = formatPath(issue.path);
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((key) => ({
        path: formatPath([...issue.path, key]),
        message: `unknown key${suggestKey(key, knownKeysAt(root, issue.path))}`,
      }));
    case 'invalid_type': {
      // A message set in the schema (e.g. on `tenants`) says it better than the generic one.
      if (!issue.message.startsWith('Invalid input')) return [{ path, message: issue.message }];
      const expected = TYPE_NAMES[issue.expected] ?? issue.expected;
      if (issue.input === undefined) return [{ path, message: `is required (${expected})` }];
      // Values are described by type only; a value may be something secret put in the wrong place.
      return [{ path, message: `expected ${expected}, got ${describe(issue.input)}` }];
    }
    case 'too_small':
      if (issue.origin === 'string') return [{ path, message: 'must not be empty' }];
      if (issue.origin === 'array') return [{ path, message: issue.message }];
      return [{ path, message: `must be ${issue.inclusive === false ? 'more than' : 'at least'} ${String(issue.minimum)}` }];
    case 'too_big':
      return [{ path, message: `must be ${issue.inclusive === false ? 'less than' : 'at most'} ${String(issue.maximum)}` }];
    default:
      return [{ path, message: issue.message }];
  }
}

/** The keys the schema allows in the object at `path`, to suggest the one a typo meant. */
function knownKeysAt(root: z.core.$ZodType, path: readonly PropertyKey[]): string[] {
  let schema: z.core.$ZodType | undefined = unwrap(root);
  for (const part of path) {
    if (schema === undefined) return [];
    const def = schema._zod.def as { type: string; shape?: Record<string, z.core.$ZodType>; element?: z.core.$ZodType };
    schema = unwrap(typeof part === 'number' ? def.element : def.shape?.[String(part)]);
  }
  const def = schema?._zod.def as { shape?: Record<string, unknown> } | undefined;
  return Object.keys(def?.shape ?? {});
}

function unwrap(schema: z.core.$ZodType | undefined): z.core.$ZodType | undefined {
  let current = schema;
  for (;;) {
    const def = current?._zod.def as { type: string; innerType?: z.core.$ZodType; in?: z.core.$ZodType } | undefined;
    if (def?.innerType !== undefined) current = def.innerType;
    else if (def?.type === 'pipe' && def.in !== undefined) current = def.in;
    else return current;
  }
}

function suggestKey(key: string, known: string[]): string {
  // `api_key: sk-...` or `secret: ...` means a secret was put in the file.
  const secretRefs = known.filter((k) => k.startsWith(`${key}_`) && /_(env|file)$/.test(k));
  if (secretRefs.length > 0) {
    return `; secrets do not go in this file: name the environment variable or file that holds it with ${secretRefs.join(' or ')}`;
  }
  const squash = (s: string) => s.toLowerCase().replace(/[_-]/g, '');
  const best = known.map((k) => ({ k, d: squash(k) === squash(key) ? 0 : editDistance(k, key) })).sort((a, b) => a.d - b.d)[0];
  if (best !== undefined && best.d <= Math.max(2, Math.floor(key.length / 4))) return `; did you mean "${best.k}"?`;
  return known.length > 0 ? `; expected one of ${known.join(', ')}` : '';
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}
