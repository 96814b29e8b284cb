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
