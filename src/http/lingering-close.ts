import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** How long a closing connection waits for its client's next byte or close (nginx's `lingering_timeout`). */
const LINGER_IDLE_MS = 5_000;
/** How long a closing connection may linger at most (nginx's `lingering_time`). */
const LINGER_MAX_MS = 30_000;

const lingering = new WeakSet<Duplex>();

/** True once the connection's last answer is written and it only waits for its client to close. */
export function isLingering(socket: Duplex): boolean {
  return lingering.has(socket);
}

/**
 * Ends a connection after its last answer the way RFC 9112 9.6 asks: close
 * the sending side, then keep reading (and ignoring) what the client still
 * sends until it closes too, or is quiet for 5 s, or 30 s have passed.
 * Closing the descriptor at once, as Node's `destroySoon` does, makes the
 * kernel answer any byte that comes afterwards (a stray CRLF, a request
 * pipelined behind one that said `Connection: close`) with a reset, which
 * throws away the part of the answer the client had not read yet.
 */
export function closeGently(socket: Duplex, lastBytes?: string): void {
  if (lingering.has(socket) || socket.destroyed) return;
  lingering.add(socket);
  if (socket.writable) socket.end(lastBytes);
  // Until all of the answer is handed to the kernel, destroying it would lose the rest.
  if (socket.writableFinished) linger(socket as Socket);
  else socket.once('finish', () => linger(socket as Socket));
}

function linger(socket: Socket): void {
  if (socket.readableEnded) {
    socket.destroy();
    return;
  }
  const destroy = () => socket.destroy();
  socket.once('end', destroy);
  socket.setTimeout(LINGER_IDLE_MS, destroy);
  const longest = setTimeout(destroy, LINGER_MAX_MS).unref();
  socket.once('close', () => clearTimeout(longest));
  // Node stops reading a connection whose answers are not taken fast enough; a lingering one must read to the end.
  socket.resume();
}

/** Makes Node's own close after a connection's last answer (`Connection: close`, HTTP/1.0) a gentle one. */
export function closeGentlyAfterLastAnswer(socket: Socket): void {
  socket.destroySoon = () => closeGently(socket);
}
