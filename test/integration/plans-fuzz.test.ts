/**
 * Plan approvals under fuzz: 10,000 generated calls against an approved
 * envelope on a real sidecar (real policy, real approvals.db) — none outside
 * the envelope is ever allowed by the plan, every inside call is allowed
 * while uses remain, and the uses never exceed max_uses. Then concurrently:
 * many parallel HTTP calls on the agent port while another process claims
 * uses of the same plan in the same approvals.db — the uses still never
 * exceed max_uses.
 *
 * The sequential part decides in process (Decider.decideSync, the path every
 * face takes), the concurrent part over HTTP. The generator is seeded
 * (FUZZ_SEED to replay a failure).
 */
import { spawn } from "node:child_process";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import type { DecisionRequest, RequestContext } from "../../src/model";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { http, postJson, startTestToolgate } from "../helpers/toolgate";
import { seededRandom as rng } from "../helpers/rng";

/** A fresh connection per call: the long in-process part outlives the server's keep-alive. */
const CLOSE = { connection: "close" };

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed19);
const CALLS = 10_000;

const JOB = { id: "job_1", purpose: "support_triage", customer_id: "cust_1" };
const SUBJECT = { type: "user", id: "alice" };
const RESOURCE = { type: "customer", id: "cust_1" };

/** The envelope under test: refunds of 51..200, EUR or USD, reason "damaged", nothing else. */
const ENVELOPE = {
  tool: "refunds.issue",
  arguments: {
    amount: { min: 51, max: 200 },
    currency: { enum: ["EUR", "USD"] },
    reason: "damaged",
  },
  max_uses: 1000,
};

/** The envelope's semantics, written independently of src/approvals/plans.ts. */
function oracleInside(req: DecisionRequest, planId: string): boolean {
  if (JSON.stringify(req.context?.plan) !== JSON.stringify({ id: planId })) return false;
  if (req.action.name !== "refunds.issue") return false;
  if (JSON.stringify(req.subject) !== JSON.stringify(SUBJECT)) return false;
  if (req.resource.type !== RESOURCE.type || req.resource.id !== RESOURCE.id) return false;
  if (JSON.stringify(req.context?.job) !== JSON.stringify(JOB)) return false;
  const args = req.action.properties?.arguments as Record<string, unknown> | undefined;
  if (args === undefined || args === null || typeof args !== "object" || Array.isArray(args))
    return false;
  const keys = Object.keys(args).sort();
  if (JSON.stringify(keys) !== JSON.stringify(["amount", "currency", "reason"])) return false;
  const { amount, currency, reason } = args;
  if (typeof amount !== "number" || !Number.isFinite(amount) || amount < 51 || amount > 200)
    return false;
  if (currency !== "EUR" && currency !== "USD") return false;
  return reason === "damaged";
}

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;

const AMOUNTS: unknown[] = [
  51,
  200,
  120,
  50,
  50.999999,
  51 - 1e-9,
  200 + 1e-9,
  200.00000000000003,
  201,
  0,
  -0,
  -51,
  1e308,
  -1e308,
  5e-324,
  Number.MAX_SAFE_INTEGER,
  Number.MAX_VALUE,
  NaN,
  Infinity,
  -Infinity,
  "100",
  "1e2",
  "NaN",
  "Infinity",
  " 100",
  "0x64",
  null,
  true,
  false,
  [100],
  { value: 100 },
  { min: 51, max: 200 },
  { $gt: 0 },
  1e21,
  4999,
  5001,
];
const CURRENCIES: unknown[] = [
  "EUR",
  "USD",
  "eur",
  "EUR ",
  "GBP",
  "",
  null,
  ["EUR"],
  { enum: ["EUR"] },
  1,
  "EURO",
  "E\u0000UR",
];
const REASONS: unknown[] = [
  "damaged",
  "Damaged",
  "damaged ",
  "",
  null,
  ["damaged"],
  { reason: "damaged" },
  0,
  "damaged\u200b",
  "d".repeat(5000),
];
const TOOLS = [
  "refunds.issue",
  "refunds.issue",
  "refunds.issue",
  "refunds.issue",
  "Refunds.issue",
  "refunds.issue ",
  "replies.send",
  "billing.update",
  "refunds",
  "tickets.read",
];
const EXTRA_KEYS = ["note", "amount2", "currency_", "constructor", "toString", "AMOUNT", ""];

/** One fuzzed call: mostly near the envelope, often on its edges, sometimes far off. */
function fuzzCall(r: () => number, planId: string): DecisionRequest {
  const inside = r() < 0.2;
  const amount = inside ? 51 + r() * 149 : r() < 0.5 ? pick(r, AMOUNTS) : (r() - 0.5) * 1000;
  const args: Record<string, unknown> = {
    amount,
    currency: inside || r() < 0.5 ? pick(r, ["EUR", "USD"]) : pick(r, CURRENCIES),
    reason: inside || r() < 0.6 ? "damaged" : pick(r, REASONS),
  };
  if (!inside) {
    if (r() < 0.15) delete args[pick(r, ["amount", "currency", "reason"])];
    if (r() < 0.15) args[pick(r, EXTRA_KEYS)] = pick(r, [1, "x", null, { deep: { er: [1] } }]);
    if (r() < 0.05) args.amount = { nested: { amount: 100 } };
  }
  const tool = inside || r() < 0.7 ? "refunds.issue" : pick(r, TOOLS);
  const resource =
    inside || r() < 0.8
      ? r() < 0.1
        ? { ...RESOURCE, properties: { note: "extra properties are not the resource" } }
        : { ...RESOURCE }
      : pick(r, [
          { type: "customer", id: "cust_2" },
          { type: "Customer", id: "cust_1" },
          { type: "customer", id: "cust_1 " },
          { type: "account", id: "cust_1" },
        ]);
  const subject =
    inside || r() < 0.85
      ? { ...SUBJECT }
      : pick(r, [
          { type: "user", id: "sam" },
          { type: "user", id: "Alice" },
          { type: "service", id: "alice" },
          { type: "user", id: "alice", properties: { roles: ["support_manager"] } },
        ]);
  const job =
    inside || r() < 0.85
      ? { ...JOB }
      : pick(r, [
          { ...JOB, id: "job_2" },
          { ...JOB, customer_id: "cust_2" },
          { id: "job_1", purpose: "support_triage" },
        ]);
  const shuffled: Record<string, unknown> = {};
  for (const k of Object.keys(args).sort(() => r() - 0.5)) shuffled[k] = args[k];
  return {
    subject,
    action: { name: tool, properties: { arguments: r() < 0.02 && !inside ? [] : shuffled } },
    resource,
    context: {
      job,
      plan: r() < 0.02 && !inside ? { id: planId.toUpperCase() } : { id: planId },
    },
  };
}

let tg: Toolgate;
let agent: string;
let control: string;
let stateDir: string;

beforeAll(async () => {
  stateDir = tempDir();
  tg = await startTestToolgate({ TOOLGATE_STATE_DIR: stateDir });
  agent = tg.agentServer.url;
  control = tg.controlServer?.url ?? "";
});
afterAll(async () => {
  await tg.stop();
});

async function approvedPlan(envelope: Record<string, unknown>): Promise<string> {
  const res = await postJson(
    agent,
    "/access/v1/plans",
    {
      subject: SUBJECT,
      resource: RESOURCE,
      context: { job: JOB },
      plan: { calls: [envelope], ttl_seconds: 900 },
    },
    CLOSE,
  );
  expect(res.status).toBe(201);
  const id = (res.json as { task: { id: string } }).task.id;
  const ok = await postJson(
    control,
    `/v1/approvals/${id}/approve`,
    {},
    { ...bearer(await token("maria", { roles: ["support_manager"] })), ...CLOSE },
  );
  expect(ok.status).toBe(200);
  return id;
}

function usesOf(planId: string): { uses: number; used: number } {
  const db = new DatabaseSync(join(stateDir, "approvals.db"), { readOnly: true });
  try {
    const row = db.prepare("SELECT uses FROM plan_envelopes WHERE plan_id = ?").get(planId) as {
      uses: number;
    };
    const ev = db
      .prepare("SELECT COUNT(*) AS n FROM plan_events WHERE plan_id = ? AND event = 'used'")
      .get(planId) as { n: number };
    return { uses: row.uses, used: Number(ev.n) };
  } finally {
    db.close();
  }
}

test(`${CALLS} fuzzed calls: none outside the envelope allowed, uses ≤ max (seed ${SEED})`, async () => {
  const planId = await approvedPlan(ENVELOPE);
  const r = rng(SEED);
  const ctx: RequestContext = { face: "native" };
  let planAllowed = 0;
  let insideCalls = 0;
  const wrong: string[] = [];
  for (let i = 0; i < CALLS; i++) {
    const req = fuzzCall(r, planId);
    const inside = oracleInside(req, planId);
    if (inside) insideCalls++;
    let outcome: string;
    let codes: string[];
    try {
      const { decision } = tg.decider.decideSync(req, ctx);
      outcome = decision.outcome;
      codes = decision.reasons.map((x) => x.code);
    } catch (e) {
      outcome = `refused:${(e as { code?: string }).code ?? "?"}`;
      codes = [];
    }
    const byPlan = outcome === "allow" && codes.includes("plan_use");
    if (byPlan) planAllowed++;
    if (byPlan && !inside)
      wrong.push(`#${i} allowed by the plan outside it: ${JSON.stringify(req)}`);
    if (outcome === "allow" && !byPlan) {
      // allowed on its own: the same call without the plan must be allowed too
      const without: Record<string, unknown> = { ...req.context };
      delete without.plan;
      const alone = tg.decider.decideSync({ ...req, context: without }, ctx).decision.outcome;
      if (alone !== "allow") wrong.push(`#${i} allowed only with the plan, without a use`);
    }
    // while uses remain, every call inside is allowed by the plan
    if (inside && planAllowed < ENVELOPE.max_uses && !byPlan)
      wrong.push(`#${i} inside but ${outcome} ${codes.join(",")}: ${JSON.stringify(req)}`);
    if (wrong.length > 5) break;
  }
  expect(wrong).toEqual([]);
  expect(insideCalls).toBeGreaterThan(500);
  expect(planAllowed).toBeLessThanOrEqual(ENVELOPE.max_uses);
  expect(planAllowed).toBe(Math.min(insideCalls, ENVELOPE.max_uses));
  expect(usesOf(planId)).toEqual({ uses: planAllowed, used: planAllowed });
}, 60_000);

test("concurrently: parallel HTTP calls and another process claiming the same plan never exceed max_uses", async () => {
  const MAX = 40;
  const planId = await approvedPlan({
    tool: "refunds.issue",
    arguments: { amount: { min: 51, max: 200 }, currency: "EUR" },
    max_uses: MAX,
  });
  // another process on the same approvals.db claims uses as fast as it can
  const script = `
    const { ApprovalStore } = require(${JSON.stringify(join(__dirname, "..", "..", "dist", "src", "approvals", "store.js"))});
    const store = ApprovalStore.open(process.argv[1]);
    let claimed = 0;
    for (let i = 0; i < 200; i++) {
      if (store.claimPlanUse(process.argv[2], 0, "child-" + i).claimed) claimed++;
    }
    store.close();
    process.stdout.write(String(claimed));
  `;
  const child = spawn(process.execPath, ["-e", script, stateDir, planId], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr.on("data", (b: Buffer) => (err += b.toString()));
  const childDone = new Promise<number>((resolve) =>
    child.on("close", (code) => resolve(code ?? -1)),
  );

  const call = (amount: number) =>
    postJson(
      agent,
      "/v1/decisions",
      {
        subject: SUBJECT,
        action: { name: "refunds.issue", properties: { arguments: { amount, currency: "EUR" } } },
        resource: RESOURCE,
        context: { job: JOB, plan: { id: planId } },
      },
      CLOSE,
    );
  let allowed = 0;
  let usedUp = 0;
  for (let batch = 0; batch < 4; batch++) {
    const results = await Promise.all(Array.from({ length: 25 }, (_, i) => call(51 + i)));
    for (const res of results) {
      expect(res.status).toBe(200);
      const d = res.json as { outcome: string; reasons: Array<{ code: string }>; grant?: string };
      if (d.outcome === "allow") {
        allowed++;
        expect(typeof d.grant).toBe("string");
      } else {
        expect(d.outcome).toBe("needs_approval");
        if (d.reasons.some((x) => x.code === "plan_used_up")) usedUp++;
      }
    }
  }
  expect([await childDone, err]).toEqual([0, ""]);
  const childClaimed = Number(out);
  // 300 asked for 40 uses: exactly 40 were granted, between the two processes
  expect(allowed + childClaimed).toBe(MAX);
  expect(usedUp).toBe(100 - allowed);
  expect(usesOf(planId)).toEqual({ uses: MAX, used: MAX });
  // and once used up, over HTTP too
  const last = await call(100);
  expect((last.json as { outcome: string }).outcome).toBe("needs_approval");
  expect((await http(agent, "GET", `/access/v1/plans/${planId}`, undefined, CLOSE)).status).toBe(
    200,
  );
}, 60_000);
