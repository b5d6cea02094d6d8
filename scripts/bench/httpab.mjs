#!/usr/bin/env node
// HTTP A/B of toolgate targets under load, alternating rounds in one run (issue #20).
// A target is a toolgate build (a package root: its bin/ and dist/) reached over TCP or
// over the agent port's Unix domain socket (server.agent.socket), with extra environment
// K=V,... (e.g. a switch under A/B); targets of the same root and environment share one
// process. A transport with *N (tcp*2) is N such processes, each with its own state, the
// load's connections split between them: the shared-nothing upper bound of spreading
// decisions over N cores (no state is shared, so sessions, budgets and rates are not
// consistent across them; a measurement, not a deployment). Every toolgate runs as the benchmark's audit-on toolgate (spans over
// OTLP/HTTP to a local receiver, decision logs at info to a file, audit trail on), or
// audit off with --audit off. Before measuring, every request of the mix is sent to every
// target and must get the reference table's outcome and reason code.
//
//   node scripts/bench/httpab.mjs [--target label=<root>:<tcp|uds>[*N][:K=V,...]]... [--conns 16]
//        [--rounds 6] [--seconds 3] [--warmup 2] [--path /v1/decisions] [--audit on|off]
//        [--md <file>] [--json <file>] [--profile <dir>]
//   --profile <dir>: instead of rounds, one load run (--seconds, first --conns, first target)
//        of a toolgate started under node --cpu-prof (interval 500 µs), after the warm-up; the
//        profile cut to that run, summarised by area and function (profile-summary.mjs), and
//        drawn as a flame graph, <dir>/flame-<pid>.svg (flamegraph.mjs)
//   default targets: tcp=<repo>:tcp uds=<repo>:uds (TCP vs the socket, one process)
//
// Prints a markdown section on stdout: per round and target req/s, p50/p99 ms, server CPU
// µs/req; the median over rounds; and each target's ratio to the first per round.
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { MIX } from "./mix.mjs";
import { auditEnv } from "./toolgate-env.mjs";
import { summariseProfile } from "./profile-summary.mjs";
import { flameGraph } from "./flamegraph.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(import.meta.url);
const autocannon = require("autocannon");

const argv = process.argv.slice(2);
const opt = (n, d) => {
  const i = argv.indexOf(n);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : d;
};
const all = (n) => argv.flatMap((a, i) => (a === n && i + 1 < argv.length ? [argv[i + 1]] : []));
const CONNS = opt("--conns", "16").split(",").map(Number);
const ROUNDS = Number(opt("--rounds", "6"));
const SECONDS = Number(opt("--seconds", "3"));
const WARMUP = Number(opt("--warmup", "2"));
const PATH = opt("--path", "/v1/decisions");
const AUDIT = opt("--audit", "on") === "on";
const MD = opt("--md", undefined);
const JSON_OUT = opt("--json", undefined);
const PROFILE = opt("--profile", undefined);
const CLK_TCK = 100;
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-httpab-"));
const log = (...a) => console.error("httpab:", ...a);

const specs = (
  all("--target").length ? all("--target") : [`tcp=${ROOT}:tcp`, `uds=${ROOT}:uds`]
).map((s) => {
  const m = /^([^=]+)=(.+?):(tcp|uds)(?:\*([1-9]\d*))?(?::(.*))?$/.exec(s);
  if (!m) throw new Error(`--target ${s}: want label=<root>:<tcp|uds>[*N][:K=V,...]`);
  const shards = Number(m[4] ?? 1);
  const extra = Object.fromEntries(
    (m[5] ? m[5].split(",") : []).map((kv) => [
      kv.slice(0, kv.indexOf("=")),
      kv.slice(kv.indexOf("=") + 1),
    ]),
  );
  const root = path.resolve(m[2]);
  return {
    label: m[1],
    root,
    transport: m[3],
    shards,
    extra,
    key: `${root}|${m[5] ?? ""}|${shards}`,
  };
});

const children = [];
process.on("exit", () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  fs.rmSync(TMP, { recursive: true, force: true });
});
for (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => process.exit(130));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
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
/** CPU seconds of a process (or of one thread, tid); of several processes summed (pid an array, tid: their main threads). */
function cpuSeconds(pid, tid) {
  if (Array.isArray(pid))
    return pid.reduce((a, p) => a + cpuSeconds(p, tid === undefined ? undefined : p), 0);
  const stat = fs.readFileSync(
    tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`,
    "utf8",
  );
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}
function sysSeconds(pid, tid) {
  if (Array.isArray(pid)) return pid.reduce((a, p) => a + sysSeconds(p, p), 0);
  const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[12]) / CLK_TCK;
}
function start(name, cmd, args, env) {
  const out = fs.openSync(path.join(TMP, `${name}.log`), "w");
  const child = spawn(cmd, args, { env, stdio: ["ignore", out, out] });
  children.push(child);
  return child;
}

/** One POST over TCP or the socket: {status, json}. */
function post(target, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        ...(target.socketPath
          ? { socketPath: target.socketPath }
          : { host: "127.0.0.1", port: target.port }),
        method: "POST",
        path: PATH,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        let t = "";
        res.on("data", (c) => (t += c));
        res.on("end", () => resolve({ status: res.statusCode, json: JSON.parse(t) }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const bodyOf = (m) => JSON.stringify(PATH === "/v1/decisions" ? m.req : { input: m.req });

async function verify(target) {
  for (const shard of target.shards)
    for (const m of MIX) {
      const r = await post(shard, bodyOf(m));
      const d = PATH === "/v1/decisions" ? r.json : r.json.result;
      const codes = (d?.reasons ?? []).map((x) => x.code);
      if (r.status !== 200 || d?.outcome !== m.outcome || !codes.includes(m.code))
        throw new Error(
          `${target.label} (${shard.pid}): "${m.name}" got ${r.status} ${d?.outcome} [${codes}]`,
        );
    }
}

/** autocannon's options for the mix at `connections` for `seconds`, to one toolgate (TCP or its socket). */
function mixLoad(to, connections, seconds) {
  return {
    url: to.socketPath ? "http://localhost" : `http://127.0.0.1:${to.port}`,
    ...(to.socketPath ? { socketPath: to.socketPath } : {}),
    connections,
    duration: seconds,
    requests: MIX.map((m) => ({
      method: "POST",
      path: PATH,
      headers: { "content-type": "application/json" },
      body: bodyOf(m),
    })),
  };
}

async function load(target, connections, seconds) {
  const lat = [];
  let bad = 0;
  const pids = target.shards.map((x) => x.pid);
  const cpu0 = cpuSeconds(pids);
  const main0 = cpuSeconds(pids, pids);
  const sys0 = sysSeconds(pids, pids);
  const lg0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  // the connections split between the shards (one autocannon each, concurrently)
  const split = target.shards
    .map((x, i) => ({
      ...x,
      conns:
        Math.floor(connections / target.shards.length) +
        (i < connections % target.shards.length ? 1 : 0),
    }))
    .filter((x) => x.conns > 0);
  const results = await Promise.all(
    split.map(
      (x) =>
        new Promise((resolve, reject) => {
          const inst = autocannon({ ...mixLoad(x, x.conns, seconds), timeout: 10 }, (err, r) =>
            err ? reject(err) : resolve(r),
          );
          inst.on("response", (_c, status, _b, rt) => {
            lat.push(rt);
            if (status !== 200) bad++;
          });
        }),
    ),
  );
  const res = {
    errors: results.reduce((a, r) => a + r.errors, 0),
    timeouts: results.reduce((a, r) => a + r.timeouts, 0),
  };
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSeconds(pids) - cpu0;
  const mainCpu = cpuSeconds(pids, pids) - main0;
  const mainSys = sysSeconds(pids, pids) - sys0;
  const lg = process.cpuUsage(lg0);
  if (res.errors + res.timeouts + bad > 0)
    throw new Error(
      `${target.label}: ${res.errors} errors ${res.timeouts} timeouts ${bad} non-200`,
    );
  const s = Float64Array.from(lat).sort();
  const pct = (p) => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
  return {
    rps: s.length / wall,
    p50: pct(50),
    p99: pct(99),
    cpuUs: (cpu * 1e6) / s.length,
    // the server's main thread alone, and the load generator (this process) in cores
    mainUs: (mainCpu * 1e6) / s.length,
    mainSysUs: (mainSys * 1e6) / s.length,
    lgCores: (lg.user + lg.system) / 1e6 / wall,
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");

async function main() {
  const baseEnv = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !k.startsWith("OTEL_") && !k.startsWith("TOOLGATE_"),
    ),
  );
  let receiverPort;
  if (AUDIT) {
    const rec = start(
      "receiver",
      process.execPath,
      [path.join(ROOT, "scripts/bench/otlp-receiver.mjs")],
      baseEnv,
    );
    for (let i = 0; i < 100 && receiverPort === undefined; i++) {
      await sleep(50);
      const t = fs.readFileSync(path.join(TMP, "receiver.log"), "utf8").trim();
      if (/^\d+$/.test(t)) receiverPort = Number(t);
    }
    if (receiverPort === undefined || rec.exitCode !== null) throw new Error("no OTLP receiver");
  }
  const procs = new Map();
  let started = 0;
  for (const key of new Set(specs.map((s) => s.key))) {
    const { root, extra, shards } = specs.find((s) => s.key === key);
    procs.set(key, []);
    for (let k = 0; k < shards; k++) {
      const name = `tg${started++}`;
      const port = await freePort();
      const stateDir = path.join(TMP, `state-${name}`);
      fs.mkdirSync(stateDir);
      const socketPath = path.join(TMP, `${name}-sock`, "agent.sock");
      const env = {
        ...baseEnv,
        TOOLGATE_AGENT_PORT: String(port),
        TOOLGATE_AGENT_SOCKET: socketPath,
        TOOLGATE_CONTROL_PORT: "0",
        TOOLGATE_STATE_DIR: stateDir,
        TOOLGATE_BUNDLE: path.join(ROOT, "bundles", "support-triage.tar.gz"),
        TOOLGATE_AUDIT_HMAC_KEY: "bench-key-0123456789abcdef",
        ...auditEnv(AUDIT, receiverPort),
        ...extra,
      };
      const prof = PROFILE
        ? ["--cpu-prof", `--cpu-prof-dir=${path.resolve(PROFILE)}`, "--cpu-prof-interval=500"]
        : [];
      const child = start(
        name,
        process.execPath,
        [...prof, path.join(root, "bin", "toolgate.js"), "serve"],
        env,
      );
      procs.get(key).push({ child, port, socketPath });
    }
  }
  for (const [root, p] of [...procs].flatMap(([k, list]) => list.map((x) => [k, x]))) {
    for (let i = 0; ; i++) {
      if (p.child.exitCode !== null) throw new Error(`toolgate from ${root} exited; see ${TMP}`);
      try {
        const r = await fetch(`http://127.0.0.1:${p.port}/health/ready`);
        if (r.ok) break;
      } catch {
        /* not yet */
      }
      if (i > 300) throw new Error(`toolgate from ${root} not ready`);
      await sleep(100);
    }
  }
  const targets = specs.map((s) => {
    const shards = procs.get(s.key).map((p) => ({
      pid: p.child.pid,
      port: p.port,
      ...(s.transport === "uds" ? { socketPath: p.socketPath } : {}),
    }));
    // pid, port and socketPath: the first shard's (the only one unless *N)
    return { ...s, ...shards[0], shards };
  });
  for (const t of targets) await verify(t);
  log(
    `verified ${targets.length} target(s) against the mix; ${PATH}, audit ${AUDIT ? "on" : "off"}`,
  );
  if (PROFILE) return profileRun(targets[0]);
  const rows = [];
  for (const c of CONNS) {
    for (let w = 0; w < 2; w++) for (const t of targets) await load(t, c, WARMUP);
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? targets : [...targets].reverse();
      for (const t of order) {
        const m = await load(t, c, SECONDS);
        rows.push({ conns: c, round: r + 1, label: t.label, ...m });
        log(
          `c=${c} round ${r + 1} ${t.label}: ${f(m.rps, 0)} req/s p99 ${f(m.p99, 3)} ms ${f(m.cpuUs, 0)} µs/req (main thread ${f(m.mainUs, 0)}, of it kernel ${f(m.mainSysUs, 0)}), load generator ${f(m.lgCores)} cores`,
        );
      }
    }
  }
  const out = [];
  const p = (s = "") => out.push(s);
  p(
    `${PATH}, audit ${AUDIT ? "on" : "off"}; ${ROUNDS} rounds × ${SECONDS} s per target at each concurrency, the order reversing every round, after 2 × ${WARMUP} s warm-up; targets: ${targets.map((t) => `${t.label} (${t.transport}${t.shards.length > 1 ? ` ×${t.shards.length} processes, the connections split` : ""}${procs.size > 1 ? `, ${path.relative(ROOT, t.root) || "."}${t.key.split("|")[1] ? ` ${t.key.split("|")[1]}` : ""}` : ""})`).join(", ")}. Ratio: the target's req/s over ${targets[0].label}'s in the same round, median over rounds.`,
  );
  p();
  p(
    "| conns | target | req/s median [min–max] | p50 ms | p99 ms | CPU µs/req | req/s ratio to first [min–max] | p99 ratio |",
  );
  p("|---:|---|---:|---:|---:|---:|---:|---:|");
  const summary = [];
  for (const c of CONNS) {
    for (const t of targets) {
      const mine = rows.filter((x) => x.conns === c && x.label === t.label);
      const ratios = mine.map(
        (x) =>
          x.rps /
          rows.find((y) => y.conns === c && y.round === x.round && y.label === targets[0].label)
            .rps,
      );
      const p99r = mine.map(
        (x) =>
          x.p99 /
          rows.find((y) => y.conns === c && y.round === x.round && y.label === targets[0].label)
            .p99,
      );
      const rps = mine.map((x) => x.rps);
      const s = {
        conns: c,
        label: t.label,
        rps: median(rps),
        p50: median(mine.map((x) => x.p50)),
        p99: median(mine.map((x) => x.p99)),
        cpuUs: median(mine.map((x) => x.cpuUs)),
        ratio: median(ratios),
        ratioMin: Math.min(...ratios),
        ratioMax: Math.max(...ratios),
        p99Ratio: median(p99r),
      };
      summary.push(s);
      p(
        `| ${c} | ${t.label} | ${f(s.rps, 0)} [${f(Math.min(...rps), 0)}–${f(Math.max(...rps), 0)}] | ${f(s.p50, 3)} | ${f(s.p99, 3)} | ${f(s.cpuUs, 0)} | ${f(s.ratio)} [${f(s.ratioMin)}–${f(s.ratioMax)}] | ${f(s.p99Ratio)} |`,
      );
    }
  }
  const md = out.join("\n") + "\n";
  if (MD) fs.writeFileSync(MD, md);
  if (JSON_OUT) fs.writeFileSync(JSON_OUT, JSON.stringify({ rows, summary }, null, 2));
  process.stdout.write(md);
}

async function profileRun(t) {
  const c = CONNS[0];
  for (let w = 0; w < 2; w++) await load(t, c, WARMUP);
  const t0 = process.hrtime.bigint();
  const lat = [];
  const res = await new Promise((resolve, reject) => {
    const inst = autocannon(mixLoad(t, c, SECONDS), (err, r) => (err ? reject(err) : resolve(r)));
    inst.on("response", (_c, _s, _b, rt) => lat.push(rt));
  });
  const t1 = process.hrtime.bigint();
  const child = children.find((x) => x.pid === t.pid);
  await new Promise((resolve) => {
    child.once("exit", resolve);
    child.kill("SIGTERM");
  });
  const dir = path.resolve(PROFILE);
  const files = fs
    .readdirSync(dir)
    .filter((x) => x.endsWith(".cpuprofile") && x.split(".")[3] === String(t.pid))
    .sort();
  const mainFile = files.find((x) => x.split(".")[4] === "0");
  const window = { from: Number(t0 / 1000n), to: Number(t1 / 1000n), decisions: lat.length };
  const S = summariseProfile(path.join(dir, mainFile), { top: 30, ...window });
  const svg = path.join(dir, `flame-${t.pid}.svg`);
  fs.writeFileSync(
    svg,
    flameGraph(path.join(dir, mainFile), {
      ...window,
      title: `toolgate ${PATH}, c=${c}, audit ${AUDIT ? "on" : "off"}, ${t.transport} — main thread`,
    }),
  );
  const wall = Number(t1 - t0) / 1e9;
  const out = [];
  out.push(
    `${t.label}: ${PATH} c=${c}, ${SECONDS} s, ${lat.length} requests, ${f(lat.length / wall, 0)} req/s under the profiler (${res.errors} errors); main thread ${S.samples} samples (window --from ${window.from} --to ${window.to}); profile ${path.join(dir, mainFile)}; flame graph ${svg}`,
  );
  out.push("", "| area | µs per decision | % |", "|---|---:|---:|");
  for (const a of S.areas) out.push(`| ${a.area} | ${f(a.usPerDecision, 1)} | ${f(a.pct, 1)} |`);
  out.push("", "| function | where | area | µs per decision | % |", "|---|---|---|---:|---:|");
  for (const x of S.functions)
    out.push(
      `| \`${x.fn}\` | ${x.where} | ${x.area} | ${f(x.usPerDecision, 1)} | ${f(x.pct, 1)} |`,
    );
  const md = out.join("\n") + "\n";
  if (MD) fs.writeFileSync(MD, md);
  process.stdout.write(md);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
