#!/usr/bin/env node
// Measures kill-switch latency: from the moment POST /v1/killswitches returns
// (201) to the first denied decision, with decisions streaming concurrently
// over loopback. Also checks that no decision started after the return was
// allowed. Needs `npx tsc -p tsconfig.build.json` (dist/).
//
//   node scripts/bench/killswitch-latency.mjs [--runs 20] [--concurrency 8]
import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(import.meta.url);
const { startToolgate } = require(path.join(root, "dist/src/app.js"));
const { compileConfig } = require(path.join(root, "dist/src/config/compile.js"));
const { createLogger } = require(path.join(root, "dist/src/shared/log.js"));
const { importPKCS8, SignJWT } = require("jose");

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "20" },
    concurrency: { type: "string", default: "8" },
  },
});
const runs = Number(values.runs);
const concurrency = Number(values.concurrency);

const config = compileConfig(
  {},
  {
    TOOLGATE_AGENT_PORT: "0",
    TOOLGATE_CONTROL_PORT: "0",
    TOOLGATE_LOG_LEVEL: "silent",
    TOOLGATE_AUDIT_LOG_DECISIONS: "false",
    TOOLGATE_STATE_DIR: fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-ks-")),
  },
);
const tg = await startToolgate(config, createLogger("silent"), {
  env: { OTEL_SDK_DISABLED: "true" },
});
const key = await importPKCS8(
  fs.readFileSync(path.join(root, "config/dev/dev-signing-key.pem"), "utf8"),
  "ES256",
);
const now = Math.floor(Date.now() / 1000);
const jwt = await new SignJWT({ roles: ["admin"] })
  .setProtectedHeader({ alg: "ES256" })
  .setIssuer("toolgate-dev")
  .setAudience(["toolgate-agent", "toolgate-control"])
  .setSubject("olga")
  .setIssuedAt(now)
  .setExpirationTime(now + 3600)
  .sign(key);
const control = tg.controlServer.url;
const body = JSON.stringify({
  subject: { type: "user", id: "alice" },
  action: { name: "tickets.read" },
  resource: { type: "customer", id: "cust_1" },
  context: { job: { id: "job_1", purpose: "support_triage", customer_id: "cust_1" } },
});
const decide = async () => {
  const started = performance.now();
  const r = await fetch(`${tg.agentServer.url}/v1/decisions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
  const d = await r.json();
  return { started, ended: performance.now(), outcome: d.outcome };
};

const latencies = [];
let violations = 0;
for (let run = 0; run < runs; run++) {
  let stop = false;
  const seen = [];
  const worker = async () => {
    while (!stop) seen.push(await decide());
  };
  const workers = Array.from({ length: concurrency }, worker);
  await new Promise((r) => setTimeout(r, 30));
  const res = await fetch(`${control}/v1/killswitches`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${jwt}` },
    body: JSON.stringify({ scope: { tool: "tickets.read" }, reason: `latency run ${run}` }),
  });
  const returned = performance.now();
  const { id } = await res.json();
  await new Promise((r) => setTimeout(r, 30));
  stop = true;
  await Promise.all(workers);
  const after = seen.filter((s) => s.started >= returned);
  violations += after.filter((s) => s.outcome === "allow").length;
  const firstDenied = seen
    .filter((s) => s.outcome === "deny" && s.ended >= returned)
    .sort((a, b) => a.ended - b.ended)[0];
  latencies.push(firstDenied.ended - returned);
  await fetch(`${control}/v1/killswitches/${id}`, {
    method: "DELETE",
    headers: { authorization: `Bearer ${jwt}` },
  });
}
latencies.sort((a, b) => a - b);
const q = (p) =>
  latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(3);
console.log(
  `kill switch: API return → first denied decision over ${runs} runs (${concurrency} concurrent streams): ` +
    `min ${latencies[0].toFixed(3)} ms, p50 ${q(0.5)} ms, max ${latencies.at(-1).toFixed(3)} ms; ` +
    `allows started after the return: ${violations}`,
);
await tg.stop();
process.exit(violations === 0 ? 0 : 1);
