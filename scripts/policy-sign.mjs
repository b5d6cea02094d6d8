#!/usr/bin/env node
// Signs a copy of the reference bundle (bundles/support-triage.tar.gz) the way
// `opa sign` would, with `toolgate policy sign`. The committed bundle itself
// stays unsigned (its drift check compares it with a fresh build).
//
//   npm run policy:sign -- --signing-key key.pem [--signing-alg RS256] [--scope S] [--key-id K] [--out FILE]
//
// Default output: .toolgate/support-triage.signed.tar.gz (git-ignored). Never
// commit a production signing key; see docs/live-policy.md for making one.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
let out = path.join(root, ".toolgate", "support-triage.signed.tar.gz");
const i = args.indexOf("--out");
if (i !== -1) {
  out = path.resolve(args[i + 1] ?? "");
  args.splice(i, 2);
}
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.copyFileSync(path.join(root, "bundles", "support-triage.tar.gz"), out);
const r = spawnSync(
  process.execPath,
  [path.join(root, "bin", "toolgate.js"), "policy", "sign", out, ...args],
  { stdio: "inherit" },
);
process.exit(r.status ?? 1);
