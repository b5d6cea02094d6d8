#!/usr/bin/env node
// A flame graph (SVG, no dependencies) of a V8 .cpuprofile (node --cpu-prof), cut to a
// window of the profile's clock like profile-summary.mjs, each frame coloured by the area
// profile-summary.mjs gives it (the first frame on its stack, leaf first, that belongs to
// an area), so the picture and the summary's table agree. Widths are samples; a frame's
// tooltip gives its share of the window and, with --decisions, µs per decision.
//
//   node scripts/bench/flamegraph.mjs <file.cpuprofile> <out.svg> [--from µs --to µs]
//        [--decisions N] [--title "..."]
import fs from "node:fs";
import { AREAS, loadProfile, shortUrl, windowSamples } from "./profile-summary.mjs";

const COLORS = {
  framework: "#8c564b",
  platform: "#1f77b4",
  body: "#9467bd",
  json: "#c5b0d5",
  validation: "#e377c2",
  evaluation: "#2ca02c",
  grants: "#d62728",
  binding: "#ff9896",
  approvals: "#bcbd22",
  audit: "#ff7f0e",
  decision: "#98df8a",
  metrics: "#17becf",
  faces: "#aec7e8",
  logging: "#dbdb8d",
  otherTg: "#c49c94",
  libs: "#f7b6d2",
  loop: "#c7c7c7",
  gc: "#7f7f7f",
  program: "#b0b0b0",
  idle: "#eeeeee",
  other: "#d9d9d9",
};

const esc = (s) =>
  String(s).replace(
    /[<>&"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c],
  );

export function flameGraph(
  file,
  { from = -Infinity, to = Infinity, decisions, title = file } = {},
) {
  const { prof, byId, areaOf } = loadProfile(file);
  // samples per node in the window, then inclusive counts
  const { ids, windowUs } = windowSamples(prof, from, to);
  const total = ids.length;
  const self = new Map();
  for (const id of ids) self.set(id, (self.get(id) ?? 0) + 1);
  const incl = new Map();
  const inclusive = (id) => {
    if (incl.has(id)) return incl.get(id);
    let n = self.get(id) ?? 0;
    for (const c of byId.get(id).children ?? []) n += inclusive(c);
    incl.set(id, n);
    return n;
  };
  const root = prof.nodes[0].id;
  inclusive(root);

  const W = 1200;
  const H = 16;
  const scale = (W - 20) / Math.max(1, total);
  const rects = [];
  let depthMax = 0;
  const usPer = (n) => (decisions ? ((n / total) * windowUs) / decisions : undefined);
  const place = (id, x, depth) => {
    const n = incl.get(id) ?? 0;
    if (n === 0) return;
    const w = n * scale;
    if (w < 0.6) return;
    depthMax = Math.max(depthMax, depth);
    const cf = byId.get(id).callFrame;
    const name = cf.functionName || "(anonymous)";
    const where = shortUrl(cf.url);
    rects.push({
      x,
      depth,
      w,
      n,
      name,
      where: where ? `${where}:${cf.lineNumber + 1}` : "",
      area: areaOf(id),
    });
    let cx = x;
    for (const c of byId.get(id).children ?? []) {
      const cn = incl.get(c) ?? 0;
      if (cn === 0) continue;
      place(c, cx, depth + 1);
      cx += cn * scale;
    }
  };
  place(root, 10, 0);
  const legendH = 20 * Math.ceil(Object.keys(AREAS).length / 4) + 10;
  const top = 40 + legendH;
  const height = top + (depthMax + 1) * H + 10;
  const out = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" font-family="monospace" font-size="11">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="10" y="20" font-size="14">${esc(title)}</text>`,
    `<text x="10" y="36" fill="#555">${total} samples, ${(windowUs / 1000).toFixed(0)} ms${decisions ? `, ${decisions} decisions` : ""}; width = share of main-thread samples; colour = area (as in the summary table); hover for details</text>`,
  );
  Object.entries(AREAS).forEach(([k, label], i) => {
    const x = 10 + (i % 4) * 295;
    const y = 46 + Math.floor(i / 4) * 20;
    out.push(
      `<rect x="${x}" y="${y}" width="12" height="12" fill="${COLORS[k]}"/><text x="${x + 16}" y="${y + 10}">${esc(label.slice(0, 42))}</text>`,
    );
  });
  for (const r of rects) {
    const y = height - 10 - (r.depth + 1) * H;
    const pct = ((100 * r.n) / total).toFixed(1);
    const us = usPer(r.n);
    const label = `${r.name} ${r.where}`.trim();
    const chars = Math.floor((r.w - 4) / 6.6);
    out.push(
      `<g><title>${esc(label)} — ${esc(AREAS[r.area])}: ${r.n} samples, ${pct} %${us !== undefined ? `, ${us.toFixed(1)} µs per decision` : ""}</title>` +
        `<rect x="${r.x.toFixed(1)}" y="${y}" width="${r.w.toFixed(1)}" height="${H - 1}" fill="${COLORS[r.area]}" stroke="#ffffff" stroke-width="0.3"/>` +
        (chars >= 3
          ? `<text x="${(r.x + 2).toFixed(1)}" y="${y + 11}">${esc(label.length > chars ? `${label.slice(0, chars - 1)}…` : label)}</text>`
          : "") +
        `</g>`,
    );
  }
  out.push("</svg>");
  return out.join("\n") + "\n";
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const opt = (n) => {
    const i = args.indexOf(n);
    if (i < 0) return undefined;
    const v = args[i + 1];
    args.splice(i, 2);
    return v;
  };
  const from = Number(opt("--from") ?? -Infinity);
  const to = Number(opt("--to") ?? Infinity);
  const d = opt("--decisions");
  const title = opt("--title");
  const [file, outFile] = args;
  fs.writeFileSync(
    outFile,
    flameGraph(file, {
      from,
      to,
      decisions: d === undefined ? undefined : Number(d),
      title: title ?? file,
    }),
  );
}
