/**
 * `toolgate mcp` as an agent runs it: the built CLI (bin/toolgate.js, from
 * dist — build first) spawned by the SDK's StdioClientTransport, serving the
 * agent on stdin/stdout, in front of the fixture server over stdio, with a
 * real sidecar. stdout carries only the protocol; logs go to stderr.
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { tempDir } from "../helpers/opa";
import {
  approve,
  FIXTURE,
  mcpBundle,
  metaOf,
  NODE,
  root,
  SESSION,
  startSidecar,
  TEST_TOOLS,
  textOf,
  type Sidecar,
} from "../fixtures/mcp/harness";

jest.setTimeout(60_000);

const BIN = join(root, "bin", "toolgate.js");
const run = (args: string[]) =>
  spawnSync(NODE, [BIN, ...args], { cwd: root, encoding: "utf8", timeout: 30_000 });

let sc: Sidecar;
let configFile: string;

beforeAll(async () => {
  sc = await startSidecar(mcpBundle([{ tools: TEST_TOOLS }]));
  configFile = join(tempDir("mcp-e2e-"), "mcp.yaml");
  writeFileSync(
    configFile,
    [
      `sidecar: {url: "${sc.agent}"}`,
      `console_url: "${sc.control}"`,
      `session: ${JSON.stringify(SESSION)}`,
      `servers:`,
      `  - name: fx`,
      `    command: ${JSON.stringify(NODE)}`,
      `    args: [${JSON.stringify(FIXTURE)}]`,
      `log_level: info`,
    ].join("\n"),
  );
});
afterAll(async () => {
  await sc?.tg.stop();
});

test("toolgate mcp --help exits 0 with the usage", () => {
  const r = run(["mcp", "--help"]);
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/toolgate mcp --config FILE/);
  expect(r.stdout).toMatch(/--stdio/);
  expect(run(["help", "mcp"]).stdout).toBe(r.stdout);
});

test("a bad config exits 2 naming the key and the fix", () => {
  const bad = join(tempDir("mcp-e2e-"), "bad.yaml");
  writeFileSync(
    bad,
    "session: {subject: {type: user, id: alice}, resource: {type: customer, id: c1}}\nservers: [{name: a.b, command: x, url: 'http://h/'}]\nmethods: {passthrough: [tools/call]}\n",
  );
  const r = run(["mcp", "--config", bad, "--http", "0.0.0.0:8190"]);
  expect(r.status).toBe(2);
  expect(r.stdout).toBe("");
  expect(r.stderr).toMatch(/^toolgate: config_invalid: invalid MCP proxy configuration/);
  expect(r.stderr).toMatch(/key "servers\[0\]\.name" must be 1-64 of A-Z a-z 0-9 _ -\. Fix:/);
  expect(r.stderr).toMatch(/key "servers\[0\]" needs exactly one of command .* and url/);
  expect(r.stderr).toMatch(
    /key "methods\.passthrough" names "tools\/call", which may not bypass decisions/,
  );
  expect(r.stderr).toMatch(
    /key "serve\.http" binds 0\.0\.0\.0, off loopback.*Fix: bind 127\.0\.0\.1/,
  );
});

test("an upstream that cannot start: exit 2, mcp_upstream_unavailable naming the server", () => {
  const f = join(tempDir("mcp-e2e-"), "nostart.yaml");
  writeFileSync(
    f,
    `session: ${JSON.stringify(SESSION)}\nservers: [{name: ghost, command: /nonexistent/mcp-server}]\n`,
  );
  const r = run(["mcp", "--config", f, "--stdio", "--sidecar", sc.agent]);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/toolgate: mcp_upstream_unavailable: MCP server "ghost" \(stdio\)/);
});

describe("serving stdio", () => {
  let client: Client;
  let transport: StdioClientTransport;
  let stderr = "";

  beforeAll(async () => {
    transport = new StdioClientTransport({
      command: NODE,
      args: [BIN, "mcp", "--config", configFile, "--stdio"],
      cwd: root,
      stderr: "pipe",
    });
    transport.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    client = new Client({ name: "e2e-agent", version: "1.0.0" });
    await client.connect(transport); // any non-protocol byte on stdout would break this
  });
  afterAll(async () => {
    await client?.close();
  });

  test("list, allow, deny and the approval round trip over stdio", async () => {
    const names = (await client.listTools()).tools.map((t) => t.name).sort();
    expect(names).toEqual(["account_summary", "broken", "lookup", "refund"]);

    const ok = await client.callTool({
      name: "lookup",
      arguments: { customer_id: "cust_1", note: "card 4111111111111111" },
    });
    expect(ok.isError).toBeFalsy();
    const got = JSON.parse(textOf(ok)) as { meta: Record<string, unknown> };
    expect(typeof got.meta["io.toolgate/grant"]).toBe("string");

    const no = await client.callTool({ name: "wipe", arguments: {} });
    expect(no.isError).toBe(true);
    expect(metaOf(no)["io.toolgate/outcome"]).toBe("deny");

    const args = { customer_id: "cust_1", amount: 5 };
    const gated = await client.callTool({ name: "refund", arguments: args });
    expect(textOf(gated)).toMatch(/approval_required/);
    await approve(sc, metaOf(gated)["io.toolgate/access_request_id"] as string);
    const done = await client.callTool({ name: "refund", arguments: args });
    expect(done.isError).toBeFalsy();
    expect(JSON.parse(textOf(done))).toMatchObject({ tool: "refund", arguments: args });

    // a forbidden key in the arguments (no HTTP layer here): refused as a tool error
    const proto = await client.callTool({
      name: "lookup",
      arguments: JSON.parse('{"customer_id":"cust_1","constructor":{"x":1}}') as Record<
        string,
        unknown
      >,
    });
    expect(proto.isError).toBe(true);
    expect(textOf(proto)).toMatch(/forbidden_key/);

    // unknown methods are MethodNotFound
    await expect(client.listResources()).rejects.toThrow(/Method not found/i);

    // logs went to stderr (JSON lines), and never with the arguments
    expect(stderr).toMatch(/"event":"mcp.started"/);
    expect(stderr).toMatch(/"event":"mcp.call"/);
    expect(stderr).not.toContain("4111111111111111");
    expect(stderr).not.toContain('cust_1","note');
  });
});
