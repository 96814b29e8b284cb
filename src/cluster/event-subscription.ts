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

/**
 * The replica's subscription to the cluster's events, and the proof that it
 * still hears them. Every `beaconEveryMs` it publishes a beacon (its send
 * time) on a channel of its own, which the same connection listens to.
 * Redis sends a connection its messages in the order it took them, so a
 * beacon heard back proves every event published before that beacon was sent
 * has been heard (`heardUpTo`). A beacon Redis took and not heard back a
 * beacon interval later means a connection that stalled without closing, or
 * never subscribed: it is replaced, and the caller catches up.
 */
export class EventSubscription {
  #heardUpTo = Date.now();
  /** The send time of the oldest beacon Redis took and this replica has not heard back. */
  #unheardSince: number | undefined;
  #connection: SubscriberConnection | undefined;
  #timer: NodeJS.Timeout | undefined;
  #connectedBefore = false;
  /** Said once per stall, however many connections it takes. */
  #stallSaid = false;

  constructor(private readonly options: EventSubscriptionOptions) {}

  /** Every event published before this time (this process's clock) has reached the replica. */
  get heardUpTo(): number {
    return this.#heardUpTo;
  }

  start(): void {
    this.#heardUpTo = Date.now();
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
      { [channel]: onMessage, [beaconChannel]: (message) => this.#heard(Number(message)) },
      () => {
        if (this.#connectedBefore) onResubscribed();
        this.#connectedBefore = true;
      },
    );
  }

  #heard(sentAt: number): void {
    // Its own beacons carry this process's past times: anything else on the channel proves nothing.
    if (!Number.isFinite(sentAt) || sentAt > Date.now()) return;
    if (sentAt > this.#heardUpTo) this.#heardUpTo = sentAt;
    if (this.#unheardSince !== undefined && sentAt >= this.#unheardSince) this.#unheardSince = undefined;
    if (this.#stallSaid) {
      this.#stallSaid = false;
      this.options.logger.info({}, 'cluster: the subscription to redis events hears again');
    }
  }

  async #sendBeacon(): Promise<void> {
    const now = Date.now();
    // Half an interval: the next tick may come a little early.
    if (this.#unheardSince !== undefined && now - this.#unheardSince >= this.options.beaconEveryMs / 2) {
      if (!this.#stallSaid)
        this.options.logger.warn(
          { unheardMs: now - this.#unheardSince },
          'cluster: the subscription to redis events stalled (its beacon went unheard); connecting it again until it hears',
        );
      this.#stallSaid = true;
      this.#unheardSince = undefined;
      this.#connection?.close();
      this.#connect();
      // The next beacon goes out once the new connection has had its interval to subscribe.
      return;
    }
    try {
      await this.options.link.call((client) => client.publish(this.options.beaconChannel, String(now)));
      if (now > this.#heardUpTo) this.#unheardSince ??= now;
    } catch {
      // Redis out: the link says so, and the partition guard judges.
    }
  }
}
