/**
 * A Last-Modified no later than when the message originated. RFC 9110
 * 8.8.2.1: an origin MUST NOT send a Last-Modified later than its Date; one
 * from the future (an upstream clock gone wrong) is replaced by that date,
 * else `If-Unmodified-Since: <now>` would fail on an unchanged recording.
 * A value that does not parse is returned as it is: nobody uses it as a date.
 */
export function lastModifiedAsOf(value: string | undefined, originatedAt: number): string | undefined {
  if (value === undefined) return undefined;
  const parsed = Date.parse(value);
  return parsed > originatedAt ? new Date(originatedAt).toUTCString() : value;
}

/**
 * The Last-Modified of a representation fetched at `fetchedAt`: `value` as
 * {@link lastModifiedAsOf} gives it, or, without one that parses as a date,
 * `fetchedAt` itself (RFC 9110 8.8.2.1: the closest known time to that of
 * the representation's last change), so every answer has one.
 */
export function lastModifiedOrFetchedAt(value: string | undefined, fetchedAt: number): string {
  const dated = lastModifiedAsOf(value, fetchedAt);
  return dated !== undefined && !Number.isNaN(Date.parse(dated)) ? dated : new Date(fetchedAt).toUTCString();
}
