/** What a floor server (peers-node-floor.ts, peers-net-floor.ts) is told by the bench, from its environment. */
export interface FloorEnv {
  /** Listens on 127.0.0.1. */
  port: number;
  /** The upstream's base URL, `http://127.0.0.1:PORT/v1`. */
  upstreamBase: string;
  /** `Bearer <the server key the upstream wants>`. */
  upstreamAuthorization: string;
}

/** PEERS_FLOOR_PORT, PEERS_FLOOR_UPSTREAM and PEERS_FLOOR_KEY, or an error naming `script`. */
export function floorEnv(script: string): FloorEnv {
  const port = Number(process.env.PEERS_FLOOR_PORT);
  const upstreamBase = process.env.PEERS_FLOOR_UPSTREAM;
  const key = process.env.PEERS_FLOOR_KEY;
  if (!Number.isSafeInteger(port) || port <= 0 || !upstreamBase || !key) {
    throw new Error(`${script}: PEERS_FLOOR_PORT, PEERS_FLOOR_UPSTREAM and PEERS_FLOOR_KEY must be set`);
  }
  return { port, upstreamBase, upstreamAuthorization: `Bearer ${key}` };
}
