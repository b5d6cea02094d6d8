#!/usr/bin/env node
// Policy tooling for toolgate's Rego library (rego/) and its bundle (bundles/).
//
//   node scripts/policy.mjs capabilities   regenerate rego/capabilities.json
//   node scripts/policy.mjs test           opa fmt --list, opa check --strict, opa test --coverage (>= 90 %), regal lint
//   node scripts/policy.mjs lint           regal lint rego (config: .regal/config.yaml)
//   node scripts/policy.mjs build          build bundles/support-triage.tar.gz (wasm, content-derived revision)
//   node scripts/policy.mjs check-drift    fail if the committed bundle or capabilities.json is stale
//
// opa and regal come from scripts/tools.sh (the pinned versions, built on first use).
// Plain ESM, node: built-ins only.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import zlib from "node:zlib";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const REGO_DIR = "rego"; // relative to ROOT; opa runs with cwd ROOT so bundle paths are stable
const CAPABILITIES = path.join(REGO_DIR, "capabilities.json");
const WASM_CAPABILITIES = path.join(
  "node_modules",
  "@open-policy-agent",
  "opa-wasm",
  "capabilities.json",
);
// implemented by toolgate itself (src/policy/engine.ts; the calendar builtins in src/policy/builtins.ts)
const EXTRA_BUILTINS = [
  "time.now_ns",
  "time.clock",
  "time.date",
  "time.weekday",
  "time.add_date",
  "time.parse_rfc3339_ns",
  "time.parse_duration_ns",
];
const BUNDLE = path.join("bundles", "support-triage.tar.gz");
const ENTRYPOINT = "toolgate/decision";
const COVERAGE_MIN = 90;
const IGNORE = ["--ignore", "*_test.rego", "--ignore", "capabilities.json"];

class Fail extends Error {}

function fail(message) {
  throw new Fail(message);
}

function toolPath(tool) {
  const r = spawnSync(path.join(ROOT, "scripts", "tools.sh"), [tool], {
    cwd: ROOT,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  if (r.error) fail(`cannot run scripts/tools.sh: ${r.error.message}`);
  if (r.status !== 0) fail(`scripts/tools.sh ${tool} failed (exit ${r.status}); is Go installed?`);
  const p = r.stdout.trim().split("\n").pop();
  if (!p || !fs.existsSync(p)) fail(`scripts/tools.sh printed no usable ${tool} path: '${p}'`);
  return p;
}

function opaPath() {
  return toolPath("opa");
}

let opaBin;
function opa(args, { capture = false, allowFail = false } = {}) {
  opaBin ??= opaPath();
  const r = spawnSync(opaBin, args, {
    cwd: ROOT,
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
    stdio: capture ? ["ignore", "pipe", "pipe"] : "inherit",
  });
  if (r.error) fail(`cannot run opa: ${r.error.message}`);
  if (r.status !== 0 && !allowFail) {
    if (capture) process.stderr.write(r.stderr || r.stdout || "");
    fail(`opa ${args[0]} failed (exit ${r.status})`);
  }
  return r;
}

// ---- capabilities -------------------------------------------------------------

function readJson(rel, what) {
  const file = path.join(ROOT, rel);
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    fail(`${what} not found: ${rel}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    fail(`${what} is not valid JSON (${rel}): ${e.message}`);
  }
}

function generateCapabilities() {
  const wasm = readJson(WASM_CAPABILITIES, "opa-wasm capabilities (run npm ci)");
  const allowed = new Set([...wasm.builtins.map((b) => b.name), ...EXTRA_BUILTINS]);
  const current = JSON.parse(opa(["capabilities", "--current"], { capture: true }).stdout);
  const caps = { ...current, builtins: current.builtins.filter((b) => allowed.has(b.name)) };
  const missing = [...allowed].filter((n) => !caps.builtins.some((b) => b.name === n));
  if (missing.length) fail(`opa does not know builtins the runtime lists: ${missing.join(", ")}`);
  // This opa binary is built without a wasm runtime and so reports no wasm ABI
  // versions; the ABI versions that matter are the ones the runtime supports.
  if (!caps.wasm_abi_versions) caps.wasm_abi_versions = wasm.wasm_abi_versions;
  return caps;
}

function capabilitiesText(caps) {
  return JSON.stringify(caps, null, 2) + "\n";
}

function cmdCapabilities() {
  const caps = generateCapabilities();
  fs.writeFileSync(path.join(ROOT, CAPABILITIES), capabilitiesText(caps));
  console.log(`wrote ${CAPABILITIES} (${caps.builtins.length} builtins)`);
}

// Canonical JSON (sorted keys) so formatting-only changes never count as drift.
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}

function requireCapabilitiesFile() {
  if (!fs.existsSync(path.join(ROOT, CAPABILITIES))) {
    fail(`${CAPABILITIES} is missing; run: node scripts/policy.mjs capabilities`);
  }
}

// ---- test ---------------------------------------------------------------------

function cmdTest() {
  requireCapabilitiesFile();

  const fmt = opa(["fmt", "--list", REGO_DIR], { capture: true, allowFail: true });
  const unformatted = fmt.stdout.split("\n").filter(Boolean);
  if (fmt.status !== 0 || unformatted.length) {
    if (fmt.stderr) process.stderr.write(fmt.stderr);
    fail(
      `unformatted Rego (fix with: $(scripts/tools.sh opa) fmt -w rego):\n  ${unformatted.join("\n  ")}`,
    );
  }
  console.log("opa fmt: ok");

  opa([
    "check",
    "--strict",
    "--bundle",
    "--capabilities",
    CAPABILITIES,
    ...IGNORE.slice(2),
    REGO_DIR,
  ]);
  console.log("opa check --strict: ok");

  const run = opa(
    ["test", "--bundle", "--capabilities", CAPABILITIES, ...IGNORE.slice(2), REGO_DIR],
    {
      allowFail: true,
    },
  );
  if (run.status !== 0) fail("opa test: failing tests (see above)");

  const cov = opa(
    ["test", "--bundle", "--coverage", "--format", "json", ...IGNORE.slice(2), REGO_DIR],
    {
      capture: true,
    },
  );
  const report = JSON.parse(cov.stdout);
  let covered = 0;
  let notCovered = 0;
  const rows = [];
  for (const [file, f] of Object.entries(report.files ?? {})) {
    if (file.endsWith("_test.rego")) continue;
    const c = f.covered_lines ?? 0;
    const n = f.not_covered_lines ?? 0;
    if (c + n === 0) continue; // opa lists bundle files twice; one entry carries no lines
    covered += c;
    notCovered += n;
    rows.push(`  ${file}: ${(f.coverage ?? 0).toFixed(1)} %`);
  }
  const total = covered + notCovered ? (100 * covered) / (covered + notCovered) : 0;
  console.log(`coverage (policy files, tests excluded):\n${rows.sort().join("\n")}`);
  console.log(`coverage: ${total.toFixed(2)} % (minimum ${COVERAGE_MIN} %)`);
  if (total < COVERAGE_MIN) fail(`coverage ${total.toFixed(2)} % is below ${COVERAGE_MIN} %`);

  cmdLint();
}

// ---- lint -----------------------------------------------------------------------

// Regal with the repo's .regal/config.yaml (Regal finds it above rego/): its
// defaults, less the rules the library breaks on purpose (each one says why).
function cmdLint() {
  const r = spawnSync(
    toolPath("regal"),
    ["lint", ...(process.stdout.isTTY ? [] : ["--no-color"]), REGO_DIR],
    { cwd: ROOT, stdio: "inherit" },
  );
  if (r.error) fail(`cannot run regal: ${r.error.message}`);
  if (r.status === 3)
    fail("regal lint: violations (see above; rules and waivers in .regal/config.yaml)");
  if (r.status !== 0) fail(`regal lint failed (exit ${r.status})`);
  console.log("regal lint: ok");
}

// ---- build --------------------------------------------------------------------

function bundleSources() {
  const out = [];
  const walk = (rel) => {
    for (const ent of fs.readdirSync(path.join(ROOT, rel), { withFileTypes: true })) {
      const child = path.posix.join(rel, ent.name);
      if (ent.isDirectory()) walk(child);
      else if (ent.name.endsWith("_test.rego")) continue;
      else if (ent.name.endsWith(".rego") || ent.name === "data.json" || ent.name === ".manifest") {
        out.push(child);
      }
    }
  };
  walk(REGO_DIR);
  return out.sort();
}

// Same sources -> same revision. JSON is hashed canonically (formatting-proof).
function revision() {
  const h = createHash("sha256");
  for (const rel of bundleSources()) {
    const raw = fs.readFileSync(path.join(ROOT, rel), "utf8");
    const content = rel.endsWith(".rego") ? raw : canonical(JSON.parse(raw));
    h.update(`${rel}\0${content}\0`);
  }
  return h.digest("hex").slice(0, 16);
}

function buildInto(outRel) {
  requireCapabilitiesFile();
  const rev = revision();
  fs.mkdirSync(path.dirname(path.resolve(ROOT, outRel)), { recursive: true });
  opa(
    [
      "build",
      "--bundle",
      "--target",
      "wasm",
      "--entrypoint",
      ENTRYPOINT,
      "--capabilities",
      CAPABILITIES,
      "--revision",
      rev,
      ...IGNORE,
      "--output",
      outRel,
      REGO_DIR,
    ],
    { capture: true },
  );
  return rev;
}

function cmdBuild() {
  const rev = buildInto(BUNDLE);
  const files = untar(path.join(ROOT, BUNDLE));
  for (const need of ["/.manifest", "/data.json", "/policy.wasm"]) {
    if (!files.has(need)) fail(`built bundle lacks ${need}`);
  }
  console.log(`built ${BUNDLE} (revision ${rev}, ${files.size} files)`);
}

// Minimal tar.gz reader (ustar / GNU long names / pax path), regular files only.
function untar(file) {
  const buf = zlib.gunzipSync(fs.readFileSync(file));
  const files = new Map();
  let off = 0;
  let longName = null;
  const str = (b) => b.toString("utf8").replace(/\0.*$/s, "");
  while (off + 512 <= buf.length) {
    const h = buf.subarray(off, off + 512);
    if (h.every((x) => x === 0)) break;
    let name = str(h.subarray(0, 100));
    const prefix = str(h.subarray(345, 500));
    if (prefix) name = `${prefix}/${name}`;
    const size = parseInt(str(h.subarray(124, 136)).trim() || "0", 8);
    const type = String.fromCharCode(h[156] || 48);
    const body = buf.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
    if (type === "L") {
      longName = str(body);
      continue;
    }
    if (type === "x") {
      const m = /\d+ path=([^\n]*)\n/.exec(body.toString("utf8"));
      if (m) longName = m[1];
      continue;
    }
    if (longName) name = longName;
    longName = null;
    if (type === "0" || type === "\0") {
      files.set(name.startsWith("/") ? name : `/${name}`, Buffer.from(body));
    }
  }
  return files;
}

// ---- check-drift --------------------------------------------------------------

function cmdCheckDrift() {
  const problems = [];

  requireCapabilitiesFile();
  const committedCaps = readJson(CAPABILITIES, "capabilities file");
  if (canonical(committedCaps) !== canonical(generateCapabilities())) {
    problems.push(`${CAPABILITIES} is stale; run: node scripts/policy.mjs capabilities`);
  }

  if (!fs.existsSync(path.join(ROOT, BUNDLE))) {
    problems.push(`${BUNDLE} is missing; run: node scripts/policy.mjs build`);
  } else {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-policy-"));
    try {
      const outRel = path.relative(ROOT, path.join(tmp, "bundle.tar.gz"));
      buildInto(outRel);
      const want = untar(path.join(tmp, "bundle.tar.gz"));
      const have = untar(path.join(ROOT, BUNDLE));
      for (const [name, bytes] of want) {
        if (!have.has(name)) problems.push(`${BUNDLE}: ${name} is missing`);
        else if (!have.get(name).equals(bytes)) problems.push(`${BUNDLE}: ${name} differs`);
      }
      for (const name of have.keys()) {
        if (!want.has(name)) problems.push(`${BUNDLE}: ${name} should not be there`);
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }

  if (problems.length) {
    fail(
      `policy drift:\n  ${problems.join("\n  ")}\nrebuild with: node scripts/policy.mjs capabilities && node scripts/policy.mjs build`,
    );
  }
  console.log(`no drift: ${BUNDLE} and ${CAPABILITIES} match rego/ (revision ${revision()})`);
}

// ---- main -----------------------------------------------------------------------

const COMMANDS = {
  capabilities: cmdCapabilities,
  test: cmdTest,
  lint: cmdLint,
  build: cmdBuild,
  "check-drift": cmdCheckDrift,
};

const cmd = process.argv[2];
if (!COMMANDS[cmd]) {
  console.error(`usage: node scripts/policy.mjs <${Object.keys(COMMANDS).join("|")}>`);
  process.exit(2);
}
try {
  COMMANDS[cmd]();
} catch (e) {
  if (e instanceof Fail) {
    console.error(`policy ${cmd}: ${e.message}`);
    process.exit(1);
  }
  throw e;
}
