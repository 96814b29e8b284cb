import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../logger.js';
import type { RedisLink, SubscriberConnection } from './redis-link.js';

export interface EventSubscriptionOptions {
  link: Pick<RedisLink, 'call' | 'openSubscriber'>;
  /** The cluster's events (purges, evictions). */
  channel: string;
  /** A channel only this replica listens to, for its beacons. */
  beaconChannel: string;
  onMessage: (message: string) => void;
  /** After every connection but the first: the caller catches up on what it may have missed. */
  onResubscribed: () => void;
  beaconEveryMs: number;
  logger: Logger;
}

/** Beacons sent and not heard back that are remembered: many beacon intervals, far past any stall. */
const MAX_UNHEARD_BEACONS = 64;

/**
 * The replica's subscription to the cluster's events, and the proof that it
 * still hears them. Every `beaconEveryMs` it publishes a beacon on a channel
 * of its own, which the same connection listens to. Redis sends a connection
 * its messages in the order it took them, so a beacon heard back proves every
 * event published before that beacon was sent has been heard (`heardUpTo`).
 * A beacon Redis took and not heard back a beacon interval later means a
 * connection that stalled without closing, or never subscribed: it is
 * replaced, and the caller catches up.
 *
 * Times are on the monotonic clock (`performance.now()`), which a step of the
 * wall clock does not move; a beacon counts only if this process sent it
 * (a random id and a sequence number it remembers), so nothing else
 * published on the channel can stand for one.
 */
export class EventSubscription {
  readonly #id = randomBytes(8).toString('hex');
  #sequence = 0;
  /** Beacons sent and not yet heard: sequence number → when sent. */
  readonly #sent = new Map<number, number>();
  #heardUpTo = performance.now();
  /** When the oldest beacon Redis took and this replica has not heard back was sent. */
  #unheardSince: number | undefined;
  #connection: SubscriberConnection | undefined;
  #timer: NodeJS.Timeout | undefined;
  #connectedBefore = false;
  /** Said once per stall, however many connections it takes. */
  #stallSaid = false;

  constructor(private readonly options: EventSubscriptionOptions) {}

  /** Settles once the connection listens (rejects if it never could): every event published from then on reaches the replica. */
  get subscribed(): Promise<void> {
    return this.#connection?.subscribed ?? Promise.reject(new Error('cluster: not subscribed'));
  }

  /** Every event published before this time (`performance.now()`) has reached the replica. */
  get heardUpTo(): number {
    return this.#heardUpTo;
  }

  start(): void {
    this.#heardUpTo = performance.now();
    this.#connect();
    this.#timer ??= setInterval(() => void this.#sendBeacon(), this.options.beaconEveryMs);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#connection?.close();
    this.#connection = undefined;
  }

  #connect(): void {
    const { channel, beaconChannel, onMessage, onResubscribed } = this.options;
    this.#connection = this.options.link.openSubscriber(
      { [channel]: onMessage, [beaconChannel]: (message) => this.#heard(message) },
      () => {
        if (this.#connectedBefore) onResubscribed();
        this.#connectedBefore = true;
      },
    );
  }

  #heard(message: string): void {
    const [id, sequence] = message.split(' ');
    const sentAt = id === this.#id ? this.#sent.get(Number(sequence)) : undefined;
    if (sentAt === undefined) return;
    // Heard in order: every beacon sent before this one is done with too.
    for (const earlier of this.#sent.keys()) {
      if (earlier > Number(sequence)) break;
      this.#sent.delete(earlier);
    }
    if (sentAt > this.#heardUpTo) this.#heardUpTo = sentAt;
    if (this.#unheardSince !== undefined && sentAt >= this.#unheardSince) this.#unheardSince = undefined;
    if (this.#stallSaid) {
      this.#stallSaid = false;
      this.options.logger.info({}, 'cluster: the subscription to redis events hears again');
    }
  }

  async #sendBeacon(): Promise<void> {
    const now = performance.now();
    // Half an interval: the next tick may come a little early.
    if (this.#unheardSince !== undefined && now - this.#unheardSince >= this.options.beaconEveryMs / 2) {
      if (!this.#stallSaid)
        this.options.logger.warn(
          { unheardMs: Math.round(now - this.#unheardSince) },
          'cluster: the subscription to redis events stalled (its beacon went unheard); connecting it again until it hears',
        );
      this.#stallSaid = true;
      this.#unheardSince = undefined;
      this.#connection?.close();
      this.#connect();
      // The next beacon goes out once the new connection has had its interval to subscribe.
      return;
    }
    const sequence = ++this.#sequence;
    this.#sent.set(sequence, now);
    if (this.#sent.size > MAX_UNHEARD_BEACONS) this.#sent.delete(this.#sent.keys().next().value as number);
    try {
      await this.options.link.call((client) => client.publish(this.options.beaconChannel, `${this.#id} ${sequence}`));
      if (this.#sent.has(sequence)) this.#unheardSince ??= now;
    } catch {
      // Redis out: the link says so, and the partition guard judges.
      this.#sent.delete(sequence);
    }
  }
}
