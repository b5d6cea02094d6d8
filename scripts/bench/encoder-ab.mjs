#!/usr/bin/env node
// A/B of the OTLP/HTTP protobuf request encoder (issue #18): the transformer's
// stock ProtobufTraceSerializer against toolgate's hand-written encoder
// (src/telemetry/otlp-proto.ts), same build, chosen per process by the
// temporary TOOLGATE_OTLP_ENCODER=stock|toolgate. Needs dist/ (npm run build).
//
//   node scripts/bench/encoder-ab.mjs [--rounds 6] [--seconds 10] [--conns 16]
//        [--warmup 2] [--queue N] [--batch N] [--first stock|toolgate]
//        [--batches 40] [--json FILE] [--keep]
//
// 1. The serializers alone, in this process: the spans a real toolgate (in
//    process, audit on, an in-memory exporter) made for the bench's mix,
//    repeated into requests of 512 spans (the export batch), encoded by each
//    in turn, --batches times; µs per span (wall and CPU), medians.
// 2. Throughput: two toolgate processes (`node bin/toolgate.js serve`,
//    bundles/support-triage.tar.gz), audit on as in npm run bench (spans over
//    OTLP/HTTP protobuf, decision logs at level info to a file, audit trail on,
//    the audit worker thread), one per encoder, each exporting to its own OTLP
//    receiver (scripts/bench/otlp-receiver.mjs, so the bytes each sends are
//    counted apart). Both checked against the mix, warmed up 2 × --warmup s
//    alternately, then driven with autocannon at --conns over `POST
//    /v1/decisions` (the mix) in --rounds rounds of --seconds s, the order
//    alternating per round. After each run the next waits until the span queue
//    of the one just measured has drained (its receiver idle for 1 s), so no
//    run pays for another's export. Per run: req/s, p99, the process's CPU
//    µs/request and the audit worker thread's (from /proc), both counted until
//    the drain, what the receiver got, and the spans dropped
//    (toolgate_spans_dropped). --queue and --batch set OTEL_BSP_MAX_QUEUE_SIZE
//    and OTEL_BSP_MAX_EXPORT_BATCH_SIZE for both (default: toolgate's, 8192 and
//    512): with the defaults a loaded 2-CPU machine drops spans (one export in
//    flight), and a dropped span costs its encoder nothing.
// The decision rule (the issue's): keep the hand-written encoder only if the
// median over rounds of (its req/s / stock req/s) is ≥ 1.10.
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
    queue: { type: "string" },
    batch: { type: "string" },
    first: { type: "string", default: "stock" },
    batches: { type: "string", default: "40" },
    json: { type: "string" },
    keep: { type: "boolean", default: false },
  },
});
const ROUNDS = Number(values.rounds);
const SECONDS = Number(values.seconds);
const CONNS = Number(values.conns);
const WARMUP = Number(values.warmup);
const BATCHES = Number(values.batches);
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

/** toolgate_spans_dropped from the control port's /metrics. */
async function dropped(arm) {
  const text = await (await fetch(`${arm.control}/metrics`)).text();
  const m = text.match(/^toolgate_spans_dropped(?:\{[^}]*\})? (\d+)/m);
  if (!m) throw new Error(`${arm.name}: no toolgate_spans_dropped in /metrics`);
  return Number(m[1]);
}

/** Waits until the arm's receiver got nothing for 1 s (its span queue drained); seconds waited. */
async function drained(arm, maxS = 120) {
  const t0 = Date.now();
  let last = (await receiverStats(arm)).bytes;
  let still = 0;
  while (still < 1000 && Date.now() - t0 < maxS * 1000) {
    await sleep(250);
    const now = (await receiverStats(arm)).bytes;
    still = now === last ? still + 250 : 0;
    last = now;
  }
  return (Date.now() - t0) / 1000 - 1;
}

async function load(arm, seconds) {
  const lat = [];
  let bad = 0;
  const cpu0 = cpuSeconds(arm.pid);
  const w0 = arm.workerTid ? ticks(`/proc/${arm.pid}/task/${arm.workerTid}/stat`) : NaN;
  const r0 = await receiverStats(arm);
  const d0 = await dropped(arm);
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
  const drainS = await drained(arm);
  const cpu = cpuSeconds(arm.pid) - cpu0;
  const wcpu = arm.workerTid
    ? (ticks(`/proc/${arm.pid}/task/${arm.workerTid}/stat`) - w0) / CLK_TCK
    : NaN;
  const r1 = await receiverStats(arm);
  await sleep(300); // the worker reports its counters every 250 ms
  const drops = (await dropped(arm)) - d0;
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
    dropped: drops,
    drainS,
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

// ---- 1. the serializers alone -------------------------------------------------------------

const dist = (p) => require(path.join(ROOT, "dist", "src", p));

/** The spans a real toolgate (in process, audit on, in-memory exporter) makes for the mix. */
async function mixSpans() {
  const { InMemorySpanExporter } = require("@opentelemetry/sdk-trace");
  const { compileConfig } = dist("config/index.js");
  const { startToolgate } = dist("app.js");
  const { silentLogger } = dist("shared/log.js");
  const exporter = new InMemorySpanExporter();
  const tg = await startToolgate(
    compileConfig(
      {},
      {
        TOOLGATE_AGENT_PORT: "0",
        TOOLGATE_CONTROL_PORT: "0",
        TOOLGATE_LOG_LEVEL: "silent",
        TOOLGATE_STATE_DIR: fs.mkdtempSync(path.join(TMP, "inproc-")),
        TOOLGATE_BUNDLE: path.join(ROOT, "bundles", "support-triage.tar.gz"),
        TOOLGATE_AUDIT_HMAC_KEY: "bench-key-0123456789abcdef",
      },
    ),
    silentLogger,
    { env: { OTEL_SERVICE_NAME: "toolgate-bench" }, spanExporter: exporter },
  );
  for (const r of requests)
    await fetch(tg.agentServer.url + r.path, { method: "POST", headers: r.headers, body: r.body });
  await tg.auditor?.flush();
  const spans = [...exporter.getFinishedSpans()];
  await tg.stop();
  if (spans.length < MIX.length) throw new Error(`only ${spans.length} spans for the mix`);
  return spans;
}

async function serializersAlone() {
  const { ProtobufTraceSerializer } = require("@opentelemetry/otlp-transformer");
  const { encodeTraceRequest } = dist("telemetry/otlp-proto.js");
  const spans = await mixSpans();
  const batch = Array.from({ length: 512 }, (_, i) => spans[i % spans.length]);
  const enc = {
    stock: (b) => ProtobufTraceSerializer.serializeRequest(b),
    toolgate: (b) => encodeTraceRequest(b),
  };
  const a = Buffer.from(enc.stock(batch));
  const b = Buffer.from(enc.toolgate(batch));
  if (!a.equals(b)) throw new Error("the two serializers differ on the mix's spans");
  const out = { stock: { wall: [], cpu: [] }, toolgate: { wall: [], cpu: [] } };
  const PER = 10; // requests of 512 spans per timed batch
  for (let k = 0; k < 20; k++) for (const fn of Object.values(enc)) fn(batch); // warm-up
  for (let i = 0; i < BATCHES; i++)
    for (const name of i % 2 ? ["toolgate", "stock"] : ["stock", "toolgate"]) {
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < PER; k++) enc[name](batch);
      const n = PER * batch.length;
      out[name].wall.push(Number(process.hrtime.bigint() - t0) / 1e3 / n);
      const c = process.cpuUsage(c0);
      out[name].cpu.push((c.user + c.system) / n);
    }
  return { spanKinds: spans.length, bytesPerSpan: a.length / batch.length, ...out };
}

// ---- 2. throughput ------------------------------------------------------------------------

async function startArm(encoder) {
  const name = `toolgate-${encoder}`;
  const receiver = start(
    `receiver-${encoder}`,
    [path.join(ROOT, "scripts/bench/otlp-receiver.mjs")],
    baseEnv,
  );
  const receiverPort = await printedPort(`receiver-${encoder}`);
  const port = await freePort();
  const controlPort = await freePort();
  const stateDir = path.join(TMP, `state-${encoder}`);
  fs.mkdirSync(stateDir);
  const child = start(name, [path.join(ROOT, "bin/toolgate.js"), "serve"], {
    ...baseEnv,
    TOOLGATE_AGENT_PORT: String(port),
    TOOLGATE_CONTROL_PORT: String(controlPort),
    TOOLGATE_STATE_DIR: stateDir,
    TOOLGATE_BUNDLE: path.join(ROOT, "bundles", "support-triage.tar.gz"),
    TOOLGATE_AUDIT_HMAC_KEY: "bench-key-0123456789abcdef",
    TOOLGATE_LOG_LEVEL: "info",
    TOOLGATE_AUDIT_TRAIL_ENABLED: "true",
    TOOLGATE_AUDIT_LOG_DECISIONS: "true",
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiverPort}`,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
    OTEL_SERVICE_NAME: "toolgate-bench",
    ...(values.queue ? { OTEL_BSP_MAX_QUEUE_SIZE: values.queue } : {}),
    ...(values.batch ? { OTEL_BSP_MAX_EXPORT_BATCH_SIZE: values.batch } : {}),
    TOOLGATE_OTLP_ENCODER: encoder,
  });
  const base = `http://127.0.0.1:${port}`;
  await waitReady(`${base}/health/ready`, child);
  return {
    encoder,
    name,
    child,
    receiver,
    receiverPort,
    base,
    control: `http://127.0.0.1:${controlPort}`,
    pid: child.pid,
  };
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
log(`temp ${TMP}; serializers alone, ${BATCHES} batches`);
const alone = await serializersAlone();
const aloneMed = Object.fromEntries(
  ["stock", "toolgate"].map((e) => [e, { wall: median(alone[e].wall), cpu: median(alone[e].cpu) }]),
);
log(
  `serializers alone: stock ${f(aloneMed.stock.wall)} µs/span, hand-written ${f(aloneMed.toolgate.wall)} µs/span`,
);
log(`throughput: ${ROUNDS} rounds × ${SECONDS} s at c=${CONNS}`);
// --first: which process starts first and runs first in odd rounds (a check that
// the ratio follows the encoder, not the process's place)
const order = values.first === "toolgate" ? ["toolgate", "stock"] : ["stock", "toolgate"];
const arms = [];
for (const e of order) arms.push(await startArm(e));
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
      `round ${r + 1} ${a.encoder}: ${f(m.rps, 0)} req/s p99 ${f(m.p99, 3)} ms cpu ${f(m.cpuUsPerReq, 0)} µs/req worker ${f(m.workerUsPerReq, 1)} µs/req, ${f(m.bytesPerReq, 0)} B/req exported, ${m.dropped} dropped, drained in ${f(m.drainS, 1)} s`,
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
const KEYS = ["rps", "p99", "cpuUsPerReq", "workerUsPerReq", "bytesPerReq", "dropped", "drainS"];
const result = {
  machine,
  rounds: ROUNDS,
  seconds: SECONDS,
  conns: CONNS,
  warmup: WARMUP,
  queue: values.queue ?? "default",
  batch: values.batch ?? "default",
  first: order[0],
  alone: { ...alone, medians: aloneMed },
  runs,
  ratios,
  ratio,
  gain,
  keep,
  medians: Object.fromEntries(
    ["stock", "toolgate"].map((e) => [e, Object.fromEntries(KEYS.map((k) => [k, med(e, k)]))]),
  ),
};
if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2));

const L = [];
const both = (x, k, d) => `${f(x.stock[k], d)} / ${f(x.toolgate[k], d)}`;
L.push(
  `**The serializers alone** (in one process): the ${alone.spanKinds} spans a real toolgate made for the mix (${f(alone.bytesPerSpan, 0)} bytes per span encoded; both serializers give the same bytes), repeated into requests of 512 spans, encoded by each in turn, ${BATCHES} batches of 10 requests: stock \`ProtobufTraceSerializer\` ${f(aloneMed.stock.wall)} µs per span (CPU ${f(aloneMed.stock.cpu)}; batches ${range(alone.stock.wall, 2)}), hand-written ${f(aloneMed.toolgate.wall)} µs (CPU ${f(aloneMed.toolgate.cpu)}; ${range(alone.toolgate.wall, 2)}): the hand-written one saves ${f(aloneMed.stock.wall - aloneMed.toolgate.wall)} µs per span.`,
  "",
  `**Throughput**: two toolgate processes, audit on (spans over OTLP/HTTP protobuf, each to its own receiver; decision logs at info to a file; trail on; the audit worker thread; ${values.queue || values.batch ? `OTEL_BSP_MAX_QUEUE_SIZE=${values.queue ?? "8192 (default)"}, OTEL_BSP_MAX_EXPORT_BATCH_SIZE=${values.batch ?? "512 (default)"}` : "the batch processor's defaults, queue 8192, batch 512"}), the same dist/, one with \`TOOLGATE_OTLP_ENCODER=stock\`, one with \`toolgate\` (the hand-written src/telemetry/otlp-proto.ts); both checked against the mix and warmed up 2 × ${WARMUP} s alternately, then \`POST /v1/decisions\` (the mix) at ${CONNS} connections, ${ROUNDS} rounds × ${SECONDS} s, the order alternating per round (${order[0] === "stock" ? "stock" : "the hand-written one"} started and ran first in round 1); after each run its span queue drains (the receiver idle for 1 s) before the next starts. CPU: the process's utime+stime, and the audit worker thread's (/proc/<pid>/task/<tid>), from the run's start to the drain, per decision; exported: what its receiver got per decision; dropped: toolgate_spans_dropped over the run. ${machine.nproc} CPUs (${machine.model}), node ${machine.node}, load average ${f(machine.load1, 2)} at the start (the machine is shared).`,
  "",
  "| round | req/s stock / hand-written | ratio | p99 ms | CPU µs/req | worker CPU µs/req | exported B/req | spans dropped | drain s |",
  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
);
for (const x of byRound)
  L.push(
    `| ${x.round} | ${both(x, "rps", 0)} | ${f(x.ratio, 3)} | ${both(x, "p99", 3)} | ${both(x, "cpuUsPerReq", 0)} | ${both(x, "workerUsPerReq", 1)} | ${both(x, "bytesPerReq", 0)} | ${both(x, "dropped", 0)} | ${both(x, "drainS", 1)} |`,
  );
const M = { stock: result.medians.stock, toolgate: result.medians.toolgate };
L.push(
  `| median | ${both(M, "rps", 0)} | ${f(ratio, 3)} | ${both(M, "p99", 3)} | ${both(M, "cpuUsPerReq", 0)} | ${both(M, "workerUsPerReq", 1)} | ${both(M, "bytesPerReq", 0)} | ${both(M, "dropped", 0)} | ${both(M, "drainS", 1)} |`,
  "",
  `encoder A/B (throughput, /v1/decisions, c=${CONNS}): hand-written / stock = ${f(ratio, 3)} (median of ${ROUNDS} per-round ratios, range ${range(ratios, 3)}; stock req/s ${range(
    runs.filter((x) => x.encoder === "stock").map((x) => x.rps),
    0,
  )}, hand-written ${range(
    runs.filter((x) => x.encoder === "toolgate").map((x) => x.rps),
    0,
  )}; serializer alone ${f(aloneMed.stock.wall)} vs ${f(aloneMed.toolgate.wall)} µs per span) — rule: keep the hand-written encoder only at a gain ≥ ${GAIN_NEEDED * 100} %: ${keep ? "met, keep it" : `gain ${f(gain * 100, 1)} %, not met: use the stock serializer`}`,
);
process.stdout.write(L.join("\n") + "\n");
process.exit(0);
