import type { Clock } from '../clock.js';
import type { Logger } from '../logger.js';

const DEFAULT_LOG_INTERVAL_MS = 60_000;

/**
 * Tracks whether the cache disk works. A failing disk (unwritable, ENOSPC) is
 * logged at most once per interval, however many requests meet it, and makes
 * /readyz answer 503 with the reason until a recording is stored again.
 */
export class DiskHealth {
  #problem: string | undefined;
  #lastLoggedAt = Number.NEGATIVE_INFINITY;
  #suppressed = 0;

  constructor(
    private readonly logger: Logger,
    private readonly clock: Clock,
    private readonly logIntervalMs = DEFAULT_LOG_INTERVAL_MS,
  ) {}

  /** The current problem, e.g. "ENOSPC: no space left on device", or undefined. */
  get problem(): string | undefined {
    return this.#problem;
  }

  report(error: unknown): void {
    const code = (error as NodeJS.ErrnoException | undefined)?.code;
    const message = error instanceof Error ? error.message : String(error);
    this.#problem = code && !message.startsWith(code) ? `${code}: ${message}` : message;
    const now = this.clock.now();
    if (now - this.#lastLoggedAt < this.logIntervalMs) {
      this.#suppressed++;
      return;
    }
    this.logger.warn(
      { err: error, suppressedSinceLastLog: this.#suppressed },
      'cache disk failing; recordings are streamed from upstream without being stored',
    );
    this.#lastLoggedAt = now;
    this.#suppressed = 0;
  }

  recovered(): void {
    if (this.#problem === undefined) return;
    this.#problem = undefined;
    this.#lastLoggedAt = Number.NEGATIVE_INFINITY;
    this.logger.info('cache disk works again; caching resumed');
  }
}
