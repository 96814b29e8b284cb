import { LRUCache } from 'lru-cache';
import { cacheKey, type RecordingMeta } from './recording-meta.js';

/** A recording the cache holds. What an answer needs beyond this is built where answers are. */
export interface CachedRecording {
  readonly key: string;
  readonly meta: RecordingMeta;
  /** False when the disk could not take it: it lives in memory only, until evicted there. */
  readonly onDisk: boolean;
}

export type CacheHit = { tier: 'memory'; entry: CachedRecording; body: Buffer } | { tier: 'disk'; entry: CachedRecording };

export interface CatalogueLimits {
  maxMemoryBytes: number;
  maxDiskBytes: number;
  /**
   * Each namespace's disk share in bytes: what it keeps against other
   * namespaces' traffic (see {@link RecordingCatalogue.makeRoom}). A namespace
   * not listed has none. Absent: no shares, one least-recently-used order for all.
   */
  diskShares?: ReadonlyMap<string, number>;
}

export interface CacheStats {
  /** Recordings known: on disk, or (a disk that refused them) in memory only. */
  entries: number;
  /** Recordings with a file on disk. */
  diskEntries: number;
  diskBytes: number;
  memoryEntries: number;
  memoryBytes: number;
  evictions: number;
  /** Disk bytes held by each namespace (upstream account) that holds any. */
  diskBytesByNamespace: Record<string, number>;
}

/**
 * Each upstream account's disk share (README, Durability): the sum of its
 * tenants' `disk_share`; the accounts where no tenant sets one split what the
 * explicit shares leave of `maxDiskBytes` equally.
 */
export function accountDiskShares(
  maxDiskBytes: number,
  tenants: ReadonlyArray<{ namespace: string; diskShare?: number | undefined }>,
): Map<string, number> {
  const explicit = new Map<string, number>();
  for (const { namespace, diskShare } of tenants) {
    if (diskShare !== undefined) explicit.set(namespace, (explicit.get(namespace) ?? 0) + diskShare);
  }
  const rest = new Set(tenants.map((tenant) => tenant.namespace).filter((namespace) => !explicit.has(namespace)));
  const reserved = [...explicit.values()].reduce((sum, share) => sum + share, 0);
  const equal = rest.size === 0 ? 0 : Math.max(0, Math.floor((maxDiskBytes - reserved) / rest.size));
  const shares = new Map(explicit);
  for (const namespace of rest) shares.set(namespace, equal);
  return shares;
}

// No recording's key nor namespace: `trimToBudget` makes room for nothing new.
const TRIM_KEY = '';

// A recording larger than this share of the memory tier is never held whole in
// memory: it streams from disk, so one long call cannot flush every short one.
const MEMORY_ENTRY_FRACTION = 1 / 8;

/**
 * What the cache holds, and nothing else: every recording's metadata in
 * recency order, the bodies of small ones in a byte-bounded memory LRU, the
 * readers pinning files, and the disk budget with each namespace's share. It
 * does no I/O and reads no clock, so its decisions (what a hit is, what to
 * evict) are tested alone.
 *
 * `#entries` is a Map in recency order (a hit moves its entry to the end), so
 * eviction takes the least recently used first without a scan of the disk.
 */
export class RecordingCatalogue {
  /** Bodies up to this size are kept in memory. */
  readonly memoryEntryMaxBytes: number;
  readonly #maxDiskBytes: number;
  readonly #diskShares: ReadonlyMap<string, number>;
  readonly #entries = new Map<string, CachedRecording>();
  /** The entry last in `#entries` (the most recently used), when known: a run of hits on one recording moves nothing. */
  #mostRecent: CachedRecording | undefined;
  readonly #memory: LRUCache<string, Buffer>;
  /** Readers of a file; a pinned entry is never evicted under them. */
  readonly #pins = new Map<string, number>();
  readonly #strings = new Map<string, string>();
  /**
   * The key of each recording memory holds, by namespace and call id: a
   * memory hit takes the very string the maps above hold, whose hash is
   * known and which each of them finds by identity, instead of making a new
   * key to hash and compare character by character in each.
   */
  readonly #memoryKeys = new Map<string, Map<string, string>>();
  #diskBytes = 0;
  #diskEntries = 0;
  readonly #namespaceBytes = new Map<string, number>();
  /** Room taken by stores under way, by key, until their entry is added or the room given back. */
  readonly #reserved = new Map<string, { namespace: string; size: number }>();
  #reservedBytes = 0;
  #evictions = 0;

  constructor(limits: CatalogueLimits) {
    this.#maxDiskBytes = limits.maxDiskBytes;
    this.#diskShares = limits.diskShares ?? new Map();
    this.memoryEntryMaxBytes = Math.floor(limits.maxMemoryBytes * MEMORY_ENTRY_FRACTION);
    this.#memory = new LRUCache<string, Buffer>({
      maxSize: Math.max(1, limits.maxMemoryBytes),
      maxEntrySize: Math.max(1, this.memoryEntryMaxBytes),
      sizeCalculation: (body) => Math.max(1, body.length),
      // A recording held in memory only (the disk refused it) is gone once its body is: no entry stays behind.
      dispose: (_body, key, reason) => {
        this.#forgetMemoryKey(key);
        // Not remove(): deleting from the LRU inside its own eviction corrupts it (a body served under another key).
        if (reason === 'evict' && this.#entries.get(key)?.onDisk === false) this.#dropEntry(key);
      },
    });
  }

  /** A hit, with its body when memory holds it, or undefined. A hit counts as a use for eviction. */
  lookup(key: string): CacheHit | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry !== this.#mostRecent) {
      this.#entries.delete(key);
      this.#entries.set(key, entry);
      this.#mostRecent = entry;
    }
    const body = this.#memory.get(key);
    return body ? { tier: 'memory', entry, body } : { tier: 'disk', entry };
  }

  /** The entry under `key`, without counting a use. */
  peek(key: string): CachedRecording | undefined {
    return this.#entries.get(key);
  }

  /** The body memory holds for `entry` while it is the current one, without counting a use. */
  peekBody(entry: CachedRecording): Buffer | undefined {
    return this.#entries.get(entry.key) === entry ? this.#memory.peek(entry.key) : undefined;
  }

  /** Records a recording as the most recently used, replacing any entry under its key. */
  add(key: string, meta: RecordingMeta, onDisk: boolean): CachedRecording {
    this.giveBackRoom(key);
    this.remove(key);
    // Thousands of entries share a few namespaces and one content type: keep one copy of each string.
    meta.namespace = this.#intern(meta.namespace);
    meta.contentType = this.#intern(meta.contentType);
    const entry: CachedRecording = { key, meta, onDisk };
    this.#entries.set(key, entry);
    this.#mostRecent = entry;
    if (onDisk) {
      this.#countDisk(meta.namespace, meta.size);
      this.#diskEntries++;
    }
    return entry;
  }

  /** Keeps a body in memory if it is small enough and `entry` is still the current one. */
  keepBody(entry: CachedRecording, body: Buffer): void {
    if (body.length > this.memoryEntryMaxBytes || this.#entries.get(entry.key) !== entry) return;
    // Set first: replacing a body disposes of the old one, and with it its key here.
    this.#memory.set(entry.key, body);
    if (!this.#memory.has(entry.key)) return;
    const { namespace, callId } = entry.meta;
    if (entry.key !== cacheKey(namespace, callId)) return;
    let byCall = this.#memoryKeys.get(namespace);
    if (byCall === undefined) {
      byCall = new Map();
      this.#memoryKeys.set(namespace, byCall);
    }
    byCall.set(callId, entry.key);
  }

  /** The key of the recording `callId` of `namespace` while memory holds its body, else undefined. */
  memoryKey(namespace: string, callId: string): string | undefined {
    return this.#memoryKeys.get(namespace)?.get(callId);
  }

  #forgetMemoryKey(key: string): void {
    // A key is `namespace/callId`; a namespace has no `/`.
    const slash = key.indexOf('/');
    const byCall = this.#memoryKeys.get(key.slice(0, slash));
    if (byCall?.delete(key.slice(slash + 1)) && byCall.size === 0) this.#memoryKeys.delete(key.slice(0, slash));
  }

  /** Forgets a recording in every tier; answers what was forgotten. */
  remove(key: string): CachedRecording | undefined {
    const entry = this.#dropEntry(key);
    this.#memory.delete(key);
    return entry;
  }

  /** Forgets a recording's entry, its body left to the caller. */
  #dropEntry(key: string): CachedRecording | undefined {
    const entry = this.#entries.get(key);
    if (entry?.onDisk) {
      this.#countDisk(entry.meta.namespace, -entry.meta.size);
      this.#diskEntries--;
    }
    this.#entries.delete(key);
    if (entry === this.#mostRecent) this.#mostRecent = undefined;
    return entry;
  }

  /**
   * Pins an entry while its file is read, so eviction leaves it alone.
   * @returns the unpin function; idempotent.
   */
  pin(key: string): () => void {
    this.#pins.set(key, (this.#pins.get(key) ?? 0) + 1);
    let unpinned = false;
    return () => {
      if (unpinned) return;
      unpinned = true;
      const count = (this.#pins.get(key) ?? 1) - 1;
      if (count > 0) this.#pins.set(key, count);
      else this.#pins.delete(key);
    };
  }

  /**
   * Chooses what to evict so that `size` more bytes under `key`, of
   * `namespace`, fit the disk budget, and forgets the victims at once so a
   * concurrent store counts their room as taken; the caller removes their
   * files. Never a pinned entry. Least recently used first among the
   * namespaces over their disk share (the newcomer counted in its own), then
   * the newcomer's own namespace: a namespace within its share is never
   * evicted for another's traffic. Undefined when no room can be made under
   * that rule (nothing is forgotten then).
   *
   * The room stays taken until `add` adds the recording under `key` or
   * `giveBackRoom(key)` gives it back, so stores under way at once each
   * count the others' recordings, not the same free bytes.
   */
  makeRoom(key: string, namespace: string, size: number): CachedRecording[] | undefined {
    this.giveBackRoom(key);
    const replaced = this.#entries.get(key);
    const freed = replaced?.onDisk ? replaced.meta.size : 0;
    const budget = this.#maxDiskBytes - size + freed;
    if (budget < 0) return undefined;
    const usage = new Map(this.#namespaceBytes);
    for (const room of this.#reserved.values()) usage.set(room.namespace, (usage.get(room.namespace) ?? 0) + room.size);
    usage.set(namespace, (usage.get(namespace) ?? 0) - freed + size);
    const victims = new Set<CachedRecording>();
    let projected = this.#diskBytes + this.#reservedBytes;
    const choose = (wanted: (entry: CachedRecording) => boolean): void => {
      for (const entry of this.#entries.values()) {
        if (projected <= budget) return;
        if (!entry.onDisk || entry.key === key || this.#pins.has(entry.key) || victims.has(entry) || !wanted(entry)) continue;
        victims.add(entry);
        projected -= entry.meta.size;
        usage.set(entry.meta.namespace, (usage.get(entry.meta.namespace) ?? 0) - entry.meta.size);
      }
    };
    choose((entry) => (usage.get(entry.meta.namespace) ?? 0) > (this.#diskShares.get(entry.meta.namespace) ?? 0));
    choose((entry) => entry.meta.namespace === namespace);
    if (projected > budget) return undefined;
    for (const victim of victims) this.remove(victim.key);
    this.#evictions += victims.size;
    this.#reserved.set(key, { namespace, size });
    this.#reservedBytes += size;
    return [...victims];
  }

  /** Gives back the room `makeRoom` took for `key` (its store failed); nothing when none is taken. */
  giveBackRoom(key: string): void {
    const room = this.#reserved.get(key);
    if (!room) return;
    this.#reserved.delete(key);
    this.#reservedBytes -= room.size;
  }

  /**
   * What to evict so that what is stored fits the disk budget again (a budget
   * lowered since, a crash in the middle of stores), by `makeRoom`'s rule;
   * the victims are forgotten at once, and the caller removes their files.
   */
  trimToBudget(): CachedRecording[] {
    const victims = this.makeRoom(TRIM_KEY, TRIM_KEY, 0) ?? [];
    this.giveBackRoom(TRIM_KEY);
    return victims;
  }

  /** Every entry, least recently used first (a snapshot). */
  all(): CachedRecording[] {
    return [...this.#entries.values()];
  }

  stats(): CacheStats {
    return {
      entries: this.#entries.size,
      diskEntries: this.#diskEntries,
      diskBytes: this.#diskBytes,
      memoryEntries: this.#memory.size,
      memoryBytes: this.#memory.calculatedSize,
      evictions: this.#evictions,
      diskBytesByNamespace: Object.fromEntries(this.#namespaceBytes),
    };
  }

  #countDisk(namespace: string, delta: number): void {
    this.#diskBytes += delta;
    const bytes = (this.#namespaceBytes.get(namespace) ?? 0) + delta;
    if (bytes > 0) this.#namespaceBytes.set(namespace, bytes);
    else this.#namespaceBytes.delete(namespace);
  }

  #intern(value: string): string {
    const known = this.#strings.get(value);
    if (known !== undefined) return known;
    this.#strings.set(value, value);
    return value;
  }
}
