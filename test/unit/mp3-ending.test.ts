/**
 * A body framed by its connection only is whole when it ends with a whole MPEG
 * audio frame: checked against every cut of the real fixtures.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { frameHeaderAt } from '../../src/recordings/analysis/mp3-header.js';
import { BodyEnding, endsWithWholeFrame, MP3_ENDING_BYTES } from '../../src/upstream/mp3-ending.js';

const FIXTURES = ['call-1.mp3', 'call-2.mp3', 'call-4.mp3'].map((name) =>
  readFileSync(new URL(`../../dev/fixtures/${name}`, import.meta.url)),
);
const ID3V1 = Buffer.concat([Buffer.from('TAG'), Buffer.alloc(125, 0x20)]);

/** An APEv2 tag with one text item, its footer (and a header when `withHeader`) as the format lays them out. */
function apeTag(withHeader: boolean): Buffer {
  const item = Buffer.concat([Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('Title\0'), Buffer.from('call!')]);
  const part = (isHeader: boolean) => {
    const bytes = Buffer.alloc(32);
    bytes.write('APETAGEX', 0, 'latin1');
    bytes.writeUInt32LE(2000, 8);
    bytes.writeUInt32LE(item.length + 32, 12);
    bytes.writeUInt32LE(1, 16);
    bytes.writeUInt32LE(((withHeader ? 0x8000_0000 : 0) | (isHeader ? 0x2000_0000 : 0)) >>> 0, 20);
    return bytes;
  };
  return Buffer.concat([...(withHeader ? [part(true)] : []), item, part(false)]);
}

/** Where each frame ends, walking the frames from the end of the ID3v2 tag. */
function frameEnds(mp3: Buffer): Set<number> {
  let at = mp3.subarray(0, 3).toString('latin1') === 'ID3' ? 10 + ((mp3[6]! << 21) | (mp3[7]! << 14) | (mp3[8]! << 7) | mp3[9]!) : 0;
  const ends = new Set<number>();
  for (let frame = frameHeaderAt(mp3, at); frame?.length; frame = frameHeaderAt(mp3, at)) {
    at += frame.length;
    ends.add(at);
  }
  expect(at, 'the fixture is whole frames to its end').toBe(mp3.length);
  return ends;
}

function ending(body: Uint8Array): Uint8Array {
  return body.subarray(Math.max(0, body.length - MP3_ENDING_BYTES));
}

describe('endsWithWholeFrame', () => {
  test('a whole recording, with or without an APEv2 and an ID3v1 tag after it, ends whole', () => {
    for (const mp3 of FIXTURES) {
      expect(endsWithWholeFrame(ending(mp3))).toBe(true);
      expect(endsWithWholeFrame(ending(Buffer.concat([mp3, ID3V1])))).toBe(true);
      for (const withHeader of [false, true]) {
        expect(endsWithWholeFrame(ending(Buffer.concat([mp3, apeTag(withHeader)])))).toBe(true);
        expect(endsWithWholeFrame(ending(Buffer.concat([mp3, apeTag(withHeader), ID3V1])))).toBe(true);
      }
    }
  });

  test('a whole recording followed by bytes that are no tag does not end whole (they cannot be told from a cut)', () => {
    expect(endsWithWholeFrame(ending(Buffer.concat([FIXTURES[0]!, Buffer.from([0xff])])))).toBe(false);
    expect(endsWithWholeFrame(ending(Buffer.concat([FIXTURES[0]!, Buffer.alloc(7)])))).toBe(false);
  });

  test('cut anywhere past its second frame: whole exactly where a frame ends', () => {
    for (const mp3 of FIXTURES.slice(0, 2)) {
      const ends = frameEnds(mp3);
      const wrong: number[] = [];
      for (let cut = [...ends][1]! + 1; cut < mp3.length; cut++) {
        if (endsWithWholeFrame(ending(mp3.subarray(0, cut))) !== ends.has(cut)) wrong.push(cut);
      }
      expect(wrong).toEqual([]);
    }
  });

  test('bytes that are not MPEG audio never end whole', () => {
    expect(endsWithWholeFrame(Buffer.alloc(4096, 0))).toBe(false);
    expect(endsWithWholeFrame(Buffer.alloc(4096, 0xff))).toBe(false);
    expect(endsWithWholeFrame(new Uint8Array())).toBe(false);
  });
});

describe('BodyEnding', () => {
  test('keeps the last MP3_ENDING_BYTES of a body, whatever its chunks', () => {
    const body = FIXTURES[2]!;
    for (const size of [100, 1000, 7000, 65_536, 100_000]) {
      const kept = new BodyEnding();
      for (let at = 0; at < body.length; at += size) kept.add(body.subarray(at, at + size));
      expect(Buffer.from(kept.bytes()).equals(ending(body))).toBe(true);
    }
  });
});
