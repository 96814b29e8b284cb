// RFC 6750 2.1: `Bearer` (any case), one or more spaces, then the token as
// visible ASCII; anything else is no bearer token at all.
const TOKEN_CHARS = '[\\x21-\\x7e]+';
const BEARER = new RegExp(`^Bearer +(${TOKEN_CHARS}) *$`, 'i');
const TOKEN = new RegExp(`^${TOKEN_CHARS}$`);
// RFC 9110 11.4: the scheme is the credentials' first token, then a space or nothing.
const BEARER_SCHEME = /^Bearer(?: |$)/i;

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(authorization: string): string | undefined {
  return BEARER.exec(authorization)?.[1];
}

/**
 * Why an Authorization header gave no accepted token: `invalid` when it is a
 * Bearer credential (malformed, or a token nobody holds), `unsupported` when
 * it names another scheme or none (RFC 6750 3.1: no error code then).
 */
export function refusedCredential(authorization: string): 'invalid' | 'unsupported' {
  return BEARER_SCHEME.test(authorization) ? 'invalid' : 'unsupported';
}

/** Whether `key` could be presented as a bearer token at all: one or more visible ASCII characters. */
export function isPresentableToken(key: string): boolean {
  return TOKEN.test(key);
}
