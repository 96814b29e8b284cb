import { randomBytes } from 'node:crypto';
import { nonNegativeInteger, positiveInteger } from './env.js';
import { type CorePlan, pinSelf, planCores } from './peers-process.js';
import { buildUnlessSkipped } from './peers-servers.js';

/** What the cold-miss benches (cold-timeline.ts, cold-ab.ts) start from. */
export interface ColdBenchSetup {
  /** `PEERS_COLD_REQUESTS`: measured misses per server. */
  requests: number;
  /** `PEERS_COLD_WARMUP`: unmeasured misses per server first. */
  warmMisses: number;
  cores: CorePlan;
  /** The upstream's key and the tenant's, fresh for the run. */
  serverKey: string;
  tenantKey: string;
}

/** Reads the counts from the environment, builds unless told not to, pins this driver to the client's core. */
export function coldBenchSetup(): ColdBenchSetup {
  const requests = positiveInteger('PEERS_COLD_REQUESTS', 40);
  const warmMisses = nonNegativeInteger('PEERS_COLD_WARMUP', 20);
  buildUnlessSkipped();
  const cores = planCores();
  pinSelf(cores.client);
  return {
    requests,
    warmMisses,
    cores,
    serverKey: randomBytes(24).toString('base64url'),
    tenantKey: randomBytes(24).toString('base64url'),
  };
}

/** What went wrong (answers that were not right, misses not timed), the first ten in bold; any makes the exit code 1. */
export function printProblems(problems: string[]): void {
  if (problems.length === 0) return;
  process.exitCode = 1;
  for (const problem of problems.slice(0, 10)) console.log(`- **${problem}**`);
}
