/**
 * A Map whose oldest entry is found in O(1).
 *
 * The bounded caches on the decision path evict their oldest entry once full.
 * With a plain Map that is `map.keys().next()`, which is not O(1) in V8: a
 * Map keeps deleted slots in its table until it rehashes, and an iterator
 * walks them. A cache that evicts from the front at steady state (one in, one
 * out per decision) leaves a growing run of deleted slots there, so finding
 * the first live key cost ~8 µs at 10,000 entries and ~50 µs at 100,000, on
 * every decision once the cache was full (scripts/bench/ordered-map.mjs).
 *
 * OrderedMap keeps its own queue of insertions beside the Map: each entry
 * carries the sequence number it was inserted with, and the queue's front is
 * skipped past entries that were deleted or re-inserted since. Order is the
 * Map's: insertion order, where `set` on a present key keeps its place and
 * `delete` then `set` moves it to the end (how an LRU bumps an entry).
 */
export class OrderedMap<K, V> {
  private readonly map = new Map<K, { value: V; seq: number }>();
  /** Insertions, oldest first from `head`; a slot is stale once its entry's seq differs. */
  private queue: Array<{ key: K; seq: number } | undefined> = [];
  private head = 0;
  private seq = 0;

  get size(): number {
    return this.map.size;
  }

  get(key: K): V | undefined {
    return this.map.get(key)?.value;
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  set(key: K, value: V): this {
    const slot = this.map.get(key);
    if (slot !== undefined) {
      slot.value = value;
      return this;
    }
    const seq = this.seq++;
    this.map.set(key, { value, seq });
    this.queue.push({ key, seq });
    return this;
  }

  delete(key: K): boolean {
    const had = this.map.delete(key);
    // a queue that is mostly stale slots is compacted, so it stays within twice the live size
    if (had && this.queue.length - this.head > 2 * this.map.size + 1024) this.compact();
    return had;
  }

  clear(): void {
    this.map.clear();
    this.queue = [];
    this.head = 0;
  }

  /** The oldest entry (first in iteration order), or undefined when empty. O(1) amortised. */
  oldest(): [K, V] | undefined {
    for (;;) {
      const q = this.queue[this.head];
      if (q === undefined) return undefined;
      const slot = this.map.get(q.key);
      if (slot !== undefined && slot.seq === q.seq) return [q.key, slot.value];
      this.queue[this.head++] = undefined;
      this.trimFront();
    }
  }

  /** Removes and returns the oldest entry. */
  shift(): [K, V] | undefined {
    const first = this.oldest();
    if (first !== undefined) {
      this.map.delete(first[0]);
      this.queue[this.head++] = undefined;
      this.trimFront();
    }
    return first;
  }

  *entries(): IterableIterator<[K, V]> {
    for (const [k, slot] of this.map) yield [k, slot.value];
  }

  *keys(): IterableIterator<K> {
    yield* this.map.keys();
  }

  *values(): IterableIterator<V> {
    for (const slot of this.map.values()) yield slot.value;
  }

  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.entries();
  }

  /** Drops the spent slots before `head` once they are half the array. */
  private trimFront(): void {
    if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /** Rebuilds the queue from the live entries (the Map's order is the queue's). */
  private compact(): void {
    const queue: Array<{ key: K; seq: number }> = [];
    for (const [key, slot] of this.map) queue.push({ key, seq: slot.seq });
    this.queue = queue;
    this.head = 0;
  }
}
