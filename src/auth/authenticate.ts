import { UnauthorizedError } from '../errors.js';
import { bearerToken, refusedCredential } from './bearer.js';
import type { Clock } from '../clock.js';
import { hasSignedUrlParams, verifySignedUrl, type SignedUrlParams } from './signed-url.js';
import type { Tenant, TenantRegistry } from './tenants.js';

/**
 * How a caller proved who it is; a signed URL also bounds how long the answer
 * may be cached. `keyId` and `kid` name the credential (in the audit trail)
 * without revealing it.
 */
export type Credential =
  | { kind: 'api-key'; keyId: string }
  | { kind: 'signed-url'; expiresAt: number; kid: string }
  | { kind: 'webhook-token' };

export interface Caller {
  tenant: Tenant;
  credential: Credential;
}

export interface Authenticator {
  /** For routes only a tenant backend may call: an API key is required. */
  apiKey(authorization: string | undefined): Caller;
  /** For reading a recording: an API key, or else a signed URL for this call id. */
  recordingReader(authorization: string | undefined, signed: SignedUrlParams, callId: string): Caller;
  /**
   * As `recordingReader`, with a missing credential or an unknown key
   * returned, not thrown: a flood of them then costs no exception each (the
   * memory-hit path). A signed URL that fails its checks still throws.
   */
  recordingReaderOrRefusal(authorization: string | undefined, signed: SignedUrlParams, callId: string): Caller | UnauthorizedError;
}

const API_KEY_MISSING = 'Missing credentials: send Authorization: Bearer <key> (a signed URL only opens a recording for reading)';
const READER_MISSING = 'Missing credentials: send Authorization: Bearer <key> or a signed URL';

/** Resolves credentials from memory alone: a digest lookup or an HMAC, never I/O. */
export function createAuthenticator(tenants: TenantRegistry, clock: Clock): Authenticator {
  function apiKeyOrRefusal(authorization: string): Caller | UnauthorizedError {
    const key = bearerToken(authorization);
    if (key === undefined) return new UnauthorizedError(refusedCredential(authorization));
    const match = tenants.matchApiKey(key);
    if (!match) return new UnauthorizedError('invalid');
    return { tenant: match.tenant, credential: { kind: 'api-key', keyId: match.keyId } };
  }

  function recordingReaderOrRefusal(
    authorization: string | undefined,
    signed: SignedUrlParams,
    callId: string,
  ): Caller | UnauthorizedError {
    if (authorization !== undefined && authorization !== '') return apiKeyOrRefusal(authorization);
    if (!hasSignedUrlParams(signed)) return new UnauthorizedError('missing', READER_MISSING);
    const { tenant, expiresAt } = verifySignedUrl(signed, callId, tenants, Math.floor(clock.now() / 1000));
    // verifySignedUrl accepted the kid, so it is set.
    return { tenant, credential: { kind: 'signed-url', expiresAt, kid: signed.kid! } };
  }

  const thrown = (caller: Caller | UnauthorizedError): Caller => {
    if (caller instanceof UnauthorizedError) throw caller;
    return caller;
  };

  return {
    apiKey(authorization) {
      // A signed URL opens a recording for reading only: this route needs the key itself.
      if (authorization === undefined || authorization === '') throw new UnauthorizedError('missing', API_KEY_MISSING);
      return thrown(apiKeyOrRefusal(authorization));
    },
    recordingReader: (authorization, signed, callId) => thrown(recordingReaderOrRefusal(authorization, signed, callId)),
    recordingReaderOrRefusal,
  };
}
