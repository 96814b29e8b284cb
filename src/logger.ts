import pino, { type DestinationStream, type Logger as PinoLogger } from 'pino';
import { BatchedStdout } from './batched-stdout.js';
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
const STDOUT_FD = 1;
const STDOUT_BATCH_BYTES = 64 * 1024;
const STDOUT_FLUSH_MS = 1000;
/** pino's levels, most verbose first. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Every character under 0x80: UTF-8 then takes one byte for each. */
function isAscii(text: string): boolean {
  return Buffer.byteLength(text) === text.length;
}

const DEFAULT_LOG_LEVEL: LogLevel = 'info';

/**
 * `LOG_LEVEL` as the logger takes it: one of {@link LOG_LEVELS} in any case
 * (`DEBUG` as operators often write it), `info` when unset or empty.
 * Anything else is refused with a message naming the variable and the levels.
 */
export function logLevelFrom(value: string | undefined): LogLevel {
  const level = value?.trim().toLowerCase() ?? '';
  if (level === '') return DEFAULT_LOG_LEVEL;
  if ((LOG_LEVELS as readonly string[]).includes(level)) return level as LogLevel;
  throw new RangeError(`LOG_LEVEL: ${JSON.stringify(value)} is not a log level; use one of ${LOG_LEVELS.join(', ')}`);
}

/**
 * `LOG_FORMAT` as the logger takes it: true for `pretty` (human-readable
 * lines), false for `json` or when unset or empty, in any case. Anything
 * else is refused, as a bad LOG_LEVEL is, rather than silently logging JSON.
 */
export function prettyLogsFrom(value: string | undefined): boolean {
  const format = value?.trim().toLowerCase() ?? '';
  if (format === '' || format === 'json') return false;
  if (format === 'pretty') return true;
  throw new RangeError(`LOG_FORMAT: ${JSON.stringify(value)} is not a log format; use json (the default) or pretty`);
}

/** The request log's message (src/routes/request-log.ts). */
export const REQUEST_LINE = 'request';

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
  else {
    const { destination, flushNow } = stdoutDestination();
    const hooks = {
      logMethod(this: Logger, args: Parameters<Logger['info']>, method: (...args: unknown[]) => void) {
        method.apply(this, args);
        // Only request lines wait for a batch, and they are written past this hook (infoLineWriter).
        flushNow();
      },
    };
    logger = pino({ ...base, hooks }, destination);
  }
  return logger;
}

/**
 * Standard output. Request lines are written in batches, as nginx buffers its
 * access log: once 64 KiB have gathered or a second has passed, so a line per
 * request costs no write of its own. Any other line goes out at once, with
 * what was buffered before it, and so does what is left at exit.
 */
function stdoutDestination(): { destination: DestinationStream; flushNow: () => void } {
  // Node opens a pipe on fd 1 as process.stdout in non-blocking mode (libuv's
  // uv_pipe_open): a log reader that stops reading then costs lines, never the gateway.
  void process.stdout;
  const destination = new BatchedStdout(STDOUT_FD, STDOUT_BATCH_BYTES);
  const flushNow = () => destination.flush();
  setInterval(flushNow, STDOUT_FLUSH_MS).unref();
  process.once('exit', flushNow);
  return { destination, flushNow };
}

/**
 * Writes lines at `info` whose fields arrive already serialised, through the
 * logger's own stream and in the shape pino gives its lines
 * (`{"level":30,"time":…,"pid":…,"hostname":…,<fields>,"msg":…}`): for the
 * request log, whose fields are fixed and safe, pino's generic serialiser
 * costs about a sixth of a memory hit. Nothing is written while the level is
 * above info. A caller that knows its fields to be ASCII says so
 * (`fieldsAreAscii`): standard output then copies the line as it is. A
 * caller that has just read the clock gives its `time` (milliseconds), which
 * saves reading it again.
 */
export function infoLineWriter(logger: Logger): (fields: string, message: string, fieldsAreAscii?: boolean, time?: number) => void {
  const stream = (logger as unknown as Record<symbol, DestinationStream>)[pino.symbols.streamSym]!;
  const bindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? '';
  // Standard output's batches take an ASCII line as it is (BatchedStdout.writeAscii): when the host name is ASCII too.
  const asciiStream = stream instanceof BatchedStdout && isAscii(bindings) ? stream : undefined;
  let messageIsAscii = true;
  // Nearly every line has the message, and many the millisecond, of the one
  // before: each made into text once (a time is a double, slow to print).
  let lastMessage = '';
  let lastQuoted = '""';
  let lastTime = -1;
  let lastTimeText = '';
  // pino's own check costs several lookups per line: asked once, and again whenever a level changes.
  let infoEnabled = logger.isLevelEnabled('info');
  logger.on('level-change', () => {
    infoEnabled = logger.isLevelEnabled('info');
  });
  return (fields, message, fieldsAreAscii = false, time = Date.now()) => {
    if (!infoEnabled) return;
    if (message !== lastMessage) {
      lastMessage = message;
      lastQuoted = JSON.stringify(message);
      messageIsAscii = isAscii(lastQuoted);
    }
    if (time !== lastTime) {
      lastTime = time;
      lastTimeText = String(time);
    }
    const line = `{"level":30,"time":${lastTimeText}${bindings},${fields},"msg":${lastQuoted}}\n`;
    if (asciiStream && fieldsAreAscii && messageIsAscii) asciiStream.writeAscii(line);
    else stream.write(line);
  };
}

/** A logger that drops everything, for tests and the CLI's quiet paths. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
