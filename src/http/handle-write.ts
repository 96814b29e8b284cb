import type { Socket } from 'node:net';

/**
 * Writes bytes straight to a socket's handle, as Node's own
 * `writeGeneric` does under `socket.write`, without the Writable stream
 * around it: its state, its write callback's turn of the event loop
 * (`afterWriteTick`) and the socket's timeout refresh cost a memory hit more
 * than the bytes' way into the kernel. The handle counts the bytes in
 * `socket.bytesWritten` as for any write; bytes the kernel has not taken yet
 * are in `handle.writeQueueSize` (`bytesWaiting`), not in `writableLength`.
 * A socket's later `end()` and `destroy()` act on them as on Node's own:
 * the shutdown waits for them, a destroy cancels them.
 *
 * Uses `process.binding('stream_wrap')` for the write request's class
 * (`canWriteToHandle` says whether this Node has it). A socket written here
 * is written here only, or after Node's own writes have all been taken.
 */

/** Called once the kernel has taken every byte (`failed` false), or the write failed or was cancelled by a destroy. */
export type HandleWriteDone = (failed: boolean) => void;

export type HandleWriteOutcome =
  /** The kernel took every byte before the call returned; `done` is not called. */
  | 'taken'
  /** Some bytes wait for the client to read; `done` is called once. */
  | 'queued'
  /**
   * Not written, and the socket is destroyed: the write failed at once, the
   * socket had no handle, or bytes of Node's own stream waited, which these
   * would have overtaken. `done` is not called.
   */
  | 'failed';

/** Node calls `oncomplete` once a queued write is done; `buffer` keeps the bytes alive until then. */
interface WriteRequest {
  oncomplete: (this: WriteRequest, status: number) => void;
  buffer: unknown;
  done: HandleWriteDone | undefined;
}

interface StreamHandle {
  writeBuffer(request: WriteRequest, data: Uint8Array): number;
  writev(request: WriteRequest, chunks: Uint8Array[], allBuffers: true): number;
  readonly writeQueueSize: number;
  /** Every byte handed to the handle, taken by the kernel or not. */
  readonly bytesWritten: number;
}

interface StreamWrapBinding {
  WriteWrap: new () => WriteRequest;
  streamBaseState: Int32Array;
  kLastWriteWasAsync: number;
}

type HandleSocket = Socket & { _handle: StreamHandle | null };

function loadBinding(): StreamWrapBinding | null {
  // With --pending-deprecation too, process.binding's warning would be thrown on a later tick, where nothing catches it.
  if (process.throwDeprecation) return null;
  try {
    const binding = (process as unknown as { binding(name: string): Partial<StreamWrapBinding> }).binding('stream_wrap');
    const usable =
      typeof binding.WriteWrap === 'function' &&
      binding.streamBaseState instanceof Int32Array &&
      typeof binding.kLastWriteWasAsync === 'number';
    return usable ? (binding as StreamWrapBinding) : null;
  } catch {
    return null;
  }
}

let binding: StreamWrapBinding | null | undefined;

function onComplete(this: WriteRequest, status: number): void {
  const done = this.done!;
  this.done = undefined;
  this.buffer = null;
  done(status < 0);
}

/** Whether this Node lets sockets be written here; where it does not, write with `socket.write`. */
export function canWriteToHandle(): boolean {
  binding ??= loadBinding();
  return binding !== null;
}

/** Hands `data` (one buffer, or several written as one) to the socket's handle; see HandleWriteOutcome. */
export function writeToHandle(socket: Socket, data: Uint8Array | Uint8Array[], done: HandleWriteDone): HandleWriteOutcome {
  const handle = (socket as HandleSocket)._handle;
  if (!canWriteToHandle() || handle === null || socket.destroyed || socket.writableLength > 0) {
    socket.destroy();
    return 'failed';
  }
  const { WriteWrap, streamBaseState, kLastWriteWasAsync } = binding!;
  const request = new WriteWrap();
  request.oncomplete = onComplete;
  request.buffer = null;
  request.done = undefined;
  const error = Array.isArray(data) ? handle.writev(request, data, true) : handle.writeBuffer(request, data);
  if (error !== 0) {
    socket.destroy();
    return 'failed';
  }
  if (streamBaseState[kLastWriteWasAsync] === 0) return 'taken';
  // Kept until the kernel has them all, as Node keeps a write's chunks.
  request.buffer = data;
  request.done = done;
  return 'queued';
}

/** Bytes written to the socket that its kernel has not taken yet: Node's own and those handed to its handle here. */
export function bytesWaiting(socket: Socket): number {
  return socket.writableLength + ((socket as HandleSocket)._handle?.writeQueueSize ?? 0);
}

/**
 * Bytes of the socket's that the kernel has taken: what its handle was
 * handed, less what still waits in its queue. Unlike `socket.bytesWritten`,
 * which counts a write whole once it is handed over, this moves as a client
 * reads a large answer.
 */
export function bytesTaken(socket: Socket): number {
  const handle = (socket as HandleSocket)._handle;
  return handle === null ? socket.bytesWritten : handle.bytesWritten - handle.writeQueueSize;
}
