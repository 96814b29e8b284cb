import { timingSafeEqual } from 'node:crypto';
import { recordingSignature } from '@recording-gateway/client';
import { UnauthorizedError } from '../errors.js';
import type { Tenant, TenantRegistry } from './tenants.js';

/** The query parameters of a signed recording URL. */
export interface SignedUrlParams {
  tenant: string | undefined;
  exp: string | undefined;
  kid: string | undefined;
  sig: string | undefined;
  /** True when one of them came more than once: such a URL is invalid, whichever value were taken. */
  repeated?: boolean;
}

const PARAM_NAMES = ['tenant', 'exp', 'kid', 'sig'] as const;

/** No signed URL: what a request with an Authorization header is checked with. */
export const NO_SIGNED_URL: SignedUrlParams = { tenant: undefined, exp: undefined, kid: undefined, sig: undefined };

/**
 * A signed URL's parameters from a request target (its query, decoded as a
 * form). One given twice (`sig=a&sig=b`) marks them `repeated`, so that no
 * parser's choice of value decides what is checked.
 */
export function signedUrlParamsOf(target: string): SignedUrlParams {
  const queryStart = target.indexOf('?');
  if (queryStart === -1) return NO_SIGNED_URL;
  const search = new URLSearchParams(target.slice(queryStart + 1));
  const value = (name: string) => search.get(name) ?? undefined;
  const params: SignedUrlParams = { tenant: value('tenant'), exp: value('exp'), kid: value('kid'), sig: value('sig') };
  if (PARAM_NAMES.some((name) => search.getAll(name).length > 1)) params.repeated = true;
  return params;
}

const UNIX_SECONDS = /^[1-9][0-9]{0,11}$/;
const SIGNATURE_BYTES = 32;
/** Clock skew allowed between a tenant backend that mints URLs and the gateway. */
export const SIGNED_URL_CLOCK_SKEW_SECONDS = 60;
const TOO_FAR_AHEAD = "Invalid signature: its expiry lies further ahead than the tenant's max_signed_url_ttl_seconds allows";

export function hasSignedUrlParams(params: SignedUrlParams): boolean {
  return params.tenant !== undefined || params.exp !== undefined || params.kid !== undefined || params.sig !== undefined;
}

/**
 * Checks a signed URL for one call id. The order of checks never tells a caller
 * whether a tenant or kid exists: a parameter given twice, or one missing or
 * malformed, is "invalid"; then expiry (it is the caller's own claim), then
 * every other problem is the same "invalid". An expiry further ahead than
 * the tenant's longest TTL (plus clock skew) is refused so that a leaked secret
 * cannot mint URLs that never expire; that is checked, and named, only once
 * the signature is known to be good, when it tells the caller nothing new.
 * @returns the tenant and the expiry in unix seconds.
 */
export function verifySignedUrl(
  params: SignedUrlParams,
  callId: string,
  tenants: TenantRegistry,
  nowSeconds: number,
): { tenant: Tenant; expiresAt: number } {
  const { tenant: tenantId, exp, kid, sig } = params;
  if (params.repeated || !tenantId || !exp || !kid || !sig || !UNIX_SECONDS.test(exp)) throw new UnauthorizedError('invalid');
  const expiresAt = Number(exp);
  if (nowSeconds >= expiresAt) throw new UnauthorizedError('expired');

  const tenant = tenants.byId(tenantId);
  const secret = tenant?.signingKeys.get(kid);
  if (!tenant || secret === undefined) throw new UnauthorizedError('invalid');

  const expected = Buffer.from(recordingSignature({ tenant: tenantId, callId, expiresAt, secret }), 'base64url');
  const presented = Buffer.from(sig, 'base64url');
  // Buffer.from(…, 'base64url') skips junk characters, so also insist the
  // presented text is exactly the canonical no-padding encoding.
  if (presented.length !== SIGNATURE_BYTES || presented.toString('base64url') !== sig || !timingSafeEqual(presented, expected)) {
    throw new UnauthorizedError('invalid');
  }
  if (expiresAt > nowSeconds + tenant.maxSignedUrlTtlSeconds + SIGNED_URL_CLOCK_SKEW_SECONDS) {
    throw new UnauthorizedError('invalid', TOO_FAR_AHEAD);
  }
  return { tenant, expiresAt };
}
