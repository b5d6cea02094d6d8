#!/usr/bin/env node
// toolgate's benchmark: toolgate side by side with a real OPA server on this
// machine, same Rego, same inputs, same load generator (autocannon).
//
//   npm run bench                  full run (~8 min), writes docs/benchmarks.md
//   npm run bench -- --quick       smoke run (1 round x 2 s); writes <tmp>/benchmarks.md
//                                  unless --out is given
//   options: --no-build (use dist/ as is), --out <file>, --rounds N, --duration S,
//            --conns 1,16,64, --keep (keep the temp dir), --cpu-prof <dir>
//            (also run every other audit-on toolgate under node --cpu-prof, whole life,
//            profiles in <dir>; the decision profile below goes to <dir>/decision-profile),
//            --no-profile (skip the decision profile), --profile-duration S (its load
//            run; 10, quick 3), --profile-interval US (its sampling interval; 500),
//            --swap-duration S (seconds per bundle-swap run; 10, quick 5),
//            --swap-interval MS (between swaps; 1000), --only-swap (only the bundle swap
//            section, printed to stdout; no report written)
//
// What it does, in one run: builds dist/ (tsc), builds a plain Rego bundle
// from rego/ for OPA, starts a local OTLP/HTTP receiver, OPA (`opa run
// --server`), toolgate with audit on (spans to the receiver, decision logs to a
// file, trail on) and toolgate with audit off; checks that all of them give the
// same outcome and reason codes for every request of the mix; starts the
// platform's ceiling, a bare node:http server answering the bytes toolgate
// answers for an allow (scripts/bench/ceiling.mjs); then drives OPA, toolgate
// and the ceiling in alternating order per round at each concurrency; then
// audit on vs off; then profiles one load run of a fresh audit-on toolgate
// (node --cpu-prof, scripts/bench/profile-summary.mjs); then swaps bundle
// revisions under load in a toolgate whose policy is a watched file
// (scripts/bench/swap.mjs); then times in-process evaluation
// (scripts/bench/inproc.mjs); then writes the report.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { captureResponse } from "./bench/ceiling.mjs";
import { MIX, policyInput } from "./bench/mix.mjs";
import { auditEnv } from "./bench/toolgate-env.mjs";
import { summariseProfile } from "./bench/profile-summary.mjs";
import {
  makeRevisions,
  renderSwap,
  swapLoad,
  swapOk,
  swapSummary,
  swapTotals,
} from "./bench/swap.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const autocannon = require("autocannon");
const NODE = process.execPath;

// ---- options ----------------------------------------------------------------------

const argv = process.argv.slice(2);
const flag = (n) => argv.includes(n);
const opt = (n, d) => {
  const i = argv.indexOf(n);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : d;
};
const QUICK = flag("--quick");
const ROUNDS = Number(opt("--rounds", QUICK ? 1 : 3));
const DURATION = Number(opt("--duration", QUICK ? 2 : 5)); // seconds per measured run
const WARMUP = QUICK ? 1 : 2; // seconds per target and concurrency, unmeasured
const CONNS = opt("--conns", "1,16,64").split(",").map(Number);
const AUDIT_CONNS = CONNS[Math.floor(CONNS.length / 2)];
// audit on vs off: more, shorter alternating rounds than the side-by-side (the cost is a
// difference of two noisy throughputs on a shared 2-core machine)
const AUDIT_ROUNDS = Number(opt("--audit-rounds", QUICK ? 2 : 8));
const AUDIT_DURATION = Number(opt("--audit-duration", QUICK ? 2 : 3));
const INPROC_ITERS = QUICK ? 2000 : 10000;
const INPROC_RUNS = Number(opt("--inproc-runs", QUICK ? 1 : 5));
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-bench-"));
const OUT = path.resolve(
  opt("--out", QUICK ? path.join(TMP, "benchmarks.md") : path.join(ROOT, "docs", "benchmarks.md")),
);
const CPU_PROF = opt("--cpu-prof", undefined);
const TG_PATHS = ["/v1/decisions", "/v1/data/toolgate/decision"];
const CLK_TCK =
  Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;
const HMAC_KEY = "bench-key-0123456789abcdef";
const ONLY_SWAP = flag("--only-swap");
const SWAP_DURATION = Number(opt("--swap-duration", QUICK ? 5 : 10)); // seconds per swap run
const SWAP_INTERVAL_MS = Number(opt("--swap-interval", 1000));
const SWAP_MARGIN_MS = 1500; // no swap later than this before the end of a run
const SWAP_WATCH_MS = 100; // TOOLGATE_POLICY_FILE_WATCH_INTERVAL_MS of the swap target
const SWAP_CONNS = 16;
const PROFILE = !flag("--no-profile");
const PROFILE_DURATION = Number(opt("--profile-duration", QUICK ? 3 : 10)); // seconds, one load run
const PROFILE_INTERVAL_US = Number(opt("--profile-interval", 500)); // node --cpu-prof-interval
const PROFILE_CONNS = AUDIT_CONNS;
const PROFILE_TOP = 15;
/** The mix request whose answer the ceiling replays (an allow, with its grant). */
const CEILING_REQUEST = MIX.findIndex((m) => m.outcome === "allow");

const log = (...a) => console.error("bench:", ...a);
class Fail extends Error {}
const fail = (m) => {
  throw new Fail(m);
};

// ---- child processes ----------------------------------------------------------------

const children = [];
function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
  if (!flag("--keep")) fs.rmSync(TMP, { recursive: true, force: true });
}
process.on("exit", cleanup);
for (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => process.exit(130));

function run(cmd, args, what, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: "utf8", maxBuffer: 64 << 20, ...opts });
  if (r.error) fail(`${what}: ${r.error.message}`);
  if (r.status !== 0) fail(`${what} failed (exit ${r.status}):\n${r.stderr || r.stdout}`);
  return r.stdout;
}

function start(name, cmd, args, env, logFile) {
  const out = fs.openSync(path.join(TMP, `${logFile ?? name}.log`), "w");
  const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ["ignore", out, out] });
  child.benchName = name;
  children.push(child);
  child.on("exit", (code, sig) => {
    if (!child.stopping)
      log(`${name} exited early (code ${code}, signal ${sig}); see ${TMP}/${logFile ?? name}.log`);
  });
  return child;
}

function stop(child) {
  child.stopping = true;
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill("SIGKILL"), 5000);
    child.once("exit", () => {
      clearTimeout(t);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitReady(url, child, timeoutMs = 30000) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (child.exitCode !== null) fail(`${child.benchName} exited before it was ready (see ${TMP})`);
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {
      /* not yet */
    }
    await sleep(100);
  }
  fail(`${child.benchName} not ready at ${url} after ${timeoutMs} ms`);
}

/** The port a helper started with start(name, ...) prints as its first line (otlp-receiver, ceiling). */
async function printedPort(name, what, timeoutMs = 10000) {
  const file = path.join(TMP, `${name}.log`);
  const t0 = Date.now();
  for (;;) {
    const txt = fs.readFileSync(file, "utf8").trim();
    if (/^\d+$/.test(txt)) return Number(txt);
    if (Date.now() - t0 > timeoutMs) fail(`${what} did not start (see ${file})`);
    await sleep(50);
  }
}

// ---- /proc ------------------------------------------------------------------------------

function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime + stime
}

function statusKb(pid, key) {
  const m = fs
    .readFileSync(`/proc/${pid}/status`, "utf8")
    .match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"));
  return m ? Number(m[1]) : NaN;
}

// ---- machine ----------------------------------------------------------------------------

function machine(opaBin) {
  const cpuinfo = fs.readFileSync("/proc/cpuinfo", "utf8");
  const model = cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "unknown";
  const mem = fs.readFileSync("/proc/meminfo", "utf8").match(/^MemTotal:\s+(\d+) kB/m);
  const opaVersion =
    run(opaBin, ["version"], "opa version").match(/^Version:\s*(.*)$/m)?.[1] ?? "?";
  const acVersion = require("autocannon/package.json").version;
  return {
    nproc: os.availableParallelism?.() ?? os.cpus().length,
    model,
    memGiB: mem ? (Number(mem[1]) / 1024 / 1024).toFixed(1) : "?",
    kernel: os.release(),
    node: process.version,
    opa: opaVersion,
    autocannon: acVersion,
    load: os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" "),
  };
}

// ---- targets ------------------------------------------------------------------------------

const NOW_NS = Date.now() * 1e6;

/** The requests autocannon cycles through, per target. */
function requestsFor(target) {
  return MIX.map((m) => ({
    method: "POST",
    path: target.path,
    headers: { "content-type": "application/json" },
    body: JSON.stringify(
      target.kind === "opa"
        ? { input: policyInput(m.req, NOW_NS) }
        : target.path === "/v1/decisions"
          ? m.req
          : { input: m.req },
    ),
  }));
}

/** Outcome and sorted reason codes from a response body of any of the three shapes. */
function outcomeOf(target, json) {
  const d = target.path === "/v1/decisions" ? json : json?.result;
  return {
    outcome: d?.outcome,
    codes: (d?.reasons ?? [])
      .map((r) => r.code)
      .sort()
      .join(","),
  };
}

async function verify(targets) {
  const rows = [];
  for (let i = 0; i < MIX.length; i++) {
    const got = [];
    for (const t of targets) {
      const r = requestsFor(t)[i];
      const res = t.socketPath
        ? await postOverSocket(t.socketPath, r)
        : await fetch(t.base + r.path, {
            method: "POST",
            headers: r.headers,
            body: r.body,
          });
      const json = await res.json().catch(() => undefined);
      if (res.status !== 200)
        fail(
          `verify: ${t.label} answered ${res.status} for "${MIX[i].name}": ${JSON.stringify(json)}`,
        );
      got.push(outcomeOf(t, json));
    }
    const first = got[0];
    for (let k = 1; k < got.length; k++) {
      if (got[k].outcome !== first.outcome || got[k].codes !== first.codes) {
        fail(
          `verify: "${MIX[i].name}": ${targets[0].label} says ${first.outcome} [${first.codes}], ${targets[k].label} says ${got[k].outcome} [${got[k].codes}]`,
        );
      }
    }
    if (first.outcome !== MIX[i].outcome || !first.codes.split(",").includes(MIX[i].code)) {
      fail(
        `verify: "${MIX[i].name}": all say ${first.outcome} [${first.codes}], the reference table says ${MIX[i].outcome} ${MIX[i].code}`,
      );
    }
    rows.push({ name: MIX[i].name, outcome: first.outcome, codes: first.codes });
  }
  return rows;
}

/** A POST over the agent port's Unix domain socket, answered in fetch's shape ({status, json()}). */
function postOverSocket(socketPath, r) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method: "POST",
        path: r.path,
        headers: { ...r.headers, "content-length": Buffer.byteLength(r.body) },
      },
      (res) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("error", reject);
        res.on("end", () =>
          resolve({ status: res.statusCode, json: async () => JSON.parse(text) }),
        );
      },
    );
    req.on("error", reject);
    req.end(r.body);
  });
}

/**
 * The ceiling answers every request of the mix, on each path, with exactly what toolgate
 * answered for the captured allow: status, headers (names, order, values) and body bytes.
 */
async function verifyCeiling(targets, responses) {
  for (const t of targets) {
    const want = JSON.stringify(responses[t.path]);
    for (const [i, r] of requestsFor(t).entries()) {
      const got = JSON.stringify(await captureResponse(t.base, r.path, r.body, r.headers));
      if (got !== want)
        fail(`verify: ${t.label} answered "${MIX[i].name}" with ${got}, expected ${want}`);
    }
  }
}

// ---- load --------------------------------------------------------------------------------

function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/** One autocannon run against one target; returns throughput, latency percentiles, CPU and RSS. */
async function load(target, connections, seconds) {
  const lat = [];
  let bad = 0;
  const cpu0 = cpuSeconds(target.pid);
  const self0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const result = await new Promise((resolve, reject) => {
    const inst = autocannon(
      {
        url: target.base,
        ...(target.socketPath ? { socketPath: target.socketPath } : {}),
        connections,
        duration: seconds,
        requests: requestsFor(target),
        timeout: 10,
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    inst.on("response", (_client, status, _bytes, responseTime) => {
      lat.push(responseTime);
      if (status !== 200) bad++;
    });
  });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSeconds(target.pid) - cpu0;
  const selfCpu = process.cpuUsage(self0);
  const s = Float64Array.from(lat).sort();
  const errors = result.errors + result.timeouts + bad;
  if (errors > 0)
    fail(
      `${target.label} c=${connections}: ${result.errors} errors, ${result.timeouts} timeouts, ${bad} non-200 answers`,
    );
  return {
    rps: s.length / wall,
    n: s.length,
    p50: pct(s, 50),
    p99: pct(s, 99),
    p999: pct(s, 99.9),
    cpuCores: cpu / wall,
    cpuUsPerReq: (cpu * 1e6) / s.length,
    loadgenCores: (selfCpu.user + selfCpu.system) / 1e6 / wall,
    hwmMB: statusKb(target.pid, "VmHWM") / 1024,
  };
}

// ---- statistics ----------------------------------------------------------------------------

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
const spread = (xs, d = 2) =>
  xs.length > 1 ? `${f(Math.min(...xs), d)}–${f(Math.max(...xs), d)}` : f(xs[0], d);
/** One spanDelta in words. */
const spanLine = (what, d) =>
  d.failed
    ? `${what}: not measured (${d.failed})`
    : `${what}: ${d.decisions} decisions, ${d.received} spans received (${f((100 * d.received) / d.decisions, 1)} %), ${d.dropped} dropped${d.undecodable ? `, ${d.undecodable} export requests the receiver could not decode` : ""}`;

// ---- main ------------------------------------------------------------------------------------

async function main() {
  const started = Date.now();
  if (!flag("--no-build")) {
    log("building dist/ (tsc -p tsconfig.build.json)");
    run(
      NODE,
      [path.join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"],
      "tsc",
    );
  }
  const opaBin = run(path.join(ROOT, "scripts", "tools.sh"), ["opa"], "scripts/tools.sh opa")
    .trim()
    .split("\n")
    .pop();
  const regoBundle = path.join(TMP, "rego-bundle.tar.gz");
  run(
    opaBin,
    [
      "build",
      "-b",
      "rego",
      "--ignore",
      "*_test.rego",
      "--ignore",
      "capabilities.json",
      "-o",
      regoBundle,
    ],
    "opa build (rego bundle)",
  );
  const wasmBundle = path.join(ROOT, "bundles", "support-triage.tar.gz");
  const mach = machine(opaBin);
  log(
    `machine: ${mach.nproc} cpus, ${mach.model}, node ${mach.node}, opa ${mach.opa}; temp ${TMP}`,
  );

  // Base environment without inherited OTEL_* / TOOLGATE_* settings.
  const baseEnv = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !k.startsWith("OTEL_") && !k.startsWith("TOOLGATE_"),
    ),
  );

  const receiver = start(
    "otlp-receiver",
    NODE,
    [path.join(ROOT, "scripts", "bench", "otlp-receiver.mjs")],
    baseEnv,
  );
  const receiverPort = await printedPort("otlp-receiver", "OTLP receiver");

  /** nodeArgs: node's own options (default: --cpu-prof into --cpu-prof <dir> when given and audit is on). */
  async function startToolgate(name, audit, extraEnv = {}, nodeArgs = undefined) {
    const port = await freePort();
    const controlPort = await freePort();
    const stateDir = path.join(TMP, `state-${name}`);
    fs.mkdirSync(stateDir);
    const env = {
      ...baseEnv,
      TOOLGATE_AGENT_PORT: String(port),
      // a free control port each (its /metrics: spans dropped, decisions): with the default
      // (8182) the second toolgate to start fails to listen (EADDRINUSE) and keeps serving
      // decisions half-started
      TOOLGATE_CONTROL_PORT: String(controlPort),
      TOOLGATE_STATE_DIR: stateDir,
      TOOLGATE_BUNDLE: wasmBundle,
      TOOLGATE_AUDIT_HMAC_KEY: HMAC_KEY,
      ...auditEnv(audit, receiverPort),
      ...extraEnv,
    };
    nodeArgs ??=
      audit && CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${path.resolve(CPU_PROF)}`] : [];
    const child = start(
      name,
      NODE,
      [...nodeArgs, path.join(ROOT, "bin", "toolgate.js"), "serve"],
      env,
    );
    return { child, port, controlPort };
  }

  /**
   * Span accounting of an audit-on toolgate, once the receiver got nothing for 1.5 s (its
   * queue drained; at most 60 s): the decisions it made (toolgate_decisions_total), the spans
   * it dropped (toolgate_spans_dropped, from its /metrics) and the spans the receiver got (from
   * every toolgate that exports to it). Never throws: {failed} instead.
   */
  async function spanCounts(tg) {
    try {
      const stats = async () => (await fetch(`http://127.0.0.1:${receiverPort}/stats`)).json();
      let last = await stats();
      for (let still = 0, t0 = Date.now(); still < 1500 && Date.now() - t0 < 60_000;) {
        await sleep(250);
        const now = await stats();
        still = now.spans === last.spans ? still + 250 : 0;
        last = now;
      }
      const text = await (await fetch(`http://127.0.0.1:${tg.controlPort}/metrics`)).text();
      const sum = (name) =>
        text
          .split("\n")
          .filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
          .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
      return {
        decisions: sum("toolgate_decisions_total"),
        dropped: sum("toolgate_spans_dropped"),
        received: last.spans,
        undecodable: last.undecodable,
      };
    } catch (e) {
      log(`span accounting: ${e.message}`);
      return { failed: e.message };
    }
  }
  /** What happened between two spanCounts of the same toolgate. */
  const spanDelta = (a, b) =>
    a.failed || b.failed
      ? { failed: a.failed ?? b.failed }
      : {
          decisions: b.decisions - a.decisions,
          dropped: b.dropped - a.dropped,
          received: b.received - a.received,
          undecodable: b.undecodable - a.undecodable,
        };

  if (ONLY_SWAP) {
    const S = await measureSwap(startToolgate, wasmBundle);
    await stop(receiver);
    process.stdout.write(
      ["## Bundle swap under load", "", ...renderSwap(S), "", swapSummary(S), ""].join("\n"),
    );
    if (S.failed || !swapOk(S)) process.exitCode = 1;
    return;
  }

  const opaPort = await freePort();
  const opaProc = start(
    "opa",
    opaBin,
    [
      "run",
      "--server",
      "--addr",
      `127.0.0.1:${opaPort}`,
      "--bundle",
      regoBundle,
      "--skip-version-check",
      "--log-level",
      "error",
      "--log-level-request",
      "error",
    ],
    baseEnv,
  );

  // the agent port also on a Unix domain socket (server.agent.socket): measured beside TCP
  const udsPath = path.join(TMP, "agent-socket", "agent.sock");
  const tgOn = await startToolgate("toolgate-audit-on", true, { TOOLGATE_AGENT_SOCKET: udsPath });
  const tgOff = await startToolgate("toolgate-audit-off", false);

  await waitReady(`http://127.0.0.1:${opaPort}/health?bundles`, opaProc);
  await waitReady(`http://127.0.0.1:${tgOn.port}/health/ready`, tgOn.child);
  await waitReady(`http://127.0.0.1:${tgOff.port}/health/ready`, tgOff.child);
  await sleep(1000);
  const idleRssMB = statusKb(tgOn.child.pid, "VmRSS") / 1024;
  const idleRssOffMB = statusKb(tgOff.child.pid, "VmRSS") / 1024;
  const opaIdleRssMB = statusKb(opaProc.pid, "VmRSS") / 1024;
  log(
    `idle RSS: toolgate ${f(idleRssMB, 1)} MB (audit off ${f(idleRssOffMB, 1)} MB), opa ${f(opaIdleRssMB, 1)} MB`,
  );

  const opa = {
    kind: "opa",
    label: "OPA /v1/data/toolgate/decision",
    path: "/v1/data/toolgate/decision",
    base: `http://127.0.0.1:${opaPort}`,
    pid: opaProc.pid,
  };
  const tg = TG_PATHS.map((p) => ({
    kind: "toolgate",
    label: `toolgate ${p}`,
    path: p,
    base: `http://127.0.0.1:${tgOn.port}`,
    pid: tgOn.child.pid,
  }));
  const tgUds = {
    kind: "toolgate-uds",
    label: "toolgate /v1/decisions over UDS",
    path: "/v1/decisions",
    base: "http://localhost",
    socketPath: udsPath,
    pid: tgOn.child.pid,
  };
  const tgOffTarget = {
    kind: "toolgate",
    label: "toolgate /v1/decisions (audit off)",
    path: "/v1/decisions",
    base: `http://127.0.0.1:${tgOff.port}`,
    pid: tgOff.child.pid,
  };

  log("verifying that OPA and toolgate agree on every request of the mix");
  const verified = await verify([opa, ...tg, tgUds, tgOffTarget]);

  // The platform's ceiling: a bare node:http server answering, per path, what the audit-on
  // toolgate answered for an allow of the mix (status, headers, body bytes).
  const ceilingResponses = {};
  for (const t of tg) {
    const r = requestsFor(t)[CEILING_REQUEST];
    ceilingResponses[t.path] = await captureResponse(t.base, r.path, r.body, r.headers);
  }
  const ceilingFile = path.join(TMP, "ceiling-responses.json");
  fs.writeFileSync(ceilingFile, JSON.stringify(ceilingResponses));
  const ceilingProc = start(
    "ceiling",
    NODE,
    [path.join(ROOT, "scripts", "bench", "ceiling.mjs"), ceilingFile],
    baseEnv,
  );
  const ceilingPort = await printedPort("ceiling", "bare node:http ceiling");
  await waitReady(`http://127.0.0.1:${ceilingPort}/health`, ceilingProc);
  await sleep(500);
  const ceilingIdleRssMB = statusKb(ceilingProc.pid, "VmRSS") / 1024;
  const ceil = TG_PATHS.map((p) => ({
    kind: "ceiling",
    label: `bare node:http ${p} (ceiling)`,
    path: p,
    base: `http://127.0.0.1:${ceilingPort}`,
    pid: ceilingProc.pid,
  }));
  log(`checking that the ceiling answers every request of the mix with toolgate's bytes`);
  await verifyCeiling(ceil, ceilingResponses);

  // Side by side: per concurrency, warm up each target, then rounds with alternating order.
  const sideBySide = []; // {conns, round, label, ...metrics}
  const spansBefore = await spanCounts(tgOn);
  const all = [opa, ...tg, tgUds, ...ceil];
  for (const c of CONNS) {
    for (const t of all) await load(t, c, WARMUP);
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? all : [...all].reverse();
      for (const t of order) {
        const m = await load(t, c, DURATION);
        sideBySide.push({
          conns: c,
          round: r + 1,
          label: t.label,
          path: t.path,
          kind: t.kind,
          ...m,
        });
        log(
          `c=${c} round ${r + 1} ${t.label}: ${f(m.rps, 0)} req/s p50 ${f(m.p50, 3)} ms p99 ${f(m.p99, 3)} ms cpu ${f(m.cpuCores)} cores`,
        );
      }
    }
  }

  const spansSideBySide = spanDelta(spansBefore, await spanCounts(tgOn));
  log(`spans, side by side: ${JSON.stringify(spansSideBySide)}`);

  // Audit on vs off, /v1/decisions at the middle concurrency.
  // A fresh audit-on process, so that both sides have the same history (started, verified,
  // warmed up): the side-by-side one has served minutes of load by now.
  const auditRuns = [];
  const tgOnFresh = await startToolgate("toolgate-audit-on-fresh", true);
  await waitReady(`http://127.0.0.1:${tgOnFresh.port}/health/ready`, tgOnFresh.child);
  const onT = {
    kind: "toolgate",
    label: "toolgate /v1/decisions (audit on, fresh)",
    path: "/v1/decisions",
    base: `http://127.0.0.1:${tgOnFresh.port}`,
    pid: tgOnFresh.child.pid,
  };
  await verify([onT]);
  const spansAuditBefore = await spanCounts(tgOnFresh);
  for (let w = 0; w < 2; w++)
    for (const t of [onT, tgOffTarget]) await load(t, AUDIT_CONNS, WARMUP);
  for (let r = 0; r < AUDIT_ROUNDS; r++) {
    const order = r % 2 === 0 ? [onT, tgOffTarget] : [tgOffTarget, onT];
    for (const t of order) {
      const m = await load(t, AUDIT_CONNS, AUDIT_DURATION);
      auditRuns.push({ round: r + 1, audit: t === onT ? "on" : "off", ...m });
      log(
        `audit ${t === onT ? "on" : "off"} c=${AUDIT_CONNS} round ${r + 1}: ${f(m.rps, 0)} req/s p99 ${f(m.p99, 3)} ms`,
      );
    }
  }
  const spansAudit = spanDelta(spansAuditBefore, await spanCounts(tgOnFresh));
  log(`spans, audit on vs off: ${JSON.stringify(spansAudit)}`);
  const receiverStats = await (await fetch(`http://127.0.0.1:${receiverPort}/stats`)).json();
  const peak = {
    opa: statusKb(opaProc.pid, "VmHWM") / 1024,
    tgOn: statusKb(tgOn.child.pid, "VmHWM") / 1024,
    tgOff: statusKb(tgOff.child.pid, "VmHWM") / 1024,
    ceiling: statusKb(ceilingProc.pid, "VmHWM") / 1024,
  };
  const logBytes = fs.statSync(path.join(TMP, "toolgate-audit-on.log")).size;
  const trailBytes = dirBytes(path.join(TMP, "state-toolgate-audit-on"));

  await Promise.all([
    stop(tgOn.child),
    stop(tgOff.child),
    stop(tgOnFresh.child),
    stop(opaProc),
    stop(ceilingProc),
  ]);

  // Where the time goes: one load run of a fresh audit-on toolgate under node --cpu-prof.
  const profile = PROFILE ? await measureProfile(startToolgate) : undefined;
  if (profile?.failed) process.exitCode = 1;

  // Bundle swap under load: its own toolgate (audit on, spans to the same receiver), the others stopped.
  const swap = await measureSwap(startToolgate, wasmBundle);
  if (swap.failed || !swapOk(swap)) process.exitCode = 1;
  await stop(receiver);

  // Fleet mode: PostgreSQL, toolgate control and 8 fleet sidecars (scripts/bench/fleet.mjs).
  const fleet = measureFleet();
  if (fleet.failed) process.exitCode = 1;

  // Session state (#19) and the MCP proxy (#17), each in its own process.
  const session = measureScript("session", ["--expose-gc"], QUICK ? ["--iterations", "1000"] : []);
  const mcp = measureScript("mcp", [], QUICK ? ["--calls", "100", "--rounds", "1"] : []);
  if (session.failed || mcp.failed) process.exitCode = 1;

  // OTLP encoder A/B (#18): the recorded result (scripts/bench/encoder-ab.md); the
  // hand-written encoder lost and was deleted, so it is not re-measured.
  const encoderAb = measureScript("encoder-ab", [], []);
  if (encoderAb.failed) process.exitCode = 1;

  // In separate processes, several times: on this VM one process's p50 swings 1.5-2x from the next's.
  log(`in-process timings (scripts/bench/inproc.mjs, ${INPROC_RUNS} processes)`);
  let inproc;
  try {
    const runs = [];
    for (let k = 0; k < INPROC_RUNS; k++) {
      runs.push(
        JSON.parse(
          run(
            NODE,
            [
              path.join(ROOT, "scripts", "bench", "inproc.mjs"),
              "--json",
              "--iterations",
              String(INPROC_ITERS),
            ],
            "inproc",
          ),
        ),
      );
      log(`in-process run ${k + 1}: evaluateJson p50 ${f(runs[k].evaluate.all.p50_us, 1)} µs`);
    }
    // the table shows the run with the median evaluate p50; the summary names all of them
    const byP50 = [...runs].sort((a, b) => a.evaluate.all.p50_us - b.evaluate.all.p50_us);
    // Batches from every process, pooled: those whose calibration ran within 15 % of the
    // fastest calibration seen are the machine at full speed.
    const batches = runs.flatMap((x) => x.phases.batches);
    const fastest = Math.min(...batches.map((b) => b.calib_p50_us));
    const full = batches.filter((b) => b.calib_p50_us <= fastest * 1.15);
    inproc = {
      ...byP50[Math.floor((byP50.length - 1) / 2)],
      runsP50: runs.map((x) => x.evaluate.all.p50_us),
      runsDecideP50: runs.map((x) => x.decide.all.p50_us),
      phase: {
        batches: batches.length,
        fullSpeed: full.length,
        fastestCalibUs: fastest,
        fullSpeedP50: median(full.map((b) => b.eval_p50_us)),
        allP50: median(batches.map((b) => b.eval_p50_us)),
        slowestCalibUs: Math.max(...batches.map((b) => b.calib_p50_us)),
      },
    };
  } catch (e) {
    // Keep the HTTP results: report the in-process part as failed and fail the run at the end.
    log(e.message);
    process.exitCode = 1;
    const nan = { n: 0, p50_us: NaN, p99_us: NaN, p999_us: NaN };
    inproc = {
      bundle: "bundles/support-triage.tar.gz",
      failed: e.message.split("\n")[0],
      evaluate: { all: nan, per: MIX.map((m) => ({ name: m.name, ...nan })) },
      decide: { all: nan, per: MIX.map((m) => ({ name: m.name, ...nan })) },
      runsP50: [NaN],
      runsDecideP50: [NaN],
      phase: {
        batches: 0,
        fullSpeed: 0,
        fastestCalibUs: NaN,
        fullSpeedP50: NaN,
        allP50: NaN,
        slowestCalibUs: NaN,
      },
    };
  }

  const report = renderReport({
    mach,
    verified,
    sideBySide,
    auditRuns,
    inproc,
    idleRssMB,
    idleRssOffMB,
    opaIdleRssMB,
    ceilingIdleRssMB,
    ceilingResponses,
    profile,
    peak,
    receiverStats,
    spansSideBySide,
    spansAudit,
    logBytes,
    trailBytes,
    swap,
    fleet,
    session,
    mcp,
    encoderAb,
    seconds: (Date.now() - started) / 1000,
  });
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, report);
  process.stdout.write(report.slice(report.indexOf("## Summary")));
  log(
    `wrote ${path.relative(process.cwd(), OUT) || OUT} in ${f((Date.now() - started) / 1000, 0)} s`,
  );
}

/**
 * scripts/bench/<name>.mjs in its own process: its markdown (stdout, or the
 * --md file it writes), or {failed}. Never throws.
 */
function measureScript(name, nodeFlags, args) {
  log(`${name} (scripts/bench/${name}.mjs)`);
  const script = path.join(ROOT, "scripts", "bench", `${name}.mjs`);
  const r = spawnSync(process.execPath, [...nodeFlags, script, ...args], {
    cwd: ROOT,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 16 * 1024 * 1024,
  });
  if (r.status !== 0 || !r.stdout.trim())
    return { failed: `scripts/bench/${name}.mjs exited ${r.status}` };
  return { md: r.stdout.trim() };
}

/**
 * Fleet mode, in its own process (scripts/bench/fleet.mjs): kill-switch
 * propagation over 8 sidecars, budgeted decision latency, the throughput of a
 * tool without fleet state beside single-pod. Never throws.
 */
function measureFleet() {
  log("fleet mode (scripts/bench/fleet.mjs)");
  const md = path.join(TMP, "fleet.md");
  const json = path.join(TMP, "fleet.json");
  const args = [path.join(ROOT, "scripts", "bench", "fleet.mjs"), "--md", md, "--json", json];
  if (QUICK) args.push("--runs", "3", "--budgeted", "200", "--rounds", "1", "--seconds", "2");
  const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: "utf8", stdio: "inherit" });
  if (r.status !== 0 || !fs.existsSync(md))
    return { failed: `scripts/bench/fleet.mjs exited ${r.status}` };
  return { md: fs.readFileSync(md, "utf8"), result: JSON.parse(fs.readFileSync(json, "utf8")) };
}

/**
 * Bundle swap under load: a toolgate (audit on) whose policy is a watched file,
 * driven at SWAP_CONNS with the mix; rounds alternate a run with revisions
 * renamed over the file every SWAP_INTERVAL_MS and a run without. Never throws:
 * a failure is returned as {failed} so the rest of the report is kept.
 */
async function measureSwap(startToolgate, wasmBundle) {
  const maxSwaps = Math.max(
    0,
    Math.floor((SWAP_DURATION * 1000 - SWAP_MARGIN_MS) / SWAP_INTERVAL_MS),
  );
  const base = {
    conns: SWAP_CONNS,
    seconds: SWAP_DURATION,
    rounds: ROUNDS,
    intervalMs: SWAP_INTERVAL_MS,
    marginMs: SWAP_MARGIN_MS,
    watchMs: SWAP_WATCH_MS,
    warmup: WARMUP,
  };
  let tg;
  try {
    const dir = path.join(TMP, "swap");
    fs.mkdirSync(dir);
    const prep = await makeRevisions(ROOT, wasmBundle, dir, 1 + ROUNDS * maxSwaps, "bench-swap");
    const target = path.join(dir, "support-triage.tar.gz");
    fs.copyFileSync(prep.revisions[0].file, target);
    const queue = prep.revisions.slice(1);
    tg = await startToolgate("toolgate-swap", true, {
      TOOLGATE_POLICY_SOURCE: "file",
      TOOLGATE_BUNDLE: target,
      TOOLGATE_POLICY_FILE_WATCH_INTERVAL_MS: String(SWAP_WATCH_MS),
    });
    const tgBase = `http://127.0.0.1:${tg.port}`;
    await waitReady(`${tgBase}/health/ready`, tg.child);
    const t = {
      kind: "toolgate",
      label: "toolgate /v1/decisions (swap target)",
      path: "/v1/decisions",
      base: tgBase,
      pid: tg.child.pid,
    };
    log(`bundle swap: verifying the swap target (revision ${prep.revisions[0].revision})`);
    const expected = await verify([t]);
    const requests = requestsFor(t).map((r, i) => ({
      ...r,
      name: MIX[i].name,
      expected: { outcome: expected[i].outcome, codes: expected[i].codes },
    }));
    const known = new Set(prep.revisions.map((r) => r.revision));
    const opts = {
      base: tgBase,
      statusUrl: `${tgBase}/v1/status`,
      requests,
      connections: SWAP_CONNS,
      known,
      target,
      intervalMs: SWAP_INTERVAL_MS,
      marginMs: SWAP_MARGIN_MS,
      cpu: () => cpuSeconds(tg.child.pid),
    };
    await swapLoad({ ...opts, seconds: WARMUP });
    const runs = [];
    for (let r = 0; r < ROUNDS; r++) {
      for (const swapping of r % 2 === 0 ? [false, true] : [true, false]) {
        const m = await swapLoad({
          ...opts,
          seconds: SWAP_DURATION,
          swaps: swapping ? queue : undefined,
        });
        runs.push({ round: r + 1, swapping, ...m });
        const seen = m.swaps.filter((s) => s.firstDecisionMs !== undefined).length;
        log(
          `bundle swap round ${r + 1} ${swapping ? `swaps ${m.swaps.length} (seen ${seen})` : "no swap"}: ${f(m.rps, 0)} req/s p99 ${f(m.p99, 3)} ms p99.9 ${f(m.p999, 3)} ms, failed ${m.failed}, wrong ${m.wrong}`,
        );
      }
    }
    await stop(tg.child);
    tg = undefined;
    // cross-check with toolgate's own log: one bundle.activated per revision, no bundle.rejected
    const events = spawnSync(
      "grep",
      ["-F", '"event":"bundle.', path.join(TMP, "toolgate-swap.log")],
      {
        encoding: "utf8",
        maxBuffer: 16 << 20,
      },
    ).stdout;
    const count = (ev) => events.split("\n").filter((l) => l.includes(`"event":"${ev}"`)).length;
    const S = {
      ...base,
      logActivated: count("bundle.activated"),
      logRejected: count("bundle.rejected"),
      prepared: prep.revisions.length,
      baseRevision: prep.baseRevision,
      dataChanged: prep.dataChanged,
      runs,
    };
    const tot = swapTotals(S);
    if (!swapOk(S))
      log(
        `bundle swap: NOT clean: ${tot.swaps} swaps, ${tot.seen} seen, ${tot.failed} failed, ${tot.wrong} wrong, ${tot.unknownRev} unknown revisions, ${tot.rejected} rejections`,
      );
    return S;
  } catch (e) {
    log(`bundle swap: ${e instanceof Fail ? e.message : e.stack}`);
    return { ...base, failed: String(e.message).split("\n")[0] };
  } finally {
    if (tg) await stop(tg.child);
  }
}

/**
 * Where a decision's time goes: a fresh audit-on toolgate started under
 * node --cpu-prof, checked against the mix and warmed up like the others, then
 * one load run of /v1/decisions at PROFILE_CONNS; the profile of its main thread
 * (and of its worker threads) is cut to that run and summarised per function and
 * per area (scripts/bench/profile-summary.mjs). Never throws: a failure is
 * returned as {failed} so the rest of the report is kept.
 */
async function measureProfile(startToolgate) {
  const dir = CPU_PROF
    ? path.resolve(CPU_PROF, "decision-profile")
    : path.join(TMP, "decision-profile");
  let tg;
  try {
    fs.mkdirSync(dir, { recursive: true });
    tg = await startToolgate("toolgate-profile", true, {}, [
      "--cpu-prof",
      `--cpu-prof-dir=${dir}`,
      `--cpu-prof-interval=${PROFILE_INTERVAL_US}`,
    ]);
    const base = `http://127.0.0.1:${tg.port}`;
    await waitReady(`${base}/health/ready`, tg.child);
    const t = {
      kind: "toolgate",
      label: "toolgate /v1/decisions (audit on, profiled)",
      path: "/v1/decisions",
      base,
      pid: tg.child.pid,
    };
    await verify([t]);
    for (let w = 0; w < 2; w++) await load(t, PROFILE_CONNS, WARMUP);
    const t0 = process.hrtime.bigint();
    const m = await load(t, PROFILE_CONNS, PROFILE_DURATION);
    const t1 = process.hrtime.bigint();
    const pid = tg.child.pid;
    await stop(tg.child); // SIGTERM: toolgate exits cleanly and node writes the profiles
    tg = undefined;
    // CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile; thread 0 is the main thread
    const files = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith(".cpuprofile") && f.split(".")[3] === String(pid))
      .map((f) => ({ file: path.join(dir, f), tid: Number(f.split(".")[4]) }))
      .sort((a, b) => a.tid - b.tid);
    const main = files.find((x) => x.tid === 0);
    if (!main) fail(`no main-thread profile of pid ${pid} in ${dir}`);
    // the profile's clock is CLOCK_MONOTONIC in µs, process.hrtime's in ns
    const window = { from: Number(t0 / 1000n), to: Number(t1 / 1000n), decisions: m.n };
    const S = summariseProfile(main.file, { top: PROFILE_TOP, ...window });
    const expected = Number(t1 - t0) / 1000 / PROFILE_INTERVAL_US;
    if (S.samples < expected / 4)
      fail(
        `the main-thread profile has ${S.samples} samples in the load run, expected about ${f(expected, 0)} (clock mismatch?)`,
      );
    const workers = files
      .filter((x) => x.tid !== 0)
      .map((x) => ({ tid: x.tid, ...summariseProfile(x.file, { top: 5, ...window }) }));
    log(
      `profile: ${f(m.rps, 0)} req/s, ${S.samples} main-thread samples; top: ${S.areas
        .slice(0, 4)
        .map((a) => `${a.area} ${f(a.usPerDecision, 1)} µs`)
        .join(", ")}`,
    );
    return { dir, load: m, main: S, workers, seconds: PROFILE_DURATION };
  } catch (e) {
    log(`profile: ${e instanceof Fail ? e.message : e.stack}`);
    return { failed: String(e.message).split("\n")[0] };
  } finally {
    if (tg) await stop(tg.child);
  }
}

function dirBytes(dir) {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) n += fs.statSync(path.join(e.parentPath ?? e.path, e.name)).size;
  }
  return n;
}

// ---- report ------------------------------------------------------------------------------------

function renderReport(R) {
  const L = [];
  const p = (s = "") => L.push(s);
  const { mach } = R;
  p("# Benchmarks");
  p();
  p("Generated by `npm run bench` (scripts/bench.mjs); this file is replaced on every run.");
  p(
    "Rerun: `npm run bench` (about 8 minutes; `npm run bench -- --quick` for a 1-round smoke run that writes to a temp file).",
  );
  p("The first run may build the pinned OPA CLI (`scripts/tools.sh opa`, needs Go).");
  p();
  p(
    `Run: ${new Date().toISOString()}${QUICK ? " (**quick run**: 1 round, short durations; not for comparison)" : ""}, took ${f(R.seconds, 0)} s.`,
  );
  p();
  p("## Machine");
  p();
  p(`- CPUs: ${mach.nproc} × ${mach.model}`);
  p(`- memory: ${mach.memGiB} GiB; kernel ${mach.kernel}; load average at start ${mach.load}`);
  p(`- node ${mach.node}; opa ${mach.opa}; autocannon ${mach.autocannon}`);
  p();
  p("## Setup");
  p();
  p(
    `- **OPA**: \`opa run --server --addr 127.0.0.1:<port> --bundle <rego-bundle> --skip-version-check --log-level error\`, the bundle built by \`opa build -b rego --ignore '*_test.rego' --ignore capabilities.json\` (plain Rego, no wasm; OPA's decision logs are off by default). Requests: \`POST /v1/data/toolgate/decision\` with \`{"input": {"request": <request>, "verified": {...}}}\`, the input toolgate's policy gets.`,
  );
  p(
    "- **toolgate**: `node bin/toolgate.js serve` from dist/ with bundles/support-triage.tar.gz (wasm). **Audit on**: spans exported over OTLP/HTTP (protobuf) to a local receiver (scripts/bench/otlp-receiver.mjs), decision logs on at level info (stdout to a file), audit trail on; the audit work runs on the audit worker thread (`audit.worker`, the default; docs/audit.md). Requests: `POST /v1/decisions` with the request, `POST /v1/data/toolgate/decision` with `{\"input\": <request>}`; `/v1/decisions` also over its agent port's Unix domain socket (`server.agent.socket`; autocannon's `socketPath`), a target of its own in the same rounds.",
  );
  p(
    `- **Load**: autocannon (programmatic, in the bench process, one thread) cycling through a fixed mix of ${MIX.length} reference-table requests per connection; concurrency ${CONNS.join(", ")}; ${WARMUP} s warm-up per target and concurrency; ${ROUNDS} round(s) × ${DURATION} s per target; the order of targets (OPA, toolgate on both paths, the ceiling on both paths) reverses every other round so all share machine noise. Latency is measured per response (float ms, all responses). The load generator shares the ${mach.nproc} CPUs with the server under test.`,
  );
  const cr = R.ceilingResponses;
  const crd = cr["/v1/decisions"];
  const cro = cr["/v1/data/toolgate/decision"];
  p(
    `- **Ceiling** (bare node:http, the platform's ceiling): scripts/bench/ceiling.mjs, one process of the same node binary (${mach.node}), \`node:http\` only, no framework. It answers every POST, once it has read the body fully, with a constant response per path: the status, the headers (${crd.headers.map(([k]) => k).join(", ")}; the values as captured, so the X-Request-ID is a constant where toolgate issues a fresh UUID of the same length per request; node:http adds Date, Connection and Keep-Alive itself, as it does for toolgate, same keep-alive timeout) and the body the audit-on toolgate answered for "${MIX[CEILING_REQUEST].name}" (an allow, with its signed grant): ${Buffer.byteLength(crd.body)} bytes on \`/v1/decisions\`, ${Buffer.byteLength(cro.body)} bytes on \`/v1/data/toolgate/decision\`. Driven with the same requests as toolgate on each path, the same concurrencies and warm-up, in the same alternating rounds. Its req/s is what this machine's node does with HTTP and nothing else, so toolgate's fraction of it is the share of the platform's capacity left after the decision's own work.`,
  );
  p(
    "- **CPU** is the server's utime+stime from /proc/<pid>/stat over the run (cores busy on average; CPU µs per request). **Peak RSS** is VmHWM from /proc/<pid>/status (over the whole process life).",
  );
  p();
  p(
    "Before measuring, every request of the mix is sent to OPA and to both toolgate endpoints (and to the audit-off toolgate); the run fails unless all give the same outcome and reason codes, and the reference table's (and unless the ceiling answers every request of the mix, on both paths, with exactly the captured status, headers and bytes):",
  );
  p();
  p("| request | outcome | reason codes |");
  p("|---|---|---|");
  for (const v of R.verified) p(`| ${v.name} | ${v.outcome} | ${v.codes} |`);
  p();

  p("## Side by side (audit on)");
  p();
  p(
    "Median over rounds; [min–max] in brackets. The bare node:http rows are the platform's ceiling (see Setup), not a decision server.",
  );
  p();
  p(
    "| conns | server / endpoint | req/s | p50 ms | p99 ms | p99.9 ms | CPU cores | CPU µs/req | peak RSS MB |",
  );
  p("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
  const groups = new Map();
  for (const r of R.sideBySide) {
    const k = `${r.conns}|${r.label}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(r);
  }
  const mm = (rs, key, d) =>
    `${f(median(rs.map((r) => r[key])), d)} [${spread(
      rs.map((r) => r[key]),
      d,
    )}]`;
  for (const [k, rs] of groups) {
    const [c, label] = k.split("|");
    p(
      `| ${c} | ${label} | ${mm(rs, "rps", 0)} | ${mm(rs, "p50", 3)} | ${mm(rs, "p99", 3)} | ${mm(rs, "p999", 3)} | ${mm(rs, "cpuCores", 2)} | ${mm(rs, "cpuUsPerReq", 0)} | ${f(Math.max(...rs.map((r) => r.hwmMB)), 1)} |`,
    );
  }
  p();
  p(
    `Load generator CPU (bench process) during these runs: ${spread(R.sideBySide.map((r) => r.loadgenCores))} cores.`,
  );
  p();

  p("### Ratios toolgate/OPA per round");
  p();
  p("Throughput ratio > 1 and p99 ratio < 1 favour toolgate.");
  p();
  p(
    `| conns | endpoint | ${Array.from({ length: ROUNDS }, (_, i) => `round ${i + 1} req/s`).join(" | ")} | ${Array.from({ length: ROUNDS }, (_, i) => `round ${i + 1} p99`).join(" | ")} | median req/s [spread] | median p99 [spread] |`,
  );
  p(`|---:|---|${"---:|".repeat(2 * ROUNDS + 2)}`);
  const ratios = {}; // path -> conns -> {tp: [], p99: []}
  for (const c of CONNS) {
    for (const tp of TG_PATHS) {
      const rt = [];
      const rl = [];
      for (let r = 1; r <= ROUNDS; r++) {
        const o = R.sideBySide.find((x) => x.conns === c && x.round === r && x.kind === "opa");
        const t = R.sideBySide.find(
          (x) => x.conns === c && x.round === r && x.kind === "toolgate" && x.path === tp,
        );
        rt.push(t.rps / o.rps);
        rl.push(t.p99 / o.p99);
      }
      (ratios[tp] ??= {})[c] = { tp: rt, p99: rl };
      p(
        `| ${c} | ${tp} | ${rt.map((x) => f(x)).join(" | ")} | ${rl.map((x) => f(x)).join(" | ")} | ${f(median(rt))} [${spread(rt)}] | ${f(median(rl))} [${spread(rl)}] |`,
      );
    }
  }
  p();

  p("### Ceiling: toolgate / bare node:http per round");
  p();
  p(
    "toolgate's throughput as a fraction of the bare node:http server's on the same path, concurrency and round (1.0 would be the platform's ceiling). CPU µs/req: medians over rounds, the server's whole process. Load generator cores: the bench process (autocannon, one thread) during the ceiling's runs; near 1.0 the ceiling is bounded by the load generator, not by node:http, and the fraction is an upper bound.",
  );
  p();
  p(
    `| conns | endpoint | ${Array.from({ length: ROUNDS }, (_, i) => `round ${i + 1}`).join(" | ")} | median [spread] | toolgate CPU µs/req | ceiling CPU µs/req | load generator cores (ceiling runs) |`,
  );
  p(`|---:|---|${"---:|".repeat(ROUNDS + 4)}`);
  const ceilingRatios = {}; // path -> conns -> [per round]
  for (const c of CONNS) {
    for (const tp of TG_PATHS) {
      const rt = [];
      const at = (kind, r) =>
        R.sideBySide.find(
          (x) => x.conns === c && x.round === r && x.kind === kind && x.path === tp,
        );
      for (let r = 1; r <= ROUNDS; r++) rt.push(at("toolgate", r).rps / at("ceiling", r).rps);
      (ceilingRatios[tp] ??= {})[c] = rt;
      const med = (kind, key) =>
        median(
          R.sideBySide
            .filter((x) => x.conns === c && x.kind === kind && x.path === tp)
            .map((x) => x[key]),
        );
      p(
        `| ${c} | ${tp} | ${rt.map((x) => f(x)).join(" | ")} | ${f(median(rt))} [${spread(rt)}] | ${f(med("toolgate", "cpuUsPerReq"), 0)} | ${f(med("ceiling", "cpuUsPerReq"), 0)} | ${f(med("ceiling", "loadgenCores"))} |`,
      );
    }
  }
  p();

  p("### Unix domain socket vs TCP");
  p();
  p(
    "The audit-on toolgate's `/v1/decisions` over its Unix domain socket (`server.agent.socket`) against the same process over TCP loopback, per round (same concurrency, same round). > 1 favours the socket.",
  );
  p();
  p(
    `| conns | ${Array.from({ length: ROUNDS }, (_, i) => `round ${i + 1}`).join(" | ")} | median req/s ratio [spread] | UDS p99 ms | TCP p99 ms | UDS CPU µs/req | TCP CPU µs/req |`,
  );
  p(`|---:|${"---:|".repeat(ROUNDS + 5)}`);
  const udsRatios = {}; // conns -> [per round]
  for (const c of CONNS) {
    const at = (kind, r) =>
      R.sideBySide.find(
        (x) => x.conns === c && x.round === r && x.kind === kind && x.path === "/v1/decisions",
      );
    const rt = [];
    for (let r = 1; r <= ROUNDS; r++) rt.push(at("toolgate-uds", r).rps / at("toolgate", r).rps);
    udsRatios[c] = rt;
    const med = (kind, key) =>
      median(
        R.sideBySide
          .filter((x) => x.conns === c && x.kind === kind && x.path === "/v1/decisions")
          .map((x) => x[key]),
      );
    p(
      `| ${c} | ${rt.map((x) => f(x)).join(" | ")} | ${f(median(rt))} [${spread(rt)}] | ${f(med("toolgate-uds", "p99"), 3)} | ${f(med("toolgate", "p99"), 3)} | ${f(med("toolgate-uds", "cpuUsPerReq"), 0)} | ${f(med("toolgate", "cpuUsPerReq"), 0)} |`,
    );
  }
  p();

  p("## Audit on vs off");
  p();
  p(
    `toolgate \`/v1/decisions\` at ${AUDIT_CONNS} connections, two toolgate processes with the same history (each started, checked against the mix and warmed up 2 × ${WARMUP} s, alternately): audit on as above, a fresh process started for this section; audit off: OTEL_SDK_DISABLED=true, TOOLGATE_AUDIT_TRAIL_ENABLED=false, TOOLGATE_AUDIT_LOG_DECISIONS=false, TOOLGATE_AUDIT_WORKER=false (no audit thread; redaction and the record still run, on the main thread), log level error. ${AUDIT_ROUNDS} rounds × ${AUDIT_DURATION} s, the order alternating per round; the cost is the median of the per-round costs.`,
  );
  p();
  p(
    "| round | audit on req/s | audit off req/s | cost % | on p99 ms | off p99 ms | on CPU µs/req | off CPU µs/req |",
  );
  p("|---:|---:|---:|---:|---:|---:|---:|---:|");
  const costs = [];
  for (let r = 1; r <= AUDIT_ROUNDS; r++) {
    const on = R.auditRuns.find((x) => x.round === r && x.audit === "on");
    const off = R.auditRuns.find((x) => x.round === r && x.audit === "off");
    const cost = 100 * (1 - on.rps / off.rps);
    costs.push(cost);
    p(
      `| ${r} | ${f(on.rps, 0)} | ${f(off.rps, 0)} | ${f(cost, 1)} | ${f(on.p99, 3)} | ${f(off.p99, 3)} | ${f(on.cpuUsPerReq, 0)} | ${f(off.cpuUsPerReq, 0)} |`,
    );
  }
  p();
  p(
    `Exported to the receiver during the run: ${R.receiverStats.requests} OTLP requests, ${f(R.receiverStats.bytes / 1e6, 1)} MB. Decision log written: ${f(R.logBytes / 1e6, 1)} MB; audit trail: ${f(R.trailBytes / 1e6, 1)} MB.`,
  );
  p();
  p(
    `Spans (every decision is recorded as one span): the decisions an audit-on toolgate made (\`toolgate_decisions_total\`), the spans the receiver got from it and the spans it dropped (\`toolgate_spans_dropped\`), from its \`/metrics\` and the receiver's count before and after the runs, each time once the receiver had been idle for 1.5 s (queue drained); warm-ups included. ${spanLine("Side by side (the audit-on toolgate, all its targets and concurrencies)", R.spansSideBySide)}. ${spanLine(`Audit on vs off (the fresh audit-on toolgate, c=${AUDIT_CONNS})`, R.spansAudit)}.`,
  );
  p();

  p("## OTLP encoder A/B (stock serializer vs hand-written, recorded)");
  p();
  p(R.encoderAb.md ?? `Not measured: ${R.encoderAb.failed}`);
  p();

  renderProfile(R.profile, p, R.auditRuns);

  p("## Memory");
  p();
  p(`| process | idle RSS after start MB | peak RSS (VmHWM) MB |`);
  p("|---|---:|---:|");
  p(`| toolgate, audit on | ${f(R.idleRssMB, 1)} | ${f(R.peak.tgOn, 1)} |`);
  p(`| toolgate, audit off | ${f(R.idleRssOffMB, 1)} | ${f(R.peak.tgOff, 1)} |`);
  p(`| opa | ${f(R.opaIdleRssMB, 1)} | ${f(R.peak.opa, 1)} |`);
  p(`| bare node:http (ceiling) | ${f(R.ceilingIdleRssMB, 1)} | ${f(R.peak.ceiling, 1)} |`);
  p();

  p("## In-process evaluation");
  p();
  p(
    `scripts/bench/inproc.mjs: \`PolicyEngine.evaluateJson(inputJson, nowNs)\` on ${R.inproc.bundle} (wasm evaluation: input bytes in, parsed result out), and \`Decider.decide\` built by \`buildParts(config, log, {audit: false})\` (identity, input assembly, evaluation, output check). Timed per call with process.hrtime.bigint() after warm-up, round-robin over the mix, ${R.inproc.evaluate.per[0].n} calls per request kind. Run in ${R.inproc.runsP50.length} separate processes, one after another: evaluateJson p50 per process ${R.inproc.runsP50.map((x) => f(x, 1)).join(", ")} µs; the table is the process with the median p50.`,
  );
  p();
  const ph = R.inproc.phase;
  p(
    `The machine's speed drifts in phases of seconds: each process also times ${f(ph.batches / Math.max(1, R.inproc.runsP50.length), 0)} short batches of evaluations, each beside a fixed calibration workload (\`JSON.parse\` of the same inputs). Calibration p50 ranged ${f(ph.fastestCalibUs, 2)}–${f(ph.slowestCalibUs, 2)} µs over the ${ph.batches} batches, and evaluation slowed with it. In the ${ph.fullSpeed} batches that ran at full speed (calibration within 15 % of the fastest), evaluateJson p50 was **${f(ph.fullSpeedP50, 1)} µs**; over all batches, slow phases included, ${f(ph.allP50, 1)} µs.`,
  );
  p();
  if (R.inproc.failed) p(`**In-process measurement failed**: ${R.inproc.failed}\n`);
  p("| request | evaluateJson p50 µs | p99 µs | Decider.decide p50 µs | p99 µs |");
  p("|---|---:|---:|---:|---:|");
  p(
    `| **all** | **${f(R.inproc.evaluate.all.p50_us, 1)}** | ${f(R.inproc.evaluate.all.p99_us, 1)} | **${f(R.inproc.decide.all.p50_us, 1)}** | ${f(R.inproc.decide.all.p99_us, 1)} |`,
  );
  for (let i = 0; i < R.inproc.evaluate.per.length; i++) {
    const e = R.inproc.evaluate.per[i];
    const d = R.inproc.decide.per[i];
    p(
      `| ${e.name} | ${f(e.p50_us, 1)} | ${f(e.p99_us, 1)} | ${f(d.p50_us, 1)} | ${f(d.p99_us, 1)} |`,
    );
  }
  p();
  p("## Bundle swap under load");
  p();
  for (const line of renderSwap(R.swap)) p(line);
  p();

  // Summary: the worst concurrency level decides (median over rounds at each level).
  const met = (ok) => (ok ? "met" : "not met");
  p("## Summary");
  p();
  p(
    `Ratios: the worst concurrency level of ${CONNS.join("/")} (median over ${ROUNDS} round(s) at each level; the spread is the min–max of the per-round ratios at that level).`,
  );
  p();
  for (const tp of TG_PATHS) {
    const worst = CONNS.map((c) => ({
      c,
      v: median(ratios[tp][c].tp),
      s: spread(ratios[tp][c].tp),
    })).sort((a, b) => a.v - b.v)[0];
    p(
      `throughput ratio (toolgate/OPA) ${tp}: ${f(worst.v)} — target ≥ 2.0: ${met(worst.v >= 2)} (c=${worst.c}, rounds ${worst.s})  `,
    );
  }
  for (const tp of TG_PATHS) {
    const worst = CONNS.map((c) => ({
      c,
      v: median(ratios[tp][c].p99),
      s: spread(ratios[tp][c].p99),
    })).sort((a, b) => b.v - a.v)[0];
    p(
      `p99 ratio (toolgate/OPA) ${tp}: ${f(worst.v)} — target ≤ 0.5: ${met(worst.v <= 0.5)} (c=${worst.c}, rounds ${worst.s})  `,
    );
  }
  p();
  // The ceiling: its own lines, exactly `ceiling fraction (toolgate/bare node:http) <path>: X`
  // (X = the worst concurrency's median ratio), each followed by its target (issue #20) in a
  // paragraph of its own; the details follow in another.
  const ceilingWorst = [];
  for (const tp of TG_PATHS) {
    const byConns = CONNS.map((c) => ({
      c,
      v: median(ceilingRatios[tp][c]),
      s: spread(ceilingRatios[tp][c]),
    }));
    const worst = [...byConns].sort((a, b) => a.v - b.v)[0];
    ceilingWorst.push({ tp, worst, byConns });
    p(`ceiling fraction (toolgate/bare node:http) ${tp}: ${f(worst.v)}`);
    p();
    p(
      `ceiling fraction target ${tp}: ≥ 0.25, stretch ≥ 0.4: ${worst.v >= 0.4 ? "met, stretch met" : worst.v >= 0.25 ? "met, stretch not met" : "not met"}`,
    );
    p();
  }
  p(
    `(throughput of toolgate over the bare node:http server, median over ${ROUNDS} round(s) at each concurrency; ${ceilingWorst
      .map(
        ({ tp, worst, byConns }) =>
          `${tp}: worst at c=${worst.c}, rounds ${worst.s}; per concurrency ${byConns.map((x) => `c=${x.c} ${f(x.v)}`).join(", ")}`,
      )
      .join("; ")})`,
  );
  p();
  p(
    `UDS/TCP throughput ratio /v1/decisions: ${CONNS.map((c) => `c=${c} ${f(median(udsRatios[c]))}`).join(", ")} (median over ${ROUNDS} round(s); the same toolgate over its Unix domain socket and over TCP loopback)`,
  );
  p();
  const ev = R.inproc.phase.fullSpeedP50;
  p(
    `in-process evaluate p50: ${f(ev, 1)} µs — target ≤ 20 µs: ${met(ev <= 20)} (at full machine speed: ${R.inproc.phase.fullSpeed} of ${R.inproc.phase.batches} batches; over all batches, slow phases included, ${f(R.inproc.phase.allP50, 1)} µs; per-process p50 ${spread(R.inproc.runsP50, 1)} µs; Decider.decide p50 ${f(median(R.inproc.runsDecideP50), 1)} µs)  `,
  );
  const cost = median(costs);
  p(
    `audit cost (throughput, /v1/decisions, c=${AUDIT_CONNS}): ${f(cost, 1)} % — target ≤ 5 %: ${met(cost <= 5)} (rounds ${spread(costs, 1)} %)  `,
  );
  const encoderLine = R.encoderAb.md?.split("\n").find((l) => l.startsWith("encoder A/B"));
  p(
    encoderLine !== undefined
      ? `${encoderLine}  `
      : `encoder A/B: not measured (${R.encoderAb.failed})  `,
  );
  p(`idle RSS: ${f(R.idleRssMB, 1)} MB — target ≤ 100 MB: ${met(R.idleRssMB <= 100)}  `);
  const spans = [R.spansSideBySide, R.spansAudit];
  const spanSum = (k) => spans.reduce((a, d) => a + d[k], 0);
  p(
    spans.some((d) => d.failed)
      ? `spans dropped under load: not measured (${spans.find((d) => d.failed).failed})  `
      : `spans dropped under load (audit-on toolgates, side by side and audit on vs off): ${spanSum("dropped")} of ${spanSum("decisions")} decisions, ${spanSum("received")} spans received — target 0 dropped, one span per decision: ${met(spanSum("dropped") === 0 && spanSum("received") === spanSum("decisions"))}  `,
  );
  p(swapSummary(R.swap));
  if (R.fleet.result !== undefined) {
    const fl = R.fleet.result;
    p(
      `fleet kill-switch propagation (${fl.sidecars} sidecars): p50 ${f(fl.propagation.p50)} ms, p99 ${f(fl.propagation.p99)} ms — target p99 ≤ 1000 ms: ${met(fl.propagation.p99 <= 1000 && fl.propagation.violations === 0 && fl.propagation.missed === 0)}  `,
    );
    p(
      `fleet budgeted decision p99: ${f(fl.budgeted.fleet.p99)} ms — target ≤ 5 ms: ${met(fl.budgeted.fleet.p99 <= 5)}  `,
    );
    p(
      `fleet-mode throughput ratio (fleet/single-pod, no fleet state, c=${fl.throughput.connections}): ${f(fl.throughput.ratio, 3)} — target ≥ 0.9: ${met(fl.throughput.ratio >= 0.9)}  `,
    );
  } else p(`fleet: not measured (${R.fleet.failed})  `);
  const sessionLine = R.session.md?.split("\n").find((l) => l.startsWith("decision cost with"));
  p(
    sessionLine !== undefined
      ? `${sessionLine}  `
      : `session: not measured (${R.session.failed})  `,
  );
  p();
  p("## Fleet");
  p();
  p(R.fleet.md ?? `Not measured: ${R.fleet.failed}`);
  p();
  p("## Session state");
  p();
  p(R.session.md ?? `Not measured: ${R.session.failed}`);
  p();
  p("## MCP proxy: added latency per tools/call");
  p();
  p(R.mcp.md ?? `Not measured: ${R.mcp.failed}`);
  return L.join("\n");
}

/** The report's profile section (see measureProfile). */
function renderProfile(P, p, auditRuns) {
  p("## Where the time goes (CPU profile)");
  p();
  if (P === undefined) {
    p("Not measured in this run (`--no-profile`).");
    p();
    return;
  }
  if (P.failed) {
    p(`**The profile run failed**: ${P.failed}`);
    p();
    return;
  }
  const S = P.main;
  const code = (x) => (x.includes("`") ? `\`\` ${x} \`\`` : `\`${x}\``);
  const on = median(auditRuns.filter((x) => x.audit === "on").map((x) => x.rps));
  p(
    `One load run of \`/v1/decisions\` (the mix, ${PROFILE_CONNS} connections, ${P.seconds} s) against a fresh audit-on toolgate (set up as above) started under \`node --cpu-prof --cpu-prof-interval=${PROFILE_INTERVAL_US}\`, checked against the mix and warmed up 2 × ${WARMUP} s first. The profile is cut to the load run (the samples between its start and end; the profile's clock is CLOCK_MONOTONIC, as process.hrtime's): ${S.samples} main-thread samples over ${f(S.windowUs / 1e6, 2)} s, ${P.load.n} decisions, ${f(P.load.rps, 0)} req/s under the profiler (p99 ${f(P.load.p99, 3)} ms; CPU ${f(P.load.cpuUsPerReq, 0)} µs/req, all threads) against ${f(on, 0)} req/s unprofiled at the same concurrency (audit on, the section above).`,
  );
  p();
  p(
    "Self time: the function on top of the stack when the sample was taken. µs per decision = the share of main-thread samples × the run's time / decisions, so the rows, idle included, add up to the main thread's wall time per decision (1 / throughput). Builtins such as JSON.parse and JSON.stringify have no frame of their own: they count in the JavaScript function that calls them (parseJsonText, sendJson). A sample's area is decided by its stack, leaf first: the first frame that belongs to an area wins; frames that serve many callers (natives such as writeUtf8String and postMessage, node:events, node:internal/crypto, timers, src/shared) leave it to their caller, so a socket write under res.end counts as node:http and a signature under src/grants as grant signing. Where: the compiled JavaScript in dist/ (line numbers are dist's), nm/ = node_modules.",
  );
  p();
  p("| area | µs per decision | % of main-thread samples |");
  p("|---|---:|---:|");
  for (const a of S.areas) p(`| ${a.area} | ${f(a.usPerDecision, 1)} | ${f(a.pct, 1)} |`);
  const busy = S.areas.filter((a) => a.key !== "idle");
  const sum = (xs, k) => xs.reduce((acc, x) => acc + x[k], 0);
  p(
    `| **busy (all but idle)** | **${f(sum(busy, "usPerDecision"), 1)}** | **${f(sum(busy, "pct"), 1)}** |`,
  );
  p(
    `| total (main-thread wall time per decision) | ${f(sum(S.areas, "usPerDecision"), 1)} | 100.0 |`,
  );
  p();
  p(`Top ${S.functions.length} functions by self time (main thread):`);
  p();
  p("| # | function | where | area | µs per decision | % of main-thread samples |");
  p("|---:|---|---|---|---:|---:|");
  S.functions.forEach((r, i) =>
    p(
      `| ${i + 1} | ${code(r.fn.replace(/\|/g, "\\|"))} | ${r.where} | ${r.area} | ${f(r.usPerDecision, 1)} | ${f(r.pct, 1)} |`,
    ),
  );
  p();
  // which worker is which: the audit worker (dist/audit/worker.js) or the WAL checkpoint
  // worker (dist/shared/checkpoint-worker.js), by where its samples are
  const isCheckpointer = (w) => w.functions.some((r) => /checkpoint-worker\.js/.test(r.where));
  const workersBusy = P.workers
    .filter((w) => !isCheckpointer(w))
    .reduce(
      (acc, w) =>
        acc +
        sum(
          w.areas.filter((a) => a.key !== "idle"),
          "usPerDecision",
        ),
      0,
    );
  p(
    `Samples are taken on a wall-clock timer: time the main thread is runnable but not running (on a 2-CPU machine shared with the load generator, typically right after a socket write wakes it) counts in the function it resumes in, mostly \`writeUtf8String\`. Cross-check: by the samples the main thread was busy ${f(sum(busy, "usPerDecision"), 1)} µs per decision and the audit worker thread ${f(workersBusy, 1)} µs; by /proc the process used ${f(P.load.cpuUsPerReq, 0)} CPU µs per request, all threads (any excess of the samples over that is waiting for a CPU).`,
  );
  p();
  for (const w of P.workers) {
    const wb = w.areas.filter((a) => a.key !== "idle");
    const top = w.functions.filter((r) => r.fn !== "(idle)").slice(0, 4);
    const tops = top.map((r) => `${code(r.fn)} ${r.where} ${f(r.usPerDecision, 1)} µs`).join(", ");
    if (isCheckpointer(w)) {
      p(
        `Worker thread ${w.tid} is the WAL checkpoint worker (src/shared/checkpointer.ts; started under load, it checkpoints approvals.db and containment.db off the event loop). Nearly all its ${w.samples} samples are its wait for work: \`Atomics.wait\` inside \`run\` blocks the thread in a JavaScript frame, which the wall-clock profiler samples as running; it is not CPU time (the /proc figure above has the process's CPU). Its samples by function: ${tops}.`,
      );
    } else {
      p(
        `Worker thread ${w.tid} (the audit worker): busy ${f(sum(wb, "usPerDecision"), 1)} µs per decision (${f(sum(wb, "pct"), 1)} % of its ${w.samples} samples); its top functions: ${tops}.`,
      );
    }
    p();
  }
}

main().catch((e) => {
  console.error(`bench: ${e instanceof Fail ? e.message : e.stack}`);
  process.exitCode = 1;
});
