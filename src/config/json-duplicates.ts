/**
 * The first key given twice in one JSON object, and where its second
 * occurrence starts. JSON.parse keeps the last value without a word, so
 * `"port": 1, ..., "port": 2` would silently override; YAML refuses it.
 * Keys are compared decoded (`"a"` and `"\u0061"` are the same key).
 *
 * Only called on a text JSON.parse has accepted; iterative and linear in
 * the text's length, like jsonSyntaxError.
 */
export function jsonDuplicateKey(text: string): { path: Array<string | number>; offset: number } | undefined {
  const stack: Frame[] = [];
  let i = 0;
  while (i < text.length) {
    const char = text[i]!;
    const top = stack.at(-1);
    if (char === '{') stack.push({ keys: new Set(), key: '', expectsKey: true });
    else if (char === '[') stack.push({ index: 0 });
    else if (char === '}' || char === ']') stack.pop();
    else if (char === ',' && top !== undefined) {
      if ('index' in top) top.index++;
      else top.expectsKey = true;
    } else if (char === '"') {
      const start = i;
      i = stringEnd(text, i);
      if (top !== undefined && 'keys' in top && top.expectsKey) {
        const key = JSON.parse(text.slice(start, i)) as string;
        if (top.keys.has(key)) return { path: [...stack.slice(0, -1).map(member), key], offset: start };
        top.keys.add(key);
        top.key = key;
        top.expectsKey = false;
      }
      continue;
    }
    i++;
  }
  return undefined;
}

type Frame = { keys: Set<string>; key: string; expectsKey: boolean } | { index: number };

/** Where a frame's current value sits in its parent: its key, or its index. */
function member(frame: Frame): string | number {
  return 'index' in frame ? frame.index : frame.key;
}

/** The index just past the closing quote of the string that starts at `start`. */
function stringEnd(text: string, start: number): number {
  let i = start + 1;
  while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
  return i + 1;
}
