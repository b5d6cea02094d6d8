import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { dirname, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { toolgateError } from "../errors";
import { GRANT_ALGORITHMS, isOneOf, type GrantAlgorithm } from "../shared/algorithms";
import { describeForbiddenKey, forbiddenKey, isObject, parseUntrustedJson } from "../shared/guards";
import { defaultBundlePath, devPublicKeyPath } from "../shared/paths";
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
  /** The claim naming the caller's job (identity.jwt.job_claim; the agent port only). */
  jobClaim: string | null;
}

/** The validated configuration every module is built from. */
export interface CompiledConfig {
  agent: { id: string };
  server: {
    agent: { host: string; port: number };
    limits: { bodyBytes: number; maxDepth: number; maxEvaluations: number };
    requestTimeoutMs: number;
  };
  policy: {
    bundle: string;
    embedded: boolean;
    entrypoint: string;
    source: "file" | "http" | "oci";
    fileWatchIntervalMs: number;
    http: {
      url: string | null;
      minDelaySeconds: number;
      maxDelaySeconds: number;
      bearerTokenFile: string | null;
      caFile: string | null;
      maxBytes: number;
      timeoutMs: number;
    };
    oci: { reference: string | null; plainHttp: boolean };
    persistDir: string;
    /** A candidate bundle evaluated beside the active one, for the record only (null: none). */
    candidate: string | null;
    /** Null: signature verification off (a signed bundle is then refused, as OPA does). */
    signing: {
      keysFile: string | null;
      publicKeyFile: string | null;
      keyId: string | null;
      algorithm: string;
      scope: string | null;
    } | null;
  };
  identity: { mode: "trusted" | "jwt"; jwt: JwtConfig };
  control: {
    enabled: boolean;
    host: string;
    port: number;
    jwt: JwtConfig;
    adminRole: string;
    metricsAuth: boolean;
  };
  approvals: {
    requestTtlSeconds: number;
    /** Per initiator: at most `max` access requests not approved within `windowSeconds`. */
    requestLimit: { max: number; windowSeconds: number };
    webhook: { url: string; secret: string } | null;
  };
  state: { dir: string };
  containment: {
    /** Null: the tool's grant lifetime + 300 s. */
    reservationTtlSeconds: number | null;
    reservationFsync: boolean;
  };
  audit: {
    trail: { enabled: boolean; dir: string; maxFileBytes: number };
    redaction: "hash" | "erase";
    hmacKey: { source: "file" | "env" | "random"; file: string | null; value: string | null };
    logDecisions: boolean;
    /** Audit on a worker thread (AuditClient) instead of the main thread. */
    worker: boolean;
  };
  tracing: { maxQueueSize: number; scheduledDelayMs: number };
  grants: {
    enabled: boolean;
    issuer: string | null;
    ttlSeconds: number;
    /** Every configured key (published); at most one `active` (signs). Empty: an ephemeral key. */
    keys: Array<{
      kid: string | null;
      privateKeyFile: string | null;
      publicKeyFile: string | null;
      active: boolean;
      alg: GrantAlgorithm | null;
      /** The config key it came from, for messages. */
      where: string;
    }>;
    tools: Record<string, { audience?: string; ttlSeconds?: number; singleUse?: boolean }>;
    jwksPath: string;
  };
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

/** Keys whose value is a structured list or mapping: their members are not config keys. */
const STRUCTURED = new Set(FIELDS.filter((f) => f.type.kind === "map").map((f) => f.key));

function leafKeys(obj: unknown, prefix = ""): string[] {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj) || STRUCTURED.has(prefix))
    return [prefix];
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
    case "list":
    case "map":
      return t.hint;
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
      return { ok: parsed as Value };
    }
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
      jobClaim: prefix === "identity.jwt" ? get<string | null>("identity.jwt.job_claim") : null,
    };
  };
  const identityJwt = jwt("identity.jwt");
  const controlJwt = jwt("control.jwt");
  // The development key is public: never trust it on a port others can reach.
  const controlHost = get<string>("control.host");
  if (get<boolean>("control.enabled") && controlJwt?.dev === true && !isLoopback(controlHost)) {
    errors.push(
      `key "control.host" is ${JSON.stringify(controlHost)} but the control port trusts the committed development key. ` +
        `Fix: set control.jwt.public_key_file, control.jwt.jwks_file or control.jwt.jwks_url to your issuer's keys, or keep control.host on 127.0.0.1.`,
    );
  }
  if (get<string>("identity.mode") === "jwt" && identityJwt?.dev === true && !isLoopback(host)) {
    errors.push(
      `key "server.agent.host" is ${JSON.stringify(host)} but identity.mode jwt trusts the committed development key. ` +
        `Fix: set identity.jwt.public_key_file, identity.jwt.jwks_file or identity.jwt.jwks_url, or keep server.agent.host on 127.0.0.1.`,
    );
  }
  const grants = compileGrants(get, errors, baseDirForKeys);
  const webhookUrl = get<string | null>("approvals.webhook.url");
  const webhookSecret = get<string | null>("approvals.webhook.secret");
  if ((webhookUrl === null) !== (webhookSecret === null)) {
    errors.push(
      `keys "approvals.webhook.url" and "approvals.webhook.secret" go together. Fix: set both (the secret signs the body) or neither.`,
    );
  }
  const policySource = get<"file" | "http" | "oci">("policy.source");
  if (policySource === "http" && get<string | null>("policy.http.url") === null) {
    errors.push(
      `key "policy.source" is "http" but "policy.http.url" is not set. Fix: set the bundle URL.`,
    );
  }
  if (policySource === "oci" && get<string | null>("policy.oci.reference") === null) {
    errors.push(
      `key "policy.source" is "oci" but "policy.oci.reference" is not set. Fix: set registry/repository:tag.`,
    );
  }
  if (get<number>("policy.http.min_delay_seconds") > get<number>("policy.http.max_delay_seconds")) {
    errors.push(
      `key "policy.http.min_delay_seconds" exceeds "policy.http.max_delay_seconds". Fix: make min ≤ max.`,
    );
  }
  const signKeys = get<string | null>("policy.signing.keys_file");
  const signPub = get<string | null>("policy.signing.public_key_file");
  if (signKeys !== null && signPub !== null) {
    errors.push(
      `keys "policy.signing.keys_file" and "policy.signing.public_key_file" are exclusive. Fix: set only one.`,
    );
  }
  if (
    signKeys === null &&
    signPub === null &&
    (get<string | null>("policy.signing.key_id") !== null ||
      get<string | null>("policy.signing.scope") !== null)
  ) {
    errors.push(
      `"policy.signing.key_id"/"policy.signing.scope" need a key. Fix: set "policy.signing.keys_file" or "policy.signing.public_key_file".`,
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
  const resolveOpt = (key: string): string | null => {
    const v = get<string | null>(key);
    return v === null ? null : resolve(baseDir, v);
  };
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
      source: policySource,
      fileWatchIntervalMs: get("policy.file.watch_interval_ms"),
      http: {
        url: get("policy.http.url"),
        minDelaySeconds: get("policy.http.min_delay_seconds"),
        maxDelaySeconds: get("policy.http.max_delay_seconds"),
        bearerTokenFile: resolveOpt("policy.http.bearer_token_file"),
        caFile: resolveOpt("policy.http.ca_file"),
        maxBytes: get("policy.http.max_bytes"),
        timeoutMs: get("policy.http.timeout_ms"),
      },
      oci: { reference: get("policy.oci.reference"), plainHttp: get("policy.oci.plain_http") },
      persistDir: resolveOpt("policy.persist_dir") ?? resolve(stateDir, "bundles"),
      candidate: resolveOpt("policy.candidate.bundle"),
      signing:
        signKeys === null && signPub === null
          ? null
          : {
              keysFile: resolveOpt("policy.signing.keys_file"),
              publicKeyFile: resolveOpt("policy.signing.public_key_file"),
              keyId: get("policy.signing.key_id"),
              algorithm: get("policy.signing.algorithm"),
              scope: get("policy.signing.scope"),
            },
    },
    identity: { mode: get("identity.mode"), jwt: identityJwt as JwtConfig },
    control: {
      enabled: get("control.enabled"),
      host: get("control.host"),
      port: get("control.port"),
      jwt: controlJwt as JwtConfig,
      adminRole: get("control.admin_role"),
      metricsAuth: get("control.metrics_auth"),
    },
    approvals: {
      requestTtlSeconds: get("approvals.request_ttl_seconds"),
      requestLimit: {
        max: get("approvals.request_limit.max"),
        windowSeconds: get("approvals.request_limit.window_seconds"),
      },
      webhook:
        webhookUrl !== null && webhookSecret !== null
          ? { url: webhookUrl, secret: webhookSecret }
          : null,
    },
    state: { dir: stateDir },
    containment: {
      reservationTtlSeconds: get("containment.reservation_ttl_seconds"),
      reservationFsync: get("containment.reservation_fsync"),
    },
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
      worker: get("audit.worker"),
    },
    tracing: {
      maxQueueSize: get("tracing.max_queue_size"),
      scheduledDelayMs: get("tracing.scheduled_delay_ms"),
    },
    grants: grants as CompiledConfig["grants"],
    log: { level: get("log.level") },
    origin: { file: opts.file ?? null, env: envUsed },
  };
}

const KID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The grants block: keys (shorthand or rotation list) and per-tool settings, checked. */
function compileGrants(
  get: <T extends Value>(key: string) => T,
  errors: string[],
  baseDir: string,
): CompiledConfig["grants"] | undefined {
  const n = errors.length;
  const keys: CompiledConfig["grants"]["keys"] = [];
  const file = get<string | null>("grants.private_key_file");
  const list = get<Value>("grants.keys") as unknown as unknown[] | null;
  if (file !== null && list !== null) {
    errors.push(
      `keys "grants.private_key_file" and "grants.keys" are exclusive. Fix: list the key in grants.keys with active: true.`,
    );
  } else if (file !== null) {
    keys.push({
      kid: get<string | null>("grants.key_id"),
      privateKeyFile: resolve(baseDir, file),
      publicKeyFile: null,
      active: true,
      alg: null,
      where: "grants.private_key_file",
    });
  } else if (list !== null) {
    list.forEach((k, i) => {
      const where = `grants.keys[${i}]`;
      const fix = `Fix: each entry is {kid, private_key_file | public_key_file, active?, alg?}.`;
      if (!isObject(k)) return errors.push(`key "${where}" must be a mapping. ${fix}`);
      const extra = Object.keys(k).find(
        (m) => !["kid", "private_key_file", "public_key_file", "active", "alg"].includes(m),
      );
      if (extra !== undefined) errors.push(`key "${where}.${extra}" is unknown. ${fix}`);
      const priv = k.private_key_file;
      const pub = k.public_key_file;
      if (
        (priv === undefined) === (pub === undefined) ||
        ![priv, pub].some((p) => typeof p === "string" && p !== "")
      )
        errors.push(
          `key "${where}" needs exactly one of private_key_file, public_key_file. ${fix}`,
        );
      if (typeof k.kid !== "string" || !KID.test(k.kid))
        errors.push(`key "${where}.kid" must be a kid (1-128 of A-Z a-z 0-9 . _ : -). ${fix}`);
      if (k.active !== undefined && typeof k.active !== "boolean")
        errors.push(`key "${where}.active" must be true or false. ${fix}`);
      if (k.active === true && priv === undefined)
        errors.push(`key "${where}" is active but has no private_key_file. ${fix}`);
      if (k.alg !== undefined && !isOneOf(GRANT_ALGORITHMS, k.alg))
        errors.push(`key "${where}.alg" must be one of ${GRANT_ALGORITHMS.join(", ")}. ${fix}`);
      keys.push({
        kid: typeof k.kid === "string" ? k.kid : null,
        privateKeyFile: typeof priv === "string" ? resolve(baseDir, priv) : null,
        publicKeyFile: typeof pub === "string" ? resolve(baseDir, pub) : null,
        active: k.active === true,
        alg: (k.alg as CompiledConfig["grants"]["keys"][number]["alg"] | undefined) ?? null,
        where,
      });
    });
    if (keys.filter((k) => k.active).length !== 1)
      errors.push(`key "grants.keys" must have exactly one entry with active: true (it signs).`);
  }
  // looked up by the caller's tool name: no prototype to read members from
  const tools = Object.create(null) as CompiledConfig["grants"]["tools"];
  const rawTools = get<Value>("grants.tools") as unknown as Record<string, unknown> | null;
  for (const [name, t] of Object.entries(rawTools ?? {})) {
    const where = `grants.tools[${JSON.stringify(name)}]`;
    const fix = `Fix: {audience?: string, ttl_seconds?: 1-3600, single_use?: bool}.`;
    if (!isObject(t)) {
      errors.push(`key "${where}" must be a mapping. ${fix}`);
      continue;
    }
    const extra = Object.keys(t).find(
      (m) => !["audience", "ttl_seconds", "single_use"].includes(m),
    );
    if (extra !== undefined) errors.push(`key "${where}.${extra}" is unknown. ${fix}`);
    const s: CompiledConfig["grants"]["tools"][string] = {};
    if (t.audience !== undefined) {
      if (typeof t.audience !== "string" || !/^\S{1,512}$/.test(t.audience))
        errors.push(`key "${where}.audience" must be a non-empty string. ${fix}`);
      else s.audience = t.audience;
    }
    if (t.ttl_seconds !== undefined) {
      const v = t.ttl_seconds;
      if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > 3600)
        errors.push(`key "${where}.ttl_seconds" must be an integer from 1 to 3600. ${fix}`);
      else s.ttlSeconds = v;
    }
    if (t.single_use !== undefined) {
      if (typeof t.single_use !== "boolean")
        errors.push(`key "${where}.single_use" must be true or false. ${fix}`);
      else s.singleUse = t.single_use;
    }
    tools[name] = s;
  }
  if (errors.length > n) return undefined;
  return {
    enabled: get("grants.enabled"),
    issuer: get("grants.issuer"),
    ttlSeconds: get("grants.ttl_seconds"),
    keys,
    tools,
    jwksPath: get("grants.jwks_path"),
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
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw toolgateError(
      "config_invalid",
      `config file ${abs} must hold a mapping of keys (see docs/configuration.md)`,
    );
  }
  return compileConfig(raw as RawConfig, env, { file: abs });
}
