/**
 * The MCP proxy's configuration (`toolgate mcp --config FILE`, docs/mcp.md):
 * a YAML/JSON file, then flags and TOOLGATE_MCP_* env for the common bits.
 * Validated whole at start: every problem is listed, each naming its key and
 * the fix, as one `config_invalid` error.
 */
import { readFileSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseYaml } from "../shared/yaml";
import { toolgateError } from "../errors";
import { describeForbiddenKey, forbiddenKey, isObject } from "../shared/guards";
import type { LogLevel } from "../shared/log";

/** A value taken from the call's arguments (RFC 6901 JSON Pointer), or a literal string. */
export type Mapped = string | { arg: string };

export interface ToolMapping {
  resource?: { type?: Mapped; id?: Mapped };
  /** Literals only: the job is the session's, never the agent's pick (no `{arg}`). */
  job?: { id?: string; purpose?: string; customer_id?: string };
}

export interface UpstreamConfig {
  name: string;
  /** stdio: the command to spawn (no shell), with args, env (added to a minimal env) and cwd. */
  command?: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
  /** streamable HTTP: the server's URL and extra request headers. */
  url?: string;
  headers: Record<string, string>;
  /** Whether a tool's `x-authzen-mapping` (COAZ-MCP) is honoured for resource/context. */
  honorSchemaMapping: boolean;
}

export interface Entity {
  type: string;
  id: string;
  properties?: Record<string, unknown>;
}

export interface McpProxyConfig {
  sidecar: { url: string; token?: string; timeoutMs: number };
  /** Base URL of the console (toolgate's control port): approval links are `<console>/console/requests/<id>`. */
  consoleUrl: string;
  session: { subject: Entity; resource: Entity; context: Record<string, unknown> };
  servers: UpstreamConfig[];
  /** Per-tool mappings, by the agent-facing tool name (`<server>.<tool>` with several servers). */
  tools: Map<string, ToolMapping>;
  serve: {
    http?: { host: string; port: number };
    stdio: boolean;
    path: string;
    /**
     * HTTP serving's bearer secret: `token` when configured (serve.token_env, or an existing
     * serve.token_file); `tokenFile` where a generated one is written when the file is missing.
     * Neither: the proxy generates one at start, in a fresh 0700 temp directory.
     */
    auth: { token?: string; tokenFile?: string };
    /** Most HTTP sessions open at once (serve.max_sessions). */
    maxSessions: number;
  };
  /** Refuse (and hide) tools whose calls map no resource id (serve the session's resource only when mapped). */
  requireMapping: boolean;
  /** Read-only list methods passed through to the upstreams (merged); every other method is MethodNotFound. */
  passthrough: PassthroughMethod[];
  approval: { waitSeconds: number };
  limits: {
    toolsPerServer: number;
    descriptionChars: number;
    schemaBytes: number;
    resultBytes: number;
    bodyBytes: number;
    callTimeoutMs: number;
  };
  logLevel: LogLevel;
}

export const PASSTHROUGH_METHODS = [
  "resources/list",
  "resources/templates/list",
  "prompts/list",
] as const;
export type PassthroughMethod = (typeof PASSTHROUGH_METHODS)[number];

/** Server names: no dots, so `<server>.<tool>` splits one way only. */
export const SERVER_NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** Shortest HTTP bearer secret accepted from a file or the environment. */
const MIN_SECRET = 32;
const ENTITY_ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,255}$/;
const TOP_KEYS = [
  "sidecar",
  "console_url",
  "session",
  "servers",
  "tools",
  "serve",
  "methods",
  "approval",
  "limits",
  "log_level",
  "require_mapping",
];

/** Flags and environment that override the file (TOOLGATE_MCP_* env < flags). */
export interface Overrides {
  http?: string;
  stdio?: boolean;
  sidecarUrl?: string;
  consoleUrl?: string;
  logLevel?: string;
  httpTokenFile?: string;
}

const DEFAULT_LIMITS = {
  tools_per_server: 1000,
  description_chars: 4096,
  schema_bytes: 65536,
  result_bytes: 1048576,
  body_bytes: 1048576,
  call_timeout_ms: 60000,
};

/** Reads and validates the proxy config file; `overrides` (flags, env) win over the file. */
export function loadMcpConfig(
  file: string | undefined,
  overrides: Overrides = {},
  env: Record<string, string | undefined> = process.env,
): McpProxyConfig {
  let raw: unknown = {};
  let baseDir = process.cwd();
  if (file !== undefined) {
    const abs = resolve(file);
    baseDir = dirname(abs);
    let text: string;
    try {
      text = readFileSync(abs, "utf8");
    } catch (e) {
      throw toolgateError(
        "config_unreadable",
        `cannot read MCP proxy config ${abs}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    try {
      raw = parseYaml(text) ?? {};
    } catch (e) {
      throw toolgateError(
        "config_invalid",
        `MCP proxy config ${abs} is not valid YAML/JSON: ${(e as Error).message}`,
        { cause: e },
      );
    }
  }
  return compileMcpConfig(raw, overrides, env, { baseDir, file });
}

/** Validates a parsed config document (see loadMcpConfig). */
export function compileMcpConfig(
  raw: unknown,
  overrides: Overrides = {},
  env: Record<string, string | undefined> = {},
  opts: { baseDir?: string; file?: string | undefined } = {},
): McpProxyConfig {
  const where = opts.file !== undefined ? ` (${resolve(opts.file)})` : "";
  const hit = forbiddenKey(raw);
  if (hit !== undefined)
    throw toolgateError(
      "config_invalid",
      `MCP proxy config${where}: ${describeForbiddenKey(hit)}. Fix: remove that key.`,
    );
  if (!isObject(raw))
    throw toolgateError(
      "config_invalid",
      `MCP proxy config${where} must be a mapping of keys (see docs/mcp.md)`,
    );
  const errors: string[] = [];
  const report = (key: string, problem: string, fix: string): void => {
    errors.push(`key "${key}" ${problem}. Fix: ${fix}`);
  };
  const baseDir = opts.baseDir ?? process.cwd();
  for (const k of Object.keys(raw))
    if (!TOP_KEYS.includes(k)) report(k, "is unknown", `use one of ${TOP_KEYS.join(", ")}`);

  // -- sidecar --------------------------------------------------------------
  const sc = section(raw, "sidecar", report);
  const sidecarUrl = overrides.sidecarUrl ?? env.TOOLGATE_MCP_SIDECAR_URL ?? sc.url;
  const url = httpUrl(sidecarUrl ?? "http://127.0.0.1:8181", "sidecar.url", report);
  onlyKeys(sc, "sidecar", ["url", "token_env", "token_file", "timeout_ms"], report);
  let token: string | undefined;
  if (sc.token_env !== undefined) {
    if (typeof sc.token_env !== "string" || !/^[A-Z_][A-Z0-9_]*$/.test(sc.token_env))
      report("sidecar.token_env", "must be an environment variable name", "e.g. TOOLGATE_TOKEN");
    else if (env[sc.token_env] === undefined || env[sc.token_env] === "")
      report(
        "sidecar.token_env",
        `names ${sc.token_env}, which is not set`,
        "export it, or remove the key",
      );
    else token = env[sc.token_env];
  }
  if (sc.token_file !== undefined) {
    if (typeof sc.token_file !== "string" || sc.token_file === "")
      report(
        "sidecar.token_file",
        "must be a file path",
        "give the path of a file holding the bearer token",
      );
    else {
      try {
        token = readFileSync(resolve(baseDir, sc.token_file), "utf8").trim();
      } catch (e) {
        report(
          "sidecar.token_file",
          `cannot be read (${(e as Error).message})`,
          "check the path and its permissions",
        );
      }
    }
  }
  const timeoutMs = intIn(sc.timeout_ms, 5000, 100, 120000, "sidecar.timeout_ms", report);

  // -- console --------------------------------------------------------------
  const consoleUrl = httpUrl(
    overrides.consoleUrl ??
      env.TOOLGATE_MCP_CONSOLE_URL ??
      raw.console_url ??
      "http://127.0.0.1:8182",
    "console_url",
    report,
  ).replace(/\/+$/, "");

  // -- session --------------------------------------------------------------
  const s = section(raw, "session", report);
  onlyKeys(s, "session", ["subject", "resource", "context"], report);
  const subject = entity(s.subject, "session.subject", report);
  const resource = entity(s.resource, "session.resource", report);
  let context: Record<string, unknown> = {};
  if (s.context !== undefined) {
    if (!isObject(s.context))
      report("session.context", "must be a mapping", "e.g. {job: {id, purpose, customer_id}}");
    else context = structuredClone(s.context);
  }
  if (isObject(context.job)) {
    for (const k of ["id", "purpose", "customer_id"])
      if (context.job[k] !== undefined && typeof context.job[k] !== "string")
        report(`session.context.job.${k}`, "must be a string", "quote it");
  } else if (context.job !== undefined)
    report("session.context.job", "must be a mapping", "{id, purpose, customer_id}");
  if (context.approval !== undefined)
    report("session.context.approval", "is set by the proxy, never configured", "remove it");

  // -- servers --------------------------------------------------------------
  const servers: UpstreamConfig[] = [];
  if (!Array.isArray(raw.servers) || raw.servers.length === 0)
    report(
      "servers",
      "must list at least one upstream MCP server",
      "servers: [{name: fs, command: mcp-server-filesystem, args: [/data]}] or [{name: api, url: https://host/mcp}]",
    );
  else if (raw.servers.length > 32)
    report("servers", "lists more than 32 servers", "run several proxies");
  else
    raw.servers.forEach((entry: unknown, i: number) => {
      const key = `servers[${i}]`;
      if (!isObject(entry))
        return report(key, "must be a mapping", "{name, command, args} or {name, url}");
      onlyKeys(
        entry,
        key,
        ["name", "command", "args", "env", "cwd", "url", "headers", "x_authzen_mapping"],
        report,
      );
      const name = entry.name;
      if (typeof name !== "string" || !SERVER_NAME.test(name))
        report(`${key}.name`, "must be 1-64 of A-Z a-z 0-9 _ -", "name the server, e.g. fs");
      else if (servers.some((o) => o.name === name))
        report(`${key}.name`, `repeats "${name}"`, "give each server its own name");
      const hasCmd = entry.command !== undefined;
      const hasUrl = entry.url !== undefined;
      if (hasCmd === hasUrl)
        report(key, "needs exactly one of command (stdio) and url (streamable HTTP)", "give one");
      const up: UpstreamConfig = {
        name: typeof name === "string" ? name : `#${i}`,
        args: [],
        env: {},
        headers: {},
        honorSchemaMapping: entry.x_authzen_mapping !== false,
      };
      if (entry.x_authzen_mapping !== undefined && typeof entry.x_authzen_mapping !== "boolean")
        report(
          `${key}.x_authzen_mapping`,
          "must be true or false",
          "true honours the tools' COAZ mappings",
        );
      if (hasCmd) {
        if (typeof entry.command !== "string" || entry.command === "")
          report(`${key}.command`, "must be a non-empty string", "the executable, e.g. node");
        else up.command = entry.command;
        if (entry.args !== undefined) {
          if (!Array.isArray(entry.args) || !entry.args.every((a) => typeof a === "string"))
            report(`${key}.args`, "must be a list of strings", "quote each argument");
          else up.args = entry.args;
        }
        if (entry.env !== undefined) up.env = stringMap(entry.env, `${key}.env`, report);
        if (entry.cwd !== undefined) {
          if (typeof entry.cwd !== "string") report(`${key}.cwd`, "must be a path", "a directory");
          else up.cwd = resolve(baseDir, entry.cwd);
        }
      } else if (hasUrl) {
        up.url = httpUrl(entry.url, `${key}.url`, report);
        if (entry.headers !== undefined) {
          up.headers = stringMap(entry.headers, `${key}.headers`, report);
          for (const h of Object.keys(up.headers))
            if (h.toLowerCase() === "authorization")
              report(
                `${key}.headers.${h}`,
                "is set by the proxy (the grant, per call)",
                "remove it; the backend verifies the toolgate grant",
              );
        }
        for (const k of ["args", "env", "cwd"])
          if (entry[k] !== undefined)
            report(`${key}.${k}`, "applies to stdio servers only", "remove it");
      }
      servers.push(up);
    });

  // -- tools ------------------------------------------------------------------
  const tools = new Map<string, ToolMapping>();
  if (raw.tools !== undefined) {
    if (!isObject(raw.tools))
      report(
        "tools",
        "must be a mapping by tool name",
        "tools: {lookup: {resource: {id: {arg: /customer_id}}}}",
      );
    else
      for (const [name, m] of Object.entries(raw.tools)) {
        const key = `tools.${name}`;
        if (!isObject(m)) {
          report(
            key,
            "must be a mapping",
            "{resource: {type, id}, job: {id, purpose, customer_id}}",
          );
          continue;
        }
        onlyKeys(m, key, ["resource", "job"], report);
        const mapping: ToolMapping = {};
        if (m.resource !== undefined)
          mapping.resource = mappedFields(m.resource, `${key}.resource`, ["type", "id"], report);
        if (m.job !== undefined) {
          const job = mappedFields(m.job, `${key}.job`, ["id", "purpose", "customer_id"], report);
          const literal: Record<string, string> = {};
          for (const [k, v] of Object.entries(job)) {
            if (typeof v === "string") literal[k] = v;
            else
              report(
                `${key}.job.${k}`,
                "takes its value from the call's arguments ({arg}), so the agent would pick the job it acts in and escape the job's boundary (out_of_scope)",
                `give a literal string, or set the job once in session.context.job; map the record the call touches with ${key}.resource.id instead`,
              );
          }
          mapping.job = literal;
        }
        tools.set(name, mapping);
      }
  }

  // -- serve ------------------------------------------------------------------
  const sv = section(raw, "serve", report);
  onlyKeys(
    sv,
    "serve",
    ["http", "stdio", "path", "allow_non_loopback", "token_file", "token_env", "max_sessions"],
    report,
  );
  const httpSpec = overrides.http ?? env.TOOLGATE_MCP_HTTP ?? sv.http;
  const stdio = overrides.stdio ?? sv.stdio === true;
  if (sv.stdio !== undefined && typeof sv.stdio !== "boolean")
    report("serve.stdio", "must be true or false", "true serves the agent on stdin/stdout");
  let httpServe: { host: string; port: number } | undefined;
  if (httpSpec !== undefined && httpSpec !== false) {
    const m =
      typeof httpSpec === "string"
        ? /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(httpSpec)
        : null;
    const port = m ? Number(m[2]) : NaN;
    if (m === null || !(port >= 0 && port <= 65535))
      report("serve.http", "must be host:port", "e.g. 127.0.0.1:8190 (port 0: any free port)");
    else {
      const host = (m[1] as string).replace(/^\[|\]$/g, "");
      if (!isLoopback(host) && sv.allow_non_loopback !== true)
        report(
          "serve.http",
          `binds ${host}, off loopback: any host that reaches it and holds the bearer secret acts as the session's subject`,
          "bind 127.0.0.1 (the default), or set serve.allow_non_loopback: true behind TLS and your own network controls",
        );
      httpServe = { host, port };
    }
  }
  if (httpServe === undefined && !stdio)
    report(
      "serve",
      "serves nothing",
      "pass --http 127.0.0.1:8190 and/or --stdio (or serve.http / serve.stdio)",
    );
  const auth: McpProxyConfig["serve"]["auth"] = {};
  if (httpServe !== undefined) {
    // a path from the command line or the environment is relative to the working directory,
    // one in the file to the file
    const fromCli = overrides.httpTokenFile ?? env.TOOLGATE_MCP_HTTP_TOKEN_FILE;
    const tokenFile = fromCli ?? sv.token_file;
    if (sv.token_env !== undefined && tokenFile !== undefined)
      report("serve.token_env", "and serve.token_file are both set", "keep one");
    if (sv.token_env !== undefined) {
      const v = typeof sv.token_env === "string" ? env[sv.token_env] : undefined;
      if (typeof sv.token_env !== "string" || !/^[A-Z_][A-Z0-9_]*$/.test(sv.token_env))
        report("serve.token_env", "must be an environment variable name", "e.g. MCP_PROXY_TOKEN");
      else if (v === undefined || v.trim().length < MIN_SECRET)
        report(
          "serve.token_env",
          `names ${sv.token_env}, which is not set or shorter than ${MIN_SECRET} characters`,
          "export a long random secret (openssl rand -base64 32), or remove the key: the proxy then generates one",
        );
      else auth.token = v.trim();
    } else if (tokenFile !== undefined) {
      if (typeof tokenFile !== "string" || tokenFile === "")
        report("serve.token_file", "must be a file path", "e.g. /run/user/1000/toolgate-mcp.token");
      else {
        const abs = resolve(fromCli !== undefined ? process.cwd() : baseDir, tokenFile);
        auth.tokenFile = abs;
        let st: ReturnType<typeof statSync> | undefined;
        try {
          st = statSync(abs);
        } catch {
          // missing: generated and written there (0600) at start
        }
        if (st !== undefined) {
          if (process.platform !== "win32" && (Number(st.mode) & 0o077) !== 0)
            report(
              "serve.token_file",
              `(${abs}) can be read by other users (mode ${(Number(st.mode) & 0o777).toString(8)})`,
              `chmod 600 ${abs}`,
            );
          else {
            let v = "";
            try {
              v = readFileSync(abs, "utf8").trim();
            } catch (e) {
              report("serve.token_file", `cannot be read (${(e as Error).message})`, "check it");
            }
            if (v.length < MIN_SECRET)
              report(
                "serve.token_file",
                `(${abs}) holds a secret shorter than ${MIN_SECRET} characters`,
                "write a long random secret into it, or delete it: the proxy then generates one there",
              );
            else auth.token = v;
          }
        }
      }
    }
  }
  const maxSessions = intIn(sv.max_sessions, 100, 1, 10000, "serve.max_sessions", report);
  if (raw.require_mapping !== undefined && typeof raw.require_mapping !== "boolean")
    report(
      "require_mapping",
      "must be true or false",
      "true refuses calls of tools that map no resource id",
    );
  const path = sv.path ?? "/mcp";
  if (typeof path !== "string" || !/^\/[A-Za-z0-9/_.-]{0,127}$/.test(path))
    report("serve.path", "must be a URL path", "e.g. /mcp");

  // -- methods ------------------------------------------------------------------
  const md = section(raw, "methods", report);
  onlyKeys(md, "methods", ["passthrough"], report);
  const passthrough: PassthroughMethod[] = [];
  if (md.passthrough !== undefined) {
    if (!Array.isArray(md.passthrough))
      report(
        "methods.passthrough",
        "must be a list",
        `a subset of ${PASSTHROUGH_METHODS.join(", ")}`,
      );
    else
      for (const m of md.passthrough as unknown[]) {
        if ((PASSTHROUGH_METHODS as readonly unknown[]).includes(m))
          passthrough.push(m as PassthroughMethod);
        else
          report(
            "methods.passthrough",
            `names ${JSON.stringify(m)}, which may not bypass decisions`,
            `list only read-only list methods: ${PASSTHROUGH_METHODS.join(", ")} (tools/call is always decided)`,
          );
      }
  }

  // -- approval, limits, log ------------------------------------------------------
  const ap = section(raw, "approval", report);
  onlyKeys(ap, "approval", ["wait_seconds"], report);
  const waitSeconds = intIn(ap.wait_seconds, 600, 1, 86400, "approval.wait_seconds", report);
  const li = section(raw, "limits", report);
  onlyKeys(li, "limits", Object.keys(DEFAULT_LIMITS), report);
  const lim = (k: keyof typeof DEFAULT_LIMITS, min: number, max: number) =>
    intIn(li[k], DEFAULT_LIMITS[k], min, max, `limits.${k}`, report);
  const limits = {
    toolsPerServer: lim("tools_per_server", 1, 10000),
    descriptionChars: lim("description_chars", 64, 65536),
    schemaBytes: lim("schema_bytes", 256, 1048576),
    resultBytes: lim("result_bytes", 1024, 16777216),
    bodyBytes: lim("body_bytes", 1024, 16777216),
    callTimeoutMs: lim("call_timeout_ms", 100, 3600000),
  };
  const level = overrides.logLevel ?? env.TOOLGATE_MCP_LOG_LEVEL ?? raw.log_level ?? "info";
  if (!["error", "warn", "info", "debug", "silent"].includes(level as string))
    report("log_level", "must be error, warn, info, debug or silent", "e.g. info");

  if (errors.length > 0)
    throw toolgateError(
      "config_invalid",
      `invalid MCP proxy configuration${where}:\n` + errors.map((e) => `  - ${e}`).join("\n"),
      { errors },
    );
  return {
    sidecar: token !== undefined ? { url, token, timeoutMs } : { url, timeoutMs },
    consoleUrl,
    session: { subject: subject as Entity, resource: resource as Entity, context },
    servers,
    tools,
    serve: {
      ...(httpServe ? { http: httpServe } : {}),
      stdio,
      path: path as string,
      auth,
      maxSessions,
    },
    requireMapping: raw.require_mapping === true,
    passthrough,
    approval: { waitSeconds },
    limits,
    logLevel: level as LogLevel,
  };
}

type Report = (key: string, problem: string, fix: string) => void;

function section(
  raw: Record<string, unknown>,
  key: string,
  report: Report,
): Record<string, unknown> {
  const v = raw[key];
  if (v === undefined || v === null) return {};
  if (!isObject(v)) {
    report(key, "must be a mapping", "see docs/mcp.md");
    return {};
  }
  return v;
}

function onlyKeys(
  obj: Record<string, unknown>,
  key: string,
  allowed: string[],
  report: Report,
): void {
  for (const k of Object.keys(obj))
    if (!allowed.includes(k))
      report(`${key}.${k}`, "is unknown", `use one of ${allowed.join(", ")}`);
}

function httpUrl(v: unknown, key: string, report: Report): string {
  if (typeof v === "string") {
    try {
      const u = new URL(v);
      if (
        (u.protocol === "http:" || u.protocol === "https:") &&
        u.username === "" &&
        u.password === ""
      )
        return u.href.replace(/\/+$/, "") || u.href;
    } catch {
      // reported below
    }
  }
  report(key, "must be an http(s) URL without credentials", "e.g. http://127.0.0.1:8181");
  return "http://invalid.invalid";
}

function intIn(
  v: unknown,
  dflt: number,
  min: number,
  max: number,
  key: string,
  report: Report,
): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    report(key, `must be an integer from ${min} to ${max}`, `e.g. ${dflt}`);
    return dflt;
  }
  return v;
}

function entity(v: unknown, key: string, report: Report): Entity | undefined {
  if (!isObject(v)) {
    report(key, "is required: a mapping {type, id}", `e.g. ${key}: {type: user, id: alice}`);
    return undefined;
  }
  onlyKeys(v, key, ["type", "id", "properties"], report);
  for (const f of ["type", "id"] as const)
    if (typeof v[f] !== "string" || !ENTITY_ID.test(v[f]))
      report(`${key}.${f}`, "must be a string of 1-256 of A-Z a-z 0-9 . _ : @ -", "quote it");
  if (v.properties !== undefined && !isObject(v.properties))
    report(`${key}.properties`, "must be a mapping", "or remove it");
  return structuredClone(v) as unknown as Entity;
}

function stringMap(v: unknown, key: string, report: Report): Record<string, string> {
  const out = Object.create(null) as Record<string, string>;
  if (!isObject(v)) {
    report(key, "must be a mapping of strings", "quote each value");
    return out;
  }
  for (const [k, s] of Object.entries(v)) {
    if (typeof s !== "string") report(`${key}.${k}`, "must be a string", "quote it");
    else out[k] = s;
  }
  return out;
}

function mappedFields(
  v: unknown,
  key: string,
  allowed: string[],
  report: Report,
): Record<string, Mapped> {
  const out: Record<string, Mapped> = {};
  if (!isObject(v)) {
    report(
      key,
      "must be a mapping",
      `of ${allowed.join(", ")}: a literal string or {arg: /json/pointer}`,
    );
    return out;
  }
  onlyKeys(v, key, allowed, report);
  for (const [k, m] of Object.entries(v)) {
    if (!allowed.includes(k)) continue;
    if (typeof m === "string" && m.startsWith("/"))
      report(
        `${key}.${k}`,
        `is the literal ${JSON.stringify(m)}, which looks like a JSON pointer`,
        `write {arg: "${m}"} to take the value from the arguments`,
      );
    else if (typeof m === "string" && m !== "") out[k] = m;
    else if (
      isObject(m) &&
      typeof m.arg === "string" &&
      (m.arg === "" || m.arg.startsWith("/")) &&
      Object.keys(m).length === 1
    )
      out[k] = { arg: m.arg };
    else
      report(
        `${key}.${k}`,
        "must be a literal string or {arg: <JSON pointer into the arguments>}",
        'e.g. {arg: "/customer_id"}',
      );
  }
  return out;
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127(\.\d{1,3}){3}$/.test(host);
}
