import { describe, expect, test } from 'vitest';
import { terminalSafe } from '../../src/cli/terminal-safe.js';

describe('terminalSafe', () => {
  test.each([
    ['C1 CSI', 'a\u009b2Kb', 'a\\u009b2Kb'],
    ['ESC and BEL', '\u001b]0;x\u0007', '\\u001b]0;x\\u0007'],
    ['DEL', 'a\u007fb', 'a\\u007fb'],
    ['a right-to-left override and an isolate', 'a\u202eb\u2066c', 'a\\u202eb\\u2066c'],
    ['line and paragraph separators', 'a\u2028b\u2029', 'a\\u2028b\\u2029'],
  ])('escapes %s', (_name, text, shown) => {
    expect(terminalSafe(text)).toBe(shown);
  });

  test('leaves printable text alone, letters beyond ASCII included', () => {
    expect(terminalSafe('bytes=0-1 Mozilla/5.0 (Müller; 日本)')).toBe('bytes=0-1 Mozilla/5.0 (Müller; 日本)');
  });

  test('an escaped JSON line is the same JSON', () => {
    const line = JSON.stringify({ range: 'x\u009by', ua: '\u202e' });
    expect(JSON.parse(terminalSafe(line))).toEqual(JSON.parse(line));
  });
});
