#!/usr/bin/env node
/* global TextEncoder */
// Prototype for a src/policy/engine.ts change, measured without touching src/:
// evaluate through opa_eval directly, writing the input with
// TextEncoder.encodeInto straight into wasm memory and reading the result with
// Uint8Array.indexOf(0) + Buffer#utf8Slice instead of opa-wasm's byte loop and
// a new TextDecoder per call. Compares stock vs fast path (A/B, interleaved).
//   node scripts/bench/engine-fastpath.mjs [bundle]
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { MIX, policyInput } from "./mix.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(import.meta.url);
const { loadBundleFromPath } = require(path.join(ROOT, "dist/src/policy/bundle.js"));
const { PolicyEngine } = require(path.join(ROOT, "dist/src/policy/engine.js"));
const file = path.resolve(process.argv[2] ?? path.join(ROOT, "bundles/support-triage.tar.gz"));
const now = Date.now() * 1e6;
const inputs = MIX.map((m) => JSON.stringify(policyInput(m.req, now)));

const stock = await PolicyEngine.create(await loadBundleFromPath(file), {
  entrypoint: "toolgate/decision",
});
const fastEngine = await PolicyEngine.create(await loadBundleFromPath(file), {
  entrypoint: "toolgate/decision",
});
const p = fastEngine.policy;
const ep = p.entrypoints["toolgate/decision"];
const enc = new TextEncoder();
function fastEval(json) {
  const exp = p.wasmInstance.exports;
  const addr = p.dataHeapPtr;
  let mem = new Uint8Array(p.mem.buffer);
  const need = addr + json.length * 3 - mem.byteLength;
  if (need > 0) {
    p.mem.grow(Math.ceil(need / 65536));
    mem = new Uint8Array(p.mem.buffer);
  }
  const { written } = enc.encodeInto(json, mem.subarray(addr));
  const ret = exp.opa_eval(0, ep, p.dataAddr, addr, written, addr + written, 0);
  mem = new Uint8Array(p.mem.buffer); // eval may have grown memory
  const end = mem.indexOf(0, ret);
  return JSON.parse(Buffer.from(mem.buffer, ret, end - ret).toString("utf8"));
}
for (let i = 0; i < inputs.length; i++) {
  const a = JSON.stringify(stock.evaluateJson(inputs[i], now));
  const b = JSON.stringify(fastEval(inputs[i])[0].result);
  if (a !== b) throw new Error(`fast path differs for ${MIX[i].name}`);
}
const variants = [
  { name: "stock evaluateJson", fn: (s) => stock.evaluateJson(s, now), wall: [], cpu: [] },
  { name: "fast path", fn: fastEval, wall: [], cpu: [] },
];
for (const v of variants) for (let k = 0; k < 500; k++) for (const s of inputs) v.fn(s);
for (let b = 0; b < 40; b++) {
  for (const v of b % 2 ? [...variants].reverse() : variants) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < 200; k++) for (const s of inputs) v.fn(s);
    const n = 200 * inputs.length;
    v.wall.push(Number(process.hrtime.bigint() - t0) / 1e3 / n);
    const c = process.cpuUsage(c0);
    v.cpu.push((c.user + c.system) / n);
  }
}
const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
for (const v of variants)
  console.log(
    `${v.name}: wall/eval median ${med(v.wall).toFixed(1)} µs min ${Math.min(...v.wall).toFixed(1)}; cpu/eval median ${med(v.cpu).toFixed(1)} µs min ${Math.min(...v.cpu).toFixed(1)}`,
  );
