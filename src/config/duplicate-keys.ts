import { type Document, isAlias, isMap, isScalar, isSeq } from 'yaml';

/** The first key given twice in one mapping of the file, its path and where its second occurrence starts. */
export interface DuplicateKey {
  path: Array<string | number>;
  offset: number;
}

/**
 * The first key given twice in one JSON object, and where its second
 * occurrence starts. JSON.parse keeps the last value without a word, so
 * `"port": 1, ..., "port": 2` would silently override; YAML refuses it.
 * Keys are compared decoded (`"a"` and `"\u0061"` are the same key).
 *
 * Only called on a text JSON.parse has accepted; iterative and linear in
 * the text's length, like jsonSyntaxError.
 */
export function jsonDuplicateKey(text: string): DuplicateKey | undefined {
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

/**
 * The first key given twice in one mapping of a YAML document parsed with
 * `uniqueKeys: false`, in the terms `toJS` uses: keys are compared as the
 * property names they become, so `port`, `"port"` and `'port'` are one key
 * (and so are `1` and `"1"`). A merge key (`<<` under YAML 1.1) is no key of
 * its own, and a key given beside it overrides the merged one on purpose;
 * duplicates inside a merged mapping are found where that mapping is written.
 * The offset is that of the second key's first character.
 */
export function yamlDuplicateKey(document: Document): DuplicateKey | undefined {
  return yamlDuplicateIn(document, document.contents, []);
}

function yamlDuplicateIn(document: Document, node: unknown, path: Array<string | number>): DuplicateKey | undefined {
  if (isSeq(node)) {
    for (const [index, item] of node.items.entries()) {
      const found = yamlDuplicateIn(document, item, [...path, index]);
      if (found !== undefined) return found;
    }
  } else if (isMap(node)) {
    const keys = new Set<string>();
    for (const { key, value } of node.items) {
      const scalar = isAlias(key) ? key.resolve(document) : key;
      const isMergeKey = isScalar(scalar) && typeof scalar.value === 'symbol';
      const name = isScalar(scalar) && !isMergeKey ? propertyName(scalar.value) : undefined;
      if (name !== undefined) {
        if (keys.has(name)) return { path: [...path, name], offset: (isAlias(key) || isScalar(key) ? key.range?.[0] : undefined) ?? 0 };
        keys.add(name);
      }
      const found = yamlDuplicateIn(document, value, [...path, isMergeKey ? '<<' : (name ?? String(key))]);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/** The property name `toJS` gives a scalar key; undefined for keys that are no plain value (a date, binary). */
function propertyName(value: unknown): string | undefined {
  if (value === null) return '';
  return typeof value === 'object' || typeof value === 'function' ? undefined : String(value);
}
