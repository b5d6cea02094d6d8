#!/usr/bin/env node
// What reading a JSON body costs once its bytes are in, in process (run
// `npm run build` first):
//   node scripts/bench/body.mjs [--iterations N] [--rounds R] [--baseline DIR]
// The synchronous part of src/http/body.ts's readJson: bytes → UTF-8 text →
// JSON.parse → checkShape (depth, forbidden keys, lone surrogates and, where
// the build has it, duplicate keys). The bodies are the bench's request mix
// (scripts/bench/mix.mjs) as the native face and the OPA face receive them,
// plus a small one with a colon inside a string (a timestamp), and two larger
// ones: a request with 150 arguments (7.5 KB) and one of 1 MiB (the default
// body limit). Each kind is timed in batches after warm-up; the
// figure is the median batch's µs per body.
//
// --baseline DIR: another build's dist/ (e.g. a copy taken before a change).
// Its batches alternate with this build's in the same process, so a machine
// that is busy with other work slows both alike.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { MIX, refRequest } from "./mix.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(import.meta.url);

const argv = process.argv.slice(2);
const arg = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const iterations = Number(arg("--iterations") ?? 20000);
const rounds = Number(arg("--rounds") ?? 15);
const MAX_DEPTH = 32;

/** The synchronous tail of readJson, as the build in `dist` has it. */
function reader(dist) {
  const body = require(path.join(path.resolve(dist), "src", "http", "body.js"));
  const parse =
    typeof body.parseJsonText === "function"
      ? (buf) => body.parseJsonText(buf.toString("utf8"), MAX_DEPTH)
      : (buf) => {
          const text = buf.toString("utf8");
          const value = JSON.parse(text);
          body.checkShape(value, MAX_DEPTH);
          return { value, text };
        };
  const what =
    typeof body.parseJsonText === "function" ? "parseJsonText" : "JSON.parse + checkShape";
  return { label: `${dist} (${what})`, parse };
}

const builds = [reader(path.join(ROOT, "dist"))];
if (arg("--baseline") !== undefined) builds.unshift(reader(arg("--baseline")));

/** A request with `n` arguments of mixed kinds (strings with escapes, numbers, nested objects). */
function wide(n) {
  const args = {};
  for (let i = 0; i < n; i++) {
    args[`arg_${i}`] =
      i % 3 === 0
        ? `line one\nline "two" \\ ${i} — ünïcødé https://example.com/a:b`
        : i % 3 === 1
          ? i * 1.5
          : { id: `rec_${i}`, tags: ["a", "b", { k: i }] };
  }
  return refRequest({ tool: "refunds.issue", args });
}

/** About `target` bytes: a request whose arguments hold rows of strings. */
function sized(target) {
  const req = refRequest({ tool: "records.export", args: { rows: [] } });
  const rows = req.action.properties.arguments.rows;
  const row = { id: "row_000000", note: "x".repeat(200), at: "2026-11-29T14:57:01.968Z", n: 1 };
  let size = Buffer.byteLength(JSON.stringify(req));
  while (size + 300 < target) {
    const r = { ...row, id: `row_${String(rows.length).padStart(6, "0")}` };
    rows.push(r);
    size += Buffer.byteLength(JSON.stringify(r)) + 1;
  }
  return req;
}

const mix = [
  ...MIX.map((m) => ({ name: `native: ${m.name}`, buf: Buffer.from(JSON.stringify(m.req)) })),
  ...MIX.map((m) => ({
    name: `opa: ${m.name}`,
    buf: Buffer.from(JSON.stringify({ input: m.req })),
  })),
];
const large = [
  {
    // a colon inside a string: the duplicate check's exact count runs
    name: "refund 20, a timestamp in the arguments",
    buf: Buffer.from(
      JSON.stringify(
        refRequest({ tool: "refunds.issue", args: { amount: 20, at: "2026-11-29T14:57:01Z" } }),
      ),
    ),
  },
  { name: "150 arguments", buf: Buffer.from(JSON.stringify(wide(150))) },
  { name: "1 MiB request (the body limit)", buf: Buffer.from(JSON.stringify(sized(1024 * 1024))) },
];

/** µs per body over `n` calls cycling through `bufs`. */
function batch(parse, bufs, n) {
  let sink = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) sink += parse(bufs[i % bufs.length]).text.length;
  const ns = Number(process.hrtime.bigint() - t0);
  if (sink === 0) throw new Error("nothing parsed");
  return ns / n / 1000;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Median µs per body for each build, batches alternating between builds. */
function measure(bufs, n) {
  const times = builds.map(() => []);
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? builds.keys() : [...builds.keys()].reverse();
    for (const b of order) times[b].push(batch(builds[b].parse, bufs, n));
  }
  return times.map(median);
}

// warm-up: every kind on every build, enough calls for the optimizing compiler
for (const b of builds)
  for (const k of [...mix, ...large]) batch(b.parse, [k.buf], k.buf.length > 100_000 ? 20 : 5000);

const perBody = (bytes) => Math.max(3, Math.min(iterations, Math.floor(2e8 / bytes / 40)));
const rows = [
  {
    name: `the mix (round-robin over ${mix.length} bodies)`,
    bytes: NaN,
    us: measure(
      mix.map((k) => k.buf),
      iterations,
    ),
  },
  ...[...mix, ...large].map((k) => ({
    name: k.name,
    bytes: k.buf.length,
    us: measure([k.buf], perBody(k.buf.length)),
  })),
];

const f = (x) => (x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0));
console.log(`body.mjs: node ${process.version}, median of ${rounds} batches, µs per body`);
builds.forEach((b, i) => console.log(`  [${i}] ${b.label}`));
console.log(
  `${"body".padEnd(44)} ${"bytes".padStart(8)}  ${builds.map((_, i) => `[${i}]`.padStart(8)).join(" ")}${builds.length > 1 ? "   change" : ""}`,
);
for (const r of rows) {
  const change =
    builds.length > 1
      ? `   ${r.us[1] >= r.us[0] ? "+" : ""}${(((r.us[1] - r.us[0]) / r.us[0]) * 100).toFixed(0)} %`
      : "";
  console.log(
    `${r.name.padEnd(44)} ${(Number.isNaN(r.bytes) ? "" : String(r.bytes)).padStart(8)}  ${r.us.map((u) => f(u).padStart(8)).join(" ")}${change}`,
  );
}
