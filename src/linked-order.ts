/** An item a {@link LinkedOrder} can hold: the links are its own, so it is in at most one order at a time. */
export interface OrderLinks<T> {
  previousInOrder: T | undefined;
  nextInOrder: T | undefined;
  inOrder: boolean;
}

/**
 * Items in the order they were added, linked through fields of their own: an
 * add or delete allocates nothing. A Set does the same job, but a Set that
 * takes and drops members all the time (a connection going idle and busy with
 * every request) keeps rebuilding its hash table as the deleted slots fill it.
 */
export class LinkedOrder<T extends OrderLinks<T>> {
  #first: T | undefined;
  #last: T | undefined;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** The item added longest ago. */
  first(): T | undefined {
    return this.#first;
  }

  /** Adds `item` last; one already here moves to the end. */
  add(item: T): void {
    if (item.inOrder) this.delete(item);
    item.inOrder = true;
    item.previousInOrder = this.#last;
    item.nextInOrder = undefined;
    if (this.#last === undefined) this.#first = item;
    else this.#last.nextInOrder = item;
    this.#last = item;
    this.#size++;
  }

  delete(item: T): void {
    if (!item.inOrder) return;
    const { previousInOrder: previous, nextInOrder: next } = item;
    if (previous === undefined) this.#first = next;
    else previous.nextInOrder = next;
    if (next === undefined) this.#last = previous;
    else next.previousInOrder = previous;
    item.inOrder = false;
    item.previousInOrder = undefined;
    item.nextInOrder = undefined;
    this.#size--;
  }

  /** The items, first to last, as they are now: deleting while iterating is safe. */
  toArray(): T[] {
    const items: T[] = [];
    for (let item = this.#first; item !== undefined; item = item.nextInOrder) items.push(item);
    return items;
  }
}
