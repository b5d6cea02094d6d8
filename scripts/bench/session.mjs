#!/usr/bin/env node
// Session state (#19): the decision cost with a long session history, and the
// memory a session takes. Run by scripts/bench.mjs, or alone:
//   node --expose-gc scripts/bench/session.mjs [--events 10000] [--iterations 5000] [--md f] [--json f]
// 1. Decider.decide (built by buildParts without audit, the committed reference bundle) of
//    web.post and tickets.read in a session holding --events allowed calls, all inside the
//    widest window (the worst case for the windows), against the same calls with no session;
// 2. heap per session: 200 sessions of 100 events, and 20 sessions of --events events.
import { createHash } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(import.meta.url);
const dist = (p) => require(path.join(ROOT, "dist", "src", p));
const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const EVENTS = Number(opt("--events", "10000"));
const ITER = Number(opt("--iterations", "5000"));
const mdOut = opt("--md", undefined);
const jsonOut = opt("--json", undefined);

const { compileConfig } = dist("config/index.js");
const { buildParts } = dist("app.js");
const { silentLogger } = dist("shared/log.js");
const { SessionStore } = dist("session/index.js");

const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "toolgate-session-bench-"));
const config = compileConfig(
  {},
  {
    TOOLGATE_AGENT_PORT: "0",
    TOOLGATE_LOG_LEVEL: "silent",
    TOOLGATE_STATE_DIR: stateDir,
    TOOLGATE_AUDIT_TRAIL_ENABLED: "false",
    TOOLGATE_SESSION_MAX_EVENTS: String(EVENTS),
  },
);
const parts = await buildParts(config, silentLogger, {
  audit: false,
  approvals: false,
  env: { OTEL_SDK_DISABLED: "true" },
});
await parts.bundles.start();
const ctx = { face: "native" };
const request = (tool, session, args = {}) => ({
  subject: { type: "user", id: "alice" },
  action: { name: tool, properties: { arguments: args } },
  resource: { type: "customer", id: "cust_1" },
  context: {
    job: { id: "job_1", purpose: "support_triage", customer_id: "cust_1" },
    ...(session ? { session: { id: session } } : {}),
  },
});
const decide = (req) => parts.decider.decideSync(req, ctx).decision;

// fill the long session: allowed reads and drafts (refunds ≤ 50 are allowed without approval)
for (let i = 0; i < EVENTS; i++) {
  const d =
    i % 3 === 0
      ? decide(request("refunds.issue", "long", { amount: 1 + (i % 40) }))
      : decide(request(i % 3 === 1 ? "tickets.read" : "replies.draft", "long"));
  if (d.outcome !== "allow") throw new Error(`fill: ${d.outcome} ${JSON.stringify(d.reasons)}`);
}
// the Decider keys a session by a digest of the verified subject, then the id
const sessionKey = (id) =>
  `${createHash("sha256").update("alice").digest("base64url").slice(0, 22)}:${id}`;
const view = parts.sessions.view(sessionKey("long"), Date.now());
const kept = Object.values(view.tools).reduce((n, t) => n + t.in_window["86400"], 0);
if (kept !== EVENTS) throw new Error(`the long session keeps ${kept} events, want ${EVENTS}`);

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
function time(req, want) {
  for (let k = 0; k < 300; k++) decide(req);
  const s = new Float64Array(ITER);
  for (let k = 0; k < ITER; k++) {
    const t0 = process.hrtime.bigint();
    const d = decide(req);
    s[k] = Number(process.hrtime.bigint() - t0);
    if (d.outcome !== want) throw new Error(`${req.action.name}: ${d.outcome}, want ${want}`);
  }
  s.sort();
  return { p50_us: pct(s, 50) / 1e3, p99_us: pct(s, 99) / 1e3 };
}
// web.post after the session's reads: needs_approval (egress_after_sensitive_read)
const rows = [
  ["web.post, session of " + EVENTS, time(request("web.post", "long"), "needs_approval")],
  ["tickets.read, session of " + EVENTS, time(request("tickets.read", "long"), "allow")],
  [
    "web.post, a session without reads (it grows as timed)",
    time(request("web.post", "posts-only"), "allow"),
  ],
  ["tickets.read, no session", time(request("tickets.read", undefined), "allow")],
];
await parts.bundles.stop?.();
fs.rmSync(stateDir, { recursive: true, force: true });

// memory: a store of its own, filled like the Decider fills it
const gc = globalThis.gc;
const engine = parts.bundles.active?.() ?? { data: {} };
function heapPerSession(sessions, events) {
  if (!gc) return NaN;
  const store = new SessionStore({
    maxEvents: events,
    maxSessions: sessions + 1,
    retentionSeconds: 86400,
  });
  gc();
  const before = process.memoryUsage().heapUsed;
  const now = Date.now();
  let n = 0;
  for (let s = 0; s < sessions; s++) {
    for (let i = 0; i < events; i++) {
      const tool = i % 3 === 0 ? "refunds.issue" : "tickets.read";
      store.record(
        `session-${s}`,
        {
          decision_id: `00000000-0000-4000-8000-${String(++n).padStart(12, "0")}`,
          outcome: "allow",
        },
        request(tool, undefined, i % 3 === 0 ? { amount: i % 40 } : {}),
        engine,
        now - events + i,
      );
    }
  }
  gc();
  const after = process.memoryUsage().heapUsed;
  if (store.size() !== sessions) throw new Error("sessions lost");
  return (after - before) / sessions;
}
const mem = [
  { sessions: 200, events: 100, bytes: heapPerSession(200, 100) },
  { sessions: 20, events: EVENTS, bytes: heapPerSession(20, EVENTS) },
];

const result = { events: EVENTS, iterations: ITER, decide: rows, memory: mem };
const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "n/a (run with --expose-gc)");
const lines = [
  `Decider.decide in process (no audit, the reference bundle), ${ITER} calls each; the long session holds ${EVENTS} allowed calls, all inside the 24 h window (scripts/bench/session.mjs).`,
  "",
  "| call | p50 µs | p99 µs |",
  "| --- | --- | --- |",
  ...rows.map(([name, r]) => `| ${name} | ${f(r.p50_us)} | ${f(r.p99_us)} |`),
  "",
  "| sessions × events | heap per session |",
  "| --- | --- |",
  ...mem.map((m) => `| ${m.sessions} × ${m.events} | ${f(m.bytes / 1024)} KiB |`),
  "",
  `decision cost with ${EVENTS} session events: p99 ${f(rows[0][1].p99_us)} µs — target ≤ 1000 µs: ${rows[0][1].p99_us <= 1000 ? "met" : "NOT met"}`,
];
if (mdOut) fs.writeFileSync(mdOut, lines.join("\n") + "\n");
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(result));
if (!mdOut) console.log(lines.join("\n"));
