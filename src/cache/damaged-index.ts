import { rename } from 'node:fs/promises';

/** sqlite's own codes for a file it cannot read as a database. */
const DAMAGE_CODES = new Set(['SQLITE_CORRUPT', 'SQLITE_NOTADB']);
/** The files sqlite keeps beside the index in WAL mode. */
export const INDEX_SIDE_FILES = ['-wal', '-shm'];

/**
 * The sqlite index file cannot be read (truncated, overwritten). The index is
 * derived from the files, so the gateway sets it aside and starts a fresh one;
 * a second process on a live cache (the CLI) must not, and says so.
 */
export class DamagedIndexError extends Error {
  readonly file: string;
  /** `SQLITE_CORRUPT` or `SQLITE_NOTADB`: the logger treats a coded error as expected (one line, no stack). */
  readonly code: string;

  constructor(file: string, cause: Error & { code: string }) {
    super(`the cache index ${file} is damaged (${cause.message})`, { cause });
    this.name = 'DamagedIndexError';
    this.file = file;
    this.code = cause.code;
  }
}

/**
 * The error as a {@link DamagedIndexError} when sqlite found the file
 * damaged; one that names the file when sqlite cannot open it at all (a
 * directory in its place, no permission); else as it was.
 */
export function asDamagedIndex(file: string, error: unknown): unknown {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (!(error instanceof Error) || typeof code !== 'string') return error;
  if (DAMAGE_CODES.has(code)) return new DamagedIndexError(file, error as Error & { code: string });
  if (code === 'SQLITE_CANTOPEN') {
    const unopenable = new Error(
      `cannot open the cache index ${file} (${error.message}): it must be a file the gateway can read and write`,
      {
        cause: error,
      },
    );
    return Object.assign(unopenable, { code });
  }
  return error;
}

/**
 * Renames a damaged index and its -wal and -shm files to
 * `<file>.damaged-<time>` (+ `-wal`, `-shm`, so sqlite can still open the
 * copy with them); resolves with the new name of the index.
 */
export async function setAsideDamagedIndex(file: string, now: Date): Promise<string> {
  const aside = `${file}.damaged-${now.toISOString().replace(/[:.]/g, '-')}`;
  for (const suffix of ['', ...INDEX_SIDE_FILES]) {
    await rename(file + suffix, aside + suffix).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }
  return aside;
}
