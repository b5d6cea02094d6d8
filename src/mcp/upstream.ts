/**
 * The proxy's side toward the real MCP servers: one SDK `Client` per
 * configured server, over stdio (a child process, no shell, a minimal
 * environment plus the configured one) or streamable HTTP.
 *
 * Upstream servers are treated as hostile: tool names are checked (MCP's
 * charset, 1-128), descriptions cut, input schemas capped in size and copied
 * through JSON with forbidden keys (`__proto__`, `constructor`, `prototype`)
 * refused, lists capped, results capped; nothing from them becomes an object
 * key with a prototype.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import {
  StdioClientTransport,
  getDefaultEnvironment,
} from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  ResultSchema,
  ToolListChangedNotificationSchema,
  type Tool,
} from "@modelcontextprotocol/sdk/types.js";
import { toolgateError } from "../errors";
import { forbiddenKey, isObject } from "../shared/guards";
import type { Logger } from "../shared/log";
import type { McpProxyConfig, UpstreamConfig } from "./config";
import { readSchemaMapping, type SchemaMapping } from "./mapping";

/** Text from a hostile party (an upstream's error, the agent's tool name) as a log field: short, printable. */
export function logSafe(text: unknown, max = 200): string {
  // eslint-disable-next-line no-control-regex
  const s = String(text).replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, "?");
  return s.length > max ? `${s.slice(0, max)}…(${s.length} chars)` : s;
}

/** MCP's tool name rule (SEP-986): 1-128 of A-Z a-z 0-9 _ - . */
export const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/;
const MAX_PAGES = 50;

/** One upstream tool as the proxy publishes it. */
export interface CatalogTool {
  /** The agent-facing name = the action name (tool, or `<server>.<tool>` with several servers). */
  name: string;
  server: Upstream;
  /** The upstream's own name. */
  upstreamName: string;
  /** What the agent sees (sanitised copy). */
  tool: Tool;
  /** The tool's COAZ mapping, an Error when it has one the proxy cannot apply. */
  mapping: SchemaMapping | Error | undefined;
}

/**
 * The call failed after it was handed to the server (a timeout, an abort, the
 * connection closing, an error answer): the tool may have run.
 */
export class CallOutcomeUnknown extends Error {
  override readonly name = "CallOutcomeUnknown";
  constructor(override readonly cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause));
  }
}

/** The grant of the call in flight: the HTTP transport's fetch sends it as Authorization. */
const currentGrant = new AsyncLocalStorage<string | undefined>();

/** A server that exited is started again on demand, at most once per this interval. */
export const RESTART_INTERVAL_MS = 1000;

export class Upstream {
  readonly name: string;
  client: Client;
  private readonly cfg: UpstreamConfig;
  private readonly limits: McpProxyConfig["limits"];
  private readonly log: Logger;
  private connected = false;
  private closing = false;
  private lastAttempt = 0;
  private reconnecting: Promise<void> | undefined;
  /** Called when the server sends notifications/tools/list_changed. */
  onToolsChanged: (() => void) | undefined;

  constructor(cfg: UpstreamConfig, limits: McpProxyConfig["limits"], log: Logger) {
    this.name = cfg.name;
    this.cfg = cfg;
    this.limits = limits;
    this.log = log;
    this.client = new Client({ name: "toolgate-mcp-proxy", version: "1" }, { capabilities: {} });
  }

  get honorSchemaMapping(): boolean {
    return this.cfg.honorSchemaMapping;
  }

  get kind(): "stdio" | "http" {
    return this.cfg.url !== undefined ? "http" : "stdio";
  }

  async connect(): Promise<void> {
    this.lastAttempt = Date.now();
    const client = new Client({ name: "toolgate-mcp-proxy", version: "1" }, { capabilities: {} });
    const transport =
      this.cfg.url !== undefined
        ? new StreamableHTTPClientTransport(new URL(this.cfg.url), {
            requestInit: { headers: { ...this.cfg.headers } },
            fetch: (input, init) => {
              const grant = currentGrant.getStore();
              if (grant === undefined) return fetch(input, init);
              const headers = new Headers(init?.headers);
              headers.set("authorization", `Bearer ${grant}`);
              return fetch(input, { ...init, headers });
            },
          })
        : new StdioClientTransport({
            command: this.cfg.command as string,
            args: this.cfg.args,
            env: { ...getDefaultEnvironment(), ...this.cfg.env },
            ...(this.cfg.cwd !== undefined ? { cwd: this.cfg.cwd } : {}),
            stderr: "pipe",
            maxBufferSize: this.limits.resultBytes * 2,
          });
    if (transport instanceof StdioClientTransport) {
      // the child's stderr goes to our log (stderr in stdio mode), a line at a time, cut
      const err = transport.stderr;
      err?.on("data", (chunk: Buffer) => {
        const text = logSafe(chunk.toString("utf8").trim(), 2048);
        if (text !== "")
          this.log.debug("upstream stderr", {
            event: "mcp.upstream_stderr",
            server: this.name,
            text,
          });
      });
    }
    try {
      await client.connect(transport, { timeout: this.limits.callTimeoutMs });
    } catch (e) {
      await client.close().catch(() => undefined);
      throw toolgateError(
        "mcp_upstream_unavailable",
        `MCP server "${this.name}" (${this.kind}) could not be started or reached: ${(e as Error).message}`,
        { cause: e },
      );
    }
    this.client = client;
    this.connected = true;
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
      this.onToolsChanged?.();
    });
    client.onclose = () => {
      if (this.client !== client) return;
      this.connected = false;
      if (!this.closing)
        this.log.warn("upstream MCP server closed; it is started again on the next use", {
          event: "mcp.upstream_closed",
          server: this.name,
        });
    };
    client.onerror = (e) =>
      this.log.warn("upstream error", {
        event: "mcp.upstream_error",
        server: this.name,
        error: logSafe(e.message),
      });
  }

  /** The connected client; a server that exited is started (or reached) again, rate-limited. */
  private async ready(): Promise<Client> {
    if (this.connected) return this.client;
    if (this.closing)
      throw toolgateError("mcp_upstream_unavailable", `MCP server "${this.name}" is stopped`);
    if (this.reconnecting === undefined) {
      if (Date.now() - this.lastAttempt < RESTART_INTERVAL_MS)
        throw toolgateError(
          "mcp_upstream_unavailable",
          `MCP server "${this.name}" is down; it is started again at most once a second`,
        );
      this.reconnecting = this.connect()
        .then(() => {
          this.log.info("upstream MCP server started again", {
            event: "mcp.upstream_restarted",
            server: this.name,
          });
          this.onToolsChanged?.();
        })
        .finally(() => {
          this.reconnecting = undefined;
        });
    }
    await this.reconnecting;
    return this.client;
  }

  /** The server's tools, sanitised; invalid ones are skipped (and logged). */
  async listTools(): Promise<Tool[]> {
    const out: Tool[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const client = await this.ready();
      const res = await client.listTools(cursor !== undefined ? { cursor } : {}, {
        timeout: this.limits.callTimeoutMs,
      });
      for (const t of res.tools) {
        if (out.length >= this.limits.toolsPerServer) {
          this.log.warn("upstream lists too many tools; the rest are left out", {
            event: "mcp.tools_capped",
            server: this.name,
            limit: this.limits.toolsPerServer,
          });
          return out;
        }
        const clean = this.sanitise(t);
        if (clean !== undefined) out.push(clean);
      }
      cursor = res.nextCursor;
      if (cursor === undefined || cursor === "") return out;
    }
    return out;
  }

  private sanitise(t: Tool): Tool | undefined {
    const skip = (why: string): undefined => {
      this.log.warn("upstream tool skipped", {
        event: "mcp.tool_skipped",
        server: this.name,
        tool: typeof t.name === "string" ? logSafe(t.name, 128) : null,
        why,
      });
      return undefined;
    };
    if (typeof t.name !== "string" || !TOOL_NAME.test(t.name)) return skip("invalid tool name");
    let schemaText: string;
    try {
      schemaText = JSON.stringify(t.inputSchema ?? { type: "object" });
    } catch {
      return skip("input schema is not JSON");
    }
    if (schemaText.length > this.limits.schemaBytes) return skip("input schema too large");
    const inputSchema = JSON.parse(schemaText) as unknown;
    if (!isObject(inputSchema) || forbiddenKey(inputSchema) !== undefined)
      return skip("input schema has a forbidden key or is not an object");
    const tool: Record<string, unknown> = {
      name: t.name,
      inputSchema,
    };
    if (typeof t.title === "string") tool.title = t.title.slice(0, 256);
    if (typeof t.description === "string")
      tool.description = t.description.slice(0, this.limits.descriptionChars);
    if (t.outputSchema !== undefined) {
      const text = JSON.stringify(t.outputSchema);
      const os = text.length <= this.limits.schemaBytes ? (JSON.parse(text) as unknown) : undefined;
      // relaxed: a `redact` obligation removes fields from structuredContent, which must still
      // validate in the agent's SDK against the schema it was shown
      if (isObject(os) && forbiddenKey(os) === undefined) tool.outputSchema = relaxSchema(os);
    }
    const ann: unknown = t.annotations;
    if (isObject(ann)) {
      const a: Record<string, unknown> = {};
      for (const k of ["readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"])
        if (typeof ann[k] === "boolean") a[k] = ann[k];
      if (typeof ann.title === "string") a.title = ann.title.slice(0, 256);
      tool.annotations = a;
    }
    return tool as unknown as Tool;
  }

  /** Calls the tool with the grant in `_meta` (and, over HTTP, as Authorization on that request). */
  async callTool(
    name: string,
    args: Record<string, unknown>,
    grant: string | undefined,
    meta: Record<string, unknown>,
    signal: AbortSignal | undefined,
  ): Promise<Record<string, unknown>> {
    const _meta = { ...meta, ...(grant !== undefined ? { "io.toolgate/grant": grant } : {}) };
    const client = await this.ready(); // a failure here: nothing was sent
    try {
      return await currentGrant.run(grant, () =>
        client.callTool({ name, arguments: args, _meta }, undefined, {
          timeout: this.limits.callTimeoutMs,
          ...(signal !== undefined ? { signal } : {}),
        }),
      );
    } catch (e) {
      throw new CallOutcomeUnknown(e);
    }
  }

  /** A read-only list method passed through (resources/list …), sanitised by the caller. */
  async request(method: string, params: Record<string, unknown>): Promise<Record<string, unknown>> {
    const client = await this.ready();
    const res = await client.request({ method, params }, ResultSchema, {
      timeout: this.limits.callTimeoutMs,
    });
    return res;
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.reconnecting?.catch(() => undefined);
    if (!this.connected) return;
    this.connected = false;
    await this.client.close().catch(() => undefined);
  }
}

/**
 * The schema without what a removed field would violate (`required` lists,
 * `minProperties`, `dependentRequired`), at every level: relaxing only, so
 * whatever validated before still does, and so does a redacted copy.
 */
export function relaxSchema(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(relaxSchema);
  if (!isObject(v)) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === "required" && Array.isArray(x)) continue;
    if (k === "minProperties" && typeof x === "number") continue;
    if (k === "dependentRequired" && isObject(x) && Object.values(x).every(Array.isArray)) continue;
    out[k] = relaxSchema(x);
  }
  return out;
}

/** All upstreams and the merged tool catalog (by agent-facing name, never an object key). */
export class Upstreams {
  readonly servers: Upstream[];
  private catalog = new Map<string, CatalogTool>();
  private readonly log: Logger;
  private refreshing: Promise<Map<string, CatalogTool>> | undefined;
  private refreshedAt = 0;
  private readonly mappingKeys: string[];
  private unmatched: string[] = [];

  constructor(cfg: McpProxyConfig, log: Logger) {
    this.log = log;
    this.mappingKeys = [...cfg.tools.keys()];
    this.servers = cfg.servers.map((s) => new Upstream(s, cfg.limits, log));
    for (const s of this.servers)
      s.onToolsChanged = () => {
        this.refreshedAt = 0; // the next lookup of an unknown name re-reads at once
        for (const fn of this.listeners) fn();
      };
  }

  private readonly listeners = new Set<() => void>();

  /** `fn` runs whenever an upstream's tool list changes (to tell the agents to list again). */
  onToolsChanged(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Connects every server (all must come up). */
  async connect(): Promise<void> {
    try {
      await Promise.all(this.servers.map((s) => s.connect()));
    } catch (e) {
      await this.close();
      throw e;
    }
  }

  actionName(server: Upstream, tool: string): string {
    return this.servers.length === 1 ? tool : `${server.name}.${tool}`;
  }

  /** Re-reads every server's tools (concurrent callers share one refresh). */
  refresh(): Promise<Map<string, CatalogTool>> {
    this.refreshing ??= (async () => {
      try {
        const next = new Map<string, CatalogTool>();
        const lists = await Promise.all(
          this.servers.map(async (s) => {
            try {
              return { s, tools: await s.listTools() };
            } catch (e) {
              this.log.warn("upstream tools/list failed; its tools are not offered", {
                event: "mcp.list_failed",
                server: s.name,
                error: logSafe((e as Error).message),
              });
              return { s, tools: [] as Tool[] };
            }
          }),
        );
        for (const { s, tools } of lists)
          for (const tool of tools) {
            const name = this.actionName(s, tool.name);
            if (next.has(name)) continue; // a server listing a name twice: first wins
            const mapping = s.honorSchemaMapping ? readSchemaMapping(tool.inputSchema) : undefined;
            next.set(name, { name, server: s, upstreamName: tool.name, tool, mapping });
          }
        this.catalog = next;
        this.refreshedAt = Date.now();
        this.checkMappings(next);
        return next;
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** `tools.<name>` mapping keys that name no tool of the current catalog. */
  unmatchedMappings(): string[] {
    return [...this.unmatched];
  }

  /**
   * A `tools.<name>` key that matches no tool is a mapping that silently does
   * nothing (a server-prefixed name with one server, a renamed upstream
   * tool): the tool it meant is then decided on the session's resource. Warned
   * whenever the set of such keys changes (and listed by status()).
   */
  private checkMappings(catalog: Map<string, CatalogTool>): void {
    const now = this.mappingKeys.filter((k) => !catalog.has(k));
    if (now.join("\n") === this.unmatched.join("\n")) return;
    this.unmatched = now;
    for (const key of now) {
      const hint =
        this.servers.length === 1 && key.startsWith(`${this.servers[0]?.name}.`)
          ? `with one server, tools keep their own names: write tools.${key.slice((this.servers[0]?.name.length ?? 0) + 1)}`
          : this.servers.length > 1 && !key.includes(".")
            ? "with several servers, tools are named <server>.<tool>"
            : "check the tool's name in tools/list (it may have been renamed upstream)";
      this.log.warn(
        "a tools.<name> mapping matches no tool: the tool it meant is decided on the session's resource",
        {
          event: "mcp.mapping_unmatched",
          key,
          hint,
        },
      );
    }
  }

  /**
   * The tool by agent-facing name; an unknown name re-reads the lists, at
   * most once a second (unknown names cannot make the proxy hammer its servers).
   */
  async find(name: string): Promise<CatalogTool | undefined> {
    const known = this.catalog.get(name);
    if (known !== undefined || Date.now() - this.refreshedAt < 1000) return known;
    return (await this.refresh()).get(name);
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.close()));
  }
}
