/**
 * `parseConfig` for the config tests, bound to a test's environment and
 * working directory, and the message of the ConfigError it throws.
 */
import { expect } from 'vitest';
import { ConfigError, type GatewayConfig, type ParseConfigOptions, parseConfig } from '../../src/config/index.js';

export interface ConfigParsers {
  /** Parses `raw` with the defaults, any of them overridden by `options`. */
  parse(raw: unknown, options?: Partial<ParseConfigOptions>): GatewayConfig;
  /** The message of the ConfigError that parsing `raw` throws; fails the test when it throws nothing or something else. */
  messageOf(raw: unknown, options?: Partial<ParseConfigOptions>): string;
}

/** `defaults` is read at each call, so it may name a directory made before each test. */
export function configParsers(defaults: () => ParseConfigOptions): ConfigParsers {
  function parse(raw: unknown, options: Partial<ParseConfigOptions> = {}): GatewayConfig {
    return parseConfig(raw, { ...defaults(), ...options });
  }
  function messageOf(raw: unknown, options: Partial<ParseConfigOptions> = {}): string {
    try {
      parse(raw, options);
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      return (error as ConfigError).message;
    }
    throw new Error('expected a ConfigError');
  }
  return { parse, messageOf };
}
