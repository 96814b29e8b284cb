import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { bytesTaken, bytesWaiting } from './http/handle-write.js';
import { whenClosed } from './http/response-closed.js';
import { writeJsonError } from './json-error-answers.js';
import { pathOfTarget } from './http/target-path.js';
import { LinkedOrder, type OrderLinks } from './linked-order.js';

/** What the guard did to stay under its cap. */
export type ConnectionPressure =
  /** The connection idle longest was closed to make room for a new one. */
  | 'reclaimed'
  /** With none idle, the connection whose answer had made no progress longest (a client that stopped reading) was closed instead. */
  | 'stalled'
  /** Every connection had a request in flight: the new one gets a quick 503 and is closed. */
  | 'refused'
  /** Over the cap and its headroom too: the new connection was closed unanswered. */
  | 'dropped';

export interface ConnectionGuardOptions {
  /** Connections served at once. */
  maxConnections: number;
  /** Connections beyond the cap that may still get one quick answer before they are closed. */
  headroom: number;
  /** Paths served as usual on a connection over the cap (liveness probes), then the connection closes. */
  alwaysServed: ReadonlySet<string>;
  /** An answer whose client has taken none of its bytes for this long may be closed to make room; default 5 s. */
  stalledAfterMs?: number;
  onPressure?(pressure: ConnectionPressure): void;
}

export interface ConnectionGuard {
  /** For the server's 'connection' event. */
  admit(socket: Socket): void;
  /** Wraps the server's request listener. */
  wrap(listener: RequestListener): RequestListener;
  /** True for a connection over the cap, which gets one quick answer (`wrap` gives it) and is closed. */
  isOverCap(socket: Socket): boolean;
  /** For a request answered without the listener (src/memory-hit-door.ts): it began. */
  requestStarted(socket: Socket): void;
  /** ...and its answer is written: the connection is idle again unless it has others. */
  requestEnded(socket: Socket): void;
  /** Open connections, by state. */
  counts(): { idle: number; busy: number; overCap: number };
  /**
   * Closes the connections with no request in flight and nothing left to
   * send (those over the cap that have sent none too), for
   * `server.closeIdleConnections` (a shutdown's): Node's own also
   * closes one whose answer it was handed whole while its client has not
   * taken it all, cutting that answer.
   */
  closeIdle(): void;
}

const DEFAULT_STALLED_AFTER_MS = 5_000;

/**
 * A connection that has had a request: how many are in flight, and where its
 * answers stood when they were last seen to move. Kept until it closes, so
 * that a request costs no entry of its own: a Map entry made and dropped, and
 * a Set member taken and put back, per request cost a memory hit about 1,000
 * instructions (`npm run bench:instructions`) and 300 bytes for the GC.
 */
interface Usage extends OrderLinks<Usage> {
  socket: Socket;
  requests: number;
  /** bytesTaken(socket) when last seen to move, or NOTHING_WAITING. */
  bytesTaken: number;
  since: number;
}

/**
 * A request began with nothing waiting to be sent: any bytes waiting later
 * were written since, which look() counts as moving, as it would have seen
 * the bytes taken change. Not read per request when nothing waits.
 */
const NOTHING_WAITING = -1;

const AT_CAPACITY = {
  error: 'Service Unavailable',
  message: 'The gateway is at its connection limit; retry shortly',
};

/**
 * Caps the connections a server holds, so that a flood of idle connections
 * cannot use up the process's file descriptors (after which every new
 * connection, health checks included, is reset). Node's own
 * `server.maxConnections` closes new connections unanswered; this guard
 * instead makes room: a new connection over the cap takes the place of, in
 * this order,
 * - the keep-alive connection idle longest between requests;
 * - the connection whose answer has stalled longest: bytes wait to be sent
 *   that its client has taken none of for `stalledAfterMs` (a client that
 *   stopped reading, or pipelines requests and never reads the answers), else
 *   a few such clients would hold every connection and lock everyone out;
 * - the connection that has been open longest without a whole request.
 * Only when every connection has a request in flight that is moving is a new
 * one answered `503` (liveness paths as usual) and closed, up to `headroom`
 * such connections at once; beyond that, new connections are closed.
 */
export function createConnectionGuard(options: ConnectionGuardOptions): ConnectionGuard {
  // Both keep the order connections went idle in: the first of each is the one idle longest.
  const idleBetweenRequests = new LinkedOrder<Usage>();
  const idleBeforeRequest = new Set<Socket>();
  const used = new Map<Socket, Usage>();
  let busy = 0;
  const overCap = new Set<Socket>();
  // Over the cap and getting their one answer: the rest of them a shutdown may close.
  const answeringOverCap = new Set<Socket>();
  const stalledAfterMs = options.stalledAfterMs ?? DEFAULT_STALLED_AFTER_MS;
  // Runs while some connection is busy, and a moment after; unref'd, it never keeps the process alive.
  let watch: NodeJS.Timeout | undefined;

  function forget(socket: Socket): void {
    idleBeforeRequest.delete(socket);
    const usage = used.get(socket);
    if (usage !== undefined) {
      idleBetweenRequests.delete(usage);
      if (usage.requests > 0) busy--;
      used.delete(socket);
    }
    overCap.delete(socket);
    answeringOverCap.delete(socket);
  }

  /** Notes which busy connections' answers moved since the last look; an answer with nothing waiting to be sent is not stalled. */
  function look(now: number): void {
    for (const [socket, seen] of used) {
      if (seen.requests === 0) continue;
      const taken = bytesTaken(socket);
      if (taken !== seen.bytesTaken || bytesWaiting(socket) === 0) {
        seen.bytesTaken = taken;
        seen.since = now;
      }
    }
  }

  function longestStalled(): Socket | undefined {
    const now = performance.now();
    look(now);
    let found: Socket | undefined;
    let foundSince = now - stalledAfterMs;
    for (const [socket, seen] of used) {
      if (seen.requests > 0 && seen.since <= foundSince) {
        found = socket;
        foundSince = seen.since;
      }
    }
    return found;
  }

  function requestStarted(socket: Socket): void {
    let usage = used.get(socket);
    if (usage === undefined) {
      // Its entry goes when it closes: one that has closed gets none.
      if (socket.closed) return;
      idleBeforeRequest.delete(socket);
      usage = {
        socket,
        requests: 0,
        bytesTaken: NOTHING_WAITING,
        since: 0,
        previousInOrder: undefined,
        nextInOrder: undefined,
        inOrder: false,
      };
      used.set(socket, usage);
    }
    idleBetweenRequests.delete(usage);
    if (usage.requests++ > 0) return;
    busy++;
    // The door starts a request only once its handle's queue is empty: Node's own stream says the rest.
    usage.bytesTaken = socket.writableLength === 0 ? NOTHING_WAITING : bytesTaken(socket);
    usage.since = performance.now();
    watch ??= setInterval(lookOrStop, Math.min(1_000, Math.max(50, stalledAfterMs / 4))).unref();
  }

  // Stopped here, not as the last answer ends: under load, timers would come and go with every request.
  function lookOrStop(): void {
    if (busy > 0) {
      look(performance.now());
      return;
    }
    clearInterval(watch);
    watch = undefined;
  }

  function closeFor(socket: Socket, pressure: ConnectionPressure): ConnectionPressure {
    forget(socket);
    socket.destroy();
    return pressure;
  }

  /** Closes a connection to make room for a new one, the least useful first; undefined when every one is busy and moving. */
  function makeRoom(): ConnectionPressure | undefined {
    const between = idleBetweenRequests.first();
    if (between !== undefined) return closeFor(between.socket, 'reclaimed');
    const stalled = longestStalled();
    if (stalled) return closeFor(stalled, 'stalled');
    const before = idleBeforeRequest.values().next();
    if (!before.done) return closeFor(before.value, 'reclaimed');
    return undefined;
  }

  function admit(socket: Socket): void {
    socket.once('close', () => forget(socket));
    if (idleBetweenRequests.size + idleBeforeRequest.size + busy < options.maxConnections) {
      idleBeforeRequest.add(socket);
      return;
    }
    const pressure = makeRoom();
    if (pressure) {
      idleBeforeRequest.add(socket);
      options.onPressure?.(pressure);
      return;
    }
    if (overCap.size < options.headroom) {
      overCap.add(socket);
      options.onPressure?.('refused');
      return;
    }
    socket.destroy();
    options.onPressure?.('dropped');
  }

  function answerOverCap(request: IncomingMessage, response: ServerResponse, listener: RequestListener): void {
    // One answer, then the connection closes and frees its descriptor.
    response.shouldKeepAlive = false;
    if (options.alwaysServed.has(pathOfTarget(request.url ?? ''))) {
      listener(request, response);
      return;
    }
    writeJsonError(request, response, 503, AT_CAPACITY, { 'Retry-After': '1' });
  }

  function requestEnded(socket: Socket): void {
    const usage = used.get(socket);
    if (usage === undefined || usage.requests === 0) return;
    if (--usage.requests > 0) return;
    busy--;
    if (!socket.destroyed) idleBetweenRequests.add(usage);
  }

  function wrap(listener: RequestListener): RequestListener {
    return function guardedRequest(request, response) {
      const socket = request.socket;
      if (overCap.has(socket)) {
        answeringOverCap.add(socket);
        whenClosed(response, () => answeringOverCap.delete(socket));
        answerOverCap(request, response, listener);
        return;
      }
      requestStarted(socket);
      whenClosed(response, () => requestEnded(socket));
      listener(request, response);
    };
  }

  return {
    admit,
    wrap,
    isOverCap: (socket) => overCap.has(socket),
    requestStarted,
    requestEnded,
    counts: () => ({ idle: idleBetweenRequests.size + idleBeforeRequest.size, busy, overCap: overCap.size }),
    closeIdle() {
      const silentOverCap = [...overCap].filter((socket) => !answeringOverCap.has(socket));
      const idle = [...idleBetweenRequests.toArray().map((usage) => usage.socket), ...idleBeforeRequest, ...silentOverCap];
      for (const socket of idle) if (bytesWaiting(socket) === 0) socket.destroy();
    },
  };
}
