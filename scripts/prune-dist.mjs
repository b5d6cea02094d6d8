#!/usr/bin/env node
// Removes from dist/src what no source in src/ compiles to any more (a module that
// was deleted or renamed leaves its .js, .js.map and .d.ts behind, since tsc never
// deletes): run before `npm pack` (the "prepack" script), so the package ships
// only what the current sources build. Prints what it removed.
// Files that are no compiler output (no .js/.d.ts/.map) are left alone.
//   node scripts/prune-dist.mjs [--dry-run] [--root <package root>]
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const argv = process.argv.slice(2);
const rootArg = argv.indexOf("--root");
const ROOT =
  rootArg >= 0 && argv[rootArg + 1] !== undefined
    ? path.resolve(argv[rootArg + 1])
    : path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const DIST = path.join(ROOT, "dist", "src");
const SRC = path.join(ROOT, "src");
const dry = argv.includes("--dry-run");
const OUTPUTS = [".d.ts.map", ".d.ts", ".js.map", ".js"];

function sourceOf(rel) {
  for (const ext of OUTPUTS) {
    if (rel.endsWith(ext)) return rel.slice(0, -ext.length) + ".ts";
  }
  return undefined;
}

let removed = 0;
function walk(dir) {
  if (!fs.existsSync(dir)) return;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const abs = path.join(dir, e.name);
    if (e.isDirectory()) {
      walk(abs);
      if (!dry && fs.readdirSync(abs).length === 0) fs.rmdirSync(abs);
      continue;
    }
    const src = sourceOf(path.relative(DIST, abs));
    if (src === undefined || fs.existsSync(path.join(SRC, src))) continue;
    console.error(`prune-dist: ${dry ? "would remove" : "removed"} ${path.relative(ROOT, abs)}`);
    if (!dry) fs.rmSync(abs);
    removed++;
  }
}
walk(DIST);
if (removed === 0) console.error("prune-dist: nothing stale in dist/src");
