#!/usr/bin/env node
// Summarises a V8 .cpuprofile (node --cpu-prof): top self-time functions.
//   node scripts/bench/profile-summary.mjs <file.cpuprofile> [top=25]
import fs from "node:fs";

export function summariseProfile(file, top = 25) {
  const prof = JSON.parse(fs.readFileSync(file, "utf8"));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dts = prof.timeDeltas;
  let total = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const n = byId.get(prof.samples[i]);
    const dt = dts[i] ?? 0;
    total += dt;
    const cf = n.callFrame;
    const url = (cf.url || "")
      .replace(/^file:\/\//, "")
      .replace(/^.*node_modules\//, "nm/")
      .replace(/^.*\/dist\/src\//, "dist/");
    const key =
      `${cf.functionName || "(anonymous)"} ${url ? `${url}:${cf.lineNumber + 1}` : ""}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  return {
    totalMs: total / 1000,
    rows: rows.map(([k, v]) => ({ fn: k, ms: v / 1000, pct: (100 * v) / total })),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { totalMs, rows } = summariseProfile(process.argv[2], Number(process.argv[3] ?? 25));
  console.log(`total sampled ${totalMs.toFixed(0)} ms`);
  for (const r of rows)
    console.log(`${r.pct.toFixed(1).padStart(5)}%  ${r.ms.toFixed(0).padStart(6)} ms  ${r.fn}`);
}
