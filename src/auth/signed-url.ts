import { timingSafeEqual } from 'node:crypto';
import { recordingSignature } from '../client/signing.js';
import { UnauthorizedError } from '../errors.js';
import type { Tenant, TenantRegistry } from './tenants.js';

/** The query parameters of a signed recording URL. */
export interface SignedUrlParams {
  tenant: string | undefined;
  exp: string | undefined;
  kid: string | undefined;
  sig: string | undefined;
}

const UNIX_SECONDS = /^[1-9][0-9]{0,11}$/;
const SIGNATURE_BYTES = 32;

export function hasSignedUrlParams(params: SignedUrlParams): boolean {
  return params.tenant !== undefined || params.exp !== undefined || params.kid !== undefined || params.sig !== undefined;
}

/**
 * Checks a signed URL for one call id. The order of checks never tells a caller
 * whether a tenant or kid exists: expiry first (it is the caller's own claim),
 * then every other problem is the same "invalid".
 * @returns the tenant and the expiry in unix seconds.
 */
export function verifySignedUrl(
  params: SignedUrlParams,
  callId: string,
  tenants: TenantRegistry,
  nowSeconds: number,
): { tenant: Tenant; expiresAt: number } {
  const { tenant: tenantId, exp, kid, sig } = params;
  if (!tenantId || !exp || !kid || !sig || !UNIX_SECONDS.test(exp)) throw new UnauthorizedError('invalid');
  const expiresAt = Number(exp);
  if (nowSeconds >= expiresAt) throw new UnauthorizedError('expired');

  const tenant = tenants.byId(tenantId);
  const secret = tenant?.signingKeys.get(kid);
  if (!tenant || secret === undefined) throw new UnauthorizedError('invalid');

  const expected = Buffer.from(recordingSignature({ tenant: tenantId, callId, expiresAt, secret }), 'base64url');
  const presented = Buffer.from(sig, 'base64url');
  // Buffer.from(…, 'base64url') skips junk characters, so also insist the
  // presented text is exactly the canonical no-padding encoding.
  if (
    presented.length !== SIGNATURE_BYTES ||
    presented.toString('base64url') !== sig ||
    !timingSafeEqual(presented, expected)
  ) {
    throw new UnauthorizedError('invalid');
  }
  return { tenant, expiresAt };
}
