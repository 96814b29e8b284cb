import type { GatewayConfig } from '../config/index.js';
import { createRedisIndex, createSqliteIndex, type RecordingIndex } from './recording-index.js';

/** The index the config names: sqlite in the cache directory by default, or a shared Redis. */
export function openIndex(config: Pick<GatewayConfig, 'cache'>): RecordingIndex {
  const { index, dir } = config.cache;
  return index.kind === 'redis' ? createRedisIndex(index.url) : createSqliteIndex(dir);
}
