import type { Socket } from 'node:net';

/**
 * A socket's reads delivered from its handle into one buffer shared by every
 * such socket, as Node does for a client socket made with the `onread`
 * option, without the stream machinery a 'data' listener runs per read (a
 * Buffer made, `push`, `maybeReadMore` on the next tick: a tenth of a
 * memory hit's instructions). Node's server makes its sockets without that
 * option, so this sets what the option sets: the socket's `kBuffer` and
 * `kBufferCb` properties, found by their symbols' names, and the handle's
 * `useUserBuffer`. Where this Node has none of them, nothing is switched and
 * the caller reads as before.
 *
 * `onRead` gets a view of the shared buffer (one object per read length,
 * made once), good until it returns: what it keeps longer, it copies
 * (`isSharedReadBuffer`). `pause()` and `resume()` stop and start the
 * handle's reads, as for a socket made with `onread`.
 */

interface ReadSlots {
  buffer: symbol;
  callback: symbol;
}

type SwitchableSocket = Socket & Record<symbol, unknown> & { _handle: { useUserBuffer?(buffer: Buffer): void } | null };

const READ_BUFFER_BYTES = 64 * 1024;

let slots: ReadSlots | null | undefined;
let shared: Buffer | undefined;

function slotsOf(socket: SwitchableSocket): ReadSlots | null {
  if (slots !== undefined) return slots;
  const symbols = Object.getOwnPropertySymbols(socket);
  const named = (name: string) => symbols.find((symbol) => symbol.description === name);
  const buffer = named('kBuffer');
  const callback = named('kBufferCb');
  slots = buffer && callback && named('kBufferGen') && typeof socket._handle?.useUserBuffer === 'function' ? { buffer, callback } : null;
  return slots;
}

// A view of the one shared buffer per read length, made once: a client repeats its requests, and reads of one length are common.
const views: Buffer[] = [];
const MAX_KEPT_VIEW_BYTES = 4096;

function viewOf(buffer: Buffer, length: number): Buffer {
  if (length > MAX_KEPT_VIEW_BYTES) return buffer.subarray(0, length);
  let view = views[length];
  if (view === undefined) {
    view = buffer.subarray(0, length);
    views[length] = view;
  }
  return view;
}

/** True when the socket's reads now go to `onRead`; false when this Node cannot do it, and the socket is as it was. */
export function readIntoSharedBuffer(socket: Socket, onRead: (chunk: Buffer) => void): boolean {
  const target = socket as SwitchableSocket;
  const keys = slotsOf(target);
  const handle = target._handle;
  if (keys === null || handle === null || target[keys.buffer] || socket.readableLength > 0) return false;
  shared ??= Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  const buffer = shared;
  target[keys.buffer] = buffer;
  target[keys.callback] = (length: number) => {
    onRead(viewOf(buffer, length));
  };
  handle.useUserBuffer!(buffer);
  return true;
}

/** Whether `chunk` is a view of the shared buffer, which the next read overwrites. */
export function isSharedReadBuffer(chunk: Buffer): boolean {
  return chunk.buffer === shared?.buffer;
}

/**
 * Before Node's HTTP server takes the socket: it consumes the handle, and its
 * parser's reads sit above the shared buffer's, which the handle keeps; the
 * end of the stream and read errors still reach the socket as on any other.
 */
export function stopSharedReads(socket: Socket): void {
  const target = socket as SwitchableSocket;
  const keys = slotsOf(target);
  if (keys === null) return;
  target[keys.buffer] = null;
  target[keys.callback] = null;
}
