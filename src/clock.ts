/** A source of time, injected so that tests can move it. Milliseconds since the epoch. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A UTC day in milliseconds (retention periods, daily audit files). */
export const DAY_MS = 86_400_000;
