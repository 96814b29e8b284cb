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
export function createUpstreamCircuit(options: CircuitOptions): UpstreamCircuit {
  const breaker = circuitBreaker(handleWhen(isUpstreamOutage), {
    halfOpenAfter: options.cooldownMs,
    breaker: new ConsecutiveBreaker(options.failureThreshold),
  });
  let openedAt = 0;
  breaker.onBreak(() => {
    openedAt = options.clock.now();
  });

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
