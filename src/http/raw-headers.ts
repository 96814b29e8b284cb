/** How many times a request carries header `lowerName` (lowercase), read from Node's `rawHeaders`, which keeps repeats apart. */
export function headerCount(rawHeaders: readonly string[], lowerName: string): number {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) count++;
  }
  return count;
}
