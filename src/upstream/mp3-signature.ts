/** Bytes needed to recognise an MP3: an ID3v2 tag ("ID3") or an MPEG audio frame sync. */
export const MP3_SIGNATURE_BYTES = 3;

/**
 * True when the bytes begin like an MP3 file: an ID3v2 tag, or 11 set bits of
 * an MPEG audio frame sync followed by a valid (non-reserved) version/layer.
 */
export function looksLikeMp3(head: Uint8Array): boolean {
  if (head.length < MP3_SIGNATURE_BYTES) return false;
  if (head[0] === 0x49 && head[1] === 0x44 && head[2] === 0x33) return true;
  const b1 = head[1]!;
  const version = (b1 >> 3) & 0b11;
  const layer = (b1 >> 1) & 0b11;
  return head[0] === 0xff && (b1 & 0xe0) === 0xe0 && version !== 0b01 && layer !== 0b00;
}
