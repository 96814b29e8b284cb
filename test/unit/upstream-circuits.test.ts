import { describe, expect, test } from 'vitest';
import { manualClock } from '../../dev/manual-clock.js';
import { ServiceUnavailableError } from '../../src/errors.js';
import { OVERFLOW_ACCOUNT, createUpstreamCircuits } from '../../src/upstream/circuit.js';
import { UpstreamOutageError } from '../../src/upstream/errors.js';

const ACCOUNT_A = 'a'.repeat(32);
const ACCOUNT_B = 'b'.repeat(32);

function circuits(extra: { maxAccounts?: number; accounts?: string[] } = {}) {
  return createUpstreamCircuits({
    failureThreshold: 2,
    cooldownMs: 30_000,
    clock: manualClock(),
    accounts: [ACCOUNT_A, ACCOUNT_B],
    ...extra,
  });
}

const outage = () => Promise.reject(new UpstreamOutageError('Upstream answered 500'));

describe('one circuit breaker per upstream account', () => {
  test("one account's failures open its own circuit only; the other account's requests still reach upstream", async () => {
    const registry = circuits();
    for (let i = 0; i < 2; i++) await expect(registry.forAccount(ACCOUNT_A).run(outage)).rejects.toBeInstanceOf(UpstreamOutageError);
    await expect(registry.forAccount(ACCOUNT_A).run(() => Promise.resolve('never'))).rejects.toBeInstanceOf(ServiceUnavailableError);

    await expect(registry.forAccount(ACCOUNT_B).run(() => Promise.resolve('served'))).resolves.toBe('served');
    expect(registry.forAccount(ACCOUNT_A).state).toBe('open');
    expect(registry.forAccount(ACCOUNT_B).state).toBe('closed');
  });

  test('the same account always gets the same circuit', () => {
    const registry = circuits();
    expect(registry.forAccount(ACCOUNT_A)).toBe(registry.forAccount(ACCOUNT_A));
    expect(registry.forAccount(ACCOUNT_A)).not.toBe(registry.forAccount(ACCOUNT_B));
  });

  test('accounts from the config are reported from the start, by a short prefix of the namespace, never the whole of it', () => {
    const states = circuits().states();
    expect(states).toEqual([
      { account: ACCOUNT_A.slice(0, 12), state: 'closed' },
      { account: ACCOUNT_B.slice(0, 12), state: 'closed' },
    ]);
  });

  test('the number of circuits is bounded: accounts past the bound share one overflow circuit', () => {
    const registry = circuits({ maxAccounts: 1 });
    const third = registry.forAccount('c'.repeat(32));
    const fourth = registry.forAccount('d'.repeat(32));
    const fifth = registry.forAccount('e'.repeat(32));
    expect(third).not.toBe(fourth);
    expect(fourth).toBe(fifth);
    expect(registry.forAccount(ACCOUNT_A)).not.toBe(fourth);
    expect(registry.states().map((s) => s.account)).toEqual([
      ACCOUNT_A.slice(0, 12),
      ACCOUNT_B.slice(0, 12),
      'c'.repeat(12),
      OVERFLOW_ACCOUNT,
    ]);
  });

  test('a bad bound is refused with a message naming it', () => {
    expect(() => circuits({ maxAccounts: -1 })).toThrow(/maxAccounts must be a non-negative integer, got -1/);
  });
});
