import { constants, type Stats } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';

/*
 * Anything can be put in the audit directory under a day file's name. A
 * FIFO there would hang whatever opens it: open() waits until its other end
 * is opened, holding one of libuv's four threads for good. O_NONBLOCK makes
 * that open() return at once (or fail ENXIO, for writing with no reader),
 * and leaves a regular file as it is; the handle's fstat then decides.
 */

const FLAGS = {
  read: constants.O_RDONLY,
  append: constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT,
};

/** An audit file that is a FIFO, a socket, a device or a directory: never read nor written. */
export class NotRegularFileError extends Error {
  readonly file: string;
  /** What it is instead: `a FIFO (named pipe)`, `a directory`, … */
  readonly kind: string;

  constructor(file: string, kind: string) {
    super(`${file} is ${kind}, not a regular file: move it out of the audit directory`);
    this.name = 'NotRegularFileError';
    this.file = file;
    this.kind = kind;
  }
}

function kindOf(info: Stats | undefined): string {
  if (info?.isFIFO()) return 'a FIFO (named pipe)';
  if (info?.isSocket()) return 'a socket';
  if (info?.isCharacterDevice() || info?.isBlockDevice()) return 'a device';
  if (info?.isDirectory()) return 'a directory';
  return 'an unknown kind of file';
}

/**
 * Opens `file` to read it or to append to it (created with `mode` if
 * missing), only when it is a regular file or a symbolic link to one;
 * rejects with a {@link NotRegularFileError} otherwise, without waiting.
 */
export async function openRegularFile(file: string, use: keyof typeof FLAGS, mode?: number): Promise<FileHandle> {
  let handle: FileHandle;
  try {
    handle = await open(file, FLAGS[use] | constants.O_NONBLOCK, mode);
  } catch (error) {
    // A FIFO no one reads, or a socket: there is no regular file to open.
    if ((error as NodeJS.ErrnoException).code !== 'ENXIO') throw error;
    throw new NotRegularFileError(file, kindOf(await stat(file).catch(() => undefined)));
  }
  try {
    const info = await handle.stat();
    if (info.isFile()) return handle;
    throw new NotRegularFileError(file, kindOf(info));
  } catch (error) {
    await handle.close().catch(() => {});
    throw error;
  }
}
