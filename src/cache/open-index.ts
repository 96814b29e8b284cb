import type { GatewayConfig } from '../config/index.js';
import type { RecordingIndex } from './recording-index.js';
import { createSqliteIndex, type SqliteIndexOptions } from './sqlite-index.js';

/** The index the config names: sqlite in the cache directory by default, or a shared Redis (its client loaded only then). */
export async function openIndex(config: Pick<GatewayConfig, 'cache'>, sqlite: SqliteIndexOptions = {}): Promise<RecordingIndex> {
  const { index, dir } = config.cache;
  if (index.kind !== 'redis') return createSqliteIndex(dir, sqlite);
  const { createRedisIndex } = await import('./redis-index.js');
  return createRedisIndex(index.url);
}
