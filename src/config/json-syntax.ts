/**
 * Where a JSON text first breaks the grammar of RFC 8259, and why.
 *
 * Only called once JSON.parse has refused the text: Node 20's messages give
 * no position for some errors ("Unexpected end of JSON input", an unknown
 * literal) and quote a slice of the file, which may hold something secret.
 * This scan is iterative (a deeply nested file cannot overflow the stack) and
 * linear in the text's length.
 */
export function jsonSyntaxError(text: string): SyntaxProblem | undefined {
  const stack: Array<'}' | ']'> = [];
  let i = 0;
  const fail = (message: string, at = i): SyntaxProblem => ({ offset: at, message });
  const skipSpace = () => {
    // RFC 8259 section 2: the only whitespace is space, tab, line feed and carriage return.
    while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  };
  const unexpected = (expected: string) =>
    fail(i >= text.length ? `unexpected end of file; expected ${expected}` : `unexpected ${describe(text, i)}; expected ${expected}`);

  /** Reads a string at `i`; answers the error, or undefined once past its closing quote. */
  const readString = (): SyntaxProblem | undefined => {
    const start = i;
    i++;
    while (i < text.length) {
      const code = text.charCodeAt(i);
      if (code === 0x22) {
        i++;
        return undefined;
      }
      if (code === 0x5c) {
        const escaped = text[i + 1];
        if (escaped === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) i += 6;
        else if (escaped !== undefined && '"\\/bfnrt'.includes(escaped)) i += 2;
        else return fail('invalid escape in a string (use \\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX)');
      } else if (code < 0x20) {
        return fail('a line break or control character inside a string; write it as an escape such as \\n');
      } else {
        i++;
      }
    }
    return fail('unterminated string: it has no closing double quote', start);
  };

  /** Reads one value at `i`: true when it opened an object or a list, false for a whole value, or the error. */
  const readValue = (): SyntaxProblem | boolean => {
    skipSpace();
    const char = text[i];
    if (char === '{' || char === '[') {
      stack.push(char === '{' ? '}' : ']');
      i++;
      return true;
    }
    if (char === '"') return readString() ?? false;
    for (const literal of ['true', 'false', 'null']) {
      if (text.startsWith(literal, i)) {
        i += literal.length;
        return false;
      }
    }
    NUMBER.lastIndex = i;
    if ((char === '-' || (char !== undefined && char >= '0' && char <= '9')) && NUMBER.test(text)) {
      i = NUMBER.lastIndex;
      return false;
    }
    return unexpected('a value (a string in double quotes, a number, true, false, null, an object or a list)');
  };

  /** `"name": value`, as readValue answers. */
  const readMember = (): SyntaxProblem | boolean => {
    skipSpace();
    if (text[i] !== '"') return unexpected('a property name in double quotes');
    const error = readString();
    if (error !== undefined) return error;
    skipSpace();
    if (text[i] !== ':') return unexpected('":" after the property name');
    i++;
    return readValue();
  };

  let step = readValue();
  while (typeof step === 'boolean') {
    const justOpened = step;
    skipSpace();
    const close = stack.at(-1);
    if (close === undefined)
      return i < text.length ? fail(`unexpected ${describe(text, i)} after the end of the JSON document`) : undefined;
    if (text[i] === close) {
      i++;
      stack.pop();
      step = false;
    } else if (justOpened) {
      step = close === '}' ? readMember() : readValue();
    } else if (text[i] === ',') {
      i++;
      skipSpace();
      if (text[i] === close) return fail(`a trailing comma before ${close} is not allowed in JSON`);
      step = close === '}' ? readMember() : readValue();
    } else {
      return unexpected(`"," or "${close}"`);
    }
  }
  return step;
}

interface SyntaxProblem {
  offset: number;
  message: string;
}

// RFC 8259 section 6; sticky, so it matches at lastIndex only, in linear time.
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/** One character as an operator can find it: quoted when printable, its code point otherwise. */
function describe(text: string, at: number): string {
  const code = text.codePointAt(at) ?? 0;
  const char = String.fromCodePoint(code);
  return code > 0x20 && code !== 0x7f && code !== 0xfeff
    ? JSON.stringify(char)
    : `character U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
}
