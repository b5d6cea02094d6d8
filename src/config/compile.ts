import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { dirname, resolve } from "node:path";
import { parseYaml } from "../shared/yaml";
import { toolgateError } from "../errors";
import { describeForbiddenKey, forbiddenKey, isObject, parseUntrustedJson } from "../shared/guards";
import { FIELDS, SPEC, type CompiledConfig } from "./schema";
import {
  Field,
  ListField,
  MapField,
  Section,
  type CheckContext,
  type CompileContext,
  type FieldSpec,
  type Group,
  type Loose,
  type Node,
  type Reader,
  type Values,
} from "../shared/config-spec";

export { FIELDS, type CompiledConfig, type JwtConfig } from "./schema";
export { isLoopback } from "../shared/config-spec";

/** What a config file (or nothing) plus the environment hold: unchecked. */
export type RawConfig = Record<string, unknown>;

function getPath(obj: RawConfig, key: string): unknown {
  let node: unknown = obj;
  for (const seg of key.split(".")) {
    if (!isObject(node)) return undefined;
    node = node[seg];
  }
  return node;
}

/** Keys whose value is a structured list or mapping: their members are not config keys. */
const STRUCTURED = new Set(FIELDS.filter((f) => f.type.kind === "map").map((f) => f.key));

function leafKeys(obj: unknown, prefix = ""): string[] {
  if (!isObject(obj) || STRUCTURED.has(prefix)) return [prefix];
  const out: string[] = [];
  for (const [k, v] of Object.entries(obj)) {
    out.push(...leafKeys(v, prefix ? `${prefix}.${k}` : k));
  }
  return out;
}

function closest(key: string): string | undefined {
  const dist = (a: string, b: string): number => {
    const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i]);
    for (let j = 1; j <= b.length; j++) (d[0] as number[])[j] = j;
    for (let i = 1; i <= a.length; i++) {
      for (let j = 1; j <= b.length; j++) {
        const row = d[i] as number[];
        const prev = d[i - 1] as number[];
        row[j] = Math.min(
          (prev[j] as number) + 1,
          (row[j - 1] as number) + 1,
          (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1),
        );
      }
    }
    return (d[a.length] as number[])[b.length] as number;
  };
  let best: string | undefined;
  let bestD = Infinity;
  for (const f of FIELDS) {
    const dd = dist(key, f.key);
    if (dd < bestD) {
      bestD = dd;
      best = f.key;
    }
  }
  return bestD <= Math.max(3, Math.floor(key.length / 3)) ? best : undefined;
}

function describe(spec: FieldSpec): string {
  const t = spec.type;
  switch (t.kind) {
    case "int":
      return `an integer from ${t.min} to ${t.max}`;
    case "enum":
      return `one of ${t.values.map((v) => `"${v}"`).join(", ")}`;
    case "bool":
      return "true or false";
    case "host":
      return "an IP address or host name, e.g. 127.0.0.1";
    case "path":
      return "a file or directory path";
    case "string":
      return t.patternHint ? `a string (${t.patternHint})` : "a string";
    case "list":
    case "map":
      return t.hint;
  }
}

/** Checks one value; returns the typed value or an error text. */
function check(spec: FieldSpec, v: unknown, fromEnv: boolean): { ok: unknown } | { err: string } {
  const t = spec.type;
  const got = spec.secret ? "(a value not shown: it is secret)" : JSON.stringify(v);
  switch (t.kind) {
    case "int": {
      const n = fromEnv && typeof v === "string" && /^-?\d+$/.test(v.trim()) ? Number(v) : v;
      if (typeof n !== "number" || !Number.isInteger(n) || n < t.min || n > t.max) {
        return { err: `must be ${describe(spec)}, got ${got}` };
      }
      return { ok: n };
    }
    case "bool": {
      if (typeof v === "boolean") return { ok: v };
      if (fromEnv && (v === "true" || v === "false")) return { ok: v === "true" };
      return { err: `must be true or false, got ${got}` };
    }
    case "enum":
      if (typeof v !== "string" || !t.values.includes(v))
        return { err: `must be ${describe(spec)}, got ${got}` };
      return { ok: v };
    case "host":
      if (
        typeof v !== "string" ||
        (isIP(v) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$/.test(v))
      ) {
        return { err: `must be ${describe(spec)}, got ${got}` };
      }
      return { ok: v };
    case "path":
      if (typeof v !== "string" || v.trim() === "")
        return { err: `must be ${describe(spec)}, got ${got}` };
      return { ok: v };
    case "string":
      if (typeof v !== "string" || (t.pattern && !t.pattern.test(v))) {
        return { err: `must be ${describe(spec)}, got ${got}` };
      }
      return { ok: v };
    case "list":
    case "map": {
      let parsed: unknown = v;
      if (fromEnv && typeof v === "string") {
        try {
          parsed = parseUntrustedJson(v);
        } catch (e) {
          if (!(e instanceof SyntaxError))
            return { err: `must not hold a ${(e as Error).message}` };
          return { err: `must be JSON (${describe(spec)}), got ${got}` };
        }
      }
      const isList = Array.isArray(parsed);
      const isMap = parsed !== null && typeof parsed === "object" && !isList;
      if (t.kind === "list" ? !isList : !isMap)
        return { err: `must be ${describe(spec)}, got ${got}` };
      return { ok: parsed };
    }
  }
}

/**
 * Reads the spec's tree over the fields' values: as the checks see it (a value
 * that failed its own check is undefined), or compiled (each section's compile
 * step over its fields' values). The walk builds every node from the fields
 * under it, which is the shape `Loose`/`Values` give it: the one place that
 * asserts so.
 */
function reader(
  read: Map<FieldSpec, unknown>,
  check: CheckContext,
  compile: () => CompileContext,
): Reader {
  const group = (node: Group, f: (n: Node) => unknown): Record<string, unknown> =>
    Object.fromEntries(Object.entries(node).map(([k, n]) => [k, f(n)]));
  const loose = (node: Node): unknown =>
    node instanceof Field
      ? read.get(node)
      : node instanceof Section
        ? loose(node.fields)
        : group(node, loose);
  const values = (node: Node): unknown => {
    if (node instanceof ListField) {
      const v = read.get(node);
      return Array.isArray(v) ? node.items(v, check) : null;
    }
    if (node instanceof MapField) {
      const v = read.get(node);
      return isObject(v) ? node.items(v, check) : null;
    }
    if (node instanceof Field) return read.get(node);
    if (node instanceof Section) return node.compile(self, compile());
    return group(node, values);
  };
  const self: Reader = {
    loose: <N extends Node>(node: N) => loose(node) as Loose<N>,
    values: <N extends Node>(node: N) => values(node) as Values<N>,
  };
  return self;
}

/** Runs every section's checks, a section's own after those of the sections inside it. */
function runChecks(node: Node, read: Reader, ctx: CheckContext): void {
  if (node instanceof Field) return;
  for (const child of Object.values(node instanceof Section ? node.fields : node)) {
    runChecks(child, read, ctx);
  }
  if (node instanceof Section) node.check(read, ctx);
}

/**
 * Validates raw config (file contents) plus environment overrides and builds
 * the compiled config. All problems are reported together, each naming the key,
 * its env variable and what would fix it.
 */
export function compileConfig(
  raw: RawConfig,
  env: Record<string, string | undefined> = {},
  opts: { file?: string | null } = {},
): CompiledConfig {
  const errors: string[] = [];
  const known = new Set(FIELDS.map((f) => f.key));
  for (const key of leafKeys(raw)) {
    if (key === "" || known.has(key)) continue;
    const hint = closest(key);
    errors.push(
      `unknown key "${key}"${hint ? `: did you mean "${hint}"?` : ""} Fix: remove it (see docs/configuration.md).`,
    );
  }
  const baseDir = opts.file ? dirname(opts.file) : process.cwd();
  const read = new Map<FieldSpec, unknown>();
  const envUsed: string[] = [];
  for (const spec of FIELDS) {
    const envVal = env[spec.env];
    const fromEnv = envVal !== undefined && envVal !== "";
    const v = fromEnv ? envVal : getPath(raw, spec.key);
    if (fromEnv) envUsed.push(spec.env);
    const r = v === undefined || v === null ? { ok: spec.default } : check(spec, v, fromEnv);
    if ("err" in r) {
      const where = fromEnv ? `environment variable ${spec.env}` : `key "${spec.key}"`;
      errors.push(
        `${where} ${r.err}. Fix: set it to ${describe(spec)} (default ${JSON.stringify(spec.default)}).`,
      );
    } else {
      // relative paths are relative to the config file
      read.set(
        spec,
        spec.type.kind === "path" && typeof r.ok === "string" ? resolve(baseDir, r.ok) : r.ok,
      );
    }
  }
  const checks: CheckContext = {
    report: (problem) => errors.push(problem),
    resolve: (path) => resolve(baseDir, path),
  };
  const invalid = () =>
    toolgateError(
      "config_invalid",
      `invalid configuration${opts.file ? ` (${opts.file})` : ""}:\n` +
        errors.map((e) => `  - ${e}`).join("\n"),
      { errors },
    );
  // the compile steps' context exists once every check has passed
  const tree = reader(read, checks, () => ctx);
  runChecks(SPEC, tree, checks);
  if (errors.length > 0) throw invalid();
  const ctx: CompileContext = {
    resolve: checks.resolve,
    stateDir: tree.values(SPEC.fields.state.dir),
    origin: { file: opts.file ?? null, env: envUsed },
  };
  const config = tree.values(SPEC);
  // Lists and maps are read again here: a problem a section's check left unread still fails.
  if (errors.length > 0) throw invalid();
  return config;
}

/** Reads the config file (YAML or JSON) if one is named, and compiles it with the environment. */
export function loadConfig(
  file: string | undefined,
  env: Record<string, string | undefined> = process.env,
): CompiledConfig {
  const path = file ?? env.TOOLGATE_CONFIG;
  if (path === undefined || path === "") return compileConfig({}, env);
  const abs = resolve(path);
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch (e) {
    throw toolgateError(
      "config_unreadable",
      `cannot read config file ${abs}: ${(e as Error).message}`,
      { cause: e },
    );
  }
  let raw: unknown;
  try {
    raw = parseYaml(text); // YAML is a superset of JSON: one parser for both
  } catch (e) {
    throw toolgateError(
      "config_invalid",
      `config file ${abs} is not valid YAML/JSON: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const hit = forbiddenKey(raw);
  if (hit !== undefined) {
    throw toolgateError(
      "config_invalid",
      `config file ${abs}: ${describeForbiddenKey(hit)}. Fix: remove that key.`,
    );
  }
  if (raw === null || raw === undefined) raw = {};
  if (!isObject(raw)) {
    throw toolgateError(
      "config_invalid",
      `config file ${abs} must hold a mapping of keys (see docs/configuration.md)`,
    );
  }
  return compileConfig(raw, env, { file: abs });
}
