/** A number from the environment: `fallback` when unset or empty; else it must pass `valid`, or the bench stops saying it must be `what`. */
function numberFromEnv(name: string, fallback: number, valid: (value: number) => boolean, what: string): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!valid(value)) throw new Error(`${name} must be ${what} (got ${JSON.stringify(raw)})`);
  return value;
}

/** A bench setting from the environment: `fallback` when unset or empty, else a positive number. */
export function positiveNumber(name: string, fallback: number): number {
  return numberFromEnv(name, fallback, (value) => Number.isFinite(value) && value > 0, 'a positive number');
}

/** Like `positiveNumber`, for counts and whole seconds. */
export function positiveInteger(name: string, fallback: number): number {
  return numberFromEnv(name, fallback, (value) => Number.isSafeInteger(value) && value > 0, 'a positive whole number');
}

/** A count that may be 0. */
export function nonNegativeInteger(name: string, fallback: number): number {
  return numberFromEnv(name, fallback, (value) => Number.isSafeInteger(value) && value >= 0, 'a whole number, 0 or more');
}
