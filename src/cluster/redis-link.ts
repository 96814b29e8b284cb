import { createClient } from '@keyv/redis';
import type { Logger } from '../logger.js';
import { errorMessage } from '../errors.js';
import { describeRedisUrl } from '../redis-url.js';
import { RedisUnavailableError } from '../redis-unavailable.js';

export type RedisClient = ReturnType<typeof createClient>;

export interface SubscriberConnection {
  /** Settles once Redis has taken every SUBSCRIBE of the first connection: from then on, every message reaches it. */
  subscribed: Promise<void>;
  /** Drops the connection for good. */
  close(): void;
}

export interface RedisLinkOptions {
  url: string;
  /** Longest any one call may take, connecting included. */
  timeoutMs: number;
  logger: Logger;
}

// After a failure, calls fail at once for this long, so a down or stalled Redis
// costs each request nothing; a probe reconnects in the background meanwhile.
const RETRY_AFTER_FAILURE_MS = 1_000;
const MAX_SUBSCRIBER_BACKOFF_MS = 2_000;

/**
 * The cluster's one connection to Redis, and the one place that bounds its
 * calls: each call fails after `timeoutMs` (a stalled server drops the
 * connection), and after a failure every call fails fast until a background
 * probe finds Redis again. Listeners hear when it goes down and comes back, so
 * the cluster can degrade and then converge without a restart.
 */
export class RedisLink {
  readonly where: string;
  readonly #client: RedisClient;
  readonly #subscribers = new Set<RedisClient>();
  readonly #upListeners = new Set<() => void>();
  #up = false;
  #failedAt = Number.NEGATIVE_INFINITY;
  #connecting: Promise<void> | undefined;
  #probe: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(private readonly options: RedisLinkOptions) {
    this.where = describeRedisUrl(options.url);
    this.#client = createClient({
      url: options.url,
      disableOfflineQueue: true,
      socket: { connectTimeout: options.timeoutMs, reconnectStrategy: false },
    });
    this.#client.on('error', () => {});
  }

  /** True while the last call (or probe) reached Redis. */
  get up(): boolean {
    return this.#up;
  }

  /** Calls `listener` each time Redis answers again after it was down (or first answers). */
  onUp(listener: () => void): void {
    this.#upListeners.add(listener);
  }

  /**
   * Runs `operation` on the connection, bounded by `timeoutMs`.
   * @throws RedisUnavailableError when Redis is down, stalled or answered with an error.
   */
  async call<T>(operation: (client: RedisClient) => Promise<T>): Promise<T> {
    if (this.#closed) throw new RedisUnavailableError('redis: closed');
    if (!this.#up && Date.now() - this.#failedAt < RETRY_AFTER_FAILURE_MS)
      throw new RedisUnavailableError(`redis: ${this.where} is unreachable`);
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // After a busy spell the timer can fire before a reply already received
        // is read: let pending I/O run once (setImmediate follows the poll phase).
        setImmediate(() => {
          if (settled) return;
          // node-redis never times out a sent command: drop the connection, which fails whatever waits on it.
          if (this.#client.isOpen) this.#client.destroy();
          reject(new RedisUnavailableError(`redis: ${this.where} did not answer within ${this.options.timeoutMs} ms`));
        });
      }, this.options.timeoutMs);
      timer.unref();
    });
    try {
      const result = await Promise.race([this.#ready().then(() => operation(this.#client)), deadline]);
      this.#markUp();
      return result;
    } catch (error) {
      // Logged as it is thrown: a refusal (a wrong password) is as expected as a timeout, so one line without a stack.
      const unavailable =
        error instanceof RedisUnavailableError
          ? error
          : new RedisUnavailableError(`redis: ${this.where}: ${errorMessage(error)}`, { cause: error });
      this.#markDown(unavailable);
      throw unavailable;
    } finally {
      settled = true;
      clearTimeout(timer);
    }
  }

  /**
   * Subscribes to `channels` on a connection of its own that reconnects by
   * itself (and subscribes again). `onReady` runs on each connection made.
   */
  openSubscriber(channels: Record<string, (message: string) => void>, onReady: () => void): SubscriberConnection {
    const subscriber = this.#client.duplicate({
      disableOfflineQueue: false,
      socket: {
        connectTimeout: this.options.timeoutMs,
        reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, MAX_SUBSCRIBER_BACKOFF_MS),
      },
    });
    subscriber.on('error', () => {});
    subscriber.on('ready', onReady);
    this.#subscribers.add(subscriber);
    // In the background: a replica starts without Redis, and subscribes once it
    // is there (a SUBSCRIBE queued before the connection would be sent twice);
    // node-redis subscribes again by itself after later reconnects.
    let closed = false;
    const close = () => {
      closed = true;
      this.#subscribers.delete(subscriber);
      if (subscriber.isOpen) subscriber.destroy();
    };
    const subscribed = subscriber.connect().then(async () => {
      if (closed) return close();
      for (const [channel, onMessage] of Object.entries(channels)) await subscriber.subscribe(channel, onMessage);
    });
    subscribed.catch(() => {});
    return { subscribed, close };
  }

  /** Checks Redis now (for start-up and the probe); resolves whether it answered. */
  async check(): Promise<boolean> {
    try {
      await this.call((client) => client.ping());
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#probe);
    if (this.#client.isOpen) this.#client.destroy();
    for (const subscriber of this.#subscribers) if (subscriber.isOpen) subscriber.destroy();
  }

  #ready(): Promise<void> {
    if (this.#client.isReady) return Promise.resolve();
    this.#connecting ??= (async () => {
      if (this.#client.isOpen) this.#client.destroy();
      await this.#client.connect();
    })().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  #markUp(): void {
    if (this.#up) return;
    this.#up = true;
    clearInterval(this.#probe);
    this.#probe = undefined;
    this.options.logger.info({ redis: this.where }, 'cluster: redis reachable');
    for (const listener of this.#upListeners) listener();
  }

  #markDown(error: unknown): void {
    this.#failedAt = Date.now();
    if (!this.#up && this.#probe) return;
    // Said once per outage, the first one included (a wrong password, or Redis down at start-up).
    this.options.logger.warn({ redis: this.where, err: error }, 'cluster: redis unreachable; serving on our own until it is back');
    this.#up = false;
    this.#probe ??= setInterval(() => {
      if (Date.now() - this.#failedAt >= RETRY_AFTER_FAILURE_MS) void this.check();
    }, RETRY_AFTER_FAILURE_MS / 2);
    this.#probe.unref();
  }
}
