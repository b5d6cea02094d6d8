#!/usr/bin/env node
// A/B of the OTLP/HTTP protobuf request encoder (issue #18): the transformer's
// stock ProtobufTraceSerializer against toolgate's hand-written encoder
// (src/telemetry/otlp-proto.ts), same build, chosen per process by the
// temporary TOOLGATE_OTLP_ENCODER=stock|toolgate. Needs dist/ (npm run build).
//
//   node scripts/bench/encoder-ab.mjs [--rounds 6] [--seconds 10] [--conns 16]
//        [--warmup 2] [--json FILE] [--keep]
//
// Two toolgate processes (`node bin/toolgate.js serve`, bundles/support-triage.tar.gz),
// audit on as in npm run bench (spans over OTLP/HTTP protobuf, decision logs at
// level info to a file, audit trail on, the audit worker thread), one per
// encoder, each exporting to its own OTLP receiver (scripts/bench/otlp-receiver.mjs,
// so the bytes each sends are counted apart). Both are checked against the mix,
// warmed up 2 × --warmup s alternately, then driven with autocannon at --conns
// over `POST /v1/decisions` (the bench's mix) in --rounds rounds of --seconds s,
// the order alternating per round. Per round: req/s, p99, the process's CPU
// µs/request and the audit worker thread's CPU µs/decision (from /proc), and
// what the receiver got. The decision rule (the issue's): keep the hand-written
// encoder only if the median over rounds of (its req/s / stock req/s) is ≥ 1.10.
// Prints markdown on stdout (npm run bench's "OTLP encoder A/B" section).
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { MIX } from "./mix.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(import.meta.url);
const autocannon = require("autocannon");

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "6" },
    seconds: { type: "string", default: "10" },
    conns: { type: "string", default: "16" },
    warmup: { type: "string", default: "2" },
    json: { type: "string" },
    keep: { type: "boolean", default: false },
  },
});
const ROUNDS = Number(values.rounds);
const SECONDS = Number(values.seconds);
const CONNS = Number(values.conns);
const WARMUP = Number(values.warmup);
const GAIN_NEEDED = 0.1;
const NODE = process.execPath;
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-bench-encoder-"));
const CLK_TCK =
  Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;
const log = (m) => process.stderr.write(`[encoder-ab] ${m}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (!fs.existsSync(path.join(ROOT, "dist", "src", "telemetry", "otlp-proto.js"))) {
  process.stderr.write("dist/ has no src/telemetry/otlp-proto.js: run `npm run build` first\n");
  process.exit(2);
}

// ---- processes -------------------------------------------------------------------------

const children = [];
process.on("exit", () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  if (!values.keep) fs.rmSync(TMP, { recursive: true, force: true });
});
for (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => process.exit(130));

function start(name, args, env) {
  const out = fs.openSync(path.join(TMP, `${name}.log`), "w");
  const child = spawn(NODE, args, { cwd: ROOT, env, stdio: ["ignore", out, out] });
  child.benchName = name;
  children.push(child);
  return child;
}

function stop(child) {
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

async function waitReady(url, child, timeoutMs = 30000) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (child.exitCode !== null)
      throw new Error(`${child.benchName} exited early; see ${TMP}/${child.benchName}.log`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      /* not yet */
    }
    await sleep(100);
  }
  throw new Error(`${child.benchName} not ready at ${url}`);
}

async function printedPort(name) {
  const file = path.join(TMP, `${name}.log`);
  for (const t0 = Date.now(); Date.now() - t0 < 10_000; await sleep(50)) {
    const txt = fs.readFileSync(file, "utf8").trim();
    if (/^\d+$/.test(txt)) return Number(txt);
  }
  throw new Error(`${name} did not print its port`);
}

// ---- /proc --------------------------------------------------------------------------------

function ticks(statFile) {
  const stat = fs.readFileSync(statFile, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]); // utime + stime
}
const cpuSeconds = (pid) => ticks(`/proc/${pid}/stat`) / CLK_TCK;

/** The audit worker's thread: Node names a worker_threads thread "WorkerThread" (toolgate runs one). */
function workerTid(pid) {
  const named = fs.readdirSync(`/proc/${pid}/task`).map((tid) => ({
    tid,
    comm: fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim(),
  }));
  const workers = named.filter((t) => t.comm === "WorkerThread");
  return { tid: workers.length === 1 ? workers[0].tid : undefined, named };
}

// ---- load ---------------------------------------------------------------------------------

const requests = MIX.map((m) => ({
  method: "POST",
  path: "/v1/decisions",
  headers: { "content-type": "application/json" },
  body: JSON.stringify(m.req),
}));

const pct = (s, p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];

async function receiverStats(arm) {
  return (await fetch(`http://127.0.0.1:${arm.receiverPort}/stats`)).json();
}

async function load(arm, seconds) {
  const lat = [];
  let bad = 0;
  const cpu0 = cpuSeconds(arm.pid);
  const w0 = arm.workerTid ? ticks(`/proc/${arm.pid}/task/${arm.workerTid}/stat`) : NaN;
  const r0 = await receiverStats(arm);
  const t0 = process.hrtime.bigint();
  const result = await new Promise((resolve, reject) => {
    const inst = autocannon(
      { url: arm.base, connections: CONNS, duration: seconds, requests, timeout: 10 },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    inst.on("response", (_c, status, _b, t) => {
      lat.push(t);
      if (status !== 200) bad++;
    });
  });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSeconds(arm.pid) - cpu0;
  const wcpu = arm.workerTid
    ? (ticks(`/proc/${arm.pid}/task/${arm.workerTid}/stat`) - w0) / CLK_TCK
    : NaN;
  await sleep(800); // the last batch leaves (scheduled delay 500 ms)
  const r1 = await receiverStats(arm);
  if (result.errors + result.timeouts + bad > 0)
    throw new Error(
      `${arm.name}: ${result.errors} errors, ${result.timeouts} timeouts, ${bad} non-200`,
    );
  const s = Float64Array.from(lat).sort();
  return {
    rps: s.length / wall,
    n: s.length,
    p50: pct(s, 50),
    p99: pct(s, 99),
    cpuUsPerReq: (cpu * 1e6) / s.length,
    workerUsPerReq: (wcpu * 1e6) / s.length,
    exports: r1.requests - r0.requests,
    bytesPerReq: (r1.bytes - r0.bytes) / s.length,
  };
}

// ---- main ---------------------------------------------------------------------------------

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
const range = (xs, d) => `${f(Math.min(...xs), d)}–${f(Math.max(...xs), d)}`;

const baseEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !k.startsWith("OTEL_") && !k.startsWith("TOOLGATE_")),
);

async function startArm(encoder) {
  const name = `toolgate-${encoder}`;
  const receiver = start(
    `receiver-${encoder}`,
    [path.join(ROOT, "scripts/bench/otlp-receiver.mjs")],
    baseEnv,
  );
  const receiverPort = await printedPort(`receiver-${encoder}`);
  const port = await freePort();
  const stateDir = path.join(TMP, `state-${encoder}`);
  fs.mkdirSync(stateDir);
  const child = start(name, [path.join(ROOT, "bin/toolgate.js"), "serve"], {
    ...baseEnv,
    TOOLGATE_AGENT_PORT: String(port),
    TOOLGATE_CONTROL_PORT: "0",
    TOOLGATE_STATE_DIR: stateDir,
    TOOLGATE_BUNDLE: path.join(ROOT, "bundles", "support-triage.tar.gz"),
    TOOLGATE_AUDIT_HMAC_KEY: "bench-key-0123456789abcdef",
    TOOLGATE_LOG_LEVEL: "info",
    TOOLGATE_AUDIT_TRAIL_ENABLED: "true",
    TOOLGATE_AUDIT_LOG_DECISIONS: "true",
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiverPort}`,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
    OTEL_SERVICE_NAME: "toolgate-bench",
    TOOLGATE_OTLP_ENCODER: encoder,
  });
  const base = `http://127.0.0.1:${port}`;
  await waitReady(`${base}/health/ready`, child);
  return { encoder, name, child, receiver, receiverPort, base, pid: child.pid };
}

/** Every request of the mix gets the reference table's outcome. */
async function verify(arm) {
  for (const [i, r] of requests.entries()) {
    const res = await fetch(arm.base + r.path, {
      method: "POST",
      headers: r.headers,
      body: r.body,
    });
    const d = await res.json();
    const codes = (d.reasons ?? []).map((x) => x.code);
    if (res.status !== 200 || d.outcome !== MIX[i].outcome || !codes.includes(MIX[i].code))
      throw new Error(`${arm.name}: "${MIX[i].name}" answered ${res.status} ${JSON.stringify(d)}`);
  }
}

const machine = {
  nproc: os.cpus().length,
  model: os.cpus()[0]?.model ?? "?",
  node: process.version,
  load1: os.loadavg()[0],
};
log(`temp ${TMP}; ${ROUNDS} rounds × ${SECONDS} s at c=${CONNS}`);
const arms = [await startArm("stock"), await startArm("toolgate")];
for (const a of arms) {
  await verify(a);
  const w = workerTid(a.pid);
  a.workerTid = w.tid;
  if (!a.workerTid)
    log(`${a.name}: not one WorkerThread among ${w.named.map((t) => t.comm).join(", ")}`);
}
for (let w = 0; w < 2; w++) for (const a of arms) await load(a, WARMUP);
const runs = [];
for (let r = 0; r < ROUNDS; r++) {
  for (const a of r % 2 === 0 ? arms : [...arms].reverse()) {
    const m = await load(a, SECONDS);
    runs.push({ round: r + 1, encoder: a.encoder, ...m });
    log(
      `round ${r + 1} ${a.encoder}: ${f(m.rps, 0)} req/s p99 ${f(m.p99, 3)} ms cpu ${f(m.cpuUsPerReq, 0)} µs/req worker ${f(m.workerUsPerReq, 1)} µs/req, ${f(m.bytesPerReq, 0)} B/req exported`,
    );
  }
}
await Promise.all(arms.flatMap((a) => [stop(a.child), stop(a.receiver)]));

const byRound = [];
for (let r = 1; r <= ROUNDS; r++) {
  const s = runs.find((x) => x.round === r && x.encoder === "stock");
  const t = runs.find((x) => x.round === r && x.encoder === "toolgate");
  byRound.push({ round: r, stock: s, toolgate: t, ratio: t.rps / s.rps });
}
const ratios = byRound.map((x) => x.ratio);
const ratio = median(ratios);
const gain = ratio - 1;
const keep = gain >= GAIN_NEEDED;
const med = (enc, k) => median(runs.filter((x) => x.encoder === enc).map((x) => x[k]));
const result = {
  machine,
  rounds: ROUNDS,
  seconds: SECONDS,
  conns: CONNS,
  warmup: WARMUP,
  runs,
  ratios,
  ratio,
  gain,
  keep,
  medians: Object.fromEntries(
    ["stock", "toolgate"].map((e) => [
      e,
      Object.fromEntries(
        ["rps", "p99", "cpuUsPerReq", "workerUsPerReq", "bytesPerReq"].map((k) => [k, med(e, k)]),
      ),
    ]),
  ),
};
if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2));

const L = [];
L.push(
  `Two toolgate processes, audit on as above (spans over OTLP/HTTP protobuf, each to its own receiver; decision logs at info to a file; trail on; the audit worker thread), the same dist/, one with \`TOOLGATE_OTLP_ENCODER=stock\` (@opentelemetry/otlp-transformer's \`ProtobufTraceSerializer\`), one with \`toolgate\` (the hand-written src/telemetry/otlp-proto.ts); both checked against the mix and warmed up 2 × ${WARMUP} s alternately, then \`POST /v1/decisions\` (the mix) at ${CONNS} connections, ${ROUNDS} rounds × ${SECONDS} s, the order alternating per round. Worker CPU: the audit worker thread's utime+stime (/proc/<pid>/task/<tid>) per decision; exported: what its receiver got per decision. ${machine.nproc} CPUs (${machine.model}), node ${machine.node}, load average ${f(machine.load1, 2)} at the start.`,
  "",
  "| round | stock req/s | hand-written req/s | ratio | stock p99 ms | hand-written p99 ms | stock CPU µs/req | hand-written CPU µs/req | stock worker µs/req | hand-written worker µs/req | exported B/req (stock / hand-written) |",
  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
);
for (const x of byRound)
  L.push(
    `| ${x.round} | ${f(x.stock.rps, 0)} | ${f(x.toolgate.rps, 0)} | ${f(x.ratio, 3)} | ${f(x.stock.p99, 3)} | ${f(x.toolgate.p99, 3)} | ${f(x.stock.cpuUsPerReq, 0)} | ${f(x.toolgate.cpuUsPerReq, 0)} | ${f(x.stock.workerUsPerReq, 1)} | ${f(x.toolgate.workerUsPerReq, 1)} | ${f(x.stock.bytesPerReq, 0)} / ${f(x.toolgate.bytesPerReq, 0)} |`,
  );
const ms = result.medians.stock;
const mt = result.medians.toolgate;
L.push(
  `| median | ${f(ms.rps, 0)} | ${f(mt.rps, 0)} | ${f(ratio, 3)} | ${f(ms.p99, 3)} | ${f(mt.p99, 3)} | ${f(ms.cpuUsPerReq, 0)} | ${f(mt.cpuUsPerReq, 0)} | ${f(ms.workerUsPerReq, 1)} | ${f(mt.workerUsPerReq, 1)} | ${f(ms.bytesPerReq, 0)} / ${f(mt.bytesPerReq, 0)} |`,
  "",
  `encoder A/B (throughput, /v1/decisions, c=${CONNS}): hand-written / stock = ${f(ratio, 3)} (median of ${ROUNDS} per-round ratios, range ${range(ratios, 3)}; stock req/s ${range(
    runs.filter((x) => x.encoder === "stock").map((x) => x.rps),
    0,
  )}, hand-written ${range(
    runs.filter((x) => x.encoder === "toolgate").map((x) => x.rps),
    0,
  )}) — rule: keep the hand-written encoder only at a gain ≥ ${GAIN_NEEDED * 100} %: ${keep ? "met, keep it" : `gain ${f(gain * 100, 1)} %, not met: use the stock serializer`}`,
);
process.stdout.write(L.join("\n") + "\n");
process.exit(0);
