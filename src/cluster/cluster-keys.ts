/** Where the cluster keeps each piece of its shared state in Redis. One place, so the layout reads at a glance. */
export const clusterKeys = {
  /** A random id set once; when it changes or vanishes, Redis lost its data and every replica publishes its copies again. */
  epoch: 'rg:epoch',
  /** Hash: volume id → the copy's RecordingMeta (JSON), for every volume holding the recording. */
  copies: (key: string) => `rg:copies:${key}`,
  /** Integer: bumped by every purge; a copy or download from an older generation is never stored. */
  generation: (key: string) => `rg:gen:${key}`,
  /** String `token|node|url`, with a TTL: the one replica downloading the recording from upstream. */
  lease: (key: string) => `rg:lease:${key}`,
  /** Counter the lease tokens come from. */
  fence: 'rg:fence',
  /** Present (with a TTL) while the upstream's 404 for the recording is remembered. */
  notFound: (key: string) => `rg:404:${key}`,
  /** Hash: `total` and `ns:<namespace>` byte counts of a volume's copies. */
  volumeUsage: (volume: string) => `rg:vol:${volume}:usage`,
  /** Sorted set: a volume's recording keys by last use (ms), oldest first, for the shared disk budget. */
  volumeRecency: (volume: string) => `rg:vol:${volume}:lru`,
  /** Hash: node id → `{url, volume, seenAt}` (JSON, `seenAt` by Redis's clock), refreshed by each replica's heartbeat. */
  nodes: 'rg:nodes',
  /** Present (with a TTL) once a peer request's nonce was used: the sha256 of its node id and nonce. */
  peerNonce: (digest: string) => `rg:peer-nonce:${digest}`,
  /** Pub/sub channel: `purge <key>` and `evict <volume> <key>`. */
  events: 'rg:events',
  /** Pub/sub channel only that replica listens to: its beacons (send times), proving its subscription still delivers. */
  beacon: (node: string) => `rg:beacon:${node}`,
} as const;
