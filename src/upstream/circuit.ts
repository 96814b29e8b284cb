import { BrokenCircuitError, ConsecutiveBreaker, IsolatedCircuitError, circuitBreaker, handleWhen } from 'cockatiel';
import type { Clock } from '../clock.js';
import { ServiceUnavailableError } from '../errors.js';
import { isUpstreamOutage } from './errors.js';

export interface CircuitOptions {
  /** Consecutive outage failures (5xx, timeouts, unreachable) that open the circuit. */
  failureThreshold: number;
  /** How long uncached requests fail fast before one probe request decides. */
  cooldownMs: number;
  clock: Clock;
}

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface UpstreamCircuit {
  /** Runs `task` unless the circuit is open; then throws 503 with Retry-After. */
  run<T>(task: () => Promise<T>): Promise<T>;
  readonly state: CircuitState;
}

// Indexed by cockatiel's CircuitState: Closed, Open, HalfOpen, Isolated.
const STATE_NAMES = ['closed', 'open', 'half-open', 'open'] as const;

/**
 * A circuit breaker over the upstream (cockatiel): after `failureThreshold`
 * consecutive outages, requests that need Flyflow fail fast with 503 for
 * `cooldownMs`; then one probe goes through and its result closes or reopens
 * the circuit. Cached recordings never pass through here, so they are served
 * whatever Flyflow's state.
 */
export function createUpstreamCircuit(options: CircuitOptions, onStateChange?: (state: CircuitState) => void): UpstreamCircuit {
  const breaker = circuitBreaker(handleWhen(isUpstreamOutage), {
    halfOpenAfter: options.cooldownMs,
    breaker: new ConsecutiveBreaker(options.failureThreshold),
  });
  let openedAt = 0;
  breaker.onBreak(() => {
    openedAt = options.clock.now();
  });
  if (onStateChange) breaker.onStateChange((state) => onStateChange(STATE_NAMES[state] ?? 'open'));

  return {
    get state() {
      return STATE_NAMES[breaker.state] ?? 'open';
    },
    async run(task) {
      try {
        return await breaker.execute(task);
      } catch (error) {
        if (error instanceof BrokenCircuitError || error instanceof IsolatedCircuitError) {
          const remainingMs = Math.max(0, openedAt + options.cooldownMs - options.clock.now());
          throw new ServiceUnavailableError('Upstream is failing; not asking it again yet', Math.max(1, Math.ceil(remainingMs / 1000)), {
            cause: error,
          });
        }
        throw error;
      }
    },
  };
}

/** Where accounts beyond {@link CircuitsOptions.maxAccounts} share one circuit, and its metrics label. */
export const OVERFLOW_ACCOUNT = 'other';
const DEFAULT_MAX_ACCOUNTS = 256;
/** Hex digits of the namespace shown in metrics: enough to tell accounts apart, far from any key. */
const ACCOUNT_LABEL_LENGTH = 12;

export interface CircuitsOptions extends CircuitOptions {
  /** Upstream accounts known from the config (tenant cache namespaces); each has a circuit from the start. */
  accounts?: Iterable<string>;
  /** At most this many circuits besides the known accounts'; later accounts share one. Default 256. */
  maxAccounts?: number;
  /** Told when a circuit opens, half-opens or closes, with its account's label (as in {@link UpstreamCircuits.states}). */
  onStateChange?: (account: string, state: CircuitState) => void;
}

/** One circuit per upstream account, so one account's failures never fail another's requests. */
export interface UpstreamCircuits {
  /** The circuit of the account with this cache namespace. */
  forAccount(account: string): UpstreamCircuit;
  /** Every circuit's state, labelled by a short prefix of its namespace (or {@link OVERFLOW_ACCOUNT}). */
  states(): Array<{ account: string; state: CircuitState }>;
}

/** How an account is named in metrics and logs. */
function labelOf(account: string): string {
  return account.slice(0, ACCOUNT_LABEL_LENGTH);
}

/**
 * A circuit breaker per upstream account (README, "Responses": an open circuit
 * caused by one account's traffic never refuses another account's requests).
 * The account is the tenant's cache namespace, a digest of base URL and key,
 * so two tenants on one Flyflow account share a circuit. Accounts come from
 * the config, so the number of circuits is bounded; any account past
 * `maxAccounts` that was not in the config shares one overflow circuit.
 */
export function createUpstreamCircuits(options: CircuitsOptions): UpstreamCircuits {
  const { accounts = [], maxAccounts = DEFAULT_MAX_ACCOUNTS, onStateChange, ...circuitOptions } = options;
  const circuitFor = (label: string) => createUpstreamCircuit(circuitOptions, onStateChange && ((state) => onStateChange(label, state)));
  if (!Number.isInteger(maxAccounts) || maxAccounts < 0) {
    throw new RangeError(`upstream circuits: maxAccounts must be a non-negative integer, got ${maxAccounts}`);
  }
  const circuits = new Map<string, UpstreamCircuit>();
  for (const account of accounts) {
    if (!circuits.has(account)) circuits.set(account, circuitFor(labelOf(account)));
  }
  const limit = circuits.size + maxAccounts;
  let overflow: UpstreamCircuit | undefined;

  return {
    forAccount(account) {
      let circuit = circuits.get(account);
      if (circuit) return circuit;
      if (circuits.size < limit) {
        circuit = circuitFor(labelOf(account));
        circuits.set(account, circuit);
        return circuit;
      }
      overflow ??= circuitFor(OVERFLOW_ACCOUNT);
      return overflow;
    },
    states() {
      const states = [...circuits].map(([account, circuit]) => ({ account: labelOf(account), state: circuit.state }));
      if (overflow) states.push({ account: OVERFLOW_ACCOUNT, state: overflow.state });
      return states;
    },
  };
}
