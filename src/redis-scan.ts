/** One page of a Redis SCAN, as node-redis answers it. */
export interface ScanPage {
  cursor: string | number;
  keys: string[];
}

/** Keys per SCAN page asked for (Redis's default, 10, makes listing 100,000 keys 20,000 round trips), small enough to keep each call short. */
export const REDIS_SCAN_COUNT = 1_000;

/**
 * The keys of a whole SCAN, a page at a time, each key once: SCAN may return
 * a key more than once while Redis rehashes. `page` runs one bounded SCAN
 * call from `cursor`.
 */
export async function* scanPages(page: (cursor: string) => Promise<ScanPage>): AsyncIterable<string[]> {
  const seen = new Set<string>();
  let cursor = '0';
  do {
    const answer = await page(cursor);
    cursor = String(answer.cursor);
    const keys = answer.keys.filter((key) => !seen.has(key));
    for (const key of keys) seen.add(key);
    if (keys.length > 0) yield keys;
  } while (cursor !== '0');
}
