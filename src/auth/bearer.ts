// RFC 6750 2.1: `Bearer` (any case), one or more spaces, then the token as
// visible ASCII; anything else is no bearer token at all.
const TOKEN_CHARS = '[\\x21-\\x7e]+';
const BEARER = new RegExp(`^Bearer +(${TOKEN_CHARS}) *$`, 'i');
const TOKEN = new RegExp(`^${TOKEN_CHARS}$`);

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(authorization: string): string | undefined {
  return BEARER.exec(authorization)?.[1];
}

/** Whether `key` could be presented as a bearer token at all: one or more visible ASCII characters. */
export function isPresentableToken(key: string): boolean {
  return TOKEN.test(key);
}
