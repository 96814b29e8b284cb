import type { Context } from 'hono';
import { BadRequestError } from '../errors.js';

/*
 * The body of POST /v1/call/recording/{id}/signed-url, `{"ttl_seconds"?, "kid"?}`
 * or none at all, and the signing key it picks.
 */

const DEFAULT_SIGNED_URL_TTL_SECONDS = 300;
const BODY_EXAMPLE = '{"ttl_seconds": 300}';
/** A caller's field name or kid is cut to this many characters in a message (the config's kids are at most 64). */
const MAX_ECHOED_CHARS = 64;

/** What a signed-URL request asks for. */
export interface SignedUrlRequest {
  ttlSeconds: number;
  /** The signing key to mint with; undefined: the tenant's first. */
  kid: string | undefined;
}

/**
 * The request body, checked. A field it does not know is refused, as the
 * admin purge's are: a typo (`"ttl"`, `"key_id"`) would otherwise mint a URL
 * other than the one asked for, and nobody would notice.
 * @throws BadRequestError naming the field at fault.
 */
export async function readSignedUrlRequest(c: Context, maxTtlSeconds: number): Promise<SignedUrlRequest> {
  const defaultTtl = Math.min(DEFAULT_SIGNED_URL_TTL_SECONDS, maxTtlSeconds);
  const text = await c.req.text();
  if (text.trim() === '') return { ttlSeconds: defaultTtl, kid: undefined };
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new BadRequestError(`Body must be JSON such as ${BODY_EXAMPLE}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new BadRequestError(`Body must be a JSON object such as ${BODY_EXAMPLE}`);
  }
  const { ttl_seconds: ttl, kid, ...rest } = body as Record<string, unknown>;
  const [unknown] = Object.keys(rest);
  if (unknown !== undefined) throw new BadRequestError(`Unknown field ${quoteCut(unknown)}: expected ttl_seconds or kid`);
  const ttlSeconds = ttl === undefined ? defaultTtl : checkedTtl(ttl, maxTtlSeconds);
  if (kid !== undefined && typeof kid !== 'string') {
    throw new BadRequestError("kid must be a string: the id of one of the tenant's signing keys");
  }
  return { ttlSeconds, kid };
}

function checkedTtl(ttl: unknown, maxTtlSeconds: number): number {
  if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl < 1 || ttl > maxTtlSeconds) {
    throw new BadRequestError(`ttl_seconds must be an integer from 1 to ${maxTtlSeconds}`);
  }
  return ttl;
}

/**
 * The `[kid, secret]` a URL is minted with: the key `kid` names, or the
 * tenant's first (the config's order), so a tenant rotating keys can mint
 * with the new one while the old one still opens the URLs it signed.
 * @throws BadRequestError when the tenant has no such key, or none at all.
 */
export function chooseSigningKey(signingKeys: ReadonlyMap<string, string>, kid: string | undefined): [string, string] {
  if (kid === undefined) {
    const [first] = signingKeys;
    if (!first) throw new BadRequestError('This tenant has no signing keys configured');
    return first;
  }
  const secret = signingKeys.get(kid);
  if (secret === undefined) {
    // The caller holds the tenant's API key, and kids are in every URL it minted: naming them tells it nothing new.
    const known = [...signingKeys.keys()].map((id) => JSON.stringify(id)).join(', ');
    throw new BadRequestError(`kid ${quoteCut(kid)} names no signing key of this tenant; it has ${known || 'none'}`);
  }
  return [kid, secret];
}

/** A caller's string for a message, quoted and cut short: a body may hold anything up to the route's size limit. */
function quoteCut(value: string): string {
  return JSON.stringify(value.length > MAX_ECHOED_CHARS ? `${value.slice(0, MAX_ECHOED_CHARS)}…` : value);
}
