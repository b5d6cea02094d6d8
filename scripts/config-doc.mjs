#!/usr/bin/env node
// Regenerates the key table in docs/configuration.md from the one config
// schema (src/config/schema.ts, via dist/: run `npm run build` first).
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { FIELDS } = createRequire(import.meta.url)(path.join(root, "dist/src/config/schema.js"));
const rows = FIELDS.map((f) => {
  const t = f.type;
  const type =
    t.kind === "enum"
      ? t.values.map((v) => "`" + v + "`").join(" \\| ")
      : t.kind === "int"
        ? `integer ${t.min}–${t.max}`
        : t.kind;
  const def = f.secret ? "(secret)" : "`" + JSON.stringify(f.default) + "`";
  return `| \`${f.key}\` | \`${f.env}\` | ${type} | ${def} | ${f.doc.replace(/\|/g, "\\|")} |`;
});
const file = path.join(root, "docs/configuration.md");
let doc = fs.readFileSync(file, "utf8");
const start = doc.indexOf("| key ");
const end = doc.indexOf("\n\n", start);
doc =
  doc.slice(0, start) +
  "| key | environment | type | default | meaning |\n|---|---|---|---|---|\n" +
  rows.join("\n") +
  doc.slice(end);
fs.writeFileSync(file, doc);
