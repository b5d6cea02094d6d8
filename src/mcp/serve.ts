/**
 * Serving the proxy to the agent: streamable HTTP (one SDK transport and one
 * proxy `Server` per MCP session, on loopback by default, with the SDK's DNS
 * rebinding protection — Host and Origin must be this listener's — and a
 * bearer secret on every request: whoever reaches the port acts as the
 * session's subject, with the sidecar token the proxy holds) and/or stdio
 * (one session on stdin/stdout; logs go to stderr, stdout carries only the
 * protocol — the recommended mode: only the spawning host can speak).
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createServer,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { createClient, type ToolgateClient } from "../client";
import { parseUntrustedJson } from "../shared/guards";
import { createLogger, type Logger } from "../shared/log";
import type { McpProxyConfig } from "./config";
import { McpProxy } from "./proxy";
import { logSafe, Upstreams } from "./upstream";

/** An HTTP session unused this long is closed (its pending approvals are forgotten; the tasks stay). */
const SESSION_IDLE_MS = 3600_000;

export interface RunningProxy {
  /** The HTTP endpoint (`http://host:port/mcp`) when serving HTTP. */
  url?: string;
  /** HTTP serving's bearer secret (send `Authorization: Bearer <it>`); never logged. */
  httpToken?: string;
  /** The file holding it (0600), when the proxy wrote or read one; logged at start. */
  httpTokenFile?: string;
  proxy: McpProxy;
  log: Logger;
  stop(): Promise<void>;
}

export interface StartOptions {
  log?: Logger;
  /** Streams for stdio serving (default process.stdin/stdout). */
  stdin?: NodeJS.ReadableStream;
  stdout?: NodeJS.WritableStream;
  /** A sidecar client to use instead of one built from the config. */
  sidecar?: ToolgateClient;
}

/** Connects the upstreams, then serves the agent as configured. */
export async function startMcpProxy(
  config: McpProxyConfig,
  opts: StartOptions = {},
): Promise<RunningProxy> {
  // stdio serving: stdout is the protocol, so logs go to stderr (always, for one rule)
  const log = opts.log ?? createLogger(config.logLevel, process.stderr);
  const sidecar =
    opts.sidecar ??
    createClient({
      url: config.sidecar.url,
      timeoutMs: config.sidecar.timeoutMs,
      ...(config.sidecar.token !== undefined ? { token: config.sidecar.token } : {}),
    });
  const upstreams = new Upstreams(config, log);
  await upstreams.connect();
  const proxy = new McpProxy({ config, upstreams, sidecar, log });
  const closers: Array<() => Promise<void>> = [];
  let url: string | undefined;
  let secret: HttpSecret | undefined;
  try {
    await upstreams.refresh();
    if (config.serve.http !== undefined) {
      secret = httpSecret(config);
      const s = secret;
      closers.push(() => Promise.resolve(s.cleanup()));
      const h = await serveHttp(proxy, config, log, s.token);
      url = h.url;
      closers.push(h.close);
    }
    if (config.serve.stdio) {
      const server = proxy.createServer("stdio");
      const transport = new StdioServerTransport(
        (opts.stdin ?? process.stdin) as never,
        (opts.stdout ?? process.stdout) as never,
      );
      await server.connect(transport);
      closers.push(() => server.close());
    }
  } catch (e) {
    for (const c of closers) await c().catch(() => undefined);
    await upstreams.close();
    throw e;
  }
  log.info("MCP proxy started", {
    event: "mcp.started",
    http: url ?? null,
    // where the agent finds the HTTP bearer secret (never the secret itself)
    http_token_file: secret?.file ?? null,
    stdio: config.serve.stdio,
    unmatched_mappings: upstreams.unmatchedMappings(),
    servers: config.servers.map((s) => s.name),
    sidecar: config.sidecar.url,
  });
  let stopped: Promise<void> | undefined;
  return {
    ...(url !== undefined ? { url } : {}),
    ...(secret !== undefined ? { httpToken: secret.token } : {}),
    ...(secret?.file !== undefined ? { httpTokenFile: secret.file } : {}),
    proxy,
    log,
    stop: () =>
      (stopped ??= (async () => {
        for (const c of closers) await c().catch(() => undefined);
        await upstreams.close();
      })()),
  };
}

interface HttpSecret {
  token: string;
  file?: string;
  cleanup(): void;
}

/**
 * The bearer secret HTTP serving requires: configured (serve.token_env, an
 * existing serve.token_file), or generated (32 random bytes) and written
 * with mode 0600 — to serve.token_file when it names a missing file (kept),
 * else into a fresh 0700 directory under the temp dir (removed at stop).
 */
function httpSecret(config: McpProxyConfig): HttpSecret {
  const { token, tokenFile } = config.serve.auth;
  if (token !== undefined)
    return { token, ...(tokenFile !== undefined ? { file: tokenFile } : {}), cleanup: () => {} };
  const fresh = randomBytes(32).toString("base64url");
  if (tokenFile !== undefined) {
    writeFileSync(tokenFile, `${fresh}\n`, { mode: 0o600, flag: "wx" });
    return { token: fresh, file: tokenFile, cleanup: () => {} };
  }
  const dir = mkdtempSync(join(tmpdir(), "toolgate-mcp-")); // 0700
  const file = join(dir, "http-token");
  writeFileSync(file, `${fresh}\n`, { mode: 0o600, flag: "wx" });
  return {
    token: fresh,
    file,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** `Authorization: Bearer <secret>`, compared in constant time (over digests: no length leak). */
function authorized(header: string | undefined, expected: Buffer): boolean {
  const m = typeof header === "string" ? /^Bearer +(\S+) *$/i.exec(header) : null;
  const given = createHash("sha256")
    .update(m?.[1] ?? "")
    .digest();
  return timingSafeEqual(given, expected) && m !== null;
}

function jsonRpcError(res: ServerResponse, status: number, code: number, message: string): void {
  if (res.headersSent) return;
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify({ jsonrpc: "2.0", error: { code, message }, id: null }));
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer | "too_large"> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        resolve("too_large");
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function isInitialize(body: unknown): boolean {
  const msgs = Array.isArray(body) ? body : [body];
  return msgs.some(
    (m) =>
      typeof m === "object" && m !== null && (m as { method?: unknown }).method === "initialize",
  );
}

async function serveHttp(
  proxy: McpProxy,
  config: McpProxyConfig,
  log: Logger,
  secret: string,
): Promise<{ url: string; close: () => Promise<void> }> {
  const expected = createHash("sha256").update(secret).digest();
  const maxSessions = config.serve.maxSessions;
  const sessions = new Map<
    string,
    { transport: StreamableHTTPServerTransport; server: Server; seen: number }
  >();
  const sweep = (now: number): void => {
    for (const [id, s] of sessions)
      if (now - s.seen > SESSION_IDLE_MS) {
        sessions.delete(id);
        void s.server.close().catch(() => undefined);
      }
  };
  const http = config.serve.http as { host: string; port: number };
  let allowedHosts: string[] = [];
  let allowedOrigins: string[] = [];

  let refusedAt = 0;
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (!authorized(req.headers.authorization, expected)) {
      // before anything else: no session, no body, not even the path for a caller without it
      if (Date.now() - refusedAt > 10_000) {
        refusedAt = Date.now();
        log.warn("MCP HTTP request without the bearer secret refused", {
          event: "mcp.http_unauthorized",
        });
      }
      req.resume();
      res.setHeader("www-authenticate", 'Bearer realm="toolgate-mcp"');
      return jsonRpcError(
        res,
        401,
        -32001,
        "unauthorized: send Authorization: Bearer <the proxy's HTTP secret> (see its http_token_file)",
      );
    }
    const path = (req.url ?? "/").split("?")[0];
    if (path !== config.serve.path)
      return jsonRpcError(res, 404, -32601, `no MCP endpoint here; use ${config.serve.path}`);
    let body: unknown;
    if (req.method === "POST") {
      const raw = await readBody(req, config.limits.bodyBytes);
      if (raw === "too_large") return jsonRpcError(res, 413, -32600, "request body too large");
      try {
        body = parseUntrustedJson(raw.toString("utf8"));
      } catch {
        return jsonRpcError(res, 400, -32700, "parse error (or a forbidden key)");
      }
    }
    const sid = req.headers["mcp-session-id"];
    if (typeof sid === "string") {
      const s = sessions.get(sid);
      if (s === undefined) return jsonRpcError(res, 404, -32001, "session not found");
      s.seen = Date.now();
      return s.transport.handleRequest(req, res, body);
    }
    if (req.method !== "POST" || !isInitialize(body))
      return jsonRpcError(
        res,
        400,
        -32000,
        "no session: initialize first (POST without Mcp-Session-Id)",
      );
    sweep(Date.now());
    if (sessions.size >= maxSessions) {
      log.warn("MCP HTTP session refused: the session limit is reached", {
        event: "mcp.sessions_full",
        limit: maxSessions,
      });
      res.setHeader("retry-after", "5");
      return jsonRpcError(
        res,
        503,
        -32000,
        `too many MCP sessions open (serve.max_sessions = ${maxSessions}): close unused sessions (HTTP DELETE with Mcp-Session-Id) or raise serve.max_sessions; idle sessions close after an hour`,
      );
    }
    const id = randomUUID();
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => id,
      enableDnsRebindingProtection: true,
      allowedHosts,
      allowedOrigins,
      onsessioninitialized: () => undefined,
    });
    const server = proxy.createServer(`http:${id.slice(0, 8)}`);
    sessions.set(id, { transport, server, seen: Date.now() });
    transport.onclose = () => {
      sessions.delete(id);
    };
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
    if (transport.sessionId === undefined) {
      // initialize failed (e.g. a bad Host header): no session
      sessions.delete(id);
      await server.close().catch(() => undefined);
    }
  };

  const srv: HttpServer = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      log.error("MCP HTTP request failed", {
        event: "mcp.http_error",
        error: logSafe((e as Error).message),
      });
      jsonRpcError(res, 500, -32603, "internal error");
    });
  });
  // receiving a request (headers and body) is bounded; the SSE response of a call that waits
  // for an approval is not (requestTimeout does not cover the response)
  srv.requestTimeout = 30_000;
  srv.headersTimeout = 15_000;
  await new Promise<void>((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(http.port, http.host, () => resolve());
  });
  const port = (srv.address() as AddressInfo).port;
  const hostPart = http.host.includes(":") ? `[${http.host}]` : http.host;
  allowedHosts = [`${hostPart}:${port}`, `localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`];
  allowedOrigins = allowedHosts.map((h) => `http://${h}`);
  const url = `http://${hostPart}:${port}${config.serve.path}`;
  return {
    url,
    close: async () => {
      for (const { server } of sessions.values()) await server.close().catch(() => undefined);
      sessions.clear();
      srv.closeAllConnections();
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    },
  };
}
