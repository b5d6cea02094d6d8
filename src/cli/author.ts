import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { parseArgs } from "node:util";
import { BUNDLE_AND_INPUT, stringOptions } from "./args";
import { buildParts } from "../app";
import { expandTrailPaths, readTrail, verifyTrail } from "../trail";
import { isObject } from "../shared/guards";
import { isOneOf } from "../shared/algorithms";
import { canonicalize } from "../shared/jcs";
import { compileConfig } from "../config";
import type { Decision, DecisionRequest } from "../model";
import { toolgateError } from "../errors";
import { validateDecisionRequest } from "../shared/validate";
import { loadBundleFromPath } from "../policy/bundle";
import { createLogger } from "../shared/log";
import { packageRoot } from "../shared/paths";
import { libraryFiles, providesDecision, regalConfigFor, runtimeCapabilities } from "./scaffold";

type Out = { stdout(s: string): void; stderr(s: string): void };

/**
 * A pinned Go tool (opa, regal): $TOOLGATE_<NAME>, the tool on PATH, or the
 * package's pinned build (.tools/bin, made by scripts/tools.sh with Go).
 */
const found = new Map<string, string>();

function findTool(name: "opa" | "regal"): string {
  const known = found.get(name);
  if (known !== undefined) return known;
  const path = locate(name);
  found.set(name, path);
  return path;
}

function locate(name: "opa" | "regal"): string {
  const envVar = `TOOLGATE_${name.toUpperCase()}`;
  const env = process.env[envVar];
  if (env) return env;
  const onPath = spawnSync(name, ["version"], { stdio: "ignore" });
  if (onPath.status === 0) return name;
  const pinned = join(packageRoot(), ".tools", "bin", name);
  if (existsSync(pinned)) return pinned;
  const script = join(packageRoot(), "scripts", "tools.sh");
  if (existsSync(script)) {
    const r = spawnSync("bash", [script, name], { encoding: "utf8" });
    if (r.status === 0) return r.stdout.trim();
  }
  throw toolgateError(
    "usage",
    `this command needs the ${name} CLI: put it on PATH or set ${envVar} (scripts/tools.sh ${name} builds the pinned one with Go)` +
      (name === "regal" ? "; or skip the lint with --no-lint" : ""),
  );
}

/** The opa CLI: $TOOLGATE_OPA, `opa` on PATH, or the repo's pinned build (.tools/bin, scripts/tools.sh). */
export function findOpa(): string {
  return findTool("opa");
}

/** The Regal CLI (Rego linter): $TOOLGATE_REGAL, `regal` on PATH, or the pinned build. */
export function findRegal(): string {
  return findTool("regal");
}

function opa(args: string[], capture = true): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(findOpa(), args, {
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
    stdio: capture ? "pipe" : "inherit",
  });
  return { status: r.status ?? 1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

function sources(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith("_test.rego")) continue;
      else if (e.name.endsWith(".rego") || e.name === "data.json" || e.name === ".manifest")
        out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

/** Same sources → same revision (JSON hashed canonically, so formatting does not count). */
export function contentRevision(dir: string): string {
  const h = createHash("sha256");
  for (const file of sources(dir)) {
    // paths as scripts/policy.mjs names them (relative to the directory above DIR), so
    // the repo's rego/ gets the same revision either way
    const rel = relative(resolve(dir, ".."), file).split(sep).join("/");
    const raw = readFileSync(file, "utf8");
    h.update(`${rel}\0${file.endsWith(".rego") ? raw : canonicalize(JSON.parse(raw))}\0`);
  }
  return h.digest("hex").slice(0, 16);
}

export const POLICY_BUILD_HELP = `  toolgate policy build [DIR] [-o OUT] [--entrypoint E] [--capabilities F] [--revision R] [--json]
                                             opa build -t wasm with the runtime's capabilities and a
                                             content-derived revision (needs the opa CLI); a DIR that
                                             defines no decision (policy init's) is built with toolgate's library`;

export const POLICY_TEST_HELP = `  toolgate policy test [DIR] [--coverage-min 90] [--no-lint] [--json]
                                             opa fmt --list, opa check --strict, opa test --coverage
                                             (of DIR's own rules), then Regal lint (needs opa and regal);
                                             a DIR that defines no decision is tested with toolgate's library`;

/** What the Rego commands run on for DIR: DIR alone, or toolgate's library and DIR. */
interface RegoSources {
  dir: string;
  /** "own": DIR defines the decision itself; "toolgate": the package's library is added. */
  library: "own" | "toolgate";
  /** The paths to give opa: the library's files (if added), then DIR. */
  paths: string[];
  /** The capabilities file: --capabilities, DIR's capabilities.json, or (library added) the runtime's. */
  capabilities: string | undefined;
}

function regoSources(dirArg: string | undefined, capabilities?: string): RegoSources {
  const dir = resolve(dirArg ?? "rego");
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw toolgateError("usage", `${dir} is not a directory of Rego sources`);
  const own = providesDecision(dir);
  const inDir = join(dir, "capabilities.json");
  return {
    dir,
    library: own ? "own" : "toolgate",
    paths: own ? [dir] : [...libraryFiles(), dir],
    capabilities:
      capabilities ?? (existsSync(inDir) ? inDir : own ? undefined : runtimeCapabilities()),
  };
}

/**
 * The sources of a bundle in one directory, as `opa build --bundle` wants
 * them: DIR itself, or a temporary copy of DIR's bundle sources with the
 * library in LIBRARY_DIR (error messages are mapped back to the real paths).
 */
const LIBRARY_DIR = ".toolgate-library";

function stageBundle(src: RegoSources): { root: string; unmap: (s: string) => string } {
  if (src.library === "own") return { root: src.dir, unmap: (s) => s };
  const root = join(mkdtempSync(join(tmpdir(), "toolgate-build-")), "deployment");
  const libRoot = join(packageRoot(), "rego", "toolgate");
  for (const f of sources(src.dir)) {
    const to = join(root, relative(src.dir, f));
    mkdirSync(dirname(to), { recursive: true });
    copyFileSync(f, to);
  }
  if (existsSync(join(root, LIBRARY_DIR)))
    throw toolgateError(
      "usage",
      `${join(src.dir, LIBRARY_DIR)}: a name policy build keeps for toolgate's library`,
    );
  for (const f of libraryFiles()) {
    const to = join(root, LIBRARY_DIR, relative(libRoot, f));
    mkdirSync(dirname(to), { recursive: true });
    copyFileSync(f, to);
  }
  return {
    root,
    unmap: (s) =>
      s
        .split(join(root, LIBRARY_DIR) + sep)
        .join(libRoot + sep)
        .split(root + sep)
        .join(src.dir + sep),
  };
}

/** `toolgate policy build [DIR] [-o OUT] [--entrypoint E] [--capabilities F] [--revision R]` */
export async function policyBuild(args: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      output: { type: "string", short: "o" },
      entrypoint: { type: "string", short: "e", default: "toolgate/decision" },
      capabilities: { type: "string" },
      revision: { type: "string" },
      json: { type: "boolean" },
    },
  });
  const src = regoSources(positionals[0], values.capabilities);
  const caps = src.capabilities;
  const output = resolve(values.output ?? "bundle.tar.gz");
  const staged = stageBundle(src);
  try {
    const revision = values.revision ?? contentRevision(staged.root);
    const r = opa([
      "build",
      "--bundle",
      "--target",
      "wasm",
      "--entrypoint",
      values.entrypoint,
      ...(caps ? ["--capabilities", caps] : []),
      "--revision",
      revision,
      "--ignore",
      "*_test.rego",
      "--ignore",
      "capabilities.json",
      "--output",
      output,
      staged.root,
    ]);
    if (r.status !== 0) {
      out.stderr(staged.unmap(r.stdout + r.stderr));
      throw toolgateError(
        "usage",
        `opa build failed${caps ? " (a builtin outside the capabilities file fails here on purpose)" : ""}`,
      );
    }
    const bundle = await loadBundleFromPath(output);
    const result = {
      bundle: output,
      revision,
      files: bundle.files.size,
      entrypoints: bundle.manifest.wasm.map((w) => w.entrypoint),
      capabilities: caps ?? null,
      library: src.library,
    };
    out.stdout(
      values.json
        ? JSON.stringify(result) + "\n"
        : `built ${output} (revision ${revision}, ${result.files} files${src.library === "toolgate" ? ", with toolgate's library" : ""})\n`,
    );
    return 0;
  } finally {
    if (staged.root !== src.dir) rmSync(dirname(staged.root), { recursive: true, force: true });
  }
}

/** One Regal finding, as `policy test` reports it. */
interface LintViolation {
  rule: string;
  category: string;
  level: string;
  description: string;
  file: string;
  row: number;
  col: number;
}

/**
 * `regal lint` over DIR's Rego (with the library beside it, so references to
 * the library resolve), reporting only what is in DIR. The config is DIR's
 * nearest .regal/config.yaml, else the scaffold's.
 */
function lint(src: RegoSources): {
  ok: boolean;
  config: string;
  violations: LintViolation[];
  error?: string;
} {
  const config = regalConfigFor(src.dir);
  const r = spawnSync(
    findRegal(),
    ["lint", "--format", "json", "--no-color", "--config-file", config, ...src.paths],
    { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
  );
  // 0: no violation; 3: violations at the failing level; anything else: regal failed
  let report: { violations?: unknown } | undefined;
  try {
    report = JSON.parse(r.stdout ?? "") as { violations?: unknown };
  } catch {
    report = undefined;
  }
  if ((r.status !== 0 && r.status !== 3) || report === undefined) {
    const why = (r.stderr || r.stdout || "").trim().slice(0, 2000);
    return {
      ok: false,
      config,
      violations: [],
      error: `regal exited ${r.status ?? "on a signal"}: ${why}`,
    };
  }
  const violations: LintViolation[] = [];
  for (const v of Array.isArray(report.violations) ? report.violations : []) {
    if (!isObject(v)) continue;
    const loc = isObject(v.location) ? v.location : {};
    const file = typeof loc.file === "string" && loc.file !== "" ? resolve(loc.file) : "";
    // the library's own findings are toolgate's business, not the author's
    if (file !== "" && file !== src.dir && !file.startsWith(src.dir + sep)) continue;
    violations.push({
      rule: String(v.title),
      category: String(v.category),
      level: String(v.level),
      description: String(v.description),
      file: file === "" ? "" : relative(process.cwd(), file),
      row: Number(loc.row ?? 0),
      col: Number(loc.col ?? 0),
    });
  }
  violations.sort((a, b) => a.file.localeCompare(b.file) || a.row - b.row || a.col - b.col);
  return { ok: !violations.some((v) => v.level === "error"), config, violations };
}

/** Coverage of DIR's own rules (tests excluded), from `opa test --coverage --format json`. */
function ownCoverage(dir: string, files: unknown): number | null {
  let covered = 0;
  let notCovered = 0;
  if (!isObject(files)) return null;
  for (const [file, f] of Object.entries(files)) {
    if (file.endsWith("_test.rego") || !isObject(f)) continue;
    const abs = resolve(file);
    if (abs !== dir && !abs.startsWith(dir + sep)) continue;
    covered += typeof f.covered_lines === "number" ? f.covered_lines : 0;
    notCovered += typeof f.not_covered_lines === "number" ? f.not_covered_lines : 0;
  }
  return covered + notCovered === 0 ? null : (100 * covered) / (covered + notCovered);
}

/**
 * `toolgate policy test [DIR] [--coverage-min N] [--no-lint]`: opa fmt --list,
 * opa check --strict, opa test --coverage, regal lint.
 */
export function policyTest(args: string[], out: Out): number {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      "coverage-min": { type: "string", default: "90" },
      "no-lint": { type: "boolean" },
      json: { type: "boolean" },
    },
  });
  const min = Number(values["coverage-min"]);
  if (!Number.isFinite(min) || min < 0 || min > 100)
    throw toolgateError("usage", "--coverage-min must be a number from 0 to 100");
  const src = regoSources(positionals[0]);
  const { dir } = src;
  const caps = src.capabilities ? ["--capabilities", src.capabilities] : [];
  const fmt = opa(["fmt", "--list", dir]);
  const unformatted = fmt.stdout.split("\n").filter(Boolean);
  const check = opa(["check", "--strict", ...caps, "--ignore", "capabilities.json", ...src.paths]);
  const test = opa([
    "test",
    "--coverage",
    "--format",
    "json",
    "--ignore",
    "capabilities.json",
    ...src.paths,
  ]);
  let coverage: number | null = null;
  let reported = true;
  const failures: string[] = [];
  try {
    const report = JSON.parse(test.stdout) as { files?: unknown };
    coverage = ownCoverage(dir, report.files);
  } catch {
    reported = false;
    failures.push("opa test did not produce a coverage report");
  }
  if (test.status !== 0) {
    const run = opa(["test", "--ignore", "capabilities.json", ...src.paths]);
    failures.push(run.stdout.trim() || run.stderr.trim());
  }
  // Regal parses what opa check refused no better: lint a directory that compiles
  const lintResult = values["no-lint"] || check.status !== 0 ? undefined : lint(src);
  const fmtError = fmt.status !== 0 ? (fmt.stderr.trim().split("\n")[0] ?? "") : undefined;
  const ok =
    fmtError === undefined &&
    unformatted.length === 0 &&
    check.status === 0 &&
    test.status === 0 &&
    failures.length === 0 &&
    (coverage ?? 100) >= min &&
    (lintResult?.ok ?? true);
  const result = {
    ok,
    library: src.library,
    unformatted,
    ...(fmtError !== undefined ? { fmt_error: fmtError } : {}),
    check: check.status === 0 ? "ok" : check.stderr.trim(),
    coverage,
    coverage_min: min,
    failures,
    lint: lintResult ?? (values["no-lint"] ? "skipped" : "not run: check failed"),
  };
  if (values.json) out.stdout(JSON.stringify(result) + "\n");
  else {
    if (src.library === "toolgate")
      out.stdout(`library: toolgate's (${dir} defines no decision)\n`);
    out.stdout(
      `fmt: ${fmtError !== undefined ? `failed: ${fmtError}` : unformatted.length === 0 ? "ok" : `unformatted: ${unformatted.join(", ")}`}\n`,
    );
    out.stdout(`check --strict: ${result.check}\n`);
    out.stdout(
      `test: ${test.status === 0 ? "pass" : "FAIL"}${failures.length ? "\n" + failures.join("\n") : ""}\n`,
    );
    out.stdout(
      !reported
        ? "coverage: unknown\n"
        : coverage === null
          ? "coverage: no rules of its own to cover (toolgate's library is tested with toolgate)\n"
          : `coverage: ${coverage.toFixed(2)} % of its own rules (minimum ${min} %)\n`,
    );
    if (lintResult === undefined)
      out.stdout(`lint: ${values["no-lint"] ? "skipped (--no-lint)" : "not run (check failed)"}\n`);
    else if (lintResult.error !== undefined)
      out.stdout(`lint (regal): FAIL\n${lintResult.error}\n`);
    else {
      const n = lintResult.violations.length;
      out.stdout(
        `lint (regal, ${relative(process.cwd(), lintResult.config)}): ${n === 0 ? "ok" : `${n} violation${n === 1 ? "" : "s"}`}\n`,
      );
      for (const v of lintResult.violations)
        out.stdout(
          `  ${v.file || "(all files)"}${v.row ? `:${v.row}:${v.col}` : ""}: ${v.rule} (${v.category}, ${v.level}): ${v.description}\n`,
        );
    }
  }
  return ok ? 0 : 1;
}

async function offlineDecider(bundlePath: string, agent: string | undefined, nowMs?: () => number) {
  const env: Record<string, string> = {
    TOOLGATE_BUNDLE: bundlePath,
    TOOLGATE_STATE_DIR: mkdtempSync(join(tmpdir(), "toolgate-cli-")),
  };
  if (agent) env.TOOLGATE_AGENT_ID = agent;
  const config = compileConfig({}, env);
  const parts = await buildParts(config, createLogger("silent"), {
    audit: false,
    approvals: false,
    grants: false,
    ...(nowMs ? { now: nowMs } : {}),
  });
  await parts.bundles.activate(await loadBundleFromPath(config.policy.bundle));
  return parts;
}

/** The modes `opa eval --explain` supports. */
export const EXPLAIN_MODES = ["fails", "full", "notes", "debug"] as const;

/**
 * `toolgate explain --bundle B --input I [--rego DIR] [--agent A] [--json]`:
 * the decision and its reasons, and — with the Rego sources — the rule-level
 * trace of `opa eval --explain` on the same input toolgate gives the policy.
 */
export async function explainCommand(args: string[], out: Out): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...BUNDLE_AND_INPUT,
      ...stringOptions("rego", "agent"),
      explain: { type: "string", default: "fails" },
      json: { type: "boolean" },
    },
  });
  if (!values.input || (!values.bundle && !values.rego))
    throw toolgateError("usage", "explain needs --input I and --bundle B (and/or --rego DIR)");
  if (!isOneOf(EXPLAIN_MODES, values.explain))
    throw toolgateError(
      "usage",
      `--explain must be one of ${EXPLAIN_MODES.join(", ")} (opa eval --explain's modes), not ${JSON.stringify(values.explain)}`,
    );
  const text = readFileSync(values.input === "-" ? 0 : values.input, "utf8");
  const req = validateDecisionRequest(JSON.parse(text));
  let decision: Decision | undefined;
  if (values.bundle)
    decision = (await offlineDecider(values.bundle, values.agent)).decider.decideSync(
      req,
      { face: "cli" },
      text,
    ).decision;
  let trace: string | undefined;
  if (values.rego) {
    const dir = mkdtempSync(join(tmpdir(), "toolgate-explain-"));
    const inputFile = join(dir, "input.json");
    const agentId = values.agent ?? "support-triage";
    writeFileSync(
      inputFile,
      JSON.stringify({
        request: req,
        verified: {
          agent: { id: agentId },
          subject: { id: req.subject.id, method: "trusted" },
          time_ns: Date.now() * 1e6,
        },
      }),
    );
    const mode = values.explain;
    const r = opa([
      "eval",
      "--format",
      "pretty",
      `--explain=${mode}`,
      "--ignore",
      "*_test.rego",
      "--ignore",
      "capabilities.json",
      ...regoSources(values.rego).paths.flatMap((p) => ["-d", p]),
      "-i",
      inputFile,
      "data.toolgate.decision",
    ]);
    trace = r.status === 0 ? r.stdout : r.stderr;
  }
  if (values.json) out.stdout(JSON.stringify({ decision, trace }, null, 2) + "\n");
  else {
    if (decision) {
      out.stdout(
        `outcome: ${decision.outcome}  (bundle ${decision.policy.bundle}, revision ${decision.policy.revision})\n`,
      );
      for (const r of decision.reasons) out.stdout(`  ${r.code}: ${r.message}\n`);
      if (decision.approval) out.stdout(`  approval: ${JSON.stringify(decision.approval)}\n`);
      if (decision.obligations.length)
        out.stdout(`  obligations: ${JSON.stringify(decision.obligations)}\n`);
    }
    if (trace !== undefined)
      out.stdout(`\nrule trace (opa eval --explain=${values.explain}):\n${trace}`);
  }
  return 0;
}

const REDACTION = /^(hmac-sha256:|\[REDACTED\]|\[TOO DEEP\]|\[CIRCULAR\])|…\[\+\d+ chars\]$/;

function redactedPaths(v: unknown, path: string, acc: string[]): string[] {
  if (typeof v === "string") {
    if (REDACTION.test(v) || v.includes("hmac-sha256:")) acc.push(path || "/");
  } else if (Array.isArray(v)) v.forEach((x, i) => redactedPaths(x, `${path}/${i}`, acc));
  else if (v !== null && typeof v === "object")
    for (const [k, x] of Object.entries(v)) redactedPaths(x, `${path}/${k}`, acc);
  return acc;
}

/**
 * `toolgate replay --audit <trail files or dir…> --bundle <candidate> [--json]`:
 * re-decides every recorded decision with a candidate bundle (at the recorded
 * time) and lists those that would change. Recorded arguments are redacted
 * where audit redacted them; such fields are named per record, because the
 * candidate saw the redacted value, not the original.
 */
export async function replayCommand(args: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      audit: { type: "string", multiple: true },
      bundle: { type: "string", short: "b" },
      agent: { type: "string" },
      json: { type: "boolean" },
      "allow-partial-start": { type: "boolean" },
    },
  });
  const trails = [...(values.audit ?? []), ...positionals];
  if (trails.length === 0 || !values.bundle)
    throw toolgateError("usage", "replay needs --audit <trail…> and --bundle <candidate>");
  const files = expandTrailPaths(trails);
  const integrity = verifyTrail(files, {
    allowPartialStart: values["allow-partial-start"] ?? false,
  });
  if (!integrity.ok)
    out.stderr(
      `warning: the trail's chain is broken (${integrity.firstBreak?.reason} at ${integrity.firstBreak?.file}:${integrity.firstBreak?.line}); replaying what is readable\n`,
    );
  let clock = Date.now();
  const parts = await offlineDecider(values.bundle, values.agent, () => clock);
  const changes: Array<Record<string, unknown>> = [];
  let total = 0;
  let withRedactions = 0;
  let malformed = 0;
  for (const line of readTrail(files)) {
    // what replay reads: each line that starts as a JSON object holding a decision record
    if (!line.text.startsWith("{")) continue;
    const parsed = line.json();
    if (!parsed.ok) continue;
    const rec = parsed.value as { kind?: unknown; record?: unknown };
    if (rec.kind !== "decision") continue;
    // a trail is read as hostile bytes: a record without a decision's shape is counted, not decided
    const r = decisionRecordOf(rec.record);
    if (r === undefined) {
      malformed++;
      continue;
    }
    total++;
    if (total % 1000 === 0) out.stderr(`replayed ${total} decisions…\n`);
    const request: DecisionRequest = {
      subject: { type: r.subject.type, id: r.subject.id },
      action: {
        name: r.tool.name,
        ...(r.arguments !== undefined ? { properties: { arguments: r.arguments } } : {}),
      },
      resource: r.resource,
      // the policy receives it as recorded, whatever its type (as any caller's context)
      ...(r.context !== undefined ? { context: r.context as Record<string, unknown> } : {}),
    };
    const redacted = redactedPaths({ arguments: r.arguments, context: r.context }, "", []);
    if (redacted.length) withRedactions++;
    clock = Date.parse(r.time) || Date.now();
    let now: Decision;
    try {
      now = parts.decider.decideSync(request, { face: "cli" }).decision;
    } catch (e) {
      changes.push({
        decision_id: r.decision_id,
        tool: r.tool.name,
        recorded: r.outcome,
        candidate: "error",
        error: (e as Error).message,
        redacted_fields: redacted,
      });
      continue;
    }
    const before = r.reasons.map((x) => x.code).join(",");
    const after = now.reasons.map((x) => x.code).join(",");
    if (now.outcome !== r.outcome || before !== after) {
      changes.push({
        decision_id: r.decision_id,
        time: r.time,
        tool: r.tool.name,
        subject: r.subject.id,
        recorded: { outcome: r.outcome, reasons: before, revision: r.policy.revision },
        candidate: { outcome: now.outcome, reasons: after, revision: now.policy.revision },
        redacted_fields: redacted,
      });
    }
  }
  if (malformed > 0)
    out.stderr(
      `replay: skipped ${malformed} decision record(s) without a decision's shape (a damaged or tampered trail)\n`,
    );
  const summary = {
    trail_ok: integrity.ok,
    decisions: total,
    malformed,
    changed: changes.length,
    with_redacted_fields: withRedactions,
    candidate: basename(values.bundle),
  };
  if (values.json) out.stdout(JSON.stringify({ summary, changes }, null, 2) + "\n");
  else {
    out.stdout(
      `replayed ${total} decisions against ${summary.candidate}: ${changes.length} would change` +
        `${withRedactions ? ` (${withRedactions} had redacted fields: the candidate saw the redacted values)` : ""}\n`,
    );
    for (const c of changes) {
      const rec = c.recorded as { outcome: string; reasons: string } | string;
      const cand = c.candidate as { outcome: string; reasons: string } | string;
      out.stdout(
        `  ${String(c.decision_id)} ${String(c.tool)}: ${typeof rec === "string" ? rec : `${rec.outcome} [${rec.reasons}]`} → ${typeof cand === "string" ? cand : `${cand.outcome} [${cand.reasons}]`}` +
          `${(c.redacted_fields as string[]).length ? `  (redacted: ${(c.redacted_fields as string[]).join(", ")})` : ""}\n`,
      );
    }
  }
  return 0;
}

/** A decision record as the auditor writes it: what replay reads of it. */
interface DecisionRecord {
  decision_id: string;
  time: string;
  subject: { type: string; id: string };
  tool: { name: string };
  resource: { type: string; id: string };
  /** As recorded: an object, or what a mask made of it. */
  arguments?: unknown;
  /** As recorded: an object, or what a mask made of it. */
  context?: unknown;
  outcome: string;
  reasons: Array<{ code: string }>;
  policy: { revision: string };
}

const isStr = (v: unknown): v is string => typeof v === "string";
const isRef = (v: unknown): v is { type: string; id: string } =>
  isObject(v) && isStr(v.type) && isStr(v.id);

/** The record, when it has every field replay reads with the right type; else undefined. */
function decisionRecordOf(v: unknown): DecisionRecord | undefined {
  if (!isObject(v)) return undefined;
  const { tool, policy, reasons } = v;
  const ok =
    isStr(v.decision_id) &&
    isStr(v.time) &&
    isRef(v.subject) &&
    isRef(v.resource) &&
    isObject(tool) &&
    isStr(tool.name) &&
    isStr(v.outcome) &&
    isObject(policy) &&
    isStr(policy.revision) &&
    Array.isArray(reasons) &&
    reasons.every((x) => isObject(x) && isStr(x.code));
  // arguments and context are replayed as recorded (a mask may have hashed them whole)
  return ok ? (v as unknown as DecisionRecord) : undefined;
}
