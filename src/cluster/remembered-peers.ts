import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../logger.js';
import { PRIVATE_FILE_MODE } from '../private-files.js';

const REMEMBERED_PEERS_FILE = 'cluster-peers.json';
/** More than any cluster has: each is asked at once, so a damaged file must not make it thousands. */
const MAX_REMEMBERED = 64;
const MAX_FILE_BYTES = 64 * 1024;

/** A replica this volume's cluster had: its node id and where it was reached. */
export interface RememberedPeer {
  node: string;
  url: string;
}

/** The entry as a replica to ask, its URL an origin as `cluster.advertise_url` is (`scheme://host[:port]`); undefined for anything else. */
function rememberedPeer(value: unknown): RememberedPeer | undefined {
  const peer = value as Partial<RememberedPeer> | null;
  if (typeof peer?.node !== 'string' || typeof peer.url !== 'string') return undefined;
  try {
    const url = new URL(peer.url);
    const origin = (url.protocol === 'http:' || url.protocol === 'https:') && !url.username && !url.password && url.pathname === '/';
    return origin && !url.search && !url.hash ? { node: peer.node, url: url.origin } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The replicas of the cluster as this volume last saw them, kept in the cache
 * directory. A replica that cannot reach Redis from the moment it starts
 * knows no live replica; these are the ones it can ask whether the others
 * reach Redis (and may have purged its copies meanwhile). Written when the
 * list changes: the writer and the peers it saw, so the replicas sharing a
 * volume write the same list.
 */
export class RememberedPeers {
  readonly #file: string;
  #written: string | undefined;
  #writing: Promise<void> = Promise.resolve();
  #failureSaid = false;

  constructor(
    cacheDir: string,
    private readonly logger: Logger,
  ) {
    this.#file = path.join(cacheDir, REMEMBERED_PEERS_FILE);
  }

  /**
   * The replicas remembered, this one (`self`) left out, each URL once, at
   * most 64; none when the file is missing, or said once when it is not a
   * regular file (a FIFO would hang the start), is over 64 KiB or is not a list.
   */
  async read(self: string): Promise<RememberedPeer[]> {
    let listed: unknown;
    try {
      listed = JSON.parse(await this.#readText());
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') this.#sayUnusable(error);
      return [];
    }
    if (!Array.isArray(listed)) {
      this.#sayUnusable(new Error('not a JSON list'));
      return [];
    }
    const peers = new Map<string, RememberedPeer>();
    for (const entry of listed) {
      const peer = rememberedPeer(entry);
      if (peer && peer.node !== self && !peers.has(peer.url)) peers.set(peer.url, peer);
    }
    return [...peers.values()].slice(0, MAX_REMEMBERED);
  }

  /** The file's text, opened without waiting (O_NONBLOCK) and read only when it is a regular file of at most 64 KiB. */
  async #readText(): Promise<string> {
    const handle = await open(this.#file, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw new Error('not a regular file');
      if (info.size > MAX_FILE_BYTES) throw new Error(`larger than ${MAX_FILE_BYTES} bytes`);
      return await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  }

  #sayUnusable(error: unknown): void {
    this.logger.warn(
      { file: this.#file, err: error },
      'cluster: the remembered replicas file cannot be used, so none is asked; the gateway writes it anew once it reaches redis',
    );
  }

  /** Remembers `self` and `peers`, if that differs from what this process last wrote; one write at a time. Never throws. */
  remember(self: RememberedPeer, peers: readonly RememberedPeer[]): Promise<void> {
    const listed = [self, ...peers]
      .map(({ node, url }) => ({ node, url }))
      .filter(({ url }) => url !== '')
      .sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
    this.#writing = this.#writing.then(() => this.#write(`${JSON.stringify(listed)}\n`));
    return this.#writing;
  }

  async #write(text: string): Promise<void> {
    if (text === this.#written) return;
    // Written aside under a name of its own, then renamed: a reader (another replica of the volume) never sees half a list.
    const aside = `${this.#file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await writeFile(aside, text, { mode: PRIVATE_FILE_MODE });
      await rename(aside, this.#file);
      this.#written = text;
    } catch (error) {
      await rm(aside, { force: true }).catch(() => {});
      if (this.#failureSaid) return;
      this.#failureSaid = true;
      this.logger.warn(
        { err: error },
        'cluster: could not remember the replicas in the cache directory; a start without redis will not know whom to ask',
      );
    }
  }
}
