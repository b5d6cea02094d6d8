#!/usr/bin/env node
// The cost of evicting a full bounded cache's oldest entry, per insert, at the sizes
// toolgate's caches use (10,000: the token cache, session reports; 100,000: budget
// reservations, rate buckets, fleet leases): a plain Map with `map.keys().next()`
// (V8 walks the deleted slots at the front of its table) against OrderedMap
// (src/shared/ordered-map.ts). Needs a build (npm run build).
//   node scripts/bench/ordered-map.mjs
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const { OrderedMap } = createRequire(import.meta.url)(
  path.join(ROOT, "dist/src/shared/ordered-map.js"),
);

function run(make, evict, cap) {
  const m = make();
  for (let i = 0; i < cap; i++) m.set(`k${i}`, i);
  let n = cap;
  const N = 100_000;
  for (let k = 0; k < 10_000; k++) {
    m.set(`k${n++}`, k);
    evict(m);
  }
  const t0 = process.hrtime.bigint();
  for (let k = 0; k < N; k++) {
    m.set(`k${n++}`, k);
    evict(m);
  }
  return Number(process.hrtime.bigint() - t0) / N / 1e3;
}

console.log("| entries | Map + keys().next() µs/insert | OrderedMap + shift() µs/insert |");
console.log("|---:|---:|---:|");
for (const cap of [1_000, 10_000, 100_000]) {
  const plain = run(
    () => new Map(),
    (m) => m.delete(m.keys().next().value),
    cap,
  );
  const ordered = run(
    () => new OrderedMap(),
    (m) => m.shift(),
    cap,
  );
  console.log(`| ${cap} | ${plain.toFixed(2)} | ${ordered.toFixed(2)} |`);
}
