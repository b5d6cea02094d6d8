#!/usr/bin/env node
// Container health check without curl: GET a toolgate health endpoint over
// loopback and exit 0 on 200, 1 otherwise (Docker HEALTHCHECK, Kubernetes
// exec probes).
//
//   node scripts/healthcheck.mjs                     -> /health/ready on the agent port
//   node scripts/healthcheck.mjs /health/live        -> another path on the agent port
//   node scripts/healthcheck.mjs http://127.0.0.1:8182/health/ready
//
// The agent port comes from TOOLGATE_AGENT_HOST / TOOLGATE_AGENT_PORT (the
// image sets both; a wildcard host is checked on loopback), or set
// TOOLGATE_HEALTHCHECK_URL when a config file moves the port.
import { request } from "node:http";

const arg = process.argv[2] ?? "/health/ready";
let url;
if (/^https?:\/\//.test(arg)) {
  url = arg;
} else if (process.env.TOOLGATE_HEALTHCHECK_URL) {
  url = new URL(arg, process.env.TOOLGATE_HEALTHCHECK_URL).href;
} else {
  let host = process.env.TOOLGATE_AGENT_HOST || "127.0.0.1";
  if (host === "0.0.0.0") host = "127.0.0.1";
  if (host === "::" || host === "[::]") host = "::1";
  if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  url = `http://${host}:${process.env.TOOLGATE_AGENT_PORT || "8181"}${arg}`;
}

const timeoutMs = Number(process.env.TOOLGATE_HEALTHCHECK_TIMEOUT_MS || 2000);
const req = request(url, { method: "GET", timeout: timeoutMs }, (res) => {
  res.resume();
  res.on("end", () => {
    if (res.statusCode !== 200) process.stderr.write(`healthcheck: ${url} -> ${res.statusCode}\n`);
    process.exit(res.statusCode === 200 ? 0 : 1);
  });
});
req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
req.on("error", (e) => {
  process.stderr.write(`healthcheck: ${url}: ${e.message}\n`);
  process.exit(1);
});
req.end();
