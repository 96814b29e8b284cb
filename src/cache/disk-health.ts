import { randomBytes } from 'node:crypto';
import { access, constants, mkdir, open, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from '../private-files.js';

const DEFAULT_LOG_INTERVAL_MS = 60_000;
const DEFAULT_PROBE_INTERVAL_MS = 15_000;
const PROBE_TIMEOUT_MS = 5_000;
const PROBE_BYTES = 4096;
// The probe writes where the cache writes its temporary files (see disk-store.ts),
// so a folder there that is broken (a file in its place, wrong owner) is seen.
const TEMP_FOLDER = 'tmp';

const CODE_DESCRIPTIONS: Readonly<Record<string, string>> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the disk',
  EDQUOT: 'disk quota exceeded',
  ENOENT: 'the cache directory or a folder in it is missing',
  ENOTDIR: 'a folder of the cache is not a directory',
  EIO: 'input/output error',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  ETIMEDOUT: `the disk did not answer within ${PROBE_TIMEOUT_MS / 1000} s`,
};
const ERROR_CODE = /^E[A-Z0-9]{1,15}$/;

/**
 * What /readyz, which anyone may call, says about a disk error: its code and a
 * fixed description. Never the error's message, which names paths (and, for
 * temporary files, the host name and pid).
 */
export function describeDiskProblem(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code !== 'string' || !ERROR_CODE.test(code)) return 'writing to the cache disk failed';
  const description = CODE_DESCRIPTIONS[code];
  return description === undefined ? code : `${code}, ${description}`;
}

/** Writes, fsyncs and removes a small file in `folder`; rejects with the file system's error. */
async function writeProbeFile(folder: string): Promise<void> {
  const file = path.join(folder, `.probe-${randomBytes(6).toString('hex')}`);
  let handle: FileHandle | undefined;
  try {
    handle = await open(file, 'wx', PRIVATE_FILE_MODE);
  } catch (error) {
    // The cache recreates a missing temp folder on its next write: so does the probe (never the cache directory itself).
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    await mkdir(folder, PRIVATE_DIR_MODE);
    handle = await open(file, 'wx', PRIVATE_FILE_MODE);
  }
  try {
    await handle.write(Buffer.alloc(PROBE_BYTES));
    await handle.sync();
  } finally {
    await handle.close();
    await unlink(file).catch(() => {});
  }
}

function timeout(ms: number): { promise: Promise<never>; cancel(): void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error('probe timed out'), { code: 'ETIMEDOUT' })), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

export interface DiskHealthOptions {
  /** The cache directory. Without it nothing is probed: only failures the cache reports count. */
  dir?: string;
  /** How often a failing disk is logged at most. Default 60 s. */
  logIntervalMs?: number;
  /** How often the directory is probed while failing, and how old the last news may be before /readyz probes. Default 15 s. */
  probeIntervalMs?: number;
}

/**
 * Tracks whether the cache disk works. A failing disk (unwritable, ENOSPC) is
 * logged at most once per interval, however many requests meet it, and makes
 * /readyz answer 503 with a short reason. While it fails, the directory is
 * probed a few times a minute, so readiness comes back once it is repaired
 * even when no traffic arrives (a load balancer sends none to a replica that
 * is not ready).
 */
export class DiskHealth {
  #problem: string | undefined;
  #lastLoggedAt = Number.NEGATIVE_INFINITY;
  #suppressed = 0;
  /** When the disk last told us how it is: a probe, a stored recording or a reported failure. */
  #lastNewsAt = Number.NEGATIVE_INFINITY;
  #probing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #dir: string | undefined;
  readonly #logIntervalMs: number;
  readonly #probeIntervalMs: number;

  constructor(
    private readonly logger: Logger,
    private readonly clock: Clock,
    options: DiskHealthOptions = {},
  ) {
    this.#dir = options.dir;
    this.#logIntervalMs = options.logIntervalMs ?? DEFAULT_LOG_INTERVAL_MS;
    this.#probeIntervalMs = options.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS;
  }

  /** The current problem, e.g. "ENOSPC, no space left on the disk", or undefined. */
  get problem(): string | undefined {
    return this.#problem;
  }

  report(error: unknown): void {
    const now = this.clock.now();
    this.#problem = describeDiskProblem(error);
    this.#lastNewsAt = now;
    this.#startProbing();
    if (now - this.#lastLoggedAt < this.#logIntervalMs) {
      this.#suppressed++;
      return;
    }
    // The log line keeps the whole error (paths included): it is the operator's.
    this.logger.warn(
      { err: error, suppressedSinceLastLog: this.#suppressed },
      'cache disk failing; recordings are streamed from upstream without being stored',
    );
    this.#lastLoggedAt = now;
    this.#suppressed = 0;
  }

  recovered(): void {
    this.#lastNewsAt = this.clock.now();
    if (this.#problem === undefined) return;
    this.#problem = undefined;
    this.#lastLoggedAt = Number.NEGATIVE_INFINITY;
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.logger.info('cache disk works again; caching resumed');
  }

  /** Writes a small file where the cache writes; one probe at a time. */
  probe(): Promise<void> {
    const dir = this.#dir;
    if (dir === undefined) return Promise.resolve();
    this.#probing ??= writeProbeFile(path.join(dir, TEMP_FOLDER))
      .then(
        () => this.recovered(),
        (error: unknown) => this.report(error),
      )
      .finally(() => (this.#probing = undefined));
    return this.#probing;
  }

  /**
   * For /readyz: rejects with a short reason while the disk fails. The
   * directory is checked on every call (one cheap syscall); a write is probed
   * only when the last news of the disk is older than the probe interval, so a
   * flood of /readyz costs at most a few small writes a minute.
   */
  async check(): Promise<void> {
    if (this.#dir !== undefined) {
      await access(this.#dir, constants.W_OK).catch((error: unknown) => {
        throw new Error(describeDiskProblem(error));
      });
      if (this.clock.now() - this.#lastNewsAt >= this.#probeIntervalMs) {
        const limit = timeout(PROBE_TIMEOUT_MS);
        await Promise.race([this.probe(), limit.promise])
          .catch((error: unknown) => this.report(error))
          .finally(() => limit.cancel());
      }
    }
    if (this.#problem !== undefined) throw new Error(this.#problem);
  }

  /** Stops probing; for shutdown. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #startProbing(): void {
    if (this.#timer !== undefined || this.#closed || this.#dir === undefined) return;
    this.#timer = setInterval(() => void this.probe(), this.#probeIntervalMs);
    this.#timer.unref();
  }
}
