import { describe, expect, test } from 'vitest';
import { randomUuid } from '../src/random-uuid.js';

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('randomUuid', () => {
  // Several batches of 128, so that refills are crossed.
  const uuids = Array.from({ length: 1000 }, () => randomUuid());

  test('each is a version 4 UUID in lowercase, as crypto.randomUUID writes one', () => {
    for (const uuid of uuids) expect(uuid).toMatch(V4);
  });

  test('none repeats', () => {
    expect(new Set(uuids).size).toBe(uuids.length);
  });

  test('every random digit takes all 16 values, and the variant digit all 4 of its own', () => {
    const digitsAt = (position: number) => new Set(uuids.map((uuid) => uuid[position]));
    for (let position = 0; position < 36; position++) {
      if ([8, 13, 18, 23].includes(position)) expect(digitsAt(position)).toEqual(new Set(['-']));
      else if (position === 14) expect(digitsAt(position)).toEqual(new Set(['4']));
      else if (position === 19) expect(digitsAt(position)).toEqual(new Set(['8', '9', 'a', 'b']));
      else expect(digitsAt(position).size, `position ${position}`).toBe(16);
    }
  });

  test('the variant digit does not follow from the digits beside it', () => {
    // With 1,000 UUIDs, a variant taken from bits another digit shows would pair each variant with only some digits after it.
    const pairs = new Set(uuids.map((uuid) => uuid.slice(19, 21)));
    expect(pairs.size).toBe(64);
  });
});
