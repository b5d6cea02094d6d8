#!/usr/bin/env node
// Times ApprovalStore.recordEvaluation in-process (the INSERT a needs_approval
// decision makes synchronously on the decision path): N calls on a fresh store
// in a temp dir, p50/p99/mean in µs. Needs `npx tsc -p tsconfig.build.json`
// (dist/). fsync cost depends on the filesystem: pass --dir to measure on the
// disk that will hold state.dir (a tmpfs makes fsync free and hides the cost).
// The calls over 2 ms are mostly WAL auto-checkpoints (every ~400 records here).
//
//   node scripts/bench/approval-record.mjs [--n 2000] [--warmup 200] [--dir /path]
import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(import.meta.url);
const { ApprovalStore } = require(path.join(root, "dist/src/approvals/store.js"));

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "2000" },
    warmup: { type: "string", default: "200" },
    dir: { type: "string", default: os.tmpdir() },
  },
});
const n = Number(values.n);
const warmup = Number(values.warmup);
const dir = fs.mkdtempSync(path.join(values.dir, "toolgate-approval-record-"));

const now = Date.now();
const input = (i) => ({
  evaluationId: `ev_${i}_${"x".repeat(20)}`,
  decisionId: `dec_${i}`,
  bindingHash: "l0ugE2lupDlzVCE-RxH7_vnpivDDkZ585VWMB0HJN_c",
  bindingContextMembers: ["job"],
  redactedRequest: {
    subject: { type: "user", id: "alice" },
    action: { name: "refunds.issue", properties: { arguments: { amount: "[redacted]" } } },
    resource: { type: "customer", id: "cust_1" },
    context: { job: { id: "job_1", purpose: "triage", customer_id: "cust_1" } },
  },
  requirement: {
    approver_roles: ["support_manager"],
    single_use: true,
    ttl_seconds: 900,
    exclude: [],
  },
  reasons: ["refund_needs_manager"],
  initiator: "alice",
  agentId: "support-triage",
  tool: "refunds.issue",
  policyRevision: "rev-1",
  createdAt: now,
  expiresAt: now + 900_000,
});

const store = ApprovalStore.open(dir);
try {
  for (let i = 0; i < warmup; i++) store.recordEvaluation(input(`w${i}`));
  const us = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    store.recordEvaluation(input(i));
    us[i] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  const sorted = Array.from(us).sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(n - 1, Math.floor(p * n))];
  const mean = sorted.reduce((s, v) => s + v, 0) / n;
  const fmt = (v) => v.toFixed(1);
  console.log(
    `recordEvaluation n=${n} dir=${values.dir}: p50 ${fmt(q(0.5))} µs, p99 ${fmt(q(0.99))} µs, ` +
      `p99.9 ${fmt(q(0.999))} µs, max ${fmt(sorted[n - 1])} µs, mean ${fmt(mean)} µs ` +
      `(calls over 2 ms: ${sorted.filter((v) => v > 2000).length})`,
  );
} finally {
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
