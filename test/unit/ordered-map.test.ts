/**
 * OrderedMap (src/shared/ordered-map.ts) against a plain Map as the model: the
 * same answers and the same iteration order after every operation of a seeded
 * random run, with oldest()/shift() equal to the Map's first entry. The caches
 * on the decision path evict with it (their cost: scripts/bench/ordered-map.mjs).
 */
import { OrderedMap } from "../../src/shared/ordered-map";
import { seededRandom } from "../helpers/rng";

function firstOf<K, V>(m: Map<K, V>): [K, V] | undefined {
  for (const e of m) return e;
  return undefined;
}

test("behaves as a Map, in the Map's order, through 60,000 seeded random operations", () => {
  const r = seededRandom(7);
  const model = new Map<number, number>();
  const om = new OrderedMap<number, number>();
  for (let i = 0; i < 60_000; i++) {
    const key = Math.floor(r() * 300);
    const op = r();
    if (op < 0.35) {
      expect(om.set(key, i)).toBe(om);
      model.set(key, i);
    } else if (op < 0.5) {
      // an LRU bump: delete, then set again (moves the key to the end)
      expect(om.delete(key)).toBe(model.delete(key));
      om.set(key, i);
      model.set(key, i);
    } else if (op < 0.75) {
      expect(om.delete(key)).toBe(model.delete(key));
    } else if (op < 0.85) {
      const first = firstOf(model);
      expect(om.shift()).toEqual(first);
      if (first !== undefined) model.delete(first[0]);
    } else if (op < 0.9999) {
      expect(om.oldest()).toEqual(firstOf(model));
      expect(om.get(key)).toBe(model.get(key));
      expect(om.has(key)).toBe(model.has(key));
    } else {
      om.clear();
      model.clear();
    }
    expect(om.size).toBe(model.size);
    if (i % 500 === 0) {
      expect([...om]).toEqual([...model]);
      expect([...om.keys()]).toEqual([...model.keys()]);
      expect([...om.values()]).toEqual([...model.values()]);
    }
  }
  expect([...om.entries()]).toEqual([...model.entries()]);
});

test("a FIFO cache at steady state: shift always returns the oldest live key", () => {
  const om = new OrderedMap<string, number>();
  for (let i = 0; i < 1000; i++) om.set(`k${i}`, i);
  for (let i = 1000; i < 20_000; i++) {
    om.set(`k${i}`, i);
    if (i % 7 === 0) om.delete(`k${i - 500}`); // some leave early
    while (om.size > 1000) {
      const [k, v] = om.shift() as [string, number];
      expect(k).toBe(`k${v}`);
      expect(om.has(k)).toBe(false);
    }
  }
  const keys = [...om.keys()].map((k) => Number(k.slice(1)));
  expect(keys).toEqual([...keys].sort((a, b) => a - b)); // still oldest first
  expect(om.size).toBe(1000);
  expect(om.oldest()?.[1]).toBe(keys[0]);
});

test("set on a present key keeps its place; delete then set moves it to the end", () => {
  const om = new OrderedMap<string, number>();
  om.set("a", 1).set("b", 2).set("c", 3);
  om.set("a", 10);
  expect([...om]).toEqual([
    ["a", 10],
    ["b", 2],
    ["c", 3],
  ]);
  om.delete("a");
  om.set("a", 11);
  expect(om.oldest()).toEqual(["b", 2]);
  expect(om.shift()).toEqual(["b", 2]);
  expect(om.shift()).toEqual(["c", 3]);
  expect(om.shift()).toEqual(["a", 11]);
  expect(om.shift()).toBeUndefined();
  expect(om.oldest()).toBeUndefined();
});
