// @hono/node-server builds a request's URL from a Host like this as it is,
// without parsing it (its reValidHost); it parses any other, and refuses one
// it cannot make a URL of.
const ADAPTER_PLAIN_HOST = /^[a-z0-9._-]+(?::(?:[1-5]\d{3,4}|[6-9]\d{3}))?$/;

let lastParsable = '';

/**
 * Whether a URL can be made of `host` (WHATWG's parser: `gw.123` and
 * `1.2.3.4.5` end in a number, so must be an IPv4 address, and are none).
 * Parsed once for each new Host: nearly every request repeats the one before.
 */
export function isParsableHost(host: string): boolean {
  if (host === lastParsable) return true;
  if (!URL.canParse(`http://${host}/`)) return false;
  lastParsable = host;
  return true;
}

let lastPlain = '';

/**
 * A Host the adapter takes as it is and a URL can be made of: a lowercase
 * name with at most a port from 1000 to 59999. Checked once for each new Host.
 */
export function isPlainHost(host: string): boolean {
  if (host === lastPlain) return true;
  if (!ADAPTER_PLAIN_HOST.test(host) || !isParsableHost(host)) return false;
  lastPlain = host;
  return true;
}

/** A host name as a URL's host: an IPv6 address in brackets. */
export function asUrlHost(hostname: string): string {
  return hostname.includes(':') && !hostname.startsWith('[') ? `[${hostname}]` : hostname;
}
