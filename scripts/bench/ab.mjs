#!/usr/bin/env node
// A/B of policy bundles in one process, robust to a noisy machine: loads every
// bundle given, checks each decides the mix as the reference table says, then
// interleaves batches of evaluations (all bundles, in turn, many times) and
// reports per bundle the median over batches of the per-evaluation wall time
// and CPU time (process.cpuUsage), with the spread (min–max).
//   node scripts/bench/ab.mjs bundles/support-triage.tar.gz /tmp/other.tar.gz [--batches 40]
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { MIX, policyInput } from "./mix.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(import.meta.url);
const { loadBundleFromPath } = require(path.join(ROOT, "dist/src/policy/bundle.js"));
const { PolicyEngine } = require(path.join(ROOT, "dist/src/policy/engine.js"));

const argv = process.argv.slice(2);
const bi = argv.indexOf("--batches");
const BATCHES = bi >= 0 ? Number(argv.splice(bi, 2)[1]) : 40;
const PER_BATCH = 200; // x mix length evaluations
const now = Date.now() * 1e6;
const inputs = MIX.map((m) => JSON.stringify(policyInput(m.req, now)));
const engines = [];
for (const file of argv) {
  const b = await loadBundleFromPath(path.resolve(file));
  const e = await PolicyEngine.create(b, { entrypoint: "toolgate/decision" });
  for (let i = 0; i < MIX.length; i++) {
    const out = e.evaluateJson(inputs[i], now);
    const codes = (out?.reasons ?? []).map((r) => r.code);
    if (out?.outcome !== MIX[i].outcome || !codes.includes(MIX[i].code))
      throw new Error(`${file}: ${MIX[i].name}: ${out?.outcome} ${codes}`);
  }
  engines.push({ file, e, wall: [], cpu: [] });
}
for (const x of engines)
  for (let k = 0; k < 500; k++) for (const i of inputs) x.e.evaluateJson(i, now);
for (let b = 0; b < BATCHES; b++) {
  for (const x of b % 2 ? [...engines].reverse() : engines) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < PER_BATCH; k++) for (const i of inputs) x.e.evaluateJson(i, now);
    const n = PER_BATCH * inputs.length;
    x.wall.push(Number(process.hrtime.bigint() - t0) / 1e3 / n);
    const c = process.cpuUsage(c0);
    x.cpu.push((c.user + c.system) / n);
  }
}
const med = (a) => [...a].sort((p, q) => p - q)[a.length >> 1];
for (const x of engines) {
  console.log(
    `${x.file}: mean wall/eval median ${med(x.wall).toFixed(1)} µs [${Math.min(...x.wall).toFixed(1)}–${Math.max(...x.wall).toFixed(1)}], cpu/eval median ${med(x.cpu).toFixed(1)} µs [${Math.min(...x.cpu).toFixed(1)}–${Math.max(...x.cpu).toFixed(1)}]`,
  );
}
