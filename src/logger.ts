import pino, { type DestinationStream, type Logger as PinoLogger } from 'pino';
import { GatewayError } from './errors.js';

export type Logger = PinoLogger;

export interface LoggerOptions {
  level?: string;
  /** Human-readable lines for development instead of JSON. */
  pretty?: boolean;
  /** Where lines go; stdout by default. Tests pass a stream to read them. */
  destination?: DestinationStream;
}

// Belt and braces: nothing should log these, but if a header or query object
// ever reaches a log line, its secrets are censored.
const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  'query.sig',
  'query.token',
  '*.apiKey',
  '*.secret',
  '*.token',
];

const MAX_CAUSE_DEPTH = 4;

/** An error as a log line shows it. */
export interface LoggedError {
  type: string;
  message: string;
  code?: string;
  status?: number;
  stack?: string;
  cause?: LoggedError;
}

/**
 * An expected failure (an upstream outage, a disk error: a GatewayError or a
 * system error with a code) is described, with its causes, by type, code and
 * message on one line; stacks say nothing an operator can act on there, so
 * they are written only at debug level. A bug (any other error) keeps its
 * stacks at every level.
 */
function isExpected(error: unknown): boolean {
  return error instanceof GatewayError || (error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string');
}

function describeError(value: unknown, withStack: boolean, depth = 0): LoggedError {
  if (!(value instanceof Error)) return { type: typeof value, message: String(value) };
  const { code } = value as NodeJS.ErrnoException;
  const described: LoggedError = { type: value.name, message: value.message };
  if (typeof code === 'string') described.code = code;
  if (value instanceof GatewayError) described.status = value.status;
  if (withStack && value.stack) described.stack = value.stack;
  if (value.cause !== undefined && depth < MAX_CAUSE_DEPTH) described.cause = describeError(value.cause, withStack, depth + 1);
  return described;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  // The serializer reads the level when it runs, so raising it to debug at
  // run time brings the stacks back.
  let logger: Logger | undefined;
  const base = {
    level: options.level ?? 'info',
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    serializers: { err: (error: unknown) => describeError(error, !isExpected(error) || (logger?.isLevelEnabled('debug') ?? false)) },
  };
  if (options.destination) logger = pino(base, options.destination);
  else if (options.pretty) logger = pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true } } });
  else logger = pino(base, stdoutDestination());
  return logger;
}

/**
 * Standard output, written asynchronously: a line per request costs no
 * write system call of its own, since lines logged while a write is under
 * way go out together in the next. What is still buffered at exit is
 * written then, synchronously.
 */
function stdoutDestination(): DestinationStream {
  const destination = pino.destination({ dest: 1, sync: false });
  process.once('exit', () => {
    try {
      destination.flushSync();
    } catch {
      // stdout closed or full at exit: nothing more can be done.
    }
  });
  return destination;
}

/** A logger that drops everything, for tests and the CLI's quiet paths. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
