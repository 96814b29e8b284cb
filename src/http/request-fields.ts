import type { IncomingHttpHeaders } from 'node:http';

/**
 * The request fields a memory hit reads, each as Node gives it (its value
 * trimmed; a repeated field joined). A fixed shape, not a map of names:
 * reading one is a load from a known slot, not a hashed lookup.
 */
export interface RequestFields {
  host: string | undefined;
  authorization: string | undefined;
  range: string | undefined;
  ifRange: string | undefined;
  ifMatch: string | undefined;
  ifNoneMatch: string | undefined;
  ifModifiedSince: string | undefined;
  ifUnmodifiedSince: string | undefined;
  origin: string | undefined;
  requestId: string | undefined;
  userAgent: string | undefined;
}

/** The fields a memory hit reads, from Node's parsed headers. */
export function requestFieldsOf(headers: IncomingHttpHeaders): RequestFields {
  return {
    host: headers.host,
    authorization: headers.authorization,
    range: headers.range,
    // Node joins repeated headers into one string; only Set-Cookie would be an array.
    ifRange: headers['if-range'] as string | undefined,
    ifMatch: headers['if-match'] as string | undefined,
    ifNoneMatch: headers['if-none-match'],
    ifModifiedSince: headers['if-modified-since'],
    ifUnmodifiedSince: headers['if-unmodified-since'],
    origin: headers.origin,
    requestId: headers['x-request-id'] as string | undefined,
    userAgent: headers['user-agent'],
  };
}
