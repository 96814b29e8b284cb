import { createHmac } from 'node:crypto';
import { canonicalCallId, describeValue } from './call-id.js';

/** What a signed recording URL is minted from. */
export interface RecordingSignatureInput {
  tenant: string;
  callId: number | string;
  /** Unix seconds; the URL is valid while now < expiresAt. */
  expiresAt: number;
  secret: string;
}

export interface SignRecordingUrlOptions extends RecordingSignatureInput {
  /** The signing key's id, so the gateway knows which of the tenant's keys to check. */
  kid: string;
  /** The gateway's public base URL (`https://recordings.example.com`); omit for a path-only URL. */
  baseUrl?: string;
}

/**
 * `base64url_nopad(HMAC_SHA256(secret, "v1\n" + tenant + "\n" + id + "\n" + exp))`:
 * the contract's formula, so a backend in any language can mint the same signature.
 */
export function recordingSignature({ tenant, callId, expiresAt, secret }: RecordingSignatureInput): string {
  return createHmac('sha256', secret).update(`v1\n${tenant}\n${callId}\n${expiresAt}`).digest('base64url');
}

/**
 * Mints a signed URL for `<audio src>`: `/v1/call/recording/{id}.mp3?tenant=…&exp=…&kid=…&sig=…`.
 * @throws TypeError for a call id or expiry the gateway would refuse anyway.
 */
export function signRecordingUrl(options: SignRecordingUrlOptions): string {
  const callId = canonicalCallId(options.callId);
  if (!Number.isSafeInteger(options.expiresAt) || options.expiresAt < 1) {
    throw new TypeError(`expiresAt must be whole unix seconds, got ${describeValue(options.expiresAt)}`);
  }
  const query = new URLSearchParams({
    tenant: options.tenant,
    exp: String(options.expiresAt),
    kid: options.kid,
    sig: recordingSignature({ ...options, callId }),
  });
  const path = `/v1/call/recording/${callId}.mp3?${query}`;
  return options.baseUrl ? `${options.baseUrl.replace(/\/+$/, '')}${path}` : path;
}
