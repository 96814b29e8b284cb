#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { sha256Hex } from './sha256.js';
import { signRecordingUrl } from '@recording-gateway/client';
import { loadConfig, type GatewayConfig } from './config/index.js';
import { createLogger, logLevelFrom, prettyLogsFrom } from './logger.js';
import { startServer } from './server.js';
import { auditCliCommand } from './audit/cli-audit.js';
import { isPresentableToken } from './auth/bearer.js';
import { registerAuditCommands } from './cli/audit-commands.js';
import { cacheStats, cacheVerify } from './cli/cache-commands.js';
import { cachePurge, checkPurgeFilter } from './cli/cache-purge.js';
import { CommandFailure, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, callIdArgument, givenOnce, printJson } from './cli/io.js';
import { prefetchCommand, type PrefetchResult } from './cli/prefetch-command.js';
import { DamagedIndexError } from './cache/damaged-index.js';
import { errorMessage } from './errors.js';
import { callIdJson } from './recordings/call-id.js';

const DEFAULT_SIGN_TTL_SECONDS = 300;
const NEW_KEY_PREFIX = 'rgk_';
const JSON_HELP = 'print one JSON document instead of lines';
// The CLI may run beside a gateway that has the index open, so it never renames it itself.
const DAMAGED_INDEX_REMEDY = 'start the gateway, which sets it aside and starts a fresh one, or remove it';

/** Output and environment of one CLI run, passed in so the CLI can be driven in-process. */
export interface CliIo {
  env: Record<string, string | undefined>;
  cwd: string;
  stdout: (line: string) => void;
  stderr: (line: string) => void;
  /** Rewrites one status line in place; only given on a terminal. */
  progress?: (line: string) => void;
}

/** The package's version, from the package.json beside src/ and dist/ alike. */
function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof manifest.version === 'string' ? manifest.version : 'unknown';
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
    .version(packageVersion(), '-V, --version', 'print the version')
    .option('-c, --config <path>', 'config file (YAML or JSON); default $GATEWAY_CONFIG or config/gateway.yaml', givenOnce())
    .addHelpText(
      'after',
      '\nWithout a command, runs `serve`.\nExit codes: 0 ok, 1 failure (or damage found by `cache verify`), 2 bad command line.',
    )
    .configureOutput({
      writeOut: (text) => io.stdout(text.trimEnd()),
      writeErr: (text) => io.stderr(text.trimEnd()),
      // On the message's own line: every message is one line (README, Command line).
      outputError: (text, write) => write(`${text.trimEnd()} (run with --help for usage)`),
    })
    .exitOverride();
  const print = io.stdout;
  const config = (requireSecrets: boolean) => configFor(io, program.opts<{ config?: string }>().config, requireSecrets);

  program
    .command('serve')
    .description('run the gateway (the default command)')
    .action(async () => {
      const level = logLevelFrom(io.env.LOG_LEVEL);
      const pretty = prettyLogsFrom(io.env.LOG_FORMAT);
      const loaded = await config(true);
      const logger = createLogger({ level, pretty });
      const server = await startServer(loaded, { logger });
      logger.info(
        {
          url: server.url,
          tenants: loaded.tenants.length,
          index: loaded.cache.index.kind,
          ...(loaded.cluster ? { cluster: loaded.cluster.nodeId } : {}),
        },
        'recording-gateway listening',
      );
      // Resolves (exit 0) once a graceful shutdown is done; a failed one rejects (exit 1).
      await new Promise<void>((resolve, reject) => {
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) {
            logger.warn({ signal }, 'second signal: ending the grace period now');
            server.hurry();
            return;
          }
          stopping = true;
          logger.info({ signal }, 'shutting down');
          server.close().then(resolve, reject);
        };
        process.on('SIGTERM', () => stop('SIGTERM'));
        process.on('SIGINT', () => stop('SIGINT'));
      });
    });

  program
    .command('hash-key')
    .description('print the sha256 digest of a tenant API key, for tenants[].api_keys')
    .argument('<key>', 'the API key')
    .option('--json', JSON_HELP)
    .action((key: string, options: { json?: boolean }) => {
      if (!isPresentableToken(key)) {
        throw new UsageError(
          `${key === '' ? 'the key is empty' : 'the key has a character other than visible ASCII (a space, say)'}: no request could present it after "Bearer "; make one with \`recording-gateway new-key\``,
        );
      }
      const digest = `sha256:${sha256Hex(key)}`;
      if (options.json) printJson(print, { digest });
      else print(digest);
    });

  program
    .command('new-key')
    .description('print a new random key and its digest: a tenant API key, or any secret the config needs')
    .option('--json', JSON_HELP)
    .action((options: { json?: boolean }) => {
      const key = `${NEW_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
      const digest = `sha256:${sha256Hex(key)}`;
      if (options.json) return printJson(print, { key, digest });
      print(`key:    ${key}`);
      print(`digest: ${digest}`);
      print('Give the key to the tenant; put only the digest in tenants[].api_keys.');
    });

  program
    .command('sign')
    .description("mint a signed recording URL with a tenant's signing key")
    .requiredOption('--tenant <id>', 'tenant id', givenOnce())
    .requiredOption('--call <id>', 'call id', givenOnce(callIdArgument))
    .option('--ttl <seconds>', `validity in seconds (default ${DEFAULT_SIGN_TTL_SECONDS})`, givenOnce(positiveIntegerArgument))
    .option('--kid <kid>', "signing key id (default: the tenant's first)", givenOnce())
    .option('--json', `${JSON_HELP}: {"url", "expires_at"}`)
    .action(async (options: { tenant: string; call: string; ttl?: number; kid?: string; json?: boolean }) => {
      const loaded = await config(false);
      const tenant = loaded.tenants.find((candidate) => candidate.id === options.tenant);
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
      // Audited before it is printed: a URL that could not be audited is not handed out.
      if (loaded.audit) {
        const minted = { kid: key.kid, exp: expiresAt };
        const entry = { event: 'signed-url', tenant: tenant.id, callId: options.call, status: 200, command: 'sign', minted } as const;
        await auditCliCommand(loaded.audit, entry).catch((error: unknown) => {
          throw new CommandFailure(`no URL minted: its audit line could not be written: ${errorMessage(error)}`, {
            cause: error,
          });
        });
      }
      const url = signRecordingUrl({
        baseUrl: loaded.publicBaseUrl,
        tenant: tenant.id,
        callId: options.call,
        expiresAt,
        kid: key.kid,
        secret: key.secret,
      });
      if (options.json) printJson(print, { url, expires_at: expiresAt });
      else print(url);
    });

  const cache = program.command('cache').description('inspect and manage the recording cache');
  cache
    .command('stats')
    .description('entries and bytes, per namespace, and the hit ratio since start when the gateway runs')
    .option('--json', JSON_HELP)
    .action(async (options: { json?: boolean }) => {
      await cacheStats(await config(false), { print, json: options.json });
    });
  cache
    .command('verify')
    .description('rehash every cached file against its sha256 and remove the corrupt ones; exits 1 when it removed any')
    .option('--json', JSON_HELP)
    .action(async (options: { json?: boolean }) => {
      const removed = await cacheVerify(await config(false), { print, json: options.json });
      if (removed > 0)
        throw new CommandFailure(
          `found ${removed} damaged recording${removed === 1 ? '' : 's'} and removed ${removed === 1 ? 'it' : 'them'}`,
        );
    });
  cache
    .command('purge')
    .description('remove cached recordings from every tier: one call id, one tenant, both, or --all')
    .option('--call <id>', 'only this call id', givenOnce(callIdArgument))
    .option('--tenant <id>', "only this tenant's namespace", givenOnce())
    .option('--all', 'every cached recording')
    .option('--json', JSON_HELP)
    .addHelpText(
      'after',
      '\nWith the sqlite index, a running gateway is asked to purge, so its memory forgets at once;\nit is found at the configured listen address and accepts ADMIN_TOKEN or a grant left in cache.dir.',
    )
    .action(async (options: { call?: string; tenant?: string; all?: boolean; json?: boolean }) => {
      const filter = { callId: options.call, tenant: options.tenant, all: options.all };
      checkPurgeFilter(filter);
      await cachePurge(await config(false), filter, { print, json: options.json });
    });

  program
    .command('prefetch')
    .description('warm the cache with recordings through the upstream; exits 1 when any failed')
    .argument('<ids...>', 'call ids', (value: string, previous: string[] = []) => [...previous, callIdArgument(value)])
    .option('--tenant <id>', "whose Flyflow account to fetch with (default: the config's first tenant)", givenOnce())
    .option('--json', `${JSON_HELP}: {"recordings": [{"call_id", "status", "size" or "error"}], "failed"}`)
    .action(async (ids: string[], options: { tenant?: string; json?: boolean }) => {
      const loaded = await config(true);
      const results: PrefetchResult[] = [];
      const failed = await prefetchCommand(loaded, ids, {
        tenant: options.tenant,
        print: options.json ? () => {} : print,
        progress: io.progress,
        onResult: (result) => results.push(result),
      });
      if (options.json) {
        const recordings = results.map(({ callId, ...rest }) => ({ call_id: callIdJson(callId), ...rest }));
        printJson(print, { recordings, failed });
      }
      if (failed > 0) throw new CommandFailure(`${failed} of ${ids.length} recordings could not be prefetched`);
    });

  registerAuditCommands(program, { print, warn: io.stderr, config: () => config(false) });

  return program;
}

/** True when argv names a command (or asks for help or the version), rather than only global options. */
function namesCommand(argv: readonly string[]): boolean {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    // A trailing -c lacks its value: commander says so.
    if (arg === '-c' || arg === '--config') {
      if (++i >= argv.length) return true;
    } else if (arg === '--' || !arg.startsWith('-')) return true;
    else if (['-h', '--help', '-V', '--version'].includes(arg)) return true;
  }
  return false;
}

/** Runs the CLI; resolves with the exit code: 0 ok, 1 failure, 2 bad command line. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const program = buildCli(io);
  try {
    // `serve` is the default; commander's own default command would take an unknown command as serve's argument.
    await program.parseAsync(namesCommand(argv) ? argv : [...argv, 'serve'], { from: 'user' });
    return EXIT_OK;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander has printed its message (or the help or version asked for).
      return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    // Expected conditions (a bad config, a failed command) and unexpected errors alike: one line, no stack.
    if (error instanceof UsageError) {
      io.stderr(`error: ${error.message} (run with --help for usage)`);
      return EXIT_USAGE;
    }
    io.stderr(`error: ${error instanceof DamagedIndexError ? `${error.message}; ${DAMAGED_INDEX_REMEDY}` : errorMessage(error)}`);
    return EXIT_FAILURE;
  }
}

/**
 * A reader that goes away (`recording-gateway cache stats | head -1`) ends
 * the run quietly, as SIGPIPE ends other command-line tools; Node ignores
 * SIGPIPE and reports EPIPE as an error on the stream instead.
 */
function exitQuietlyOnClosedPipe(stream: NodeJS.WriteStream): void {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    process.exit(error.code === 'EPIPE' ? EXIT_OK : EXIT_FAILURE);
  });
}

const invokedDirectly = process.argv[1] !== undefined && /(^|[\\/])(cli\.(ts|js)|recording-gateway)$/.test(process.argv[1]);
if (invokedDirectly) {
  exitQuietlyOnClosedPipe(process.stdout);
  exitQuietlyOnClosedPipe(process.stderr);
  const code = await runCli(process.argv.slice(2), {
    env: process.env,
    cwd: process.cwd(),
    stdout: (line) => process.stdout.write(`${line}\n`),
    stderr: (line) => process.stderr.write(`${line}\n`),
    ...(process.stderr.isTTY ? { progress: (line: string) => process.stderr.write(`\r\x1b[2K${line}`) } : {}),
  });
  process.exitCode = code;
}
