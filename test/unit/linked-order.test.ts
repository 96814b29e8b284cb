import { describe, expect, test } from 'vitest';
import { LinkedOrder, type OrderLinks } from '../../src/linked-order.js';

interface Item extends OrderLinks<Item> {
  name: string;
}

function item(name: string): Item {
  return { name, previousInOrder: undefined, nextInOrder: undefined, inOrder: false };
}

function names(order: LinkedOrder<Item>): string[] {
  return order.toArray().map((each) => each.name);
}

describe('LinkedOrder', () => {
  test('keeps the order items were added in, and moves one added again to the end', () => {
    const order = new LinkedOrder<Item>();
    const [a, b, c] = [item('a'), item('b'), item('c')];
    expect(order.first()).toBeUndefined();
    order.add(a);
    order.add(b);
    order.add(c);
    expect(names(order)).toEqual(['a', 'b', 'c']);
    expect(order.first()).toBe(a);
    order.add(a);
    expect(names(order)).toEqual(['b', 'c', 'a']);
    expect(order.size).toBe(3);
  });

  test('deletes from the front, the middle and the end, and ignores an item it does not hold', () => {
    const order = new LinkedOrder<Item>();
    const items = ['a', 'b', 'c', 'd'].map(item);
    for (const each of items) order.add(each);
    order.delete(items[1]!);
    expect(names(order)).toEqual(['a', 'c', 'd']);
    order.delete(items[0]!);
    expect(names(order)).toEqual(['c', 'd']);
    expect(order.first()).toBe(items[2]);
    order.delete(items[3]!);
    expect(names(order)).toEqual(['c']);
    order.delete(items[3]!);
    order.delete(item('stranger'));
    expect(order.size).toBe(1);
    order.delete(items[2]!);
    expect(order.size).toBe(0);
    expect(order.first()).toBeUndefined();
    expect(names(order)).toEqual([]);
    order.add(items[3]!);
    expect(names(order)).toEqual(['d']);
  });

  test('agrees with a Set through a long run of random adds and deletes', () => {
    const order = new LinkedOrder<Item>();
    const reference = new Set<Item>();
    const items = Array.from({ length: 12 }, (_, i) => item(String(i)));
    let seed = 7;
    const next = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed;
    };
    for (let step = 0; step < 5_000; step++) {
      const chosen = items[next() % items.length]!;
      if (next() % 3 === 0) {
        order.delete(chosen);
        reference.delete(chosen);
      } else {
        order.add(chosen);
        reference.delete(chosen);
        reference.add(chosen);
      }
      expect(order.size).toBe(reference.size);
    }
    expect(order.toArray()).toEqual([...reference]);
  });

  test('a snapshot may be deleted from as it is walked', () => {
    const order = new LinkedOrder<Item>();
    for (const each of ['a', 'b', 'c'].map(item)) order.add(each);
    for (const each of order.toArray()) order.delete(each);
    expect(order.size).toBe(0);
  });
});
