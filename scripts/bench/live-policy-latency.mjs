#!/usr/bin/env node
// Measures how long a newly published bundle revision takes to become active
// in a running toolgate polling an HTTP bundle server on loopback with OPA's
// polling (a random delay between min and max). Needs `npm run build` and the
// pinned opa (scripts/tools.sh opa).
//
//   node scripts/bench/live-policy-latency.mjs [--runs 10] [--min 1] [--max 2]
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(import.meta.url);
const { startToolgate } = require(path.join(root, "dist/src/app.js"));
const { compileConfig } = require(path.join(root, "dist/src/config/compile.js"));
const { createLogger } = require(path.join(root, "dist/src/shared/log.js"));

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "10" },
    min: { type: "string", default: "1" },
    max: { type: "string", default: "2" },
  },
});
const opa = execFileSync("bash", [path.join(root, "scripts/tools.sh"), "opa"], {
  encoding: "utf8",
}).trim();
const work = fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-latency-"));
fs.writeFileSync(
  path.join(work, "p.rego"),
  'package toolgate\nimport rego.v1\ndecision := {"outcome": "deny", "reasons": [{"code": "x", "message": "x"}], "obligations": []}\n',
);
const build = (rev) => {
  const out = path.join(work, `${rev}.tar.gz`);
  execFileSync(opa, [
    "build",
    "-t",
    "wasm",
    "-e",
    "toolgate/decision",
    "--revision",
    rev,
    "-o",
    out,
    path.join(work, "p.rego"),
  ]);
  return fs.readFileSync(out);
};

let body;
let etag;
const publish = (bytes) => {
  body = bytes;
  etag = `"${createHash("sha256").update(bytes).digest("hex").slice(0, 16)}"`;
};
const server = http.createServer((req, res) => {
  if (req.headers["if-none-match"] === etag) return res.writeHead(304, { etag }).end();
  res.writeHead(200, { etag, "content-type": "application/gzip" }).end(body);
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const url = `http://127.0.0.1:${server.address().port}/bundle.tar.gz`;
publish(build("rev-0"));
const config = compileConfig(
  {},
  {
    TOOLGATE_AGENT_PORT: "0",
    TOOLGATE_CONTROL_ENABLED: "false",
    TOOLGATE_STATE_DIR: work,
    TOOLGATE_POLICY_SOURCE: "http",
    TOOLGATE_POLICY_HTTP_URL: url,
    TOOLGATE_POLICY_HTTP_MIN_DELAY_SECONDS: values.min,
    TOOLGATE_POLICY_HTTP_MAX_DELAY_SECONDS: values.max,
    TOOLGATE_AUDIT_HMAC_KEY: "latency-bench-key-0123456789",
    TOOLGATE_AUDIT_TRAIL_ENABLED: "false",
  },
);
const tg = await startToolgate(config, createLogger("silent"), {
  env: { OTEL_SDK_DISABLED: "true" },
});
const runs = Number(values.runs);
const bundles = Array.from({ length: runs }, (_, i) => build(`rev-${i + 1}`));
const ms = [];
for (let i = 0; i < runs; i++) {
  // publish at a random point of the poll cycle
  await new Promise((r) => setTimeout(r, Math.random() * 1000));
  const t0 = performance.now();
  publish(bundles[i]);
  while (tg.bundles.status().revision !== `rev-${i + 1}`)
    await new Promise((r) => setTimeout(r, 2));
  ms.push(performance.now() - t0);
}
await tg.stop();
server.close();
ms.sort((a, b) => a - b);
const q = (p) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))].toFixed(0);
console.log(
  `publication → active, ${runs} runs, polling min=${values.min}s max=${values.max}s: ` +
    `min ${ms[0].toFixed(0)} ms, median ${q(0.5)} ms, max ${ms[ms.length - 1].toFixed(0)} ms ` +
    `(mean ${(ms.reduce((a, b) => a + b, 0) / ms.length).toFixed(0)} ms)`,
);
process.exit(0);
