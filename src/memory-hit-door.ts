import { STATUS_CODES, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { ConnectionGuard } from './connection-guard.js';
import { readAnyRequestHead } from './http/any-request-head.js';
import { canWriteToHandle, writeToHandle } from './http/handle-write.js';
import { readPlainRequestHead } from './http/plain-request-head.js';
import { isSharedReadBuffer, readIntoSharedBuffer, stopSharedReads } from './http/shared-read-buffer.js';
import type { MemoryHit, MemoryHits } from './routes/memory-hits.js';
import { bodyOf } from './routes/recording-response.js';

const statusLines = new Map<number, Buffer>();

/** The status line Node writes for `status`, made once. */
function statusLine(status: number): Buffer {
  let line = statusLines.get(status);
  if (line === undefined) {
    line = Buffer.from(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n`, 'latin1');
    statusLines.set(status, line);
  }
  return line;
}

let trailerSecond = -1;
let trailerTimeoutMs = -1;
let trailer = Buffer.alloc(0);

/** What Node writes before a head's blank line on a keep-alive connection, at `now`; its Date made once a second, as Node makes its own. */
function keepAliveTrailer(keepAliveTimeoutMs: number, now: number): Buffer {
  const second = Math.floor(now / 1000);
  if (second !== trailerSecond || keepAliveTimeoutMs !== trailerTimeoutMs) {
    trailerSecond = second;
    trailerTimeoutMs = keepAliveTimeoutMs;
    const keepAlive = keepAliveTimeoutMs > 0 ? `Keep-Alive: timeout=${Math.floor(keepAliveTimeoutMs / 1000)}\r\n` : '';
    trailer = Buffer.from(`Date: ${new Date(now).toUTCString()}\r\nConnection: keep-alive\r\n${keepAlive}\r\n`, 'latin1');
  }
  return trailer;
}

function headerLines(headers: Readonly<Record<string, string>>): string {
  let lines = '';
  for (const name in headers) lines += `${name}: ${headers[name]}\r\n`;
  return lines;
}

// A recording's own fields as bytes, made on its first answer from the door, kept while its representation lives.
const fieldBytes = new WeakMap<object, Buffer>();

function fieldsAsBytes(fields: Readonly<Record<string, string>>): Buffer {
  let bytes = fieldBytes.get(fields);
  if (bytes === undefined) {
    bytes = Buffer.from(headerLines(fields), 'latin1');
    fieldBytes.set(fields, bytes);
  }
  return bytes;
}

// A body this short is copied byte by byte: a view of it (a Buffer made) costs more than the copy.
const COPIED_BY_HAND_MAX_BYTES = 64;

/** Copies the answer's body into `target` at `at`. */
function copyBody(answer: MemoryHit['answer'], target: Buffer, at: number): void {
  const { source, bodyStart, bodyLength } = answer;
  if (bodyLength <= COPIED_BY_HAND_MAX_BYTES) {
    for (let i = 0; i < bodyLength; i++) target[at + i] = source![bodyStart + i]!;
  } else {
    target.set(bodyOf(answer)!, at);
  }
}

/**
 * The answer's head, byte for byte as Node's `writeHead` and `end` write it,
 * with the body behind it when `withBody`. Only the answer's own headers are
 * made into text here: the status line, the recording's fields and the
 * trailer are copied from bytes made before.
 */
function headOf(answer: MemoryHit['answer'], keepAliveTimeoutMs: number, now: number, withBody: boolean): Buffer {
  const line = statusLine(answer.status);
  const fields = fieldsAsBytes(answer.fields);
  const own = headerLines(answer.headers);
  const end = keepAliveTrailer(keepAliveTimeoutMs, now);
  const bodyLength = withBody && answer.source !== undefined ? answer.bodyLength : 0;
  const head = Buffer.allocUnsafe(line.length + fields.length + own.length + end.length + bodyLength);
  head.set(line, 0);
  let at = line.length;
  head.set(fields, at);
  at += fields.length;
  at += head.write(own, at, 'latin1');
  head.set(end, at);
  if (bodyLength > 0) copyBody(answer, head, at + end.length);
  return head;
}

// What a connection may send while its answer waits for the rate limiter before its reads stop, as a stream's buffer would.
const MAX_PENDING_WHILE_WAITING_BYTES = 64 * 1024;

// A body up to this size is copied behind its head, one buffer written: a pair of buffers written together costs more than the copy.
const BODY_IN_HEAD_MAX_BYTES = 16 * 1024;

// Node closes an idle keep-alive connection this long after the timeout it advertises (HTTP_SERVER_KEEP_ALIVE_TIMEOUT_BUFFER).
const KEEP_ALIVE_GRACE_MS = 1000;

/** How long Node lets a keep-alive connection idle after an answer; 0: for ever. */
function idleTimeoutMs(server: Server): number {
  return server.keepAliveTimeout ? server.keepAliveTimeout + KEEP_ALIVE_GRACE_MS : 0;
}

interface DoorContext {
  hits: MemoryHits;
  guard: Pick<ConnectionGuard, 'isOverCap' | 'requestStarted' | 'requestEnded'>;
  server: Server;
  /** Node's own connection listener, which from then on owns the connection. */
  handOver(socket: Socket): void;
  open: Set<DoorConnection>;
  /** Handed over after an answer, their keep-alive timer running until Node has a request's head, as Node's own would. */
  idleAfterAnswer: WeakSet<Socket>;
}

/**
 * One connection while the door reads it: requests whose whole head came
 * in one read and that memory answers are answered here, in order; at the
 * first byte of anything else, the connection and every byte not yet
 * answered go to Node's HTTP server for good.
 */
class DoorConnection {
  #pending: Buffer | undefined;
  /** An answer waits for the rate limiter (Redis) or for the client to take what was written. */
  #waiting = false;
  /** Reads come from the handle into the shared buffer (src/http/shared-read-buffer.ts), not through the stream. */
  #readsShared = false;
  #ended = false;
  #answered = false;
  /** The answer handed to the handle whose bytes the client has not all taken. */
  #queued: MemoryHit | undefined;
  /** The rate limiter decides on the request in front of `pending`. */
  #counting = false;
  // Read once: Node's getter asks the socket each time, and a client gone no longer has one.
  readonly #clientAddress: string | undefined;
  /**
   * How long the connection may stay idle after `#activeAt` (0: no limit).
   * One timer keeps it, not moved at each answer: a socket's own timeout is
   * moved by Node at every read and write, which costs a memory hit about
   * 2 % of its instructions. When the timer fires, it closes the connection
   * or waits out the rest.
   */
  #idleLimitMs = 0;
  #activeAt = 0;
  #idleTimer: NodeJS.Timeout | undefined;
  #idleTimerDueAt = 0;

  constructor(
    private readonly socket: Socket,
    private readonly door: DoorContext,
  ) {
    this.#clientAddress = socket.remoteAddress;
    door.open.add(this);
    this.#readsShared = readIntoSharedBuffer(socket, this.#onRead);
    if (!this.#readsShared) socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    // A connection that sends nothing is closed after the headers timeout, as Node closes it.
    this.#limitIdle(door.server.headersTimeout);
  }

  destroy(): void {
    this.socket.destroy();
  }

  #onData = (chunk: Buffer): void => {
    this.#pending = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
    if (!this.#waiting) this.#serve();
  };

  #onRead = (chunk: Buffer): void => {
    this.#onData(chunk);
    // Waiting for the client to take an answer, what it sends is the last read until it has; waiting for Redis, up to a bound.
    if (
      this.#waiting &&
      this.#pending !== undefined &&
      (this.#queued !== undefined || this.#pending.length > MAX_PENDING_WHILE_WAITING_BYTES)
    ) {
      this.socket.pause();
    }
    // The next read overwrites the shared buffer.
    if (this.#pending !== undefined && isSharedReadBuffer(this.#pending)) this.#pending = Buffer.from(this.#pending);
  };

  #onEnd = (): void => {
    this.#ended = true;
    if (!this.#waiting) this.socket.end();
  };

  #onError = (): void => {
    this.socket.destroy();
  };

  /** From now, the connection may stay idle `limitMs` (0: for ever), as Node's own timeout would let it. */
  #limitIdle(limitMs: number): void {
    const now = Date.now();
    this.#idleLimitMs = limitMs;
    this.#activeAt = now;
    // A timer due later than the new limit (a headers timeout longer than the keep-alive's) is set again.
    if (limitMs > 0 && (this.#idleTimer === undefined || this.#idleTimerDueAt > now + limitMs)) this.#armIdleTimer(now, limitMs);
  }

  #armIdleTimer(now: number, inMs: number): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimerDueAt = now + inMs;
    this.#idleTimer = setTimeout(this.#onIdleTimer, inMs).unref();
  }

  #onIdleTimer = (): void => {
    this.#idleTimer = undefined;
    if (this.#idleLimitMs === 0 || this.socket.destroyed) return;
    const now = Date.now();
    // An answer waiting for the rate limiter is not idle; one waiting for the client has no limit (#answer).
    const leftMs = this.#waiting ? this.#idleLimitMs : this.#idleLimitMs - (now - this.#activeAt);
    if (leftMs <= 0) this.socket.destroy();
    else this.#armIdleTimer(now, leftMs);
  };

  #stopIdleTimer(): void {
    this.#idleLimitMs = 0;
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  #onClose = (): void => {
    this.#stopIdleTimer();
    this.door.open.delete(this);
    // Node cancels a closed handle's writes before it says 'close'; should it not have, the answer is still reported.
    if (this.#queued !== undefined) this.#queuedWriteDone(true);
    // The head in front while the rate limiter decides on it: its answer reports itself once decided.
    this.#reportUnanswered(this.#counting);
  };

  /**
   * Each whole request read and never answered, its connection gone (pipelined
   * behind an answer its client did not take), is reported as unanswered, as
   * the app reports each request Node's server read: a plain one as a hit
   * would be, any other read leniently, up to the first whose end cannot be told.
   */
  #reportUnanswered(skipFront: boolean): void {
    let rest = this.#pending;
    if (!skipFront) this.#pending = undefined;
    for (let skip = skipFront; rest !== undefined; skip = false) {
      const head = readPlainRequestHead(rest) ?? readAnyRequestHead(rest);
      if (!head) return;
      if (!skip) this.door.hits.unanswered(head.method, head.target, head.fields, this.#clientAddress);
      rest = rest.length > head.length ? rest.subarray(head.length) : undefined;
    }
  }

  #serve(): void {
    while (this.#pending !== undefined && !this.#waiting) this.#next(this.#pending);
  }

  /** Answers the request at the front of `pending`, or hands the connection over. */
  #next(pending: Buffer): void {
    const socket = this.socket;
    const head = this.door.server.listening ? readPlainRequestHead(pending) : undefined;
    const hit = head && this.door.hits.prepare(head.method, head.target, head.fields, false, this.#clientAddress);
    if (!head || !hit) {
      this.#handOver();
      return;
    }
    this.#waiting = true;
    this.door.guard.requestStarted(socket);
    let synchronous = true;
    this.#counting = true;
    hit.count((admitted) => {
      this.#counting = false;
      if (!admitted) {
        this.door.guard.requestEnded(socket);
        // Gone while Redis was asked: no one to answer.
        if (!socket.destroyed) this.#handOver();
        return;
      }
      this.#answer(hit, head.length);
      if (!synchronous && !this.#waiting) this.#resume();
    });
    synchronous = false;
    // Reads from the shared buffer go on while the rate limiter asks Redis (kept in `pending` up to a
    // bound, #onRead), so that a client that resets is seen at once; and while the client has not
    // taken the answer, until it sends more (#onRead): stopping and restarting a connection's reads for
    // every large answer costs more than the answer's own bookkeeping. A client with requests already
    // waiting is not read from until it has taken the answer. The stream's own reads stop at once.
    if (this.#waiting && (!this.#readsShared || (this.#queued !== undefined && this.#pending !== undefined))) socket.pause();
  }

  /** Writes the answer; `waiting` stays set while the client has not taken it. */
  #answer(hit: MemoryHit, headLength: number): void {
    const socket = this.socket;
    const pending = this.#pending!;
    this.#pending = pending.length > headLength ? pending.subarray(headLength) : undefined;
    if (socket.destroyed) {
      this.door.guard.requestEnded(socket);
      hit.report('unanswered');
      return;
    }
    const keepAliveTimeoutMs = this.door.server.keepAliveTimeout;
    const now = Date.now();
    if (this.#answered) {
      this.#activeAt = now;
    } else {
      this.#answered = true;
      this.#limitIdle(idleTimeoutMs(this.door.server));
    }
    const answer = hit.answer;
    const bodyApart = answer.source !== undefined && answer.bodyLength > BODY_IN_HEAD_MAX_BYTES;
    const data = bodyApart
      ? [headOf(answer, keepAliveTimeoutMs, now, false), bodyOf(answer)!]
      : headOf(answer, keepAliveTimeoutMs, now, true);
    switch (writeToHandle(socket, data, this.#queuedWriteDone)) {
      case 'taken':
        this.door.guard.requestEnded(socket);
        hit.report('sent');
        this.#waiting = false;
        return;
      case 'queued':
        // As Node: no timeout while an answer waits for a client that does not read (the connection cap reclaims it).
        this.#idleLimitMs = 0;
        this.#queued = hit;
        return;
      case 'failed':
        this.door.guard.requestEnded(socket);
        hit.report('cut');
    }
  }

  #queuedWriteDone = (failed: boolean): void => {
    const socket = this.socket;
    const hit = this.#queued;
    if (hit === undefined) return;
    this.#queued = undefined;
    this.door.guard.requestEnded(socket);
    if (failed || socket.destroyed) {
      hit.report('cut');
      socket.destroy();
      return;
    }
    hit.report('sent');
    this.#limitIdle(idleTimeoutMs(this.door.server));
    this.#resume();
  };

  #resume(): void {
    this.#waiting = false;
    if (this.#ended && this.#pending === undefined) {
      this.socket.end();
      return;
    }
    this.socket.resume();
    this.#serve();
  }

  #handOver(): void {
    const socket = this.socket;
    this.door.open.delete(this);
    socket.removeListener('data', this.#onData);
    stopSharedReads(socket);
    socket.removeListener('end', this.#onEnd);
    socket.removeListener('error', this.#onError);
    socket.removeListener('close', this.#onClose);
    this.#stopIdleTimer();
    // Node closes a connection idle after an answer, a request begun or not, when its keep-alive timer runs out (from
    // this read on, as Node's own timer is moved by every read); before one, its headers timeout does.
    if (this.#answered) {
      socket.setTimeout(idleTimeoutMs(this.door.server));
      this.door.idleAfterAnswer.add(socket);
    }
    this.#waiting = false;
    socket.pause();
    if (this.#pending) socket.unshift(isSharedReadBuffer(this.#pending) ? Buffer.from(this.#pending) : this.#pending);
    this.#pending = undefined;
    this.door.handOver(socket);
    socket.resume();
  }
}

/**
 * Answers memory hits from the connection's bytes, before Node's HTTP
 * parser (issue 11: Node's request and response objects cost more than the
 * answer). The server keeps listening, accepting, its connection cap and
 * its timeouts; its own connection listener is taken off and given each
 * connection the door does not answer, with the bytes it read. Heads are
 * read strictly (src/http/plain-request-head.ts): a request Node might
 * judge otherwise, or one split over two reads, goes to Node. Answers are
 * written to the connection's handle (src/http/handle-write.ts). Not
 * installed when this Node's HTTP server is not the one it was written for,
 * or its sockets cannot be written that way.
 */
export function openMemoryHitDoor(server: Server, hits: MemoryHits, guard: DoorContext['guard']): void {
  const nodeListener = server.listeners('connection')[0] as ((this: Server, socket: Socket) => void) | undefined;
  if (nodeListener?.name !== 'connectionListener' || !canWriteToHandle()) return;
  server.removeListener('connection', nodeListener);
  const open = new Set<DoorConnection>();
  const idleAfterAnswer = new WeakSet<Socket>();
  const door: DoorContext = { hits, guard, server, open, idleAfterAnswer, handOver: (socket) => nodeListener.call(server, socket) };
  // Where Node stops its own keep-alive timer: a request's head is in.
  const headIn = (request: IncomingMessage) => {
    if (idleAfterAnswer.delete(request.socket)) request.socket.setTimeout(server.timeout || 0);
  };
  server.prependListener('request', headIn);
  // Only beside a listener that answers: with one, Node leaves an expectation to them.
  if (server.listenerCount('checkExpectation') > 0) server.prependListener('checkExpectation', headIn);
  server.on('connection', (socket: Socket) => {
    if (guard.isOverCap(socket) || !server.listening) door.handOver(socket);
    else new DoorConnection(socket, door);
  });
  // Node's closeAllConnections closes the connections Node knows; these are the door's. (Idle ones, the
  // connection guard's closeIdleConnections closes: the door tells it when each request starts and ends.)
  const closeAll = server.closeAllConnections.bind(server);
  server.closeAllConnections = () => {
    closeAll();
    for (const connection of open) connection.destroy();
  };
}
