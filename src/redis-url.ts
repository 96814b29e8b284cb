/** `redis://host:port/db` without credentials, for logs and error messages. */
export function describeRedisUrl(url: string): string {
  try {
    const { protocol, host, pathname } = new URL(url);
    return `${protocol}//${host}${pathname === '/' ? '' : pathname}`;
  } catch {
    return 'the configured Redis URL';
  }
}
