#!/usr/bin/env node
// An MCP agent without an LLM: five tool calls through `toolgate mcp`, each
// outcome printed. Needs the sidecar (`npm start`) and a build (`npm run build`).
//
//   node examples/mcp-agent/agent.mjs                 spawns the proxy over stdio (mcp.yaml)
//   node examples/mcp-agent/agent.mjs --url http://127.0.0.1:8190/mcp --token-file FILE
//                                                     a proxy already serving HTTP: FILE holds its
//                                                     bearer secret (the proxy's --http-token-file,
//                                                     or the http_token_file of its mcp.started log line)
//   --wait        on needs_approval, wait for the approval and retry the same call
//   --sidecar URL --console URL   other sidecar/console (passed to the spawned proxy)
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const argv = process.argv.slice(2);
const opt = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};

function transport() {
  const url = opt("--url");
  if (url) {
    const file = opt("--token-file") ?? process.env.TOOLGATE_MCP_HTTP_TOKEN_FILE;
    if (!file) throw new Error("--url needs --token-file FILE: the proxy's HTTP bearer secret");
    const secret = readFileSync(file, "utf8").trim();
    return new StreamableHTTPClientTransport(new URL(url), {
      requestInit: { headers: { authorization: `Bearer ${secret}` } },
    });
  }
  const args = [path.join(root, "bin", "toolgate.js"), "mcp", "--stdio"];
  args.push("--config", path.join(here, "mcp.yaml"));
  for (const f of ["--sidecar", "--console"]) if (opt(f)) args.push(f, opt(f));
  return new StdioClientTransport({ command: process.execPath, args, stderr: "inherit" });
}

const client = new Client({ name: "mcp-agent-example", version: "1.0.0" });
await client.connect(transport());

const { tools } = await client.listTools();
console.log(
  `tools offered: ${tools.map((t) => t.name + (t._meta?.["io.toolgate/needs_approval"] ? " (needs approval)" : "")).join(", ")}`,
);

const calls = [
  ["tickets.read", { customer_id: "cust_1" }],
  ["accounts.summary.read", { customer_id: "cust_1" }],
  ["refunds.issue", { customer_id: "cust_1", amount: 20, currency: "EUR" }],
  ["billing.update", { customer_id: "cust_1", plan: "free" }],
  ["refunds.issue", { customer_id: "cust_1", amount: 120, currency: "EUR" }],
];

const text = (r) => r.content?.find((b) => b.type === "text")?.text ?? "";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

for (const [i, [name, args]] of calls.entries()) {
  let r = await client.callTool({ name, arguments: args });
  const meta = r._meta ?? {};
  let outcome = r.isError ? (meta["io.toolgate/outcome"] ?? "error") : "allow";
  if (outcome === "needs_approval" && argv.includes("--wait")) {
    console.log(`${i + 1}. ${name} needs approval: ${meta["io.toolgate/approval_url"]} (waiting)`);
    while (r.isError && r._meta?.["io.toolgate/outcome"] === "needs_approval") {
      await sleep(2000);
      r = await client.callTool({ name, arguments: args });
    }
    outcome = r.isError ? (r._meta?.["io.toolgate/outcome"] ?? "error") : "allow";
  }
  if (outcome === "allow") console.log(`${i + 1}. ${name} → allow: ${text(r).slice(0, 160)}`);
  else if (outcome === "needs_approval")
    console.log(
      `${i + 1}. ${name} → needs_approval: ask an approver to open ${meta["io.toolgate/approval_url"]}`,
    );
  else {
    const reasons = (r._meta?.["io.toolgate/reasons"] ?? []).map((x) => `${x.code}: ${x.message}`);
    console.log(`${i + 1}. ${name} → ${outcome}: ${reasons.join("; ")}`);
  }
}
await client.close();
