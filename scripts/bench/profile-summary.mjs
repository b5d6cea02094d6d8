#!/usr/bin/env node
// Summarises a V8 .cpuprofile (node --cpu-prof): top self-time functions, and
// self time grouped by area of toolgate's decision path (HTTP framework, body
// handling, validation, evaluation, grant signing, audit hand-off, JSON, GC, ...).
//
//   node scripts/bench/profile-summary.mjs <file.cpuprofile> [top=25]
//        [--from <µs> --to <µs>] [--decisions N]
//
// --from/--to keep only the samples taken in that window, in the profile's
// clock (CLOCK_MONOTONIC µs, the clock of process.hrtime in any process on the
// machine), so a profile of a whole process life can be cut to one load run.
// --decisions N adds µs per decision (self time in the window / N).
//
// A sample's area is decided by its stack, leaf first: the first frame that
// belongs to a known area wins. Frames that serve many callers (natives such as
// writeUtf8String or postMessage, node:events, node:internal/crypto, timers,
// src/shared) decide nothing; their caller does. So a socket write counts as
// node:http, an HMAC under src/grants as grant signing.
import fs from "node:fs";

export const AREAS = {
  framework: "HTTP framework (express, router)",
  platform: "node:http, sockets, streams",
  body: "body handling (read, limits, shape walk)",
  json: "JSON (request parse, response stringify)",
  validation: "validation (ajv)",
  evaluation: "evaluation (opa-wasm)",
  grants: "grant signing",
  binding: "binding hash (JCS + SHA-256; grants, approvals)",
  approvals: "approvals store (SQLite)",
  audit: "audit hand-off (to the audit worker)",
  decision: "decision path (decider, identity, containment, approvals service)",
  metrics: "metrics",
  faces: "toolgate faces (routing glue, request id, respond)",
  logging: "logging",
  otherTg: "toolgate, other",
  libs: "other libraries",
  loop: "node: event loop, timers, microtasks",
  gc: "GC",
  program: "V8 (program: unattributed native)",
  idle: "idle",
  other: "other",
};

const EXPRESS = new Set(
  "express router body-parser finalhandler path-to-regexp parseurl on-finished ee-first depd debug ms statuses encodeurl escape-html content-type type-is media-typer mime-types mime-db accepts negotiator vary merge-descriptors utils-merge qs send serve-static fresh etag range-parser http-errors setprototypeof toidentifier inherits cookie cookie-signature content-disposition proxy-addr forwarded ipaddr.js is-promise once wrappy raw-body iconv-lite safer-buffer bytes unpipe".split(
    " ",
  ),
);
const VALIDATION = new Set(
  "ajv ajv-formats fast-deep-equal fast-uri json-schema-traverse require-from-string".split(" "),
);
const LOGGING = new Set(
  "winston winston-transport logform triple-beam readable-stream @colors/colors fecha safe-stable-stringify @dabh/diagnostics one-time kuler text-hex colorspace enabled fn.name stack-trace".split(
    " ",
  ),
);
/** Functions whose self time is JSON.parse / JSON.stringify (builtins get no frame of their own). */
const JSON_FNS = new Set(["parseJsonText", "parseUntrustedJson", "sendJson"]);
const PLATFORM =
  /^node:(_http_|net$|stream$|_stream_|internal\/(stream_base_commons|streams\/|http|js_stream_socket))/;
const LOOP = /^node:internal\/(process\/task_queues|timers)|^node:timers/;

/** Shortens a frame's url: dist/..., nm/<package>/..., node:... */
export function shortUrl(url) {
  return (url || "")
    .replace(/^file:\/\//, "")
    .replace(/^.*node_modules\//, "nm/")
    .replace(/^.*\/dist\/src\//, "dist/");
}

const pkgOf = (u) => {
  const m = u.match(/^nm\/((?:@[^/]+\/)?[^/]+)\//);
  return m ? m[1] : undefined;
};

/** The area one frame belongs to, or undefined when the frame leaves it to its caller. */
export function frameArea(callFrame) {
  const fn = callFrame.functionName;
  if (fn === "(garbage collector)") return "gc";
  if (fn === "(idle)") return "idle";
  if (fn === "(program)") return "program";
  const u = shortUrl(callFrame.url);
  if (u.startsWith("wasm://")) return "evaluation";
  if (u === "") return /^validate\d*$/.test(fn) ? "validation" : undefined; // ajv's compiled code
  if (u.startsWith("dist/")) {
    if (JSON_FNS.has(fn)) return "json";
    const rel = u.slice(5);
    if (/^policy\//.test(rel)) return "evaluation";
    if (/^grants\//.test(rel)) return "grants";
    if (/(^|\/)(binding|jcs)\.js$/.test(rel)) return "binding";
    if (/^approvals\/store\.js$/.test(rel)) return "approvals";
    if (/^(audit|telemetry|redaction|trail)\//.test(rel)) return "audit";
    if (/(^|\/)body\.js$/.test(rel)) return "body";
    if (/(^|\/)validate\.js$/.test(rel)) return "validation";
    if (/^metrics\//.test(rel)) return "metrics";
    if (/^(decision|identity|approvals|containment|model|errors)\//.test(rel)) return "decision";
    if (/^shared\/log\.js$/.test(rel)) return "logging";
    if (/^shared\//.test(rel)) return undefined; // primitives (JCS, guards, ...): the caller decides
    if (/^(http|faces)\//.test(rel)) return "faces";
    return "otherTg";
  }
  const pkg = pkgOf(u);
  if (pkg !== undefined) {
    if (pkg === "@open-policy-agent/opa-wasm") return "evaluation";
    if (EXPRESS.has(pkg)) return "framework";
    if (VALIDATION.has(pkg)) return "validation";
    if (LOGGING.has(pkg)) return "logging";
    if (pkg.startsWith("@opentelemetry/")) return "audit";
    return "libs";
  }
  if (PLATFORM.test(u)) return "platform";
  return undefined; // node:events, node:internal/crypto, node:internal/worker, timers, buffer, ...
}

/**
 * A .cpuprofile read once: its nodes by id, and each node's area (the first
 * frame up its stack that belongs to one, see frameArea; else "loop" under the
 * event loop, or "other"), memoised. Shared with flamegraph.mjs.
 */
export function loadProfile(file) {
  const prof = JSON.parse(fs.readFileSync(file, "utf8"));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const areaCache = new Map();
  const areaOf = (id) => {
    if (areaCache.has(id)) return areaCache.get(id);
    let area;
    let loop = false;
    for (let k = id; k !== undefined && area === undefined; k = parent.get(k)) {
      const cf = byId.get(k).callFrame;
      area = frameArea(cf);
      if (LOOP.test(cf.url) || cf.functionName === "runMicrotasks") loop = true;
    }
    area ??= loop ? "loop" : "other";
    areaCache.set(id, area);
    return area;
  };
  return { prof, byId, areaOf };
}

/** The node ids sampled between `from` and `to` (µs, the profile's clock), and the time they span. */
export function windowSamples(prof, from, to) {
  const ids = [];
  let t = prof.startTime;
  let windowUs = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i] ?? 0;
    t += dt;
    if (t < from || t > to) continue;
    windowUs += dt;
    ids.push(prof.samples[i]);
  }
  return { ids, windowUs };
}

/**
 * Reads a .cpuprofile; keeps the samples in [from, to] (µs, the profile's
 * clock; all when not given). Returns the window's sampled time, the top
 * self-time functions (with the area most of their samples fell in) and the
 * self time per area, each as % of the window's samples (idle included, so
 * the rows add up to 100 %) and in µs (that share of the window's sampled
 * time). With `decisions`, also µs per decision.
 */
export function summariseProfile(
  file,
  { top = 25, from = -Infinity, to = Infinity, decisions } = {},
) {
  const { prof, byId, areaOf: areaOfNode } = loadProfile(file);

  const fns = new Map(); // key -> {fn, where, us, areas: Map}
  const areas = new Map();
  const inWindow = windowSamples(prof, from, to);
  const total = inWindow.windowUs;
  const samples = inWindow.ids.length;
  for (const id of inWindow.ids) {
    const n = byId.get(id);
    const cf = n.callFrame;
    const area = areaOfNode(n.id);
    areas.set(area, (areas.get(area) ?? 0) + 1);
    const where = shortUrl(cf.url);
    const key = `${cf.functionName || "(anonymous)"} ${where ? `${where}:${cf.lineNumber + 1}` : ""}`;
    let e = fns.get(key);
    if (!e) {
      e = {
        fn: cf.functionName || "(anonymous)",
        where: where ? `${where}:${cf.lineNumber + 1}` : "(native)",
        n: 0,
        areas: new Map(),
      };
      fns.set(key, e);
    }
    e.n++;
    e.areas.set(area, (e.areas.get(area) ?? 0) + 1);
  }
  // shares are of sample counts; time = share × the window's sampled time
  const usOf = (n) => (samples > 0 ? (n * total) / samples : 0);
  const per = (n) => (decisions ? usOf(n) / decisions : undefined);
  const pct = (n) => (samples > 0 ? (100 * n) / samples : NaN);
  return {
    samples,
    windowUs: total,
    meanIntervalUs: samples > 0 ? total / samples : NaN,
    decisions,
    functions: [...fns.values()]
      .sort((a, b) => b.n - a.n)
      .slice(0, top)
      .map((e) => {
        const area = [...e.areas].sort((a, b) => b[1] - a[1])[0][0];
        return {
          fn: e.fn,
          where: e.where,
          area: AREAS[area],
          samples: e.n,
          us: usOf(e.n),
          usPerDecision: per(e.n),
          pct: pct(e.n),
        };
      }),
    areas: [...areas]
      .sort((a, b) => b[1] - a[1])
      .map(([a, n]) => ({
        key: a,
        area: AREAS[a],
        samples: n,
        us: usOf(n),
        usPerDecision: per(n),
        pct: pct(n),
      })),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const opt = (n) => {
    const i = args.indexOf(n);
    if (i < 0) return undefined;
    const v = Number(args[i + 1]);
    args.splice(i, 2);
    return v;
  };
  const from = opt("--from") ?? -Infinity;
  const to = opt("--to") ?? Infinity;
  const decisions = opt("--decisions");
  const S = summariseProfile(args[0], { top: Number(args[1] ?? 25), from, to, decisions });
  const col = (r) =>
    `${r.pct.toFixed(1).padStart(5)}%  ${(r.us / 1000).toFixed(0).padStart(6)} ms${
      decisions ? `  ${r.usPerDecision.toFixed(2).padStart(7)} µs/decision` : ""
    }`;
  console.log(`sampled ${(S.windowUs / 1000).toFixed(0)} ms, ${S.samples} samples`);
  for (const r of S.functions) console.log(`${col(r)}  ${r.fn} ${r.where}  [${r.area}]`);
  console.log("\nby area:");
  for (const r of S.areas) console.log(`${col(r)}  ${r.area}`);
}
