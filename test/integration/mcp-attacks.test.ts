/**
 * The security review's findings against `toolgate mcp`, as attacks on the
 * real thing: the proxy serving HTTP on loopback, the fixture MCP server over
 * stdio, a real sidecar and bundle. Each test is the attack first, then what
 * the proxy must do instead.
 *
 * 1. a local neighbour on the HTTP port (no secret; session exhaustion);
 * 2. `redact` obligations on results that are not pure JSON (fail closed);
 * 3. mappings that silently do nothing; job fields from the arguments;
 * 5. an upstream call that times out after it was sent (budget kept);
 * 6. forged block `_meta`, outputSchema vs redaction, hostile log fields.
 */
import { mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Client as SdkClient } from "@modelcontextprotocol/sdk/client/index.js";
import { compileMcpConfig, startMcpProxy, type RunningProxy } from "../../src/mcp";
import { createLogger } from "../../src/shared/log";
import {
  FIXTURE,
  httpClient,
  mcpBundle,
  metaOf,
  NODE,
  proxyConfig,
  startSidecar,
  TEST_TOOLS,
  textOf,
  type Sidecar,
} from "../fixtures/mcp/harness";

jest.setTimeout(60_000);

const SHAPES = {
  shapes: { class: "read", stage: "autonomous", granted: true },
  shapes_plain: { class: "read", stage: "autonomous", granted: true },
  slow: { class: "read", stage: "autonomous", granted: true },
};
const CARD = "4111111111111111";
const IBAN = "DE89370400440532013000";

let sc: Sidecar;
beforeAll(async () => {
  sc = await startSidecar(
    mcpBundle([{ tools: { ...TEST_TOOLS, ...SHAPES } }], "mcp-attacks", (data) => {
      // slow's `amount` counts against a budget of 10 per job (finding 5)
      data.limits = {
        budgets: [
          { tool: "slow", argument: "amount", per: "job", window_seconds: 3600, max_total: 10 },
        ],
      };
    }),
  );
});
afterAll(async () => {
  await sc?.tg.stop();
});

/** A logger whose JSON lines are kept. */
function capture(): { log: ReturnType<typeof createLogger>; lines: () => string[] } {
  const out: string[] = [];
  const stream = new PassThrough();
  stream.on("data", (c: Buffer) => out.push(...c.toString("utf8").split("\n").filter(Boolean)));
  return { log: createLogger("debug", stream), lines: () => out };
}
const events = (lines: string[], event: string): Array<Record<string, unknown>> =>
  lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r.event === event);
const settle = () => new Promise((r) => setTimeout(r, 50));

const fx = (env: Record<string, string> = {}) => [
  { name: "fx", command: NODE, args: [FIXTURE], env: { MCP_FIXTURE_SHAPES: "1", ...env } },
];

async function initialize(url: string, headers: Record<string, string> = {}) {
  return await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...headers,
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: {
        protocolVersion: "2025-06-18",
        capabilities: {},
        clientInfo: { name: "neighbour", version: "1" },
      },
    }),
  });
}

describe("finding 1: the HTTP port needs the bearer secret", () => {
  let proxy: RunningProxy;
  let logs: ReturnType<typeof capture>;
  beforeAll(async () => {
    logs = capture();
    proxy = await startMcpProxy(
      proxyConfig(sc, { servers: fx(), serve: { http: "127.0.0.1:0", max_sessions: 2 } }),
      {
        log: logs.log,
      },
    );
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  test("a neighbour without the secret (or with a wrong one) gets 401 before any session exists", async () => {
    const url = proxy.url as string;
    const none = await initialize(url);
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect(((await none.json()) as { error: { message: string } }).error.message).toMatch(
      /Authorization: Bearer/,
    );
    const wrong = await initialize(url, { authorization: `Bearer ${"x".repeat(43)}` });
    expect(wrong.status).toBe(401);
    const prefix = await initialize(url, {
      authorization: `Bearer ${(proxy.httpToken as string).slice(0, 20)}`,
    });
    expect(prefix.status).toBe(401);
    // the SDK client without the secret cannot connect either
    const c = new SdkClient({ name: "neighbour", version: "1" });
    await expect(c.connect(new StreamableHTTPClientTransport(new URL(url)))).rejects.toThrow();
    // with it: a session, tools, calls
    const ok = await httpClient(proxy);
    expect((await ok.listTools()).tools.map((t) => t.name)).toContain("lookup");
    await (ok.transport as StreamableHTTPClientTransport).terminateSession(); // DELETE: the slot is free again
    await ok.close();
  });

  test("the generated secret is in a 0600 file whose path (never the secret) is logged; the file goes at stop", () => {
    const file = proxy.httpTokenFile as string;
    expect(readFileSync(file, "utf8").trim()).toBe(proxy.httpToken);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(file, "..")).mode & 0o077).toBe(0);
    const started = events(logs.lines(), "mcp.started")[0];
    expect(started?.http_token_file).toBe(file);
    expect(logs.lines().join("\n")).not.toContain(proxy.httpToken as string);
  });

  test("sessions are capped (serve.max_sessions): the next one gets 503 with the limit and the fix", async () => {
    const a = await httpClient(proxy);
    const b = await httpClient(proxy);
    const third = await initialize(proxy.url as string, {
      authorization: `Bearer ${proxy.httpToken as string}`,
    });
    expect(third.status).toBe(503);
    expect(((await third.json()) as { error: { message: string } }).error.message).toMatch(
      /too many MCP sessions open \(serve\.max_sessions = 2\).*DELETE/,
    );
    await a.close();
    await b.close();
  });

  test("a configured secret: serve.token_file (written 0600 when missing, refused when others can read it) or serve.token_env", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mcp-secret-"));
    const file = join(dir, "token");
    const cfg = (serve: Record<string, unknown>, env: Record<string, string> = {}) =>
      compileMcpConfig(
        {
          sidecar: { url: sc.agent },
          session: {
            subject: { type: "user", id: "alice" },
            resource: { type: "customer", id: "cust_1" },
          },
          servers: fx(),
          serve: { http: "127.0.0.1:0", ...serve },
          log_level: "silent",
        },
        {},
        env,
        { baseDir: dir },
      );
    const p1 = await startMcpProxy(cfg({ token_file: "token" }));
    expect(p1.httpTokenFile).toBe(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, "utf8").trim()).toBe(p1.httpToken);
    await p1.stop();
    // the file stays and is read again
    const p2 = await startMcpProxy(cfg({ token_file: "token" }));
    expect(p2.httpToken).toBe(readFileSync(file, "utf8").trim());
    await p2.stop();
    const loose = join(dir, "loose");
    writeFileSync(loose, "y".repeat(40), { mode: 0o644 });
    expect(() => cfg({ token_file: "loose" })).toThrow(
      /key "serve\.token_file" \(.*loose\) can be read by other users \(mode 644\)\. Fix: chmod 600/,
    );
    expect(() => cfg({ token_env: "MCP_SECRET" }, { MCP_SECRET: "short" })).toThrow(
      /key "serve\.token_env" names MCP_SECRET, which is not set or shorter than 32/,
    );
    const secret = "s".repeat(40);
    const p3 = await startMcpProxy(cfg({ token_env: "MCP_SECRET" }, { MCP_SECRET: secret }));
    expect(p3.httpToken).toBe(secret);
    expect((await initialize(p3.url as string)).status).toBe(401);
    const c = await httpClient(p3);
    await c.close();
    await p3.stop();
  });

  test("the generated file is removed at stop", async () => {
    const p = await startMcpProxy(proxyConfig(sc, { servers: fx() }));
    const file = p.httpTokenFile as string;
    expect(statSync(file).isFile()).toBe(true);
    await p.stop();
    expect(() => statSync(file)).toThrow();
  });
});

describe("findings 2 and 6: results under a redact obligation, and hostile result blocks", () => {
  let proxy: RunningProxy;
  let client: Client;
  beforeAll(async () => {
    proxy = await startMcpProxy(proxyConfig(sc, { servers: fx() }));
    client = await httpClient(proxy);
    await client.listTools(); // the SDK client caches each tool's outputSchema (and validates against it)
  });
  afterAll(async () => {
    await client?.close();
    await proxy?.stop();
  });

  test.each(["prefixed", "resource_text", "blob", "image", "audio", "link"])(
    "%s: a block that cannot be redacted field by field is withheld, never passed on",
    async (shape) => {
      const r = await client.callTool({ name: "shapes", arguments: { shape } });
      const all = JSON.stringify(r);
      expect(all).not.toContain(CARD);
      expect(all).not.toContain(IBAN);
      expect(all).not.toContain(Buffer.from(CARD).toString("base64").slice(0, 12));
      expect(r.content).toHaveLength(1);
      expect(textOf(r)).toMatch(/^\[toolgate\] withheld: .*redaction_not_applicable/);
      expect(metaOf(r)["io.toolgate/withheld"]).toBe(1);
      // structuredContent is redacted, and still validates in the agent's SDK (the listed outputSchema is relaxed)
      expect(r.structuredContent).toEqual({
        customer_id: "cust_1",
        plan: "pro",
        payment: { brand: "visa" },
      });
    },
  );

  test.each(["json", "resource_json"])("%s: JSON is redacted field by field", async (shape) => {
    const r = await client.callTool({ name: "shapes", arguments: { shape } });
    const all = JSON.stringify(r);
    expect(all).not.toContain(CARD);
    expect(all).not.toContain(IBAN);
    expect(all).toContain("visa");
    expect(metaOf(r)["io.toolgate/withheld"]).toBeUndefined();
  });

  test("the agent is shown a relaxed outputSchema (no required fields a redaction could remove)", async () => {
    const t = (await client.listTools()).tools.find((x) => x.name === "shapes");
    expect(t?.outputSchema?.properties).toBeDefined();
    expect(JSON.stringify(t?.outputSchema)).not.toContain('"required"');
  });

  test("block _meta and annotations from the server never reach the agent: no forged io.toolgate/* keys", async () => {
    for (const shape of ["json", "image", "link", "resource_text"]) {
      const r = await client.callTool({ name: "shapes_plain", arguments: { shape } });
      expect(r.isError).toBeFalsy();
      const block = (r.content as Array<Record<string, unknown>>)[0] as Record<string, unknown>;
      expect(block._meta).toBeUndefined();
      expect(block.annotations).toBeUndefined();
      expect(metaOf(r)["io.toolgate/decision_id"]).not.toBe("forged");
      expect(metaOf(r)["io.toolgate/grant"]).toBeUndefined();
      expect(JSON.stringify(r)).not.toContain("forged");
    }
    // without a redact obligation the blocks pass (rebuilt): the image is still an image
    const img = await client.callTool({ name: "shapes_plain", arguments: { shape: "image" } });
    expect((img.content as Array<{ type: string }>)[0]?.type).toBe("image");
  });
});

describe("finding 3: mappings that would silently do nothing", () => {
  test("a tools.<name> key that matches no tool is warned (with the fix) and listed by status()", async () => {
    const logs = capture();
    // one server: tools keep their own names, so "fx.lookup" maps nothing
    const proxy = await startMcpProxy(
      proxyConfig(sc, {
        servers: fx(),
        tools: { "fx.lookup": { resource: { id: { arg: "/customer_id" } } } },
      }),
      { log: logs.log },
    );
    try {
      await settle();
      const warned = events(logs.lines(), "mcp.mapping_unmatched");
      expect(warned).toEqual([
        expect.objectContaining({
          key: "fx.lookup",
          hint: expect.stringMatching(/tools\.lookup/) as unknown,
        }),
      ]);
      expect(proxy.proxy.status().unmatched_mappings).toEqual(["fx.lookup"]);
      expect(events(logs.lines(), "mcp.started")[0]?.unmatched_mappings).toEqual(["fx.lookup"]);
      // the attack it allowed: decided on the session's cust_1, forwarded with cust_2
      const client = await httpClient(proxy);
      const r = await client.callTool({ name: "lookup", arguments: { customer_id: "cust_2" } });
      expect(r.isError).toBeFalsy();
      await client.close();
    } finally {
      await proxy.stop();
    }
  });

  test("require_mapping: true refuses (and hides) tools whose calls map no resource id", async () => {
    const proxy = await startMcpProxy(
      proxyConfig(sc, {
        servers: fx(),
        require_mapping: true,
        tools: { lookup: { resource: { id: { arg: "/customer_id" } } } },
      }),
    );
    const client = await httpClient(proxy);
    try {
      const names = (await client.listTools()).tools.map((t) => t.name).sort();
      // lookup (proxy mapping) and account_summary (its COAZ x-authzen-mapping) name their record
      expect(names).toEqual(["account_summary", "lookup"]);
      const r = await client.callTool({ name: "shapes_plain", arguments: { shape: "json" } });
      expect(r.isError).toBe(true);
      expect(textOf(r)).toMatch(/mcp_mapping_failed: .*require_mapping/);
      const other = await client.callTool({ name: "lookup", arguments: { customer_id: "cust_2" } });
      expect(other.isError).toBe(true);
      expect(textOf(other)).toMatch(/out_of_scope/);
      const own = await client.callTool({ name: "lookup", arguments: { customer_id: "cust_1" } });
      expect(own.isError).toBeFalsy();
    } finally {
      await client.close();
      await proxy.stop();
    }
  });

  test("job fields may not come from the arguments: a config error naming the key and the fix", () => {
    expect(() =>
      proxyConfig(sc, {
        servers: fx(),
        tools: { lookup: { job: { customer_id: { arg: "/customer_id" } } } },
      }),
    ).toThrow(
      /key "tools\.lookup\.job\.customer_id" takes its value from the call's arguments .*escape the job's boundary.*Fix: give a literal string, or set the job once in session\.context\.job/,
    );
  });
});

describe("findings 5 and 6: an upstream timeout after the call was sent; hostile log fields", () => {
  let proxy: RunningProxy;
  let client: Client;
  let logs: ReturnType<typeof capture>;
  beforeAll(async () => {
    logs = capture();
    proxy = await startMcpProxy(
      proxyConfig(sc, { servers: fx(), limits: { call_timeout_ms: 400 } }),
      { log: logs.log },
    );
    client = await httpClient(proxy);
  });
  afterAll(async () => {
    await client?.close();
    await proxy?.stop();
  });

  test("the call may have run: reported as an error that changed something (the budget is kept, not released)", async () => {
    const r = await client.callTool({ name: "slow", arguments: { ms: 1500, amount: 6 } });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/may have run/);
    const id = metaOf(r)["io.toolgate/decision_id"] as string;
    await sc.tg.auditor?.flush();
    const dir = sc.tg.config.audit.trail.dir;
    const rec = readdirSync(dir)
      .filter((f) => f.endsWith(".jsonl"))
      .flatMap((f) => readFileSync(join(dir, f), "utf8").split("\n").filter(Boolean))
      .map((l) => JSON.parse(l) as { kind: string; record: Record<string, unknown> })
      .find((x) => x.kind === "action" && x.record.decision_id === id)?.record;
    expect(rec).toMatchObject({
      status: "error",
      error: { type: "outcome_unknown" },
      changed: [{ resource: { type: "customer", id: "cust_1" } }],
    });
    expect(
      events(logs.lines(), "mcp.call").some((e) => e.outcome === "allow_outcome_unknown"),
    ).toBe(true);
    // the 6 stay spent: another 6 exceeds the budget of 10 (a release would have let it through)
    const next = await client.callTool({ name: "slow", arguments: { ms: 0, amount: 6 } });
    expect(next.isError).toBe(true);
    expect(textOf(next)).toMatch(/budget_exceeded/);
    const fits = await client.callTool({ name: "slow", arguments: { ms: 0, amount: 4 } });
    expect(fits.isError).toBeFalsy();
  });

  test("an unknown tool name from the agent is logged cut, sanitised and hashed — not as sent", async () => {
    const evil = `evil\n{"event":"forged"}${"x".repeat(230)}`;
    const r = await client.callTool({ name: evil, arguments: {} });
    expect(textOf(r)).toMatch(/mcp_unknown_tool/);
    await settle();
    const rec = events(logs.lines(), "mcp.call").find((e) => e.outcome === "unknown_tool");
    expect(rec?.tool).toMatch(/^[A-Za-z0-9_.?-]{1,64}$/);
    expect(rec?.tool_hash).toMatch(/^[0-9a-f]{16}$/);
    expect(logs.lines().join("\n")).not.toContain("x".repeat(100));
  });
});
