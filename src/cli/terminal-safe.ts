// C0 and C1 controls, DEL, the line and paragraph separators and the bidi embeddings, overrides and isolates.
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is what it is for.
const ACTS_ON_A_TERMINAL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * Text from a client (an audit line's range or user agent) made safe to print
 * on an operator's terminal: every character that could move the cursor,
 * erase or reorder what is shown (C1's CSI passes Node's header checks) is
 * written as its `\uXXXX` escape. In JSON text that escape means the same
 * string, so a JSON line stays the same JSON.
 */
export function terminalSafe(text: string): string {
  return text.replace(ACTS_ON_A_TERMINAL, (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
