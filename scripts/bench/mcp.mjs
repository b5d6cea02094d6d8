#!/usr/bin/env node
// The latency `toolgate mcp` adds per tools/call (run `npm run build` first):
//   node_modules/.bin/node scripts/bench/mcp.mjs [--calls N] [--warmup N] [--rounds N]
// One allowed tool (tickets.read of the reference deployment) called N times,
// sequentially, by the SDK's Client:
//   direct        → the fixture MCP server (test/fixtures/mcp/server.cjs) over stdio
//   proxy (HTTP)  → toolgate mcp in process, streamable HTTP, → the same server over stdio
//   proxy (stdio) → `node bin/toolgate.js mcp --stdio` as a child process → the server over stdio
// and, for scale, the proxy's own sidecar round trip (POST /v1/decisions with
// the same request). The sidecar is a real toolgate (in process, the embedded
// reference bundle, audit trail on, grants on). Paths are interleaved in
// rounds so drift hits them alike. Prints a markdown table (ms).
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(import.meta.url);
if (!fs.existsSync(path.join(ROOT, "dist", "src", "mcp", "index.js"))) {
  process.stderr.write("dist/ has no src/mcp: run `npm run build` first\n");
  process.exit(2);
}
const dist = (p) => require(path.join(ROOT, "dist", "src", p));
const { compileConfig } = dist("config/index.js");
const { startToolgate } = dist("app.js");
const { silentLogger } = dist("shared/log.js");
const { compileMcpConfig, startMcpProxy } = dist("mcp/index.js");
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");
const {
  StreamableHTTPClientTransport,
} = require("@modelcontextprotocol/sdk/client/streamableHttp.js");

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const CALLS = opt("--calls", 1000);
const WARMUP = opt("--warmup", 100);
const ROUNDS = opt("--rounds", 5);

const FIXTURE = path.join(ROOT, "test", "fixtures", "mcp", "server.cjs");
const NODE = process.execPath;
const fixtureEnv = { MCP_FIXTURE_TOOLSET: "reference" };
const SESSION = {
  subject: { type: "user", id: "alice" },
  resource: { type: "customer", id: "cust_1" },
  context: { job: { id: "job_1", purpose: "support_triage", customer_id: "cust_1" } },
};
const CALL = { name: "tickets.read", arguments: { customer_id: "cust_1" } };

const state = fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-mcp-bench-"));
const tg = await startToolgate(
  compileConfig(
    {},
    {
      TOOLGATE_AGENT_PORT: "0",
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_LOG_LEVEL: "silent",
      TOOLGATE_STATE_DIR: state,
      TOOLGATE_AUDIT_HMAC_KEY: "bench-key-0123456789abcdef",
    },
  ),
  silentLogger,
  { env: { OTEL_SDK_DISABLED: "true" } },
);
const agent = tg.agentServer.url;

const proxyDoc = {
  sidecar: { url: agent },
  console_url: tg.controlServer?.url,
  session: SESSION,
  servers: [{ name: "ref", command: NODE, args: [FIXTURE], env: fixtureEnv }],
  log_level: "silent",
};
const proxy = await startMcpProxy(
  compileMcpConfig({ ...proxyDoc, serve: { http: "127.0.0.1:0" } }),
  {
    log: silentLogger,
  },
);
const cfgFile = path.join(state, "mcp.json");
fs.writeFileSync(cfgFile, JSON.stringify({ ...proxyDoc, log_level: "error" }));

async function client(transport) {
  const c = new Client({ name: "bench", version: "1.0.0" });
  await c.connect(transport);
  return c;
}
const direct = await client(
  new StdioClientTransport({
    command: NODE,
    args: [FIXTURE],
    env: { ...process.env, ...fixtureEnv },
  }),
);
const viaHttp = await client(
  new StreamableHTTPClientTransport(new URL(proxy.url), {
    requestInit: { headers: { authorization: `Bearer ${proxy.httpToken}` } },
  }),
);
const viaStdio = await client(
  new StdioClientTransport({
    command: NODE,
    args: [path.join(ROOT, "bin", "toolgate.js"), "mcp", "--stdio", "--config", cfgFile],
    cwd: ROOT,
    stderr: "inherit",
  }),
);
const decisionBody = JSON.stringify({
  ...SESSION,
  action: { name: CALL.name, properties: { arguments: CALL.arguments } },
});

const paths = {
  "direct (stdio)": () => direct.callTool(CALL),
  "through toolgate mcp (HTTP)": () => viaHttp.callTool(CALL),
  "through toolgate mcp (stdio, CLI)": () => viaStdio.callTool(CALL),
  "its sidecar decision alone (POST /v1/decisions)": () =>
    fetch(`${agent}/v1/decisions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: decisionBody,
    }).then((r) => r.json()),
};

// sanity: the proxied call is allowed and forwarded with a grant
const probe = await viaHttp.callTool(CALL);
const got = JSON.parse(probe.content[0].text);
if (probe.isError || typeof got.meta["io.toolgate/grant"] !== "string") {
  process.stderr.write(`the proxied call was not allowed: ${JSON.stringify(probe)}\n`);
  process.exit(1);
}

const samples = Object.fromEntries(Object.keys(paths).map((k) => [k, []]));
for (const fn of Object.values(paths)) for (let i = 0; i < WARMUP; i++) await fn();
const per = Math.ceil(CALLS / ROUNDS);
for (let r = 0; r < ROUNDS; r++)
  for (const [name, fn] of Object.entries(paths))
    for (let i = 0; i < per; i++) {
      const t0 = performance.now();
      const res = await fn();
      samples[name].push(performance.now() - t0);
      if (res?.isError) throw new Error(`${name}: ${JSON.stringify(res)}`);
    }

const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const f = (x) => x.toFixed(2);
const base = samples["direct (stdio)"];
const lines = [
  `tools/call of tickets.read, ${per * ROUNDS} sequential calls per path (${ROUNDS} interleaved rounds, ${WARMUP} warm-up), node ${process.version}, ${os.cpus().length} CPUs`,
  "",
  "| path | p50 ms | p99 ms | added p50 ms | added p99 ms |",
  "| --- | ---: | ---: | ---: | ---: |",
];
for (const [name, xs] of Object.entries(samples)) {
  const added = name.startsWith("through")
    ? `${f(q(xs, 50) - q(base, 50))} | ${f(q(xs, 99) - q(base, 99))}`
    : "— | —";
  lines.push(`| ${name} | ${f(q(xs, 50))} | ${f(q(xs, 99))} | ${added} |`);
}
process.stdout.write(lines.join("\n") + "\n");

await Promise.all([direct.close(), viaHttp.close(), viaStdio.close()]);
await proxy.stop();
await tg.stop();
process.exit(0);
