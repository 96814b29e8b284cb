import { hostname } from 'node:os';
import { RequestError, getRequestListener } from '@hono/node-server';
import { readFileSync } from 'node:fs';
import { createServer, maxHeaderSize, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { systemClock, type Clock } from './clock.js';
import {
  DEFAULT_HEADERS_TIMEOUT_MS,
  DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type GatewayConfig,
} from './config/index.js';
import { createConnectionGuard, type ConnectionPressure } from './connection-guard.js';
import { createGateway, type Gateway } from './gateway.js';
import { BadRequestError, GatewayError, errorMessage, errorResponse } from './errors.js';
import { closeGently, closeGentlyAfterLastAnswer, isLingering } from './http/lingering-close.js';
import { headerCount } from './http/raw-headers.js';
import { pathOfTarget } from './http/target-path.js';
import { adapterTakesHost, asUrlHost, isParsableHost, withoutEmptyPort } from './http/request-host.js';
import type { Logger } from './logger.js';
import { openMemoryHitDoor } from './memory-hit-door.js';
import type { MemoryHits } from './routes/memory-hits.js';
import { answeredBeforeItsRoute, requestIdFrom, type RequestReporter } from './routes/request-log.js';
import { rawJsonAnswer, writeJsonError } from './json-error-answers.js';
import { refusalReports, requestLineOf, type RawRefusal, type RefusalReports } from './refused-requests.js';
import { closedBeforeItsTurn } from './http/response-closed.js';

export interface RunningServer {
  url: string;
  gateway: Gateway;
  /**
   * Stops accepting connections, lets responses in flight finish for up to
   * `graceMs`, then cuts what is left. Downloads that finish within `graceMs`
   * are stored; those still under way then are abandoned (nothing of them
   * stored). Then closes the index and the audit trail.
   */
  close(graceMs?: number): Promise<void>;
  /** Ends the grace period of a `close` now (or of one still to come): a second SIGTERM. */
  hurry(): void;
}

const DEFAULT_GRACE_MS = 10_000;
const IDLE_SWEEP_MS = 100;
// At the end of the grace period: how long the answers of requests whose downloads were abandoned have to go out.
const ANSWERS_FLUSH_MS = 100;
const PRESSURE_LOG_INTERVAL_MS = 60_000;
// Liveness must be answerable even when every connection is busy (README "Operations").
const ALWAYS_SERVED = new Set(['/healthz']);

/** How many connections the server holds and how long it waits for slow clients. */
export type ConnectionLimits = Pick<
  GatewayConfig['listen'],
  'maxConnections' | 'headersTimeoutMs' | 'requestTimeoutMs' | 'keepAliveTimeoutMs'
>;

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  headersTimeoutMs: DEFAULT_HEADERS_TIMEOUT_MS,
  requestTimeoutMs: DEFAULT_REQUEST_TIMEOUT_MS,
  keepAliveTimeoutMs: DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
};

/** The soft open-file limit of this process, from /proc (Linux); undefined elsewhere. */
export function openFileLimit(): number | undefined {
  try {
    const match = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `listen.max_connections` when the config leaves it out: half the open-file
 * limit, so upstream sockets, cache files and the index keep descriptors of
 * their own, and at most {@link DEFAULT_MAX_CONNECTIONS}.
 */
export function defaultMaxConnections(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_MAX_CONNECTIONS;
  return Math.max(1, Math.min(DEFAULT_MAX_CONNECTIONS, Math.floor(limit / 2)));
}

/** Connections over the cap that may still get a quick 503 (or /healthz) before they are closed. */
function headroomFor(maxConnections: number): number {
  return Math.max(4, Math.ceil(maxConnections / 16));
}

// RFC 9112 3.2: a request target has no fragment (RFC 9110 7.1: a client leaves it out).
const MALFORMED_TARGET = { error: 'Bad Request', message: 'Malformed request target' };

/**
 * @hono/node-server refuses some request targets before the app sees them (not
 * origin-form, a backslash in the path) and would answer a bare 400: answer in
 * the contract's JSON shape instead.
 */
function adapterErrorResponse(error: unknown): Response {
  if (error instanceof RequestError) return errorResponse(new BadRequestError(MALFORMED_TARGET.message));
  return errorResponse(new GatewayError(500, 'Internal Server Error', 'Internal error'));
}

const INVALID_HOST = { error: 'Bad Request', message: 'Invalid Host header' };

const VERSION_NOT_SUPPORTED = { error: 'HTTP Version Not Supported', message: 'Only HTTP/1.0 and HTTP/1.1 are served' };

const PRI_OVER_HTTP1 = /^PRI [^ \r\n]+ HTTP\/1\.[01]\r?\n/;

// A request line whose version token is HTTP/1.0 or HTTP/1.1, whatever follows it.
const HTTP1_VERSION_TOKEN = /^[^ \r\n]+ [^ \r\n]+ HTTP\/1\.[01](?![0-9])/;

// RFC 9112 2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, at the end of the request line (or of the packet).
const WELL_FORMED_VERSION = /^[^ \r\n]+ [^ \r\n]+ HTTP\/[0-9]\.[0-9](?:\r|\n|$)/;

const SLASH = 0x2f;
// An absolute-form target (RFC 9112 3.2.2) with userinfo: RFC 9110 4.2.4 says to treat it as an
// error, and it would carry a password or token into the gateway (a web Request refuses it, too).
const TARGET_WITH_USERINFO = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*@/;

// An absolute-form target (RFC 9112 3.2.2) of an http or https URI, its authority not empty (RFC 9110 4.2.1, 4.2.2).
const ABSOLUTE_HTTP_TARGET = /^(https?):\/\/([^/?#]+)(?:[/?]|$)/i;

/**
 * An absolute-form target as the adapter takes it, its scheme in lower case
 * (case-insensitive, RFC 3986 3.1); undefined when it is no http or https URI
 * with a host a URL can be made of (another scheme, an empty host, a bad port).
 */
function absoluteHttpTarget(target: string): string | undefined {
  const match = ABSOLUTE_HTTP_TARGET.exec(target);
  if (!match || !isParsableHost(match[2]!)) return undefined;
  const scheme = match[1]!;
  const lower = scheme.toLowerCase();
  return scheme === lower ? target : lower + target.slice(scheme.length);
}

// RFC 9110 5.6.2: a method is a token.
const REQUEST_LINE_START = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ /;

/**
 * Fields a request head may have. Node keeps the first `maxHeadersCount` and
 * drops the rest without a word (an `If-Match`, a second `Host`), so it is
 * told one more, and a head that reaches it is refused whole.
 */
const MAX_HEADER_FIELDS = 1000;
const TOO_MANY_FIELDS = { error: 'Request Header Fields Too Large', message: `More than ${MAX_HEADER_FIELDS} header fields` };

/**
 * What a request the parser refused is answered: 414 when the request line
 * alone is longer than the header limit, 501 for a method Node's parser does
 * not know, 505 for an HTTP version other than 1.0 and 1.1 (RFC 9110
 * 15.5.15, 9.1, 15.6.6), 400 for anything else malformed, a version token
 * that is none (RFC 9112 2.3) included. Only the
 * refused packet is at hand (Node reads the socket natively), so a request
 * line that came in several TCP segments is seen in part, and gets 431.
 */
function clientErrorAnswer(error: NodeJS.ErrnoException, raw: string): { status: string; message: string } {
  const requestLine = REQUEST_LINE_START.test(raw);
  switch (error.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { status: '408 Request Timeout', message: 'The request was not received in time' };
    case 'HPE_HEADER_OVERFLOW': {
      const lineEnd = raw.indexOf('\n');
      return requestLine && (lineEnd === -1 ? raw.length : lineEnd) > maxHeaderSize
        ? { status: '414 URI Too Long', message: 'The request target is too long' }
        : { status: '431 Request Header Fields Too Large', message: 'Request headers are too large' };
    }
    case 'HPE_INVALID_METHOD':
      if (requestLine) return { status: '501 Not Implemented', message: 'Unknown request method' };
      break;
    // HTTP/2's connection preface, `PRI * HTTP/2.0` (RFC 9113 3.4), from a client that assumed h2.
    case 'HPE_PAUSED_H2_UPGRADE':
    case 'HPE_INVALID_VERSION':
      // llhttp takes PRI only with HTTP/2.0: with an HTTP/1.x version it is a method nobody here knows.
      if (PRI_OVER_HTTP1.test(raw)) return { status: '501 Not Implemented', message: 'Unknown request method' };
      // llhttp also says this of what follows the version (a bare LF, a space): 1.0 and 1.1 are served, so that is only malformed.
      if (HTTP1_VERSION_TOKEN.test(raw)) return { status: '400 Bad Request', message: 'Malformed HTTP request' };
      // `HTTP/01.1`, `HTTP/1.10`: no version at all, so the request line is malformed.
      if (!WELL_FORMED_VERSION.test(raw)) return { status: '400 Bad Request', message: 'Malformed HTTP request' };
      return { status: `505 ${VERSION_NOT_SUPPORTED.error}`, message: VERSION_NOT_SUPPORTED.message };
  }
  return { status: '400 Bad Request', message: 'Malformed HTTP request' };
}

/**
 * Node's HTTP parser answers a request it cannot parse (a target that is not
 * origin-form, headers over the size limit) with a bare status line: write the
 * contract's JSON error instead, then close, as Node itself would. A request
 * pipelined behind one still being answered is refused after that answer
 * (RFC 9112 9.3.2: answers come in request order), not in its place.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Duplex, refusals: RefusalReports): void {
  // The last answer is out and the connection closes: what the client still sends is ignored (RFC 9112 9.6), not refused.
  if (isLingering(socket) || error.code === 'HPE_CLOSED_CONNECTION') return;
  const timedOut = error.code === 'ERR_HTTP_REQUEST_TIMEOUT';
  // A connection that never sent a byte (a browser's preconnect, an idle flood) has asked nothing to answer.
  if (error.code === 'ECONNRESET' || !socket.writable || (timedOut && (socket as Socket).bytesRead === 0)) {
    socket.destroy();
    return;
  }
  // One refusal a connection: Node's timeout check calls again while a refusal waits for the answers before it.
  if (refusing.has(socket)) return;
  const parsed = error as NodeJS.ErrnoException & { rawPacket?: Buffer; bytesParsed?: number };
  const raw = refusedRequest(parsed.rawPacket?.toString('latin1') ?? '', parsed.bytesParsed);
  const { status, message } = clientErrorAnswer(error, raw);
  // The parser refused the headers too, so the caller's X-Request-Id is not taken: a new one. A HEAD gets the head alone.
  const requestId = requestIdFrom(undefined);
  const answer = rawJsonAnswer(status, { error: status.slice(4), message }, requestId, '', raw.startsWith('HEAD '));
  refusing.add(socket);
  const refusal = refusals.raw({
    ...requestLineOf(raw),
    requestId,
    status: Number(status.slice(0, 3)),
    clientAddress: (socket as Socket).remoteAddress,
  });
  refuseAfterAnswers(socket, answer, refusal);
}

/**
 * Writes a refusal and closes once every answer Node made on the connection
 * before it is done: an answer can be written out and still hold the ones
 * queued behind it until its 'finish' (a memory hit ends at once). When the
 * refused bytes are the latest request's own (its body cut short, malformed
 * or timed out), that request can take the refusal only unanswered, after the
 * answers before it, and its route's line says the refusal's id and status
 * (`answeredBeforeItsRoute`); the refusal of a request of its own is
 * reported through `refusal.ended`.
 */
function refuseAfterAnswers(socket: Duplex, answer: Parameters<typeof closeGently>[1], refusal: RawRefusal): void {
  const last = latestAnswer.get(socket);
  if (last === undefined) {
    closeGently(socket, answer);
    // After the 'close' listeners of the answer before it, which write its line: the lines come in the answers' order.
    setImmediate(refusal.ended, 'sent');
    return;
  }
  let waitFor = last;
  let refused = refusal;
  if (!last.req.complete) {
    if (last.headersSent) {
      socket.destroy();
      return;
    }
    const current = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
    if (!current || current === last) {
      answeredBeforeItsRoute(last.req, refusal);
      closeGently(socket, answer);
      return;
    }
    waitFor = current;
    // The refused bytes are the latest request's own: its route's line reports it, whatever becomes of the refusal.
    refused = { ...refusal, ended: () => {} };
  }
  // After noteAnswer's own listener: the answer is no longer the latest by then.
  waitFor.once('close', () => {
    if (waitFor.writableFinished) {
      refuseAfterAnswers(socket, answer, refused);
      return;
    }
    socket.destroy();
    // After the other 'close' listeners, as above.
    setImmediate(refused.ended, 'unanswered');
  });
}

// Connections whose request the parser refused, the refusal written or waiting for the answers before it.
const refusing = new WeakSet<Duplex>();

// The latest answer Node made on each connection, until it is done: a refusal goes after it (RFC 9112 9.3.2).
const latestAnswer = new WeakMap<Duplex, ServerResponse>();

function noteAnswer(request: IncomingMessage, response: ServerResponse): void {
  const socket = request.socket;
  latestAnswer.set(socket, response);
  if (response.socket === null) noteQueued(socket, response);
  // Not kept past its end: an idle keep-alive connection holds no answer.
  response.once('close', () => {
    if (latestAnswer.get(socket) === response) latestAnswer.delete(socket);
  });
}

// Answers queued behind another on their connection (pipelined), until Node gives them the connection.
const queuedAnswers = new WeakMap<Duplex, Set<ServerResponse>>();

/**
 * Node gives a queued answer its connection once the answers before it are
 * done; when the connection closes first (the client half-closed, or went
 * away), it never does, and the answer never closes: what it holds to write
 * (a recording's open file, a download's reader) would stay held until the
 * garbage collector found it, and its log line would never be written. It
 * is closed here as an answer cut short.
 */
function noteQueued(socket: Duplex, response: ServerResponse): void {
  const answers = queuedAnswers.get(socket) ?? watchQueue(socket);
  answers.add(response);
  response.once('socket', () => answers.delete(response));
}

function watchQueue(socket: Duplex): Set<ServerResponse> {
  const answers = new Set<ServerResponse>();
  queuedAnswers.set(socket, answers);
  socket.once('close', () => {
    for (const answer of answers) closeUnsent(answer);
    answers.clear();
  });
  return answers;
}

function closeUnsent(response: ServerResponse): void {
  closedBeforeItsTurn(response);
  response.destroy();
  response.emit('close');
}

/**
 * The refused request's own bytes. The packet may begin with requests the
 * parser took before it (pipelining): what follows the last blank line before
 * the point where the parser stopped is the refused one's request line.
 */
function refusedRequest(packet: string, bytesParsed: number | undefined): string {
  const stop = Math.min(bytesParsed ?? packet.length, packet.length);
  const crlf = packet.lastIndexOf('\r\n\r\n', stop - 1);
  const lf = packet.lastIndexOf('\n\n', stop - 1);
  const start = Math.max(crlf === -1 ? 0 : crlf + 4, lf === -1 ? 0 : lf + 2);
  return start < packet.length && REQUEST_LINE_START.test(packet.slice(start)) ? packet.slice(start) : packet;
}

/**
 * RFC 9110 10.1.1: an expectation other than `100-continue` is answered 417,
 * here in the JSON error shape (Node's own 417 has no body).
 */
function refuseExpectation(request: IncomingMessage, response: ServerResponse, refusals: RefusalReports): void {
  const answer = { error: 'Expectation Failed', message: 'The only expectation served is "100-continue"' };
  refusals.response(request, response, writeJsonError(request, response, 417, answer));
}

/**
 * Node's own handling of `Expect: 100-continue`, but for an answer queued
 * behind another on the connection (a pipelined request): Node writes that
 * 100 after the head its listener writes at once, inside the answer. The
 * 100 is left out there (RFC 9110 10.1.1: a client waits for it a while,
 * then sends any content anyway).
 */
function continueUnlessQueued(this: Server, request: IncomingMessage, response: ServerResponse): void {
  // Node gives an answer its socket once every answer before it is done.
  if (response.socket !== null) response.writeContinue();
  this.emit('request', request, response);
}

/** What Node's own 'drain' listener does for a connection it serves: the answer being written may go on. */
function drainAnswer(socket: Duplex): void {
  const answer = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
  if (answer?.writableNeedDrain) answer.emit('drain');
}

// Every method some route takes.
const SERVER_METHODS = 'GET, HEAD, POST, DELETE, OPTIONS';

const CONNECT_REFUSED = { error: 'Method Not Allowed', message: 'CONNECT is not served: the gateway is no forward proxy' };

/**
 * Node hands a CONNECT request to the server's 'connect' listener, and
 * without one closes the connection unanswered: it gets a JSON 405 here
 * instead, as every other method no route takes, after the answers to any
 * requests pipelined before it.
 */
function refuseConnect(request: IncomingMessage, socket: Duplex, refusals: RefusalReports): void {
  // Node took its own listeners off the connection to hand it over as a tunnel: without these, a client's
  // reset is an uncaught error that ends the process, and an answer still being written waits for ever.
  socket.on('error', () => socket.destroy());
  socket.on('drain', () => drainAnswer(socket));
  const requestId = requestIdFrom(request.headers['x-request-id'] as string | undefined);
  const refusal = refusals.raw({
    method: 'CONNECT',
    target: request.url ?? '',
    requestId,
    status: 405,
    clientAddress: (socket as Socket).remoteAddress,
  });
  refuseAfterAnswers(socket, rawJsonAnswer('405 Method Not Allowed', CONNECT_REFUSED, requestId, `Allow: ${SERVER_METHODS}\r\n`), refusal);
}

/**
 * What is answered before any route, in one check per request:
 * - A head of more than {@link MAX_HEADER_FIELDS} fields is 431 (RFC 6585
 *   5), whatever its size: Node would have dropped those past the limit.
 * - RFC 9112 3.2: an HTTP/1.1 request without a Host, or with more than one,
 *   is 400; one whose major version is not 1 is 505 (RFC 9110 15.6.6: Node's
 *   parser takes `HTTP/0.9` and `HTTP/2.0` as if they were 1.x). Node would
 *   answer the first with a bare status line and serve the second; this says
 *   both in the JSON error shape.
 * - RFC 9110 4.2.4: a target in absolute form with credentials is 400, and
 *   so never reaches a route or a log; so is one of another scheme than
 *   http or https, or whose host is empty or no URL can be made of (RFC
 *   9110 4.2.1), each with its X-Request-Id (the adapter refused them
 *   without one).
 * - RFC 9112 3.2: a Host no URL can be made of is 400 (the adapter takes
 *   some unparsed, and a route reading a body failed on them with a 500
 *   whose log line held the target), and so is one whose name the URL parser
 *   changes (percent-encoded, international), which the adapter refused
 *   without an X-Request-Id. An empty port is dropped first (RFC 3986 6.2.3).
 * - A backslash in the path is 400 here, with its X-Request-Id, as the
 *   adapter refused it without one.
 * - RFC 9110 9.3.7: `OPTIONS *` asks about the server, not a resource (the
 *   adapter would refuse its target); any other method with `*` is 400.
 * - RFC 9112 6.1: an HTTP/1.0 request with Transfer-Encoding has faulty
 *   framing; it is answered, then its connection closed.
 * Each answer made here is reported as a routed request is (`refusals`).
 */
function answerBeforeRoutes(listener: RequestListener, refusals: RefusalReports): RequestListener {
  const refuse = (
    request: IncomingMessage,
    response: ServerResponse,
    status: number,
    answer: { error: string; message: string },
    headers?: Record<string, string>,
  ): void => refusals.response(request, response, writeJsonError(request, response, status, answer, headers));
  return function beforeRoutes(request, response) {
    if (request.rawHeaders.length > 2 * MAX_HEADER_FIELDS) {
      response.shouldKeepAlive = false;
      return refuse(request, response, 431, TOO_MANY_FIELDS, { Connection: 'close' });
    }
    const hosts = headerCount(request.rawHeaders, 'host');
    const http1 = request.httpVersionMajor === 1;
    if (http1 && (hosts === 1 || (hosts === 0 && request.httpVersionMinor === 0))) {
      const target = request.url ?? '';
      if (request.httpVersionMinor === 0 && request.headers['transfer-encoding'] !== undefined) response.shouldKeepAlive = false;
      if (target.charCodeAt(0) !== SLASH && TARGET_WITH_USERINFO.test(target)) {
        return refuse(request, response, 400, { error: 'Bad Request', message: 'A request target must not carry credentials' });
      }
      // A backslash in the path: the adapter refuses it (WHATWG's URL parser would read it as `/`).
      if (target.includes('#') || pathOfTarget(target).includes('\\')) return refuse(request, response, 400, MALFORMED_TARGET);
      const host = request.headers.host;
      if (host && target.charCodeAt(0) === SLASH) {
        const taken = withoutEmptyPort(host);
        if (taken !== host) request.headers.host = taken;
        if (!adapterTakesHost(taken)) return refuse(request, response, 400, INVALID_HOST);
      }
      if (target === '*') {
        if (request.method !== 'OPTIONS') return refuse(request, response, 400, MALFORMED_TARGET);
        const requestId = requestIdFrom(request.headers['x-request-id'] as string | undefined);
        response.writeHead(204, { Allow: SERVER_METHODS, 'X-Request-Id': requestId });
        response.end();
        refusals.response(request, response, requestId);
        return;
      }
      if (target.charCodeAt(0) !== SLASH) {
        const absolute = absoluteHttpTarget(target);
        if (absolute === undefined) return refuse(request, response, 400, MALFORMED_TARGET);
        request.url = absolute;
      }
      listener(request, response);
      return;
    }
    response.shouldKeepAlive = false;
    if (!http1) return refuse(request, response, 505, VERSION_NOT_SUPPORTED, { Connection: 'close' });
    const message = hosts === 0 ? 'Missing Host header' : 'More than one Host header';
    refuse(request, response, 400, { error: 'Bad Request', message }, { Connection: 'close' });
  };
}

/** Logs what the connection cap did, at most once a minute, with counts since the last line. */
function pressureLogger(logger: Logger, clock: Clock, maxConnections: number): (pressure: ConnectionPressure) => void {
  const counts: Record<ConnectionPressure, number> = { reclaimed: 0, stalled: 0, refused: 0, dropped: 0 };
  let lastLoggedAt = Number.NEGATIVE_INFINITY;
  return (pressure) => {
    counts[pressure]++;
    const now = clock.now();
    if (now - lastLoggedAt < PRESSURE_LOG_INTERVAL_MS) return;
    lastLoggedAt = now;
    logger.warn(
      { maxConnections, idleClosed: counts.reclaimed, stalledClosed: counts.stalled, refused: counts.refused, dropped: counts.dropped },
      'connection limit reached: closing the longest-idle connections, then those whose clients stopped reading, refusing new ones while all are busy',
    );
    counts.reclaimed = counts.stalled = counts.refused = counts.dropped = 0;
  };
}

export interface HttpServerOptions {
  limits?: ConnectionLimits;
  /** Where the connection cap reports that it acts. */
  logger?: Logger;
  /** Puts a listener in front of the app's, which it hands what it does not answer (`Gateway.answeringMemoryHitsFirst`). */
  wrapListener?: (app: RequestListener) => RequestListener;
  /** Answers these from the connections' bytes, before Node's parser (src/memory-hit-door.ts). */
  memoryHits?: MemoryHits;
  clock?: Clock;
  /** How long an answer's client may take none of its bytes before its connection may make room for a new one; default 5 s. */
  stalledAfterMs?: number;
  /** Reports the requests answered before any route, as the app reports its own (`Gateway.report`); none without it. */
  report?: RequestReporter;
}

/**
 * The Node HTTP server for the app, with every error in the contract's JSON
 * shape, also those refused before the app runs, a cap on open connections
 * and timeouts for clients that send slowly. It does not listen yet.
 */
export function createHttpServer(
  app: { fetch: (request: Request, env: never) => Response | Promise<Response> },
  hostname: string,
  options: HttpServerOptions = {},
): Server {
  const limits = options.limits ?? DEFAULT_CONNECTION_LIMITS;
  const maxConnections = limits.maxConnections ?? defaultMaxConnections(openFileLimit());
  const guard = createConnectionGuard({
    maxConnections,
    headroom: headroomFor(maxConnections),
    alwaysServed: ALWAYS_SERVED,
    ...(options.stalledAfterMs === undefined ? {} : { stalledAfterMs: options.stalledAfterMs }),
    ...(options.logger ? { onPressure: pressureLogger(options.logger, options.clock ?? systemClock, maxConnections) } : {}),
  });
  // serve() takes no errorHandler; getRequestListener does.
  const appListener = getRequestListener(app.fetch as Parameters<typeof getRequestListener>[0], {
    // What a request without a Host (HTTP/1.0), or with an empty one, is taken to have asked.
    hostname: asUrlHost(hostname),
    errorHandler: adapterErrorResponse,
  });
  const listener = options.wrapListener ? options.wrapListener(appListener) : appListener;
  const refusals = refusalReports(options.report, options.clock ?? systemClock);
  const server = createServer(
    {
      // Both bound receiving the request only, never sending the response: a
      // long download to a slow client is not cut.
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      // Node checks the two timeouts every 30 s by default, too coarse for a 10 s limit.
      connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(limits.headersTimeoutMs / 4))),
      // Checked below instead, so the 400 is in the JSON error shape.
      requireHostHeader: false,
    },
    guard.wrap(answerBeforeRoutes(listener, refusals)),
  );
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.maxHeadersCount = MAX_HEADER_FIELDS + 1;
  server.on('connection', guard.admit);
  server.on('connection', closeGentlyAfterLastAnswer);
  server.prependListener('request', noteAnswer);
  server.prependListener('checkExpectation', noteAnswer);
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => answerClientError(error, socket, refusals));
  server.on('checkExpectation', (request: IncomingMessage, response: ServerResponse) => refuseExpectation(request, response, refusals));
  server.on('checkContinue', continueUnlessQueued);
  server.on('connect', (request: IncomingMessage, socket: Duplex) => refuseConnect(request, socket, refusals));
  // What server.close() and the shutdown's sweep call: every connection passes the guard, which knows which are idle.
  server.closeIdleConnections = guard.closeIdle;
  if (options.memoryHits) openMemoryHitDoor(server, options.memoryHits, guard);
  return server;
}

/**
 * Where the other replicas reach this one when `cluster.advertise_url` is not
 * set: the listen address, or the host name when it listens on every address.
 */
export function advertisedUrl(listenHost: string, port: number): string {
  const everywhere = listenHost === '' || listenHost === '0.0.0.0' || listenHost === '::';
  const host = everywhere ? hostname() : listenHost;
  return `http://${asUrlHost(host)}:${port}`;
}

const HOST_ERRORS = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EADDRNOTAVAIL']);
const PORT_ERRORS = new Set(['EADDRINUSE', 'EACCES']);

/** Why the server could not listen, naming the setting to change (README "Configuration": HOST and PORT override them). */
function listenError(error: unknown, listen: { host: string; port: number }): unknown {
  const code = (error as NodeJS.ErrnoException).code ?? '';
  const reason = errorMessage(error);
  if (HOST_ERRORS.has(code)) {
    return new Error(`listen.host (or HOST) ${JSON.stringify(listen.host)} is no address of this machine: ${reason}`, { cause: error });
  }
  if (PORT_ERRORS.has(code)) {
    const why = code === 'EADDRINUSE' ? 'is in use' : 'needs privileges this process lacks';
    return new Error(`listen.port (or PORT) ${listen.port} on ${listen.host} ${why}: ${reason}`, { cause: error });
  }
  return error;
}

/** Loads the cache, then listens on the configured host and port. */
export async function startServer(config: GatewayConfig, options: { logger: Logger; clock?: Clock }): Promise<RunningServer> {
  const gateway = await createGateway({ config, logger: options.logger, ...(options.clock ? { clock: options.clock } : {}) });
  const limit = openFileLimit();
  const maxConnections = config.listen.maxConnections ?? defaultMaxConnections(limit);
  if (limit !== undefined && maxConnections + headroomFor(maxConnections) > limit * 0.8) {
    options.logger.warn(
      { maxConnections, openFileLimit: limit },
      'listen.max_connections leaves few file descriptors for upstream and cache files; lower it or raise the open-file limit',
    );
  }
  let server: Server;
  try {
    server = await new Promise<Server>((resolve, reject) => {
      const started = createHttpServer(gateway.app, config.listen.host, {
        wrapListener: gateway.answeringMemoryHitsFirst,
        memoryHits: gateway.memoryHits,
        report: gateway.report,
        limits: { ...config.listen, maxConnections },
        logger: options.logger,
        ...(options.clock ? { clock: options.clock } : {}),
      });
      started.once('error', reject);
      started.listen(config.listen.port, config.listen.host, () => resolve(started));
    });
  } catch (error) {
    await gateway.close();
    throw listenError(error, config.listen);
  }
  const { address, port } = server.address() as AddressInfo;
  const host = asUrlHost(address);
  const httpServer = server;
  try {
    await gateway.joinCluster(config.cluster?.advertiseUrl ?? advertisedUrl(config.listen.host, port));
  } catch (error) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await gateway.close();
    throw error;
  }

  let hurried = false;
  let endGrace: (() => void) | undefined;
  return {
    url: `http://${host}:${port}`,
    gateway,
    async close(graceMs = DEFAULT_GRACE_MS) {
      const graceEndsAt = performance.now() + graceMs;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      httpServer.closeIdleConnections();
      // server.close() closes only the connections idle at that moment: a keep-alive
      // connection whose response ends during the grace period would stay open until
      // keepAliveTimeout and hold up the exit for nothing.
      const sweep = setInterval(() => httpServer.closeIdleConnections(), IDLE_SWEEP_MS);
      const grace = new Promise<'timeout'>((resolve) => {
        const timer = setTimeout(resolve, graceMs, 'timeout').unref();
        endGrace = () => {
          clearTimeout(timer);
          resolve('timeout');
        };
        if (hurried) endGrace();
      });
      if ((await Promise.race([closed, grace])) === 'timeout') {
        // Downloads first: a request still waiting for one's head is answered 503 (and so
        // says the log), rather than cut off with no answer at all; then what is left closes.
        gateway.abandonDownloads();
        await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, ANSWERS_FLUSH_MS).unref())]);
        options.logger.warn(
          { graceMs, ...(hurried ? { endedAfterMs: Math.round(performance.now() - (graceEndsAt - graceMs)) } : {}) },
          hurried
            ? 'grace period ended early (a second signal); closing the remaining connections'
            : 'grace period over; closing the remaining connections',
        );
        httpServer.closeAllConnections();
        await closed;
      }
      clearInterval(sweep);
      // Downloads no client reads any more (a prefetch, a listener gone) have what is left of the grace period, then are abandoned.
      await gateway.close({ graceMs: hurried ? 0 : Math.max(0, graceEndsAt - performance.now()) });
    },
    hurry() {
      hurried = true;
      endGrace?.();
      // Past the connections already: what close still waits for is downloads.
      gateway.abandonDownloads();
    },
  };
}
