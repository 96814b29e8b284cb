/** A request target without its query string: the path as sent, nothing decoded. */
export function pathOfTarget(target: string): string {
  const queryStart = target.indexOf('?');
  return queryStart === -1 ? target : target.slice(0, queryStart);
}
