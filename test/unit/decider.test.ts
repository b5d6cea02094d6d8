/**
 * The Decider on its own: a real Decider and a real Identity; the policy is
 * the committed reference bundle as a real PolicyEngine behind a fake
 * PolicySource (or a tiny fake engine where the test is about something
 * else); audit is a sink that collects; the clock and the ids are the test's.
 * Containment and the approval service are real where the test follows a
 * flow through them (each on its own SQLite file in a temp dir), and fakes
 * where it is about how the Decider treats one of their answers.
 */
import { ApprovalStore } from "../../src/approvals";
import { ApprovalService, type ApprovalCheck } from "../../src/approvals/service";
import { Containment, ContainmentStore, type ContainmentDeny } from "../../src/containment";
import {
  Decider,
  FAIL_CLOSED_REASONS,
  type DeciderOptions,
  type PolicySource,
} from "../../src/decision";
import type { GrantMinter, IssuedGrant } from "../../src/grants";
import { Identity, type TokenVerifier } from "../../src/identity";
import type { Decision, DecisionRequest, RequestContext, VerifiedFacts } from "../../src/model";
import type { PolicyEngine } from "../../src/policy/engine";
import { tempDir } from "../helpers/opa";
import {
  AGENT,
  answer,
  CollectingSink,
  FakeClock,
  fakeEngine,
  FixedPolicy,
  principal,
  referenceEngine,
  sequentialIds,
  unitRequest,
  refused,
} from "../helpers/units";

const T0 = Date.parse("2031-01-01T00:00:00Z");
const ctx: RequestContext = { face: "native", requestId: "req-1" };

let reference: PolicyEngine;
beforeAll(async () => {
  reference = await referenceEngine();
});

/** A grant minter that signs a fake token, or fails as the test says. */
class FakeMinter implements GrantMinter {
  readonly issued: Decision[] = [];
  fail: Error | undefined;
  issue(d: Decision): IssuedGrant {
    if (this.fail !== undefined) throw this.fail;
    this.issued.push(structuredClone(d));
    return {
      token: `grant-for-${d.decision_id}`,
      info: { jti: `jti-${d.decision_id}`, aud: "tools", exp: 1 },
    };
  }
}

/** The approval service's side of the decision path, answering what the test says. */
class FakeApprovals {
  next: ApprovalCheck = { kind: "none" };
  consumeResult = true;
  readonly calls: string[] = [];
  readonly recorded: Decision[] = [];
  check(): ApprovalCheck {
    this.calls.push("check");
    return this.next;
  }
  consume(taskId: string, decisionId: string): boolean {
    this.calls.push(`consume ${taskId} ${decisionId}`);
    return this.consumeResult;
  }
  used(taskId: string, decisionId: string): void {
    this.calls.push(`used ${taskId} ${decisionId}`);
  }
  recordNeedsApproval(d: Decision): void {
    this.calls.push("record");
    this.recorded.push(structuredClone(d));
  }
  /** The Decider takes an ApprovalPort: the fake as the real service's type. */
  get service(): ApprovalService {
    return this as unknown as ApprovalService;
  }
}

const verifiedApproval = (taskId: string, singleUse: boolean): ApprovalCheck => ({
  kind: "verified",
  taskId,
  singleUse,
  approval: {
    id: taskId,
    state: "approved",
    approver: { id: "maria", roles: ["support_manager"] },
    single_use: singleUse,
    expires_at_ns: (T0 + 60_000) * 1e6,
  },
});

interface Setup {
  decider: Decider;
  sink: CollectingSink;
  clock: FakeClock;
}

function setup(over: Partial<DeciderOptions> & { engine?: PolicyEngine | undefined } = {}): Setup {
  const { engine, ...rest } = over;
  const sink = new CollectingSink();
  const clock = new FakeClock(T0);
  const policy: PolicySource = new FixedPolicy("engine" in over ? engine : reference);
  const decider = new Decider({
    policy,
    identity: new Identity({ agentId: AGENT, mode: "trusted" }),
    requestTtlSeconds: 900,
    now: clock.now,
    newId: sequentialIds(),
    sink,
    ...rest,
  });
  return { decider, sink, clock };
}

const containments: Containment[] = [];
function containment(clock: FakeClock): Containment {
  const c = new Containment({
    store: ContainmentStore.open(tempDir("toolgate-decider-")),
    agentId: AGENT,
    now: clock.now,
  });
  containments.push(c);
  return c;
}
afterAll(async () => {
  for (const c of containments) await c.stop();
});

describe("the policy's answer", () => {
  test("an allow: the checked output, the policy's revision, the decider's id and time", () => {
    const { decider, sink } = setup();
    const req = unitRequest({ tool: "tickets.read" });
    const { decision, notes } = decider.decideSync(req, ctx);
    expect(decision).toEqual({
      decision_id: "dec_1",
      outcome: "allow",
      reasons: [expect.objectContaining({ code: "granted" })],
      obligations: [],
      tool: { name: "tickets.read", class: "read", stage: "autonomous" },
      policy: { bundle: "support-triage", revision: reference.info.revision },
      evaluated_at: "2031-01-01T00:00:00.000Z",
    });
    expect(notes).toBeUndefined();
    expect(sink.events).toHaveLength(1);
    const [event] = sink.decisions();
    expect(event?.decision).toBe(decision);
    expect(event?.request).toBe(req);
    expect(event?.ctx).toBe(ctx);
    expect(event?.verified).toEqual({
      agent: { id: AGENT },
      subject: { id: "alice", method: "trusted" },
      time_ns: T0 * 1e6,
    });
  });

  test("a deny carries the policy's reasons; obligations come through on an allow", () => {
    const { decider, sink } = setup();
    const out = decider.decideSync(unitRequest({ customer: "cust_2" }), ctx).decision;
    expect(out.outcome).toBe("deny");
    expect(out.reasons.map((r) => r.code)).toEqual(["out_of_scope"]);
    const read = decider.decideSync(unitRequest({ tool: "accounts.summary.read" }), ctx).decision;
    expect(read.outcome).toBe("allow");
    expect(read.obligations.map((o) => o.type)).toEqual(["redact"]);
    expect(sink.events).toHaveLength(2);
  });

  test("the policy sees the request and what toolgate verified, at the decider's time", () => {
    const engine = fakeEngine(answer("allow"));
    const { decider } = setup({ engine });
    const req = unitRequest();
    decider.decideSync(req, ctx);
    expect(engine.inputs).toEqual([
      {
        request: req,
        verified: {
          agent: { id: AGENT },
          subject: { id: "alice", method: "trusted" },
          time_ns: T0 * 1e6,
        },
      },
    ]);
  });
});

describe("refusals before evaluation: thrown, and recorded once as a refusal", () => {
  test("no active policy: policy_unavailable", () => {
    const { decider, sink } = setup({ engine: undefined });
    const req = unitRequest();
    const err = refused(() => decider.decideSync(req, ctx));
    expect(err.code).toBe("policy_unavailable");
    expect(err.status).toBe(503);
    expect(sink.events).toEqual([
      {
        kind: "refusal",
        error: { code: "policy_unavailable", message: err.message, status: 503 },
        request: req,
        ctx,
      },
    ]);
  });

  test("a request naming another agent: agent_mismatch, the policy never asked", () => {
    const engine = fakeEngine(answer("allow"));
    const { decider, sink } = setup({ engine });
    const err = refused(() =>
      decider.decideSync(unitRequest({ context: { agent_id: "someone-else" } }), ctx),
    );
    expect(err.code).toBe("agent_mismatch");
    expect(engine.inputs).toHaveLength(0);
    expect(sink.refusals().map((e) => e.error.code)).toEqual(["agent_mismatch"]);
    expect(sink.events).toHaveLength(1);
  });

  test("identity mode jwt: the context's principal is the subject; none is unauthenticated", () => {
    const verifier = { dev: false } as unknown as TokenVerifier;
    const identity = new Identity({ agentId: AGENT, mode: "jwt", verifier });
    const { decider, sink } = setup({ identity });
    const ok = decider.decideSync(unitRequest(), {
      ...ctx,
      principal: principal("alice", ["support_agent"]),
    });
    expect(ok.decision.outcome).toBe("allow");
    expect(sink.decisions()[0]?.verified.subject).toEqual({
      id: "alice",
      method: "jwt",
      claims: { ...principal("alice").claims, roles: ["support_agent"] },
    });
    expect(refused(() => decider.decideSync(unitRequest(), ctx)).code).toBe("unauthenticated");
    expect(
      refused(() => decider.decideSync(unitRequest(), { ...ctx, principal: principal("sam") }))
        .code,
    ).toBe("subject_mismatch");
    expect(sink.events.map((e) => e.kind)).toEqual(["decision", "refusal", "refusal"]);
  });
});

describe("fail closed: what the policy cannot answer is a deny", () => {
  const cases: Array<[string, unknown, keyof typeof FAIL_CLOSED_REASONS, RegExp]> = [
    [
      "the evaluation throws",
      () => {
        throw new Error("wasm trap");
      },
      "evaluation_error",
      /wasm trap/,
    ],
    ["the entrypoint is undefined", undefined, "policy_output_invalid", /undefined/],
    [
      "the outcome is not one of three",
      { outcome: "maybe", reasons: [] },
      "policy_output_invalid",
      /outcome/,
    ],
    [
      "a deny without a reason",
      { outcome: "deny", reasons: [], obligations: [] },
      "policy_output_invalid",
      /at least one reason/,
    ],
    [
      "an obligation toolgate cannot honour",
      answer("allow", { obligations: [{ id: "o1", type: "teleport" }] }),
      "unknown_obligation",
      /teleport/,
    ],
  ];

  test.each(cases)("%s", (_what, out, code, detail) => {
    const minter = new FakeMinter();
    const { decider, sink } = setup({ engine: fakeEngine(out), grants: minter });
    const { decision } = decider.decideSync(unitRequest(), ctx);
    expect(decision.outcome).toBe("deny");
    expect(decision.obligations).toEqual([]);
    expect(decision.reasons).toHaveLength(1);
    expect(decision.reasons[0]?.code).toBe(code);
    expect(decision.reasons[0]?.message.startsWith(`${FAIL_CLOSED_REASONS[code]}: `)).toBe(true);
    expect(decision.reasons[0]?.message).toMatch(detail);
    expect(decision.grant).toBeUndefined();
    expect(minter.issued).toHaveLength(0);
    expect(sink.events).toHaveLength(1);
    expect(sink.decisions()[0]?.grant).toBeUndefined();
  });
});

describe("audit past its backlog's bound: deny before anything is done", () => {
  test("audit_unavailable without evaluating, reserving or counting; decided again once audit takes records", () => {
    const engine = fakeEngine(answer("allow"));
    const clock = new FakeClock(T0);
    const limits = { rates: [{ per: "subject", rate_per_second: 1, burst: 1 }] };
    const limited = fakeEngine(answer("allow"), { data: { toolgate: { deployment: { limits } } } });
    for (const e of [engine, limited]) {
      const { decider, sink } = setup({
        engine: e,
        containment: containment(clock),
        now: clock.now,
      });
      sink.full =
        "1.2 MB of audit records wait to be written, past audit.max_backlog_bytes (1.0 MB)";
      const { decision } = decider.decideSync(unitRequest(), ctx);
      expect(decision).toMatchObject({ outcome: "deny", obligations: [] });
      expect(decision.reasons).toEqual([
        {
          code: "audit_unavailable",
          message:
            "the decision could not be recorded; denied (fail closed): 1.2 MB of audit records wait to be written, past audit.max_backlog_bytes (1.0 MB)",
        },
      ]);
      expect(decision.grant).toBeUndefined();
      expect(e.inputs).toHaveLength(0);
      // handed to the sink (which counts it instead of recording it)
      expect(sink.decisions().map((d) => d.decision.reasons[0]?.code)).toEqual([
        "audit_unavailable",
      ]);
      sink.full = undefined;
      // the rate's one token was not taken by the refused decision
      expect(decider.decideSync(unitRequest(), ctx).decision.outcome).toBe("allow");
      expect(e.inputs).toHaveLength(1);
    }
  });
});

describe("containment comes first", () => {
  test("a kill switch denies whatever the policy says; recorded once, with the switch", () => {
    const engine = fakeEngine(answer("allow"));
    const clock = new FakeClock(T0);
    const c = containment(clock);
    const { decider, sink } = setup({ engine, containment: c, now: clock.now });
    const sw = c.createSwitch({ scope: { tool: "tickets.read" }, reason: "incident 7" }, "olga");
    const { decision, notes } = decider.decideSync(unitRequest(), ctx);
    expect(decision.outcome).toBe("deny");
    expect(decision.reasons).toEqual([
      { code: "tool_disabled", message: expect.stringContaining("incident 7") as string },
    ]);
    expect(notes).toEqual({ killswitch_id: sw.id });
    expect(engine.inputs).toHaveLength(0);
    expect(sink.events).toHaveLength(1);
    expect(sink.decisions()[0]?.notes).toEqual({ killswitch_id: sw.id });

    // lifted: the policy decides again, and sees the switches in force
    c.deleteSwitch(sw.id, "olga");
    c.createSwitch({ scope: { tool: "refunds.issue" }, reason: "other tool" }, "olga");
    expect(decider.decideSync(unitRequest(), ctx).decision.outcome).toBe("allow");
    const seen = engine.inputs[0]?.verified.containment as VerifiedFacts["containment"];
    expect(seen?.killswitches.map((k) => k.scope)).toEqual([{ tool: "refunds.issue" }]);
    expect(sink.events).toHaveLength(2);
  });

  test("a rate limit denies with retry_after; malformed limits deny (fail closed)", () => {
    const clock = new FakeClock(T0);
    const limits = { rates: [{ per: "subject", rate_per_second: 1, burst: 1 }] };
    const engine = fakeEngine(answer("allow"), { data: { toolgate: { deployment: { limits } } } });
    const { decider, sink } = setup({ engine, containment: containment(clock), now: clock.now });
    expect(decider.decideSync(unitRequest(), ctx).decision.outcome).toBe("allow");
    const held = decider.decideSync(unitRequest(), ctx).decision;
    expect(held).toMatchObject({ outcome: "deny", retry_after: 1 });
    expect(held.reasons.map((r) => r.code)).toEqual(["rate_limited"]);
    expect(engine.inputs).toHaveLength(1);

    const bad = fakeEngine(answer("allow"), {
      data: { toolgate: { deployment: { limits: { rates: "many" } } } },
    });
    const broken = setup({ engine: bad, containment: containment(clock), now: clock.now });
    const d = broken.decider.decideSync(unitRequest(), ctx).decision;
    expect(d.outcome).toBe("deny");
    expect(d.reasons[0]?.code).toBe("evaluation_error");
    expect(d.reasons[0]?.message).toMatch(/limits: rates must be an array/);
    expect(bad.inputs).toHaveLength(0);
    expect(sink.events).toHaveLength(2);
    expect(broken.sink.events).toHaveLength(1);
  });

  test("a budget: an allow reserves; an allow that turns into a deny gives its reservation back", async () => {
    const clock = new FakeClock(T0);
    const budgets = [{ tool: "tickets.read", per: "subject", window_seconds: 60, max_total: 1 }];
    const engine = fakeEngine(answer("allow"), {
      data: { toolgate: { deployment: { limits: { budgets } } } },
    });
    const minter = new FakeMinter();
    minter.fail = new Error("key gone");
    const { decider, sink } = setup({
      engine,
      containment: containment(clock),
      grants: minter,
      now: clock.now,
    });
    // the grant cannot be signed: denied, and the budget is not spent
    expect((await decider.decide(unitRequest(), ctx)).decision.reasons[0]?.code).toBe(
      "grant_failed",
    );
    minter.fail = undefined;
    expect((await decider.decide(unitRequest(), ctx)).decision.outcome).toBe("allow");
    // the one allowed call holds the budget (pending)
    const over = (await decider.decide(unitRequest(), ctx)).decision;
    expect(over.outcome).toBe("deny");
    expect(over.reasons[0]?.code).toBe("budget_exceeded");
    expect(over.grant).toBeUndefined();
    expect(minter.issued.map((d) => d.decision_id)).toEqual(["dec_2"]);
    expect(sink.events).toHaveLength(3);
  });
});

describe("grants", () => {
  test("an allow is signed; a deny and a needs_approval never are", () => {
    const minter = new FakeMinter();
    const { decider, sink } = setup({ grants: minter });
    const allow = decider.decideSync(unitRequest(), ctx).decision;
    expect(allow.grant).toBe("grant-for-dec_1");
    expect(sink.decisions()[0]?.grant).toEqual({ jti: "jti-dec_1", aud: "tools", exp: 1 });
    // the minter sees the finished allow
    expect(minter.issued[0]).toMatchObject({ decision_id: "dec_1", outcome: "allow" });

    const deny = decider.decideSync(unitRequest({ customer: "cust_2" }), ctx).decision;
    const needs = decider.decideSync(
      unitRequest({ tool: "refunds.issue", args: { amount: 100 } }),
      ctx,
    ).decision;
    expect([deny.outcome, needs.outcome]).toEqual(["deny", "needs_approval"]);
    expect(deny.grant).toBeUndefined();
    expect(needs.grant).toBeUndefined();
    expect(minter.issued).toHaveLength(1);
    expect(sink.decisions().map((e) => e.grant === undefined)).toEqual([false, true, true]);
  });

  test("a signing failure denies (grant_failed), without obligations or grant", () => {
    const minter = new FakeMinter();
    minter.fail = new Error("HSM unreachable");
    const { decider, sink } = setup({ grants: minter });
    const { decision } = decider.decideSync(unitRequest({ tool: "accounts.summary.read" }), ctx);
    expect(decision).toMatchObject({ outcome: "deny", obligations: [] });
    expect(decision.reasons).toEqual([
      {
        code: "grant_failed",
        message: "signing the grant failed; denied (fail closed): HSM unreachable",
      },
    ]);
    expect(decision.grant).toBeUndefined();
    expect(sink.events).toHaveLength(1);
    expect(sink.decisions()[0]?.grant).toBeUndefined();
  });
});

describe("approvals", () => {
  const refund = (amount: number, context: Record<string, unknown> = {}): DecisionRequest =>
    unitRequest({ tool: "refunds.issue", args: { amount }, context });

  test("needs_approval carries the requirement and an access request, recorded for approvals", () => {
    const approvals = new FakeApprovals();
    const { decider, sink } = setup({ approvals: approvals.service });
    const { decision } = decider.decideSync(refund(100), ctx);
    expect(decision.outcome).toBe("needs_approval");
    expect(decision.approval).toEqual({
      approver_roles: ["support_manager"],
      single_use: true,
      ttl_seconds: 900,
      exclude: ["alice", AGENT],
    });
    expect(decision.access_request).toEqual({
      evaluation_id: "dec_1",
      expires_at: "2031-01-01T00:15:00.000Z",
    });
    expect(approvals.calls).toEqual(["check", "record"]);
    expect(approvals.recorded).toEqual([decision]);
    expect(sink.events).toHaveLength(1);
    // an allow or a deny is not recorded
    decider.decideSync(refund(10), ctx);
    decider.decideSync(unitRequest({ customer: "cust_2" }), ctx);
    expect(approvals.recorded).toHaveLength(1);
    expect(sink.events).toHaveLength(3);
  });

  test("a presented approval that is denied, used or revoked denies before evaluation", () => {
    const approvals = new FakeApprovals();
    approvals.next = { kind: "deny", code: "approval_revoked", message: "revoked by olga" };
    const engine = fakeEngine(answer("allow"));
    const { decider, sink } = setup({ engine, approvals: approvals.service });
    const { decision } = decider.decideSync(refund(100, { approval: { id: "apr_1" } }), ctx);
    expect(decision.outcome).toBe("deny");
    expect(decision.reasons).toEqual([{ code: "approval_revoked", message: "revoked by olga" }]);
    expect(engine.inputs).toHaveLength(0);
    expect(sink.events).toHaveLength(1);
  });

  test("an approval that does not apply is noted on the needs_approval; an expired one denies with a fresh request", () => {
    const approvals = new FakeApprovals();
    const { decider, sink } = setup({ approvals: approvals.service });
    approvals.next = { kind: "ignored", code: "approval_pending", message: "still pending" };
    const pending = decider.decideSync(refund(100), ctx).decision;
    expect(pending.outcome).toBe("needs_approval");
    expect(pending.reasons.map((r) => r.code)).toEqual(["approval_required", "approval_pending"]);

    approvals.next = { kind: "expired", message: "expired at noon" };
    const expired = decider.decideSync(refund(100), ctx).decision;
    expect(expired.outcome).toBe("deny");
    expect(expired.reasons.map((r) => r.code)).toEqual(["approval_expired", "approval_required"]);
    expect(expired.access_request?.evaluation_id).toBe("dec_2");
    expect(approvals.recorded.map((d) => d.decision_id)).toEqual(["dec_1", "dec_2"]);
    expect(sink.events).toHaveLength(2);
  });

  test("a verified approval reaches the policy; single use is consumed, and a lost race denies", () => {
    const approvals = new FakeApprovals();
    const engine = fakeEngine(answer("allow"));
    const minter = new FakeMinter();
    const { decider, sink } = setup({ engine, approvals: approvals.service, grants: minter });
    approvals.next = verifiedApproval("apr_1", true);
    expect(decider.decideSync(refund(100), ctx).decision.outcome).toBe("allow");
    expect(engine.inputs[0]?.verified.approval).toEqual(
      (approvals.next as Extract<ApprovalCheck, { kind: "verified" }>).approval,
    );
    expect(approvals.calls).toEqual(["check", "consume apr_1 dec_1"]);

    approvals.consumeResult = false; // another decision used it first
    const lost = decider.decideSync(refund(100), ctx).decision;
    expect(lost).toMatchObject({ outcome: "deny", obligations: [] });
    expect(lost.reasons).toEqual([
      { code: "approval_used", message: "approval apr_1 was already used (single use)" },
    ]);
    expect(lost.grant).toBeUndefined();
    expect(minter.issued.map((d) => d.decision_id)).toEqual(["dec_1"]);

    approvals.next = verifiedApproval("apr_2", false);
    decider.decideSync(refund(100), ctx);
    expect(approvals.calls.slice(-1)).toEqual(["used apr_2 dec_3"]);
    expect(sink.events).toHaveLength(3);
  });

  test("with the real service: needs_approval, approved by a manager, then allowed once", () => {
    const clock = new FakeClock(T0);
    const approvals = new ApprovalService({
      store: ApprovalStore.open(tempDir("toolgate-decider-approvals-")),
      agentId: AGENT,
      redact: (v) => v,
      now: clock.now,
    });
    const { decider, sink } = setup({ approvals, now: clock.now });
    try {
      const first = decider.decideSync(refund(100), ctx).decision;
      expect(first.outcome).toBe("needs_approval");
      const { view } = approvals.submit(
        { ...refund(100), denial: { evaluation_id: first.access_request?.evaluation_id ?? "" } },
        undefined,
        "http://agent",
        null,
      );
      const taskId = (view.task as { id: string }).id;
      clock.advance(1000);
      approvals.decide(taskId, principal("maria", ["support_manager"]), true, "ok");
      clock.advance(1000);

      const approved = refund(100, { approval: { id: taskId } });
      const second = decider.decideSync(approved, ctx).decision;
      expect(second.outcome).toBe("allow");
      expect(sink.decisions()[1]?.verified.approval).toMatchObject({
        id: taskId,
        approver: { id: "maria", roles: ["support_manager"] },
        single_use: true,
      });
      const third = decider.decideSync(approved, ctx).decision;
      expect(third.outcome).toBe("deny");
      expect(third.reasons.map((r) => r.code)).toEqual(["approval_used"]);
      // bound to the request: another amount is decided as if no approval were presented
      const other = decider.decideSync(refund(200, { approval: { id: taskId } }), ctx).decision;
      expect(other.outcome).toBe("needs_approval");
      expect(other.reasons.map((r) => r.code)).toContain("approval_mismatch");
      expect(sink.events).toHaveLength(4);
    } finally {
      void approvals.stop();
    }
  });
});

describe("the candidate policy", () => {
  test("is evaluated on the same input and recorded beside the decision, never returned", () => {
    const candidate = fakeEngine(answer("deny"), { bundle: "next", revision: "next-2" });
    const { decider, sink } = setup({ candidate: new FixedPolicy(candidate) });
    const req = unitRequest();
    const { decision, notes } = decider.decideSync(req, ctx);
    expect(decision.outcome).toBe("allow");
    expect(JSON.stringify(decision)).not.toMatch(/next-2|fake_deny/);
    const recorded = {
      candidate: {
        bundle: "next",
        revision: "next-2",
        outcome: "deny",
        reasons: ["fake_deny"],
        diverged: true,
      },
    };
    expect(notes).toEqual(recorded);
    expect(sink.decisions()[0]?.notes).toEqual(recorded);
    expect(candidate.inputs).toEqual([{ request: req, verified: sink.decisions()[0]?.verified }]);
    expect(sink.events).toHaveLength(1);
  });

  test("a failing candidate is recorded as an error; the decision stands", () => {
    const candidate = fakeEngine(() => {
      throw new Error("trap");
    });
    const { decider, sink } = setup({ candidate: new FixedPolicy(candidate) });
    const { decision, notes } = decider.decideSync(unitRequest({ customer: "cust_2" }), ctx);
    expect(decision.outcome).toBe("deny");
    expect(notes?.candidate).toMatchObject({
      outcome: "error",
      reasons: ["policy_evaluation_failed"],
      diverged: true,
    });
    expect(sink.events).toHaveLength(1);
  });

  test("a stage shadow is recorded in the notes, not in the decision", () => {
    const shadow = { outcome: "deny", reasons: [{ code: "next_stage", message: "would deny" }] };
    const { decider, sink } = setup({ engine: fakeEngine(answer("allow", { shadow })) });
    const { decision, notes } = decider.decideSync(unitRequest(), ctx);
    expect(decision.outcome).toBe("allow");
    expect(decision).not.toHaveProperty("shadow");
    expect(notes).toEqual({ shadow });
    expect(sink.decisions()[0]?.notes).toEqual({ shadow });
  });
});

test("exactly one sink record per decide, whatever the way out", () => {
  const clock = new FakeClock(T0);
  const c = containment(clock);
  const minter = new FakeMinter();
  const { decider, sink } = setup({ containment: c, grants: minter, now: clock.now });
  const requests: Array<DecisionRequest | (() => void)> = [
    unitRequest(), // allow, signed
    unitRequest({ customer: "cust_2" }), // policy deny
    unitRequest({ tool: "refunds.issue", args: { amount: 100 } }), // needs_approval
    unitRequest({ context: { agent_id: "x" } }), // refusal
    () => {
      minter.fail = new Error("no key"); // grant failure
    },
    unitRequest(),
    () => {
      minter.fail = undefined;
      c.createSwitch({ scope: {}, reason: "stop all" }, "olga"); // kill switch
    },
    unitRequest(),
  ];
  let decides = 0;
  for (const r of requests) {
    if (typeof r === "function") {
      r();
      continue;
    }
    decides++;
    try {
      decider.decideSync(r, ctx);
    } catch {
      // refusals are thrown; they are recorded all the same
    }
    expect(sink.events).toHaveLength(decides);
  }
  expect(sink.events.map((e) => (e.kind === "decision" ? e.decision.outcome : e.kind))).toEqual([
    "allow",
    "deny",
    "needs_approval",
    "refusal",
    "deny",
    "deny",
  ]);
});

describe("ports that answer with a promise (fleet mode)", () => {
  const refund = (amount: number, context: Record<string, unknown> = {}): DecisionRequest =>
    unitRequest({ tool: "refunds.issue", args: { amount }, context });
  const later = <T>(v: T): Promise<T> => new Promise((r) => setTimeout(() => r(v), 5));
  const fail = (msg: string): Promise<never> =>
    new Promise((_r, reject) => setTimeout(() => reject(new Error(msg)), 5));

  /** FakeApprovals whose check and consume answer later (as the fleet's do over HTTP). */
  class AsyncApprovals extends FakeApprovals {
    consumeError: string | undefined;
    checkError: string | undefined;
    checkLater(): Promise<ApprovalCheck> {
      const v = super.check();
      return this.checkError !== undefined ? fail(this.checkError) : later(v);
    }
    consumeLater(taskId: string, decisionId: string): Promise<boolean> {
      const v = super.consume(taskId, decisionId);
      return this.consumeError !== undefined ? fail(this.consumeError) : later(v);
    }
    get port() {
      return {
        check: () => this.checkLater(),
        consume: (t: string, d: string) => this.consumeLater(t, d),
        used: (t: string, d: string) => this.used(t, d),
        recordNeedsApproval: (d: Decision) => this.recordNeedsApproval(d),
      };
    }
  }

  test("sync ports keep decide() synchronous; decideSync refuses an asynchronous port", async () => {
    const { decider } = setup();
    expect(decider.decide(unitRequest(), ctx)).not.toBeInstanceOf(Promise);
    const approvals = new AsyncApprovals();
    const { decider: fleet, sink } = setup({ approvals: approvals.port });
    expect(refused(() => fleet.decideSync(refund(100), ctx)).code).toBe("internal_error");
    // the decision it started still finishes and is recorded once
    await new Promise((r) => setTimeout(r, 20));
    expect(sink.events).toHaveLength(1);
  });

  test("an approval checked and claimed later: one allow, recorded once, after the claim", async () => {
    const approvals = new AsyncApprovals();
    const engine = fakeEngine(answer("allow"));
    const minter = new FakeMinter();
    const { decider, sink } = setup({ engine, approvals: approvals.port, grants: minter });
    approvals.next = verifiedApproval("apr_1", true);
    const pending = decider.decide(refund(100), ctx);
    expect(pending).toBeInstanceOf(Promise);
    expect(sink.events).toHaveLength(0);
    const { decision } = await pending;
    expect(decision.outcome).toBe("allow");
    expect(decision.grant).toBe("grant-for-dec_1");
    expect(approvals.calls).toEqual(["check", "consume apr_1 dec_1"]);
    expect(sink.events).toHaveLength(1);

    approvals.consumeResult = false;
    const lost = (await decider.decide(refund(100), ctx)).decision;
    expect(lost.outcome).toBe("deny");
    expect(lost.reasons[0]?.code).toBe("approval_used");
    expect(lost.grant).toBeUndefined();
  });

  test("a check or a claim that fails denies (fail closed), with no grant", async () => {
    const approvals = new AsyncApprovals();
    const engine = fakeEngine(answer("allow"));
    const minter = new FakeMinter();
    const { decider, sink } = setup({ engine, approvals: approvals.port, grants: minter });
    approvals.next = verifiedApproval("apr_1", true);
    approvals.consumeError = "control service unreachable";
    const claimed = (await decider.decide(refund(100), ctx)).decision;
    expect(claimed).toMatchObject({ outcome: "deny", obligations: [] });
    expect(claimed.reasons[0]?.code).toBe("approval_unavailable");
    expect(claimed.reasons[0]?.message).toContain("control service unreachable");
    expect(claimed.grant).toBeUndefined();

    approvals.checkError = "timeout";
    const checked = (await decider.decide(refund(100), ctx)).decision;
    expect(checked.outcome).toBe("deny");
    expect(checked.reasons[0]?.code).toBe("approval_unavailable");
    expect(engine.inputs).toHaveLength(1); // the failed check never reached the policy
    expect(minter.issued).toHaveLength(0);
    expect(sink.events).toHaveLength(2);
  });

  test("containment answering later: a check's deny, a reservation refused or failing", async () => {
    const engine = fakeEngine(answer("allow"));
    const minter = new FakeMinter();
    let checkAnswer: Promise<ContainmentDeny | undefined> = later(undefined);
    let reserveAnswer: Promise<ContainmentDeny | undefined> = later(undefined);
    const unreserved: string[] = [];
    const port = {
      check: () => checkAnswer,
      view: () => ({ killswitches: [] }),
      reserve: () => reserveAnswer,
      unreserve: (id: string) => unreserved.push(id),
    };
    const { decider } = setup({ engine, containment: port, grants: minter });
    expect((await decider.decide(refund(10), ctx)).decision.outcome).toBe("allow");

    checkAnswer = later({ code: "rate_limited", message: "fleet rate", retry_after: 1 });
    const limited = (await decider.decide(refund(10), ctx)).decision;
    expect(limited).toMatchObject({ outcome: "deny", retry_after: 1 });
    expect(engine.inputs).toHaveLength(1);

    checkAnswer = later(undefined);
    reserveAnswer = later({ code: "budget_exceeded", message: "over", retry_after: 60 });
    const over = (await decider.decide(refund(10), ctx)).decision;
    expect(over).toMatchObject({ outcome: "deny", reasons: [{ code: "budget_exceeded" }] });
    expect(over.grant).toBeUndefined();

    reserveAnswer = fail("connection refused");
    const down = (await decider.decide(refund(10), ctx)).decision;
    expect(down.outcome).toBe("deny");
    expect(down.reasons[0]?.code).toBe("budget_unavailable");
    expect(minter.issued).toHaveLength(1);
    expect(unreserved).toEqual([]);
  });
});
