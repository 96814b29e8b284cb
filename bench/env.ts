/** A bench setting from the environment: `fallback` when unset or empty, else a positive number. */
export function positiveNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number (got ${JSON.stringify(raw)})`);
  return value;
}

/** Like `positiveNumber`, for counts and whole seconds. */
export function positiveInteger(name: string, fallback: number): number {
  const value = positiveNumber(name, fallback);
  if (!Number.isInteger(value)) throw new Error(`${name} must be a positive whole number (got ${JSON.stringify(process.env[name])})`);
  return value;
}

/** A count from the environment that may be 0: `fallback` when unset or empty. */
export function nonNegativeInteger(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${name} must be a whole number, 0 or more (got ${JSON.stringify(raw)})`);
  return value;
}
