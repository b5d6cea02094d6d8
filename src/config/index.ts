import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { dirname, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { toolgateError } from "../errors";
import { defaultBundlePath, devPublicKeyPath } from "../util/paths";
import { FIELDS, type FieldSpec } from "./schema";

export { FIELDS } from "./schema";

/** What a config file (or nothing) plus the environment hold: unchecked. */
export type RawConfig = Record<string, unknown>;

/** How tokens are verified on one port. */
export interface JwtConfig {
  issuer: string;
  audience: string;
  keys: { kind: "public_key_file" | "jwks_file" | "jwks_url"; value: string };
  rolesClaim: string;
  clockSkewSeconds: number;
  /** True while the keys are the committed development key (config/dev/). */
  dev: boolean;
}

/** The validated configuration every module is built from. */
export interface CompiledConfig {
  agent: { id: string };
  server: {
    agent: { host: string; port: number };
    limits: { bodyBytes: number; maxDepth: number; maxEvaluations: number };
    requestTimeoutMs: number;
  };
  policy: { bundle: string; embedded: boolean; entrypoint: string };
  identity: { mode: "trusted" | "jwt"; jwt: JwtConfig };
  control: { enabled: boolean; host: string; port: number; jwt: JwtConfig; adminRole: string };
  approvals: {
    requestTtlSeconds: number;
    webhook: { url: string; secret: string } | null;
  };
  state: { dir: string };
  audit: {
    trail: { enabled: boolean; dir: string; maxFileBytes: number };
    redaction: "hash" | "erase";
    hmacKey: { source: "file" | "env" | "random"; file: string | null; value: string | null };
    logDecisions: boolean;
  };
  tracing: { maxQueueSize: number; scheduledDelayMs: number };
  log: { level: "error" | "warn" | "info" | "debug" | "silent" };
  /** Where the config came from, for the start-up banner. */
  origin: { file: string | null; env: string[] };
}

type Value = string | number | boolean | null;

function getPath(obj: RawConfig, key: string): unknown {
  let node: unknown = obj;
  for (const seg of key.split(".")) {
    if (node === null || typeof node !== "object" || Array.isArray(node)) return undefined;
    node = (node as Record<string, unknown>)[seg];
  }
  return node;
}

function leafKeys(obj: unknown, prefix = ""): string[] {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return [prefix];
  const out: string[] = [];
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
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
  }
}

/** Checks one value; returns the typed value or an error text. */
function check(spec: FieldSpec, v: unknown, fromEnv: boolean): { ok: Value } | { err: string } {
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
  }
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
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
  const values = new Map<string, Value>();
  const envUsed: string[] = [];
  for (const spec of FIELDS) {
    const envVal = env[spec.env];
    const fromEnv = envVal !== undefined && envVal !== "";
    const v = fromEnv ? envVal : getPath(raw, spec.key);
    if (fromEnv) envUsed.push(spec.env);
    if (v === undefined || v === null) {
      values.set(spec.key, spec.default);
      continue;
    }
    const r = check(spec, v, fromEnv);
    if ("err" in r) {
      const where = fromEnv ? `environment variable ${spec.env}` : `key "${spec.key}"`;
      errors.push(
        `${where} ${r.err}. Fix: set it to ${describe(spec)} (default ${JSON.stringify(spec.default)}).`,
      );
    } else {
      values.set(spec.key, r.ok);
    }
  }
  const get = <T extends Value>(key: string): T => values.get(key) as T;
  const host = get<string>("server.agent.host");
  if (get<string>("identity.mode") === "trusted" && !isLoopback(host)) {
    errors.push(
      `key "identity.mode" is "trusted" but "server.agent.host" is ${JSON.stringify(host)}. ` +
        `Fix: trusted identity is allowed only on loopback; set server.agent.host to 127.0.0.1.`,
    );
  }
  const baseDirForKeys = opts.file ? dirname(opts.file) : process.cwd();
  const jwt = (prefix: string): JwtConfig | undefined => {
    const pk = get<string | null>(`${prefix}.public_key_file`);
    const jf = get<string | null>(`${prefix}.jwks_file`);
    const ju = get<string | null>(`${prefix}.jwks_url`);
    const set = [pk, jf, ju].filter((v) => v !== null);
    if (set.length > 1) {
      errors.push(
        `keys "${prefix}.public_key_file", "${prefix}.jwks_file" and "${prefix}.jwks_url" are exclusive. Fix: set only one.`,
      );
      return undefined;
    }
    const keys: JwtConfig["keys"] =
      pk !== null
        ? { kind: "public_key_file", value: resolve(baseDirForKeys, pk) }
        : jf !== null
          ? { kind: "jwks_file", value: resolve(baseDirForKeys, jf) }
          : ju !== null
            ? { kind: "jwks_url", value: ju }
            : { kind: "public_key_file", value: devPublicKeyPath() };
    return {
      issuer: get(`${prefix}.issuer`),
      audience: get(`${prefix}.audience`),
      keys,
      rolesClaim: get(`${prefix}.roles_claim`),
      clockSkewSeconds: get(`${prefix}.clock_skew_seconds`),
      dev: keys.kind === "public_key_file" && keys.value === devPublicKeyPath(),
    };
  };
  const identityJwt = jwt("identity.jwt");
  const controlJwt = jwt("control.jwt");
  const webhookUrl = get<string | null>("approvals.webhook.url");
  const webhookSecret = get<string | null>("approvals.webhook.secret");
  if ((webhookUrl === null) !== (webhookSecret === null)) {
    errors.push(
      `keys "approvals.webhook.url" and "approvals.webhook.secret" go together. Fix: set both (the secret signs the body) or neither.`,
    );
  }
  if (errors.length > 0) {
    throw toolgateError(
      "config_invalid",
      `invalid configuration${opts.file ? ` (${opts.file})` : ""}:\n` +
        errors.map((e) => `  - ${e}`).join("\n"),
      { errors },
    );
  }
  const bundle = get<string | null>("policy.bundle");
  const baseDir = opts.file ? dirname(opts.file) : process.cwd();
  const stateDir = resolve(baseDir, get<string>("state.dir"));
  const trailDir = get<string | null>("audit.trail.dir");
  const keyFile = get<string | null>("audit.hmac_key_file");
  const keyValue = get<string | null>("audit.hmac_key");
  return {
    agent: { id: get("agent.id") },
    server: {
      agent: { host, port: get("server.agent.port") },
      limits: {
        bodyBytes: get("server.limits.body_bytes"),
        maxDepth: get("server.limits.max_depth"),
        maxEvaluations: get("server.limits.max_evaluations"),
      },
      requestTimeoutMs: get("server.request_timeout_ms"),
    },
    policy: {
      bundle: bundle === null ? defaultBundlePath() : resolve(baseDir, bundle),
      embedded: bundle === null,
      entrypoint: get("policy.entrypoint"),
    },
    identity: { mode: get("identity.mode"), jwt: identityJwt as JwtConfig },
    control: {
      enabled: get("control.enabled"),
      host: get("control.host"),
      port: get("control.port"),
      jwt: controlJwt as JwtConfig,
      adminRole: get("control.admin_role"),
    },
    approvals: {
      requestTtlSeconds: get("approvals.request_ttl_seconds"),
      webhook:
        webhookUrl !== null && webhookSecret !== null
          ? { url: webhookUrl, secret: webhookSecret }
          : null,
    },
    state: { dir: stateDir },
    audit: {
      trail: {
        enabled: get("audit.trail.enabled"),
        dir: trailDir === null ? resolve(stateDir, "audit") : resolve(baseDir, trailDir),
        maxFileBytes: get("audit.trail.max_file_bytes"),
      },
      redaction: get("audit.redaction"),
      hmacKey:
        keyValue !== null
          ? { source: "env", file: null, value: keyValue }
          : keyFile !== null
            ? { source: "file", file: resolve(baseDir, keyFile), value: null }
            : { source: "random", file: null, value: null },
      logDecisions: get("audit.log_decisions"),
    },
    tracing: {
      maxQueueSize: get("tracing.max_queue_size"),
      scheduledDelayMs: get("tracing.scheduled_delay_ms"),
    },
    log: { level: get("log.level") },
    origin: { file: opts.file ?? null, env: envUsed },
  };
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
    );
  }
  let raw: unknown;
  try {
    raw = parseYaml(text); // YAML is a superset of JSON: one parser for both
  } catch (e) {
    throw toolgateError(
      "config_invalid",
      `config file ${abs} is not valid YAML/JSON: ${(e as Error).message}`,
    );
  }
  if (raw === null || raw === undefined) raw = {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw toolgateError(
      "config_invalid",
      `config file ${abs} must hold a mapping of keys (see docs/configuration.md)`,
    );
  }
  return compileConfig(raw as RawConfig, env, { file: abs });
}
