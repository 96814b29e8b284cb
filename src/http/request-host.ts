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

let lastTaken = '';

/**
 * Whether the adapter takes `host` as the request's: a plain one, or one a
 * URL can be made of whose host name is the Host itself, up to case and
 * port. The adapter refuses any other (a percent-encoded or international
 * name, which the URL parser changes) as an invalid Host header, in an
 * answer made before the app, so with no request id and no log line.
 */
export function adapterTakesHost(host: string): boolean {
  if (host === lastTaken || isPlainHost(host)) return true;
  if (!isParsableHost(host)) return false;
  const { hostname } = new URL(`http://${host}/`);
  const taken = hostname.length === host.length || hostname === (host.includes(':') ? host.replace(/:\d+$/, '') : host).toLowerCase();
  if (taken) lastTaken = host;
  return taken;
}

// A Host whose port is empty (RFC 3986 3.2.3: `port = *DIGIT`), but for the colon an IPv6 address ends with.
const EMPTY_PORT = /^(.*[^:]):$/;

/** The Host without an empty port's colon, as RFC 3986 6.2.3 normalises it; the adapter refuses one that keeps it. */
export function withoutEmptyPort(host: string): string {
  return host.charCodeAt(host.length - 1) === 58 ? (EMPTY_PORT.exec(host)?.[1] ?? host) : host;
}

/** A host name as a URL's host: an IPv6 address in brackets. */
export function asUrlHost(hostname: string): string {
  return hostname.includes(':') && !hostname.startsWith('[') ? `[${hostname}]` : hostname;
}
