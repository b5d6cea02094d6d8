#!/usr/bin/env node
// Memory under sustained load (issue #20; docs/deploy.md, "Resources"): starts toolgate from a
// package root (default: this repo; its bin/ and dist/) as the benchmark's audit-on toolgate
// (spans over OTLP/HTTP to scripts/bench/otlp-receiver.mjs, decision logs at info to a file, the
// audit trail, the audit worker), optionally inside a memory cgroup (needs root: cgroup v1's
// memory controller at /sys/fs/cgroup/memory, else cgroup v2 at /sys/fs/cgroup), drives the
// benchmark's mix (POST /v1/decisions) for --seconds, samples VmRSS (and the cgroup's usage,
// page cache included) every second, and reports idle RSS, peak RSS (VmHWM), RSS 5 s after the
// load, req/s, and whether the process survived (an OOM kill shows as its exit).
//
//   node scripts/bench/memload.mjs [--root DIR] [--seconds 60] [--conns 16] [--cgroup 256M]
//        [--env K=V ...] [--node-arg X ...]
import { spawn } from "node:child_process";
import { setInterval, clearInterval } from "node:timers";
import fs from "node:fs";
import path from "node:path";
import net from "node:net";
import { createRequire } from "node:module";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { MIX } from "./mix.mjs";
import { auditEnv } from "./toolgate-env.mjs";
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(import.meta.url);
const autocannon = require("autocannon");
const a = process.argv.slice(2);
let ROOT = REPO,
  seconds = 60,
  conns = 16,
  cg,
  extra = {},
  nodeArgs = [];
for (let i = 0; i < a.length; i++) {
  if (a[i] === "--root") ROOT = path.resolve(a[++i]);
  else if (a[i] === "--seconds") seconds = Number(a[++i]);
  else if (a[i] === "--conns") conns = Number(a[++i]);
  else if (a[i] === "--cgroup") cg = a[++i];
  else if (a[i] === "--env") {
    const [k, ...v] = a[++i].split("=");
    extra[k] = v.join("=");
  } else if (a[i] === "--node-arg") nodeArgs.push(a[++i]);
}
const NODE = process.execPath;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const freePort = () =>
  new Promise((res) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => res(p));
    });
  });
const baseEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !k.startsWith("OTEL_") && !k.startsWith("TOOLGATE_")),
);
const kb = (pid, key) => {
  try {
    return (
      Number(
        fs
          .readFileSync(`/proc/${pid}/status`, "utf8")
          .match(new RegExp(`^${key}:\\s+(\\d+) kB`, "m"))[1],
      ) / 1024
    );
  } catch {
    return NaN;
  }
};
const recv = spawn(NODE, [path.join(REPO, "scripts", "bench", "otlp-receiver.mjs")], {
  env: baseEnv,
  stdio: ["ignore", "pipe", "inherit"],
});
const recvPort = await new Promise((r) =>
  recv.stdout.once("data", (d) => r(Number(String(d).trim()))),
);
const port = await freePort();
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-memload-"));
const env = {
  ...baseEnv,
  TOOLGATE_AGENT_PORT: String(port),
  TOOLGATE_CONTROL_PORT: "0",
  TOOLGATE_STATE_DIR: stateDir,
  TOOLGATE_BUNDLE: path.join(REPO, "bundles", "support-triage.tar.gz"),
  TOOLGATE_AUDIT_HMAC_KEY: "bench-key-0123456789abcdef",
  ...auditEnv(true, recvPort),
  ...extra,
};
let cgdir,
  usageFile = "memory.usage_in_bytes";
if (cg) {
  const v1 = fs.existsSync("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  cgdir = v1
    ? `/sys/fs/cgroup/memory/toolgate-memload-${process.pid}`
    : `/sys/fs/cgroup/toolgate-memload-${process.pid}`;
  fs.mkdirSync(cgdir);
  if (v1) {
    fs.writeFileSync(`${cgdir}/memory.limit_in_bytes`, cg);
    try {
      fs.writeFileSync(`${cgdir}/memory.memsw.limit_in_bytes`, cg);
    } catch {
      // not there (yet): skip
    }
  } else {
    fs.writeFileSync(`${cgdir}/memory.max`, cg);
    try {
      fs.writeFileSync(`${cgdir}/memory.swap.max`, "0");
    } catch {
      // not there (yet): skip
    }
    usageFile = "memory.current";
  }
}
const logFile = fs.openSync(path.join(stateDir, "stdout.log"), "w");
const cmd = cg
  ? [
      "/bin/sh",
      [
        "-c",
        `echo $$ > ${cgdir}/cgroup.procs && exec ${NODE} ${nodeArgs.join(" ")} ${path.join(ROOT, "bin", "toolgate.js")} serve`,
      ],
    ]
  : [NODE, [...nodeArgs, path.join(ROOT, "bin", "toolgate.js"), "serve"]];
const child = spawn(cmd[0], cmd[1], { env, stdio: ["ignore", logFile, "pipe"] });
let err = "";
child.stderr.on("data", (d) => (err += d));
let exited = null;
child.on("exit", (c, s) => (exited = { c, s, at: Date.now() }));
const t0 = Date.now();
for (;;) {
  if (exited) {
    console.error("exited before ready", exited, err);
    process.exit(1);
  }
  try {
    const r = await fetch(`http://127.0.0.1:${port}/health/ready`);
    if (r.ok) break;
  } catch {
    // not there (yet): skip
  }
  if (Date.now() - t0 > 30000) {
    console.error("not ready", err);
    process.exit(1);
  }
  await sleep(50);
}
await sleep(1000);
const idle = kb(child.pid, "VmRSS");
const samples = [];
const tStart = Date.now();
const timer = setInterval(() => {
  const rss = kb(child.pid, "VmRSS");
  let cgu = NaN;
  if (cgdir)
    try {
      cgu = Number(fs.readFileSync(`${cgdir}/${usageFile}`, "utf8")) / 1048576;
    } catch {
      // not there (yet): skip
    }
  samples.push({ t: (Date.now() - tStart) / 1000, rss, cgu });
}, 1000);
let ok = 0,
  bad = 0;
const res = await new Promise((resolve) => {
  const inst = autocannon(
    {
      url: `http://127.0.0.1:${port}`,
      connections: conns,
      duration: seconds,
      timeout: 10,
      requests: MIX.map((m) => ({
        method: "POST",
        path: "/v1/decisions",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(m.req),
      })),
    },
    (e, r) => resolve(r),
  );
  inst.on("response", (_c, status) => {
    if (status === 200) ok++;
    else bad++;
  });
});
clearInterval(timer);
const after = kb(child.pid, "VmRSS");
await sleep(5000);
const settled = kb(child.pid, "VmRSS");
const hwm = kb(child.pid, "VmHWM");
let failcnt = "";
if (cgdir) {
  try {
    failcnt = ` cgroup failcnt=${fs.readFileSync(`${cgdir}/memory.failcnt`, "utf8").trim()} max_usage=${(Number(fs.readFileSync(`${cgdir}/memory.max_usage_in_bytes`, "utf8")) / 1048576).toFixed(1)}MB`;
  } catch {
    // not there (yet): skip
  }
  try {
    failcnt = ` cgroup events: ${fs.readFileSync(`${cgdir}/memory.events`, "utf8").trim().replace(/\n/g, ", ")}`;
  } catch {
    // not there (yet): skip
  }
}
const every = Math.max(1, Math.floor(samples.length / 12));
console.log(
  samples
    .filter((_, i) => i % every === 0)
    .map((s) => `${s.t.toFixed(0)}s:${s.rss.toFixed(0)}${cgdir ? "/" + s.cgu.toFixed(0) : ""}`)
    .join(" "),
);
console.log(
  `idle ${idle.toFixed(1)} MB; peak VmHWM ${hwm.toFixed(1)} MB; at end ${after.toFixed(1)}; 5 s later ${settled.toFixed(1)}; ${ok} ok, ${bad} non-200, errors ${res.errors}, timeouts ${res.timeouts}, ${(ok / seconds).toFixed(0)} req/s; exited: ${exited ? JSON.stringify(exited) : "no"}${failcnt}`,
);
if (exited) console.log(err.slice(-2000));
child.kill("SIGTERM");
await sleep(500);
recv.kill("SIGTERM");
if (cgdir) {
  await sleep(500);
  try {
    fs.rmdirSync(cgdir);
  } catch (e) {
    console.error("cgroup rm", e.message);
  }
}
fs.rmSync(stateDir, { recursive: true, force: true });
