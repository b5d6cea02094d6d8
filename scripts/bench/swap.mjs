// Bundle swap under load, for scripts/bench.mjs: prepares revisions of a
// bundle that decide the mix identically, drives a toolgate with autocannon
// while renaming them one after another over the bundle file it watches, and
// checks every response (status, outcome, reason codes, policy revision).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const autocannon = require("autocannon");

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/**
 * Writes `count` revisions of `bundle` to `dir` as `<prefix>-<i>.tar.gz`: the
 * same files (policy.wasm, Rego) with the manifest's `revision` set to
 * `<prefix>-<i>` and `toolgate.deployment.description` in data.json (a field no
 * rule reads) suffixed with the revision, so every revision is a distinct
 * bundle that decides like the original. Uses dist/ (the bundle tar reader and
 * writer toolgate itself uses).
 */
export async function makeRevisions(root, bundle, dir, count, prefix) {
  const { readTarGz, writeTarGz } = require(path.join(root, "dist", "src", "shared", "tar.js"));
  const files = await readTarGz(fs.readFileSync(bundle));
  const manifest = JSON.parse(files.get("/.manifest")?.toString() ?? "{}");
  const data = files.has("/data.json") ? JSON.parse(files.get("/data.json").toString()) : undefined;
  const dataChanged = typeof data?.toolgate?.deployment?.description === "string";
  const out = [];
  for (let i = 0; i < count; i++) {
    const revision = `${prefix}-${i}`;
    const next = new Map(files);
    next.set("/.manifest", Buffer.from(JSON.stringify({ ...manifest, revision })));
    if (dataChanged) {
      const d = JSON.parse(files.get("/data.json").toString());
      d.toolgate.deployment.description += ` (bench revision ${revision})`;
      next.set("/data.json", Buffer.from(JSON.stringify(d)));
    }
    const file = path.join(dir, `${revision}.tar.gz`);
    fs.writeFileSync(file, await writeTarGz(next));
    out.push({ revision, file });
  }
  return { revisions: out, dataChanged, baseRevision: manifest.revision ?? null };
}

const pct = (sorted, p) =>
  sorted.length === 0
    ? NaN
    : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];

/**
 * One autocannon run of `requests` (each with `expected: {outcome, codes}`)
 * against `base` + `/v1/decisions`. With `swaps` (a queue of prepared
 * revisions, consumed), one is renamed over `target` every `intervalMs` from
 * the start until `marginMs` before the end; the next waits until the previous
 * one has been seen in a decision. Every response body is parsed and checked,
 * with or without swaps, so the load generator does the same work in both.
 */
export async function swapLoad({
  base,
  statusUrl,
  requests,
  connections,
  seconds,
  known,
  swaps,
  target,
  intervalMs,
  marginMs,
  cpu,
}) {
  const lat = [];
  const ends = [];
  let non200 = 0;
  let wrong = 0;
  let unknownRev = 0;
  let firstWrong;
  const perRevision = new Map();
  const done = []; // {revision, writtenAt, writtenWall, firstDecisionMs, activatedMs, lastError}
  let pending; // the swap waiting for its first decision

  const reqs = requests.map((r) => ({
    method: r.method,
    path: r.path,
    headers: r.headers,
    body: r.body,
    onResponse: (status, body) => {
      if (status !== 200) {
        non200++;
        return;
      }
      let d;
      try {
        d = JSON.parse(body);
      } catch {
        d = undefined;
      }
      const codes = (d?.reasons ?? [])
        .map((x) => x.code)
        .sort()
        .join(",");
      if (d?.outcome !== r.expected.outcome || codes !== r.expected.codes) {
        wrong++;
        firstWrong ??= `${r.name}: ${d?.outcome} [${codes}] (revision ${d?.policy?.revision}), expected ${r.expected.outcome} [${r.expected.codes}]`;
      }
      const rev = d?.policy?.revision;
      if (!known.has(rev)) unknownRev++;
      perRevision.set(rev, (perRevision.get(rev) ?? 0) + 1);
      if (pending && rev === pending.revision) {
        pending.firstDecisionMs = performance.now() - pending.writtenAt;
        pending.resolve();
        pending = undefined;
      }
    },
  }));

  const cpu0 = cpu();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let running = true;
  const swapper = (async () => {
    if (!swaps) return;
    let k = 1;
    while (running && swaps.length > 0) {
      const at = t0 + k * intervalMs;
      if (at > end - marginMs) break;
      await sleep(at - performance.now());
      if (!running) break;
      const next = swaps.shift();
      const s = { revision: next.revision };
      const seen = new Promise((resolve) => (s.resolve = resolve));
      fs.renameSync(next.file, target); // atomic: the watcher sees the old file or the new one
      s.writtenAt = performance.now();
      s.writtenWall = Date.now();
      pending = s;
      done.push(s);
      // no overlap: the next swap waits until this one is seen in a decision (or the run ends)
      await Promise.race([seen, sleep(end - performance.now())]);
      if (s.firstDecisionMs !== undefined) {
        try {
          const st = (await (await fetch(statusUrl)).json()).bundles?.[0];
          if (st?.revision === s.revision)
            s.activatedMs = Date.parse(st.activated_at) - s.writtenWall;
          s.lastError = st?.last_error ?? null;
        } catch {
          /* status is a nicety; the decisions are the measurement */
        }
      }
      k = Math.max(k + 1, Math.ceil((performance.now() - t0) / intervalMs));
    }
  })();

  const result = await new Promise((resolve, reject) => {
    const inst = autocannon(
      { url: base, connections, duration: seconds, requests: reqs, timeout: 10 },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    inst.on("response", (_client, _status, _bytes, responseTime) => {
      lat.push(responseTime);
      ends.push(performance.now());
    });
  });
  running = false;
  await swapper;
  const wall = (performance.now() - t0) / 1000;
  const cpuUsed = cpu() - cpu0;

  // responses completing in a swap window: from the rename to 250 ms after the first decision carrying it
  const windows = done
    .filter((s) => s.firstDecisionMs !== undefined)
    .map((s) => [s.writtenAt, s.writtenAt + s.firstDecisionMs + 250]);
  const inWindow = [];
  for (let i = 0; i < ends.length; i++)
    if (windows.some(([a, b]) => ends[i] >= a && ends[i] <= b)) inWindow.push(lat[i]);

  const s = Float64Array.from(lat).sort();
  const w = Float64Array.from(inWindow).sort();
  return {
    rps: s.length / wall,
    n: s.length,
    p50: pct(s, 50),
    p99: pct(s, 99),
    p999: pct(s, 99.9),
    max: s.length ? s[s.length - 1] : NaN,
    cpuUsPerReq: (cpuUsed * 1e6) / s.length,
    failed: result.errors + result.timeouts + non200,
    errors: result.errors,
    timeouts: result.timeouts,
    non200,
    wrong,
    firstWrong,
    unknownRev,
    perRevision: Object.fromEntries(perRevision),
    swaps: done.map(({ revision, firstDecisionMs, activatedMs, lastError }) => ({
      revision,
      firstDecisionMs,
      activatedMs,
      lastError,
    })),
    window: { n: w.length, p99: pct(w, 99), max: w.length ? w[w.length - 1] : NaN },
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
const range = (xs, d = 0) =>
  xs.length === 0
    ? "n/a"
    : `min ${f(Math.min(...xs), d)}, median ${f(median(xs), d)}, max ${f(Math.max(...xs), d)}`;

/** Totals over the runs: what the summary line and the checks need. */
export function swapTotals(S) {
  const swapRuns = S.runs.filter((r) => r.swapping);
  const all = swapRuns.flatMap((r) => r.swaps);
  const ratios = [];
  for (let r = 1; r <= S.rounds; r++) {
    const on = S.runs.find((x) => x.round === r && x.swapping);
    const off = S.runs.find((x) => x.round === r && !x.swapping);
    if (on && off) ratios.push(on.rps / off.rps);
  }
  return {
    swaps: all.length,
    seen: all.filter((s) => s.firstDecisionMs !== undefined).length,
    failed: S.runs.reduce((a, r) => a + r.failed, 0),
    wrong: S.runs.reduce((a, r) => a + r.wrong, 0),
    unknownRev: S.runs.reduce((a, r) => a + r.unknownRev, 0),
    rejected: all.filter((s) => s.lastError).length + (S.logRejected ?? 0),
    ratios,
    all,
  };
}

/** True when the swap runs met the bar: every swap seen, no failed or wrong answers. */
export function swapOk(S) {
  const t = swapTotals(S);
  return (
    t.swaps > 0 &&
    t.seen === t.swaps &&
    t.failed === 0 &&
    t.wrong === 0 &&
    t.unknownRev === 0 &&
    t.rejected === 0 &&
    (S.logActivated === undefined || S.logActivated === 1 + t.swaps)
  );
}

/** The report section's lines (after its heading). */
export function renderSwap(S) {
  const L = [];
  const p = (s = "") => L.push(s);
  if (S.failed) {
    p(`**Bundle swap measurement failed**: ${S.failed}`);
    return L;
  }
  const t = swapTotals(S);
  p(
    `toolgate with audit on (as above), its policy from the file source: \`TOOLGATE_POLICY_SOURCE=file\`, \`TOOLGATE_BUNDLE=<tmp>/support-triage.tar.gz\`, \`TOOLGATE_POLICY_FILE_WATCH_INTERVAL_MS=${S.watchMs}\` (a change is loaded once it has held still for 250 ms). ${S.prepared} revisions of bundles/support-triage.tar.gz (base revision ${S.baseRevision}) were prepared by scripts/bench/swap.mjs: the same policy.wasm and Rego with a new manifest \`revision\`${S.dataChanged ? " and a changed `deployment.description` in data.json (no rule reads it)" : ""}. During a swap run the next one is renamed over the watched file every ${f(S.intervalMs / 1000, 1)} s after the start, the last no later than ${f(S.marginMs / 1000, 1)} s before the end (a swap waits until the previous one has been seen in a decision, so swaps never overlap). \`POST /v1/decisions\`, the mix, c=${S.conns}, ${S.seconds} s per run, ${S.rounds} round(s) alternating with a run of the same length without swaps on the same process (its watcher running, the file unchanged), after ${S.warmup} s of warm-up.`,
  );
  p();
  p(
    "Every response body is parsed and checked in both kinds of run: status 200, outcome and reason codes equal to the verified table, `policy.revision` one of the prepared revisions. A swap is **seen** when a decision carries its revision.",
  );
  p();
  p(
    "| round | run | req/s | p50 ms | p99 ms | p99.9 ms | max ms | CPU µs/req | swaps | seen | failed | wrong outcome |",
  );
  p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const r of S.runs) {
    const seen = r.swaps.filter((s) => s.firstDecisionMs !== undefined).length;
    p(
      `| ${r.round} | ${r.swapping ? "swaps" : "no swap"} | ${f(r.rps, 0)} | ${f(r.p50, 3)} | ${f(r.p99, 3)} | ${f(r.p999, 3)} | ${f(r.max, 1)} | ${f(r.cpuUsPerReq, 0)} | ${r.swapping ? r.swaps.length : "–"} | ${r.swapping ? seen : "–"} | ${r.failed} | ${r.wrong} |`,
    );
  }
  p();
  const act = t.all.map((s) => s.activatedMs).filter(Number.isFinite);
  const first = t.all.map((s) => s.firstDecisionMs).filter(Number.isFinite);
  const win = S.runs.filter((r) => r.swapping).map((r) => r.window);
  const off = S.runs.filter((r) => !r.swapping);
  p(
    `- swaps: ${t.swaps} done, ${t.seen} seen in decisions; failed requests (errors, timeouts, non-200): ${t.failed}; wrong outcome or reason codes: ${t.wrong}; unknown revision in a decision: ${t.unknownRev}; bundle rejections (\`last_error\` in /v1/status after a swap, \`bundle.rejected\` in toolgate's log): ${t.rejected}; \`bundle.activated\` in toolgate's log: ${S.logActivated} (the start and every swap).${t.all.length ? "" : " No swap was done: the run is too short for the interval."}`,
  );
  p(
    `- throughput with swaps / without, per round: ${t.ratios.map((x) => f(x)).join(", ")} (median ${f(median(t.ratios))}).`,
  );
  p(
    `- rename → bundle activated (\`activated_at\` in /v1/status): ${range(act)} ms; rename → first decision carrying the new revision (seen by the load generator): ${range(first)} ms. Both include the watch interval (${S.watchMs} ms) and the 250 ms stability wait.`,
  );
  p(
    `- responses completing in a swap window (rename → first decision with the new revision + 250 ms): ${win.reduce((a, w) => a + w.n, 0)}; p99 per round ${win.map((w) => f(w.p99, 3)).join(", ")} ms, max ${f(Math.max(...win.map((w) => w.max)), 1)} ms (no-swap runs: p99 ${off.map((r) => f(r.p99, 3)).join(", ")} ms, max ${f(Math.max(...off.map((r) => r.max)), 1)} ms).`,
  );
  const firstWrong = S.runs.find((r) => r.firstWrong)?.firstWrong;
  if (firstWrong) p(`- first wrong answer: ${firstWrong}`);
  return L;
}

/** The summary line. */
export function swapSummary(S) {
  if (S.failed) return `bundle swap under load: measurement failed: ${S.failed}`;
  const t = swapTotals(S);
  return `bundle swap under load: ${t.swaps} swaps (${t.seen} seen in decisions), ${t.failed} failed requests, ${t.wrong} wrong outcomes, throughput ${f(100 * median(t.ratios), 0)} % of no-swap (c=${S.conns}, median over ${S.rounds} round(s)) — target 0 failed, 0 wrong: ${swapOk(S) ? "met" : "not met"}`;
}
