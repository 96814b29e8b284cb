#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { randomBytes } from 'node:crypto';
import { sha256Hex } from './auth/tenants.js';
import { signRecordingUrl } from './client/signing.js';
import { ConfigError, loadConfig, type GatewayConfig } from './config/index.js';
import { parseCallId } from './recordings/call-id.js';
import { GatewayError } from './errors.js';
import { createLogger } from './logger.js';
import { startServer } from './server.js';
import { cachePurge, cacheStats, cacheVerify } from './cli/cache-commands.js';
import { UsageError } from './cli/io.js';
import { prefetchCommand } from './cli/prefetch-command.js';

const DEFAULT_SIGN_TTL_SECONDS = 300;
const NEW_KEY_PREFIX = 'rgk_';

/** Output and environment of one CLI run, passed in so the CLI can be driven in-process. */
export interface CliIo {
  env: Record<string, string | undefined>;
  cwd: string;
  stdout: (line: string) => void;
  stderr: (line: string) => void;
  /** Rewrites one status line in place; only given on a terminal. */
  progress?: (line: string) => void;
}


function callIdArgument(value: string): string {
  try {
    return parseCallId(value);
  } catch {
    throw new InvalidArgumentError('expected a call id: a decimal integer from 1 to 9007199254740991');
  }
}

function positiveIntegerArgument(value: string): number {
  const number = Number(value);
  if (!/^[1-9][0-9]*$/.test(value) || !Number.isSafeInteger(number)) throw new InvalidArgumentError('expected a positive integer');
  return number;
}

async function configFor(io: CliIo, path: string | undefined, requireSecrets: boolean): Promise<GatewayConfig> {
  const { config } = await loadConfig({ path, env: io.env, cwd: io.cwd, requireSecrets });
  return config;
}

/** Builds the command tree; `runCli` parses argv and executes it. */
export function buildCli(io: CliIo): Command {
  const program = new Command('recording-gateway')
    .description('A caching gateway that serves Flyflow call recordings to browsers without exposing the Flyflow key.')
    .option('-c, --config <path>', 'config file (YAML or JSON); default $GATEWAY_CONFIG or config/gateway.yaml')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: (text) => io.stdout(text.trimEnd()), writeErr: (text) => io.stderr(text.trimEnd()) })
    .exitOverride();

  async function serveCommand(): Promise<void> {
    const config = await configFor(io, program.opts().config, true);
    const logger = createLogger({ level: io.env.LOG_LEVEL ?? 'info', pretty: io.env.LOG_FORMAT === 'pretty' });
    const server = await startServer(config, { logger });
    logger.info({ url: server.url, tenants: config.tenants.length, index: config.cache.index.kind }, 'recording-gateway listening');
    // Resolves (exit 0) once a graceful shutdown is done; a failed one rejects (exit 1).
    await new Promise<void>((resolve, reject) => {
      const stop = (signal: string) => {
        logger.info({ signal }, 'shutting down');
        server.close().then(resolve, reject);
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
  }

  program.action(serveCommand);
  program.command('serve').description('run the gateway (the default command)').action(serveCommand);

  program
    .command('hash-key')
    .description('print the sha256 digest of a tenant API key, for tenants[].api_keys')
    .argument('<key>', 'the API key')
    .action((key: string) => {
      io.stdout(`sha256:${sha256Hex(key)}`);
    });

  program
    .command('new-key')
    .description('print a new random tenant API key and its digest')
    .action(() => {
      const key = `${NEW_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
      io.stdout(`key:    ${key}`);
      io.stdout(`digest: sha256:${sha256Hex(key)}`);
      io.stdout('Give the key to the tenant; put only the digest in tenants[].api_keys.');
    });

  program
    .command('sign')
    .description("mint a signed recording URL with a tenant's signing key")
    .requiredOption('--tenant <id>', 'tenant id')
    .requiredOption('--call <id>', 'call id', callIdArgument)
    .option('--ttl <seconds>', `validity in seconds (default ${DEFAULT_SIGN_TTL_SECONDS})`, positiveIntegerArgument)
    .option('--kid <kid>', "signing key id (default: the tenant's first)")
    .action(async (options: { tenant: string; call: string; ttl?: number; kid?: string }) => {
      const config = await configFor(io, program.opts().config, false);
      const tenant = config.tenants.find((candidate) => candidate.id === options.tenant);
      if (!tenant) throw new UsageError(`no tenant "${options.tenant}" in the config`);
      const key = options.kid === undefined ? tenant.signingKeys[0] : tenant.signingKeys.find((k) => k.kid === options.kid);
      if (!key) {
        throw new UsageError(
          options.kid === undefined
            ? `tenant "${tenant.id}" has no signing key with a secret set`
            : `tenant "${tenant.id}" has no signing key "${options.kid}" with a secret set`,
        );
      }
      const ttl = options.ttl ?? DEFAULT_SIGN_TTL_SECONDS;
      if (ttl > tenant.maxSignedUrlTtlSeconds) {
        throw new UsageError(`--ttl ${ttl} is over the tenant's max_signed_url_ttl_seconds (${tenant.maxSignedUrlTtlSeconds})`);
      }
      const expiresAt = Math.floor(Date.now() / 1000) + ttl;
      io.stdout(
        signRecordingUrl({ baseUrl: config.publicBaseUrl, tenant: tenant.id, callId: options.call, expiresAt, kid: key.kid, secret: key.secret }),
      );
    });

  const cache = program.command('cache').description('inspect and manage the recording cache');
  cache
    .command('stats')
    .description('entries and bytes, per namespace, and the hit ratio since start when the gateway runs')
    .action(async () => {
      await cacheStats(await configFor(io, program.opts().config, false), io.stdout);
    });
  cache
    .command('verify')
    .description('rehash every cached file against its sha256 and remove the corrupt ones')
    .action(async () => {
      await cacheVerify(await configFor(io, program.opts().config, false), io.stdout);
    });
  cache
    .command('purge')
    .description('remove cached recordings: all, one call id, one tenant, or both')
    .option('--call <id>', 'only this call id', callIdArgument)
    .option('--tenant <id>', "only this tenant's namespace")
    .action(async (options: { call?: string; tenant?: string }) => {
      const config = await configFor(io, program.opts().config, false);
      await cachePurge(config, { callId: options.call, tenant: options.tenant }, io.stdout);
    });

  program
    .command('prefetch')
    .description('warm the cache with recordings through the upstream')
    .argument('<ids...>', 'call ids', (value: string, previous: string[] = []) => [...previous, callIdArgument(value)])
    .option('--tenant <id>', "whose Flyflow account to fetch with (default: the config's first tenant)")
    .action(async (ids: string[], options: { tenant?: string }) => {
      const config = await configFor(io, program.opts().config, true);
      const failed = await prefetchCommand(config, ids, { tenant: options.tenant, print: io.stdout, progress: io.progress });
      if (failed > 0) throw new UsageError(`${failed} of ${ids.length} recordings could not be prefetched`);
    });

  return program;
}

/** Runs the CLI; resolves with the exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const program = buildCli(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode;
    if (error instanceof ConfigError || error instanceof UsageError || error instanceof GatewayError) {
      io.stderr(`error: ${error.message}`);
      return 1;
    }
    io.stderr(`error: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
}

const invokedDirectly = process.argv[1] !== undefined && /(^|[\\/])(cli\.(ts|js)|recording-gateway)$/.test(process.argv[1]);
if (invokedDirectly) {
  const code = await runCli(process.argv.slice(2), {
    env: process.env,
    cwd: process.cwd(),
    stdout: (line) => process.stdout.write(`${line}\n`),
    stderr: (line) => process.stderr.write(`${line}\n`),
    ...(process.stderr.isTTY ? { progress: (line: string) => process.stderr.write(`\r\x1b[2K${line}`) } : {}),
  });
  process.exitCode = code;
}
