/**
 * `toolgate mcp` in front of a streamable-HTTP MCP server (the fixture server
 * in HTTP mode, a child process): one upstream, so action names are the tool
 * names; the grant goes in `_meta` and as `Authorization: Bearer` on the
 * upstream request. And a hostile upstream over stdio: tools with bad names,
 * oversized descriptions or forbidden keys never reach the agent.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import { startMcpProxy, type RunningProxy } from "../../src/mcp";
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

const HOSTILE = {
  "bad name!": { class: "read", stage: "autonomous", granted: true },
  ["x".repeat(200)]: { class: "read", stage: "autonomous", granted: true },
  chatty: { class: "read", stage: "autonomous", granted: true },
  sneaky: { class: "read", stage: "autonomous", granted: true },
  protoish: { class: "read", stage: "autonomous", granted: true },
  add_tool: { class: "read", stage: "autonomous", granted: true },
  late: { class: "read", stage: "autonomous", granted: true },
  crash: { class: "read", stage: "autonomous", granted: true },
};

let sc: Sidecar;
let upstream: ChildProcess;
let port: number;

beforeAll(async () => {
  sc = await startSidecar(mcpBundle([{ tools: { ...TEST_TOOLS, ...HOSTILE } }]));
  upstream = spawn(NODE, [FIXTURE, "--http", "0"], { stdio: ["ignore", "pipe", "inherit"] });
  const [line] = (await once(createInterface({ input: upstream.stdout! }), "line")) as [string];
  port = (JSON.parse(line) as { port: number }).port;
});
afterAll(async () => {
  upstream?.kill();
  await sc?.tg.stop();
});

describe("a streamable-HTTP upstream", () => {
  let proxy: RunningProxy;
  let client: Client;
  beforeAll(async () => {
    proxy = await startMcpProxy(
      proxyConfig(sc, {
        servers: [
          { name: "api", url: `http://127.0.0.1:${port}/mcp`, headers: { "x-api-key": "k1" } },
        ],
      }),
    );
    client = await httpClient(proxy);
  });
  afterAll(async () => {
    await client?.close();
    await proxy?.stop();
  });

  test("one upstream: tools keep their names; denied ones are hidden", async () => {
    const names = (await client.listTools()).tools.map((t) => t.name).sort();
    expect(names).toEqual(["account_summary", "broken", "lookup", "refund"]);
  });

  test("allow: the grant arrives in _meta and as Authorization: Bearer on that request", async () => {
    const r = await client.callTool({ name: "lookup", arguments: { customer_id: "cust_1" } });
    expect(r.isError).toBeFalsy();
    const got = JSON.parse(textOf(r)) as {
      meta: Record<string, unknown>;
      authorization: string | null;
    };
    const grant = got.meta["io.toolgate/grant"] as string;
    expect(grant).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(got.authorization).toBe(`Bearer ${grant}`);
    expect(metaOf(r)["io.toolgate/outcome"]).toBe("allow");
  });

  test("a denied call never reaches the HTTP upstream; a later allowed call carries its own grant only", async () => {
    const d = await client.callTool({ name: "wipe", arguments: {} });
    expect(d.isError).toBe(true);
    const a = JSON.parse(
      textOf(await client.callTool({ name: "lookup", arguments: { customer_id: "cust_1" } })),
    ) as { meta: Record<string, unknown>; authorization: string };
    const b = JSON.parse(
      textOf(await client.callTool({ name: "lookup", arguments: { customer_id: "cust_1" } })),
    ) as { meta: Record<string, unknown>; authorization: string };
    expect(a.authorization).not.toBe(b.authorization);
    expect(b.authorization).toBe(`Bearer ${b.meta["io.toolgate/grant"] as string}`);
  });
});

describe("a hostile upstream", () => {
  let proxy: RunningProxy;
  let client: Client;
  beforeAll(async () => {
    proxy = await startMcpProxy(
      proxyConfig(sc, {
        servers: [
          { name: "fx", command: NODE, args: [FIXTURE], env: { MCP_FIXTURE_HOSTILE: "1" } },
        ],
        limits: { description_chars: 100 },
      }),
    );
    client = await httpClient(proxy);
  });
  afterAll(async () => {
    await client?.close();
    await proxy?.stop();
  });

  test("bad names and schemas with forbidden keys are dropped; long descriptions are cut", async () => {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    expect(names).toContain("chatty");
    expect(names).not.toContain("bad name!");
    expect(names).not.toContain("x".repeat(200));
    expect(names).not.toContain("sneaky");
    expect(tools.find((t) => t.name === "chatty")?.description).toHaveLength(100);
    // a __proto__ key never survives as a key: the schema the proxy hands on is plain data
    const protoish = (await proxy.proxy.listTools()).find((t) => t.name === "protoish");
    const props = protoish?.inputSchema.properties as object;
    expect(Object.getPrototypeOf(props)).toBe(Object.prototype);
    expect(Object.keys(props)).toEqual([]);
    expect(({} as Record<string, unknown>).type).toBeUndefined();
    // what was dropped cannot be called either, even though the policy would allow it
    const r = await client.callTool({ name: "sneaky", arguments: {} });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/mcp_unknown_tool/);
  });

  test("a forbidden key in the request body is refused at the HTTP layer, before any decision", async () => {
    const args = JSON.parse('{"customer_id":"cust_1","__proto__":{"admin":true}}') as Record<
      string,
      unknown
    >;
    await expect(client.callTool({ name: "lookup", arguments: args })).rejects.toThrow(
      /forbidden key/,
    );
    // the session is still usable
    const ok = await client.callTool({ name: "lookup", arguments: { customer_id: "cust_1" } });
    expect(ok.isError).toBeFalsy();
  });
});

describe("an upstream whose tools change", () => {
  let proxy: RunningProxy;
  let client: Client;
  beforeAll(async () => {
    proxy = await startMcpProxy(
      proxyConfig(sc, {
        servers: [
          { name: "fx", command: NODE, args: [FIXTURE], env: { MCP_FIXTURE_DYNAMIC: "1" } },
        ],
      }),
    );
    client = await httpClient(proxy);
  });
  afterAll(async () => {
    await client?.close();
    await proxy?.stop();
  });

  test("notifications/tools/list_changed reaches the agent; the new tool is listed and decided", async () => {
    expect((await client.listTools()).tools.map((t) => t.name)).not.toContain("late");
    const changed = new Promise<void>((resolve) =>
      client.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve()),
    );
    const r = await client.callTool({ name: "add_tool", arguments: {} });
    expect(textOf(r)).toBe("added");
    await changed;
    expect((await client.listTools()).tools.map((t) => t.name)).toContain("late");
    const late = await client.callTool({ name: "late", arguments: {} });
    expect(late.isError).toBeFalsy();
    expect(metaOf(late)["io.toolgate/outcome"]).toBe("allow");
  });

  test("a stdio server that exits is started again on the next use (at most once a second)", async () => {
    const pidOf = async () =>
      (
        JSON.parse(
          textOf(await client.callTool({ name: "lookup", arguments: { customer_id: "cust_1" } })),
        ) as { pid: number }
      ).pid;
    const before = await pidOf();
    expect(textOf(await client.callTool({ name: "crash", arguments: {} }))).toBe("exiting");
    await new Promise((r) => setTimeout(r, 1200));
    const r = await client.callTool({ name: "lookup", arguments: { customer_id: "cust_1" } });
    expect(r.isError).toBeFalsy();
    expect(JSON.parse(textOf(r))).toMatchObject({ tool: "lookup" });
    expect((JSON.parse(textOf(r)) as { pid: number }).pid).not.toBe(before);
  });
});
