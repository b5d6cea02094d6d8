#!/usr/bin/env node
// Fleet mode (docs/fleet.md), measured with real parts on loopback: a real
// PostgreSQL (scripts/postgres.mjs), one `toolgate control`, 8 sidecars in
// fleet mode and one single-pod sidecar, each its own process.
//
//   node scripts/bench/fleet.mjs [--runs 20] [--sidecars 8] [--budgeted 2000]
//        [--rounds 3] [--seconds 5] [--connections 16] [--json FILE] [--md FILE]
//
// 1. Kill-switch propagation: each sidecar answers decisions in a loop; a
//    switch is posted to the control service; per sidecar, the time from the
//    POST's return to the end of its first denied decision (an upper bound of
//    "the next decision is denied"). Any allow that STARTED after the first
//    deny on that sidecar is a violation. Lifted between runs.
// 2. Budgeted decisions: refunds.issue (amount 10, a fleet budget of the tool
//    per customer) on one fleet sidecar, sequential, round-trip latency; the
//    same on the single-pod sidecar for reference.
// 3. Hot path without fleet state: tickets.read (no budget, no limit) at
//    --connections, alternating rounds single-pod / fleet sidecar (autocannon).
// Needs dist/ (npm run build).
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(import.meta.url);
const autocannon = require("autocannon");
const { importPKCS8, SignJWT } = require("jose");
const { readTarGz, writeTarGz } = require(path.join(ROOT, "dist/src/shared/tar.js"));

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "20" },
    sidecars: { type: "string", default: "8" },
    budgeted: { type: "string", default: "2000" },
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "5" },
    connections: { type: "string", default: "16" },
    json: { type: "string" },
    md: { type: "string" },
    keep: { type: "boolean", default: false },
  },
});
const RUNS = Number(values.runs);
const SIDECARS = Number(values.sidecars);
const BUDGETED = Number(values.budgeted);
const ROUNDS = Number(values.rounds);
const SECONDS = Number(values.seconds);
const CONNECTIONS = Number(values.connections);
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-bench-fleet-"));
// as root PostgreSQL runs as an unprivileged user, who must reach its data dir under TMP
fs.chmodSync(TMP, 0o755);
const NODE = process.execPath;
const log = (m) => process.stderr.write(`[fleet] ${m}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- processes -------------------------------------------------------------------------

const children = [];
let pgDir;
function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  if (pgDir !== undefined) {
    spawnSync(NODE, [path.join(ROOT, "scripts/postgres.mjs"), "stop", pgDir], { stdio: "ignore" });
    pgDir = undefined;
  }
}
process.on("exit", cleanup);
for (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => process.exit(130));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function start(name, args, env) {
  const out = fs.openSync(path.join(TMP, `${name}.log`), "w");
  const child = spawn(NODE, [path.join(ROOT, "bin/toolgate.js"), ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ["ignore", out, out],
  });
  child.benchName = name;
  children.push(child);
  return child;
}

async function waitReady(url, child, timeoutMs = 30000) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (child.exitCode !== null)
      throw new Error(`${child.benchName} exited early; see ${TMP}/${child.benchName}.log`);
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {
      /* not yet */
    }
    await sleep(100);
  }
  throw new Error(`${child.benchName} not ready at ${url}; see ${TMP}/${child.benchName}.log`);
}

function startPostgres() {
  pgDir = path.join(TMP, "pg");
  return new Promise((resolve, reject) => {
    const c = spawn(NODE, [path.join(ROOT, "scripts/postgres.mjs"), "start", pgDir], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    c.stdout.on("data", (d) => (out += d));
    c.on("exit", (code) =>
      code === 0
        ? resolve(out.trim().split("\n").pop())
        : reject(new Error(`postgres:start exited ${code}`)),
    );
  });
}

/** The reference bundle with a fleet budget on refunds.issue (per customer, large enough never to bind). */
async function budgetedBundle() {
  const files = await readTarGz(fs.readFileSync(path.join(ROOT, "bundles/support-triage.tar.gz")));
  const name = [...files.keys()].find((k) => /(^|\/)data\.json$/.test(k));
  const data = JSON.parse(files.get(name).toString("utf8"));
  const dep = data.toolgate.deployment;
  dep.limits = {
    budgets: [
      {
        id: "refund-amount-per-customer",
        tool: "refunds.issue",
        argument: "amount",
        per: "customer",
        window_seconds: 86400,
        max_total: 1e12,
      },
    ],
  };
  files.set(name, Buffer.from(JSON.stringify(data)));
  const out = path.join(TMP, "budgeted.tar.gz");
  fs.writeFileSync(out, await writeTarGz(files));
  return out;
}

async function devToken(sub, roles) {
  const key = await importPKCS8(
    fs.readFileSync(path.join(ROOT, "config/dev/dev-signing-key.pem"), "utf8"),
    "ES256",
  );
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ roles })
    .setProtectedHeader({ alg: "ES256" })
    .setIssuer("toolgate-dev")
    .setAudience(["toolgate-agent", "toolgate-control"])
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + 3600)
    .sign(key);
}

// ---- requests --------------------------------------------------------------------------

const request = (tool, args) =>
  JSON.stringify({
    subject: { type: "user", id: "alice" },
    action: { name: tool, ...(args ? { properties: { arguments: args } } : {}) },
    resource: { type: "customer", id: "cust_1" },
    context: { job: { id: "job_1", purpose: "support_triage", customer_id: "cust_1" } },
  });
const READ = request("tickets.read");
const REFUND = request("refunds.issue", { amount: 10 });

async function decide(base, body) {
  const started = performance.now();
  const r = await fetch(`${base}/v1/decisions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
  const d = await r.json();
  return { started, ended: performance.now(), outcome: d.outcome, reason: d.reasons?.[0]?.code };
}

const pct = (sorted, p) =>
  sorted.length === 0
    ? NaN
    : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");

// ---- measurements ----------------------------------------------------------------------

async function propagation(control, sidecars, token) {
  const latencies = [];
  let violations = 0;
  let missed = 0;
  for (let run = 0; run < RUNS; run++) {
    let stop = false;
    const seen = sidecars.map(() => []);
    const loops = sidecars.map(async (s, i) => {
      while (!stop) seen[i].push(await decide(s.base, READ));
    });
    await sleep(50);
    const res = await fetch(`${control}/v1/killswitches`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ scope: { tool: "tickets.read" }, reason: `bench run ${run}` }),
    });
    const returned = performance.now();
    if (res.status !== 201)
      throw new Error(`POST /v1/killswitches: ${res.status} ${await res.text()}`);
    const { id } = await res.json();
    // until every sidecar has denied once (or 3 s)
    const deadline = returned + 3000;
    while (performance.now() < deadline) {
      if (seen.every((xs) => xs.some((x) => x.outcome === "deny" && x.ended >= returned))) break;
      await sleep(5);
    }
    await sleep(50);
    stop = true;
    await Promise.all(loops);
    for (const xs of seen) {
      const first = xs.filter((x) => x.outcome === "deny" && x.ended >= returned)[0];
      if (first === undefined) {
        missed++;
        continue;
      }
      latencies.push(first.ended - returned);
      violations += xs.filter((x) => x.started >= first.ended && x.outcome === "allow").length;
    }
    const del = await fetch(`${control}/v1/killswitches/${id}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${token}` },
    });
    if (!del.ok) throw new Error(`DELETE /v1/killswitches: ${del.status}`);
    // lifted everywhere before the next run
    for (const s of sidecars) {
      for (let k = 0; k < 300 && (await decide(s.base, READ)).outcome !== "allow"; k++)
        await sleep(10);
    }
  }
  const s = Float64Array.from(latencies).sort();
  return {
    n: s.length,
    p50: pct(s, 50),
    p99: pct(s, 99),
    max: s[s.length - 1],
    violations,
    missed,
  };
}

async function budgeted(base) {
  for (let i = 0; i < 50; i++) await decide(base, REFUND); // warm-up
  const lat = [];
  let notAllowed = 0;
  for (let i = 0; i < BUDGETED; i++) {
    const d = await decide(base, REFUND);
    if (d.outcome !== "allow") notAllowed++;
    lat.push(d.ended - d.started);
  }
  const s = Float64Array.from(lat).sort();
  return { n: s.length, p50: pct(s, 50), p99: pct(s, 99), notAllowed };
}

function throughput(base) {
  return new Promise((resolve, reject) => {
    let bad = 0;
    const inst = autocannon(
      {
        url: `${base}/v1/decisions`,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: READ,
        connections: CONNECTIONS,
        duration: SECONDS,
      },
      (err, res) =>
        err ? reject(err) : resolve({ rps: res.requests.average, errors: res.errors + bad }),
    );
    inst.on("response", (_c, status) => {
      if (status !== 200) bad++;
    });
  });
}

// ---- main ------------------------------------------------------------------------------

async function main() {
  log(`temp dir ${TMP}`);
  const pgUrl = await startPostgres();
  const bundle = await budgetedBundle();
  const controlPort = await freePort();
  const control = `http://127.0.0.1:${controlPort}`;
  const common = {
    TOOLGATE_LOG_LEVEL: "warn",
    TOOLGATE_AUDIT_LOG_DECISIONS: "false",
    OTEL_SDK_DISABLED: "true",
    TOOLGATE_BUNDLE: bundle,
  };
  const ctl = start("control", ["control"], {
    ...common,
    TOOLGATE_POSTGRES_URL: pgUrl,
    TOOLGATE_CONTROL_PORT: String(controlPort),
    TOOLGATE_STATE_DIR: path.join(TMP, "control-state"),
  });
  await waitReady(`${control}/health/ready`, ctl);
  const sidecars = [];
  for (let i = 0; i <= SIDECARS; i++) {
    const fleet = i < SIDECARS;
    const agentPort = await freePort();
    const name = fleet ? `sidecar-${i + 1}` : "single-pod";
    const child = start(name, ["serve"], {
      ...common,
      TOOLGATE_AGENT_PORT: String(agentPort),
      TOOLGATE_CONTROL_PORT: String(await freePort()),
      TOOLGATE_STATE_DIR: path.join(TMP, `${name}-state`),
      ...(fleet ? { TOOLGATE_FLEET_URL: control } : {}),
    });
    sidecars.push({ name, base: `http://127.0.0.1:${agentPort}`, child, fleet });
  }
  for (const s of sidecars) await waitReady(`${s.base}/health/ready`, s.child);
  const fleetSidecars = sidecars.filter((s) => s.fleet);
  const single = sidecars.find((s) => !s.fleet);
  const olga = await devToken("olga", ["admin"]);

  log(`kill-switch propagation: ${RUNS} runs x ${fleetSidecars.length} sidecars`);
  const prop = await propagation(control, fleetSidecars, olga);
  log(`propagation p50 ${f(prop.p50)} ms, p99 ${f(prop.p99)} ms`);

  log(`budgeted decisions: ${BUDGETED} sequential`);
  const budgetFleet = await budgeted(fleetSidecars[0].base);
  const budgetSingle = await budgeted(single.base);
  log(`budgeted p99 fleet ${f(budgetFleet.p99)} ms, single-pod ${f(budgetSingle.p99)} ms`);

  // only the two targets of the throughput comparison keep running
  for (const s of fleetSidecars.slice(1)) s.child.kill("SIGTERM");
  await sleep(500);
  log(`throughput c=${CONNECTIONS}: ${ROUNDS} alternating rounds of ${SECONDS} s`);
  const rps = { single: [], fleet: [] };
  let errors = 0;
  for (let r = 0; r < ROUNDS; r++) {
    for (const [k, s] of r % 2 === 0
      ? [
          ["single", single],
          ["fleet", fleetSidecars[0]],
        ]
      : [
          ["fleet", fleetSidecars[0]],
          ["single", single],
        ]) {
      const t = await throughput(s.base);
      rps[k].push(t.rps);
      errors += t.errors;
    }
  }
  const ratios = rps.fleet.map((x, i) => x / rps.single[i]);
  const result = {
    sidecars: fleetSidecars.length,
    propagation: prop,
    budgeted: { fleet: budgetFleet, single: budgetSingle },
    throughput: {
      connections: CONNECTIONS,
      single: rps.single,
      fleet: rps.fleet,
      ratio: median(ratios),
      ratios,
      errors,
    },
  };
  const md = [
    `Real PostgreSQL (scripts/postgres.mjs), one \`toolgate control\`, ${fleetSidecars.length} sidecars in fleet mode and one single-pod sidecar, each its own process on this machine, audit spans off (\`OTEL_SDK_DISABLED\`), the reference bundle with a fleet budget on \`refunds.issue\`. \`node scripts/bench/fleet.mjs\`.`,
    "",
    "| measure | value |",
    "| --- | --- |",
    `| kill-switch propagation, POST return → first denied decision on each sidecar (${prop.n} samples: ${RUNS} runs × ${fleetSidecars.length} sidecars) | p50 ${f(prop.p50)} ms, p99 ${f(prop.p99)} ms, max ${f(prop.max)} ms |`,
    `| allows started after a sidecar's first deny (must be 0) | ${prop.violations} |`,
    `| sidecars that never denied within 3 s (must be 0) | ${prop.missed} |`,
    `| budgeted decision (refunds.issue, reserve at the control service), fleet sidecar, ${BUDGETED} sequential | p50 ${f(budgetFleet.p50)} ms, p99 ${f(budgetFleet.p99)} ms (${budgetFleet.notAllowed} not allowed) |`,
    `| budgeted decision, single-pod sidecar (SQLite), for reference | p50 ${f(budgetSingle.p50)} ms, p99 ${f(budgetSingle.p99)} ms |`,
    `| throughput, tickets.read (no fleet state: no network hop), c=${CONNECTIONS}, single-pod req/s | ${rps.single.map((x) => f(x, 0)).join(", ")} |`,
    `| same, fleet sidecar req/s | ${rps.fleet.map((x) => f(x, 0)).join(", ")} |`,
    `| fleet-mode throughput ratio (fleet/single-pod), median of ${ROUNDS} alternating rounds | ${f(result.throughput.ratio, 3)} |`,
    "",
  ].join("\n");
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2));
  if (values.md) fs.writeFileSync(values.md, md);
  process.stdout.write(md + "\n");
  const ok =
    prop.violations === 0 && prop.missed === 0 && budgetFleet.notAllowed === 0 && errors === 0;
  for (const c of children) c.kill("SIGTERM");
  await sleep(300);
  cleanup();
  if (!values.keep) fs.rmSync(TMP, { recursive: true, force: true });
  process.exitCode = ok ? 0 : 1;
}

main().catch((e) => {
  log(`failed: ${e.stack ?? e}`);
  log(`logs in ${TMP}`);
  process.exitCode = 1;
});
