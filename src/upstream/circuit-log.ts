import type { Logger } from '../logger.js';
import type { CircuitState } from './circuit.js';

/**
 * What an operator reads when an account's circuit changes: an open circuit
 * (requests that need Flyflow fail fast with 503) is a warning; the probe and
 * the recovery are info, so a gateway that recovered on its own says so.
 */
export function circuitLogger(logger: Logger, cooldownSeconds: number): (account: string, state: CircuitState) => void {
  return (account, state) => {
    if (state === 'open') {
      logger.warn(
        { account, cooldownSeconds },
        'upstream circuit open: requests that need Flyflow fail fast with 503 until a probe succeeds',
      );
    } else if (state === 'half-open') {
      logger.info({ account }, 'upstream circuit half-open: the next request that needs Flyflow probes it');
    } else {
      logger.info({ account }, 'upstream circuit closed: Flyflow answers again');
    }
  };
}
