/**
 * The ApprovalService on its own: a real service on its own real approvals.db
 * in a temp dir (the store is its part), a clock the test moves, a receiver
 * that collects its events, a redactor that marks what it redacted, and
 * principals as verified tokens give them. The flow of the AuthZEN Access
 * Request and Approval profile: a needs_approval evaluation recorded, an
 * access request submitted, decided by an eligible human, and a presented
 * approval checked and consumed. The store's own rules (transitions,
 * idempotency keys, concurrency, the limit's arithmetic) are in
 * approval-store.test.ts and approval-request-limits.test.ts.
 */
import { ApprovalStore } from "../../src/approvals";
import { ApprovalService, type ApprovalServiceOptions } from "../../src/approvals/service";
import type { Decision, DecisionRequest, VerifiedFacts } from "../../src/model";
import { tempDir } from "../helpers/opa";
import {
  AGENT,
  CollectingEvents,
  FakeClock,
  principal,
  unitRequest,
  refused,
} from "../helpers/units";

const T0 = Date.parse("2031-01-01T00:00:00Z");
const S = 1000;
const BASE = "http://127.0.0.1:8181";
const maria = principal("maria", ["support_manager"]);

interface Unit {
  service: ApprovalService;
  clock: FakeClock;
  events: CollectingEvents;
  pending: Array<Record<string, unknown>>;
  dir: string;
}

const services: ApprovalService[] = [];
function unit(
  opts: Partial<Pick<ApprovalServiceOptions, "taskTtlSeconds" | "requestLimit" | "agentId">> & {
    dir?: string;
  } = {},
): Unit {
  const { dir = tempDir("toolgate-approvals-"), ...rest } = opts;
  const clock = new FakeClock(T0);
  const events = new CollectingEvents();
  const pending: Array<Record<string, unknown>> = [];
  const service = new ApprovalService({
    store: ApprovalStore.open(dir),
    agentId: AGENT,
    // marks what it was given to redact (names pass: the tool's name is redacted too)
    redact: <T>(v: T, mask?: readonly unknown[]): T => {
      if (typeof v === "string") return v;
      const marked: unknown = { ...v, redacted_with: mask ?? null };
      return marked as T;
    },
    events,
    onPending: (view) => pending.push(view),
    now: clock.now,
    ...rest,
  });
  services.push(service);
  return { service, clock, events, pending, dir };
}
afterAll(async () => {
  for (const s of services) await s.stop();
});

const refund = (amount: number, context: Record<string, unknown> = {}): DecisionRequest =>
  unitRequest({ tool: "refunds.issue", args: { amount }, context });

function verified(subject = "alice"): VerifiedFacts {
  return { agent: { id: AGENT }, subject: { id: subject, method: "trusted" }, time_ns: 0 };
}

/** A needs_approval decision as the Decider makes it, at the clock's time. */
function needsApproval(
  u: Unit,
  id: string,
  requirement: { single_use?: boolean; exclude?: string[]; ttl_seconds?: number } = {},
): Decision {
  return {
    decision_id: id,
    outcome: "needs_approval",
    reasons: [{ code: "approval_required", message: "amount > 50" }],
    obligations: [],
    approval: {
      approver_roles: ["support_manager"],
      single_use: requirement.single_use ?? true,
      ttl_seconds: requirement.ttl_seconds ?? 600,
      exclude: requirement.exclude ?? [],
    },
    access_request: {
      evaluation_id: id,
      expires_at: new Date(u.clock.ms + 900 * S).toISOString(),
    },
    policy: { bundle: "support-triage", revision: "rev-1" },
    evaluated_at: new Date(u.clock.ms).toISOString(),
  };
}

/** Records the evaluation and submits its access request (trusted mode: no requester). */
function requestApproval(
  u: Unit,
  id: string,
  req: DecisionRequest,
  requirement: Parameters<typeof needsApproval>[2] = {},
  subject = "alice",
): string {
  u.service.recordNeedsApproval(needsApproval(u, id, requirement), req, verified(subject));
  const { created, view } = u.service.submit(
    { ...req, denial: { evaluation_id: id } },
    undefined,
    BASE,
    null,
  );
  expect(created).toBe(true);
  return (view.task as { id: string }).id;
}

const withApproval = (req: DecisionRequest, id: string): DecisionRequest => ({
  ...req,
  context: { ...req.context, approval: { id } },
});

test("recorded, submitted, approved, verified, consumed once", () => {
  const u = unit();
  const req = refund(100);
  u.service.recordNeedsApproval(needsApproval(u, "ev_1"), req, verified(), [{ op: "hash" }]);
  const submitted = u.service.submit(
    { ...req, denial: { evaluation_id: "ev_1" } },
    undefined,
    BASE,
    null,
  );
  const id = (submitted.view.task as { id: string }).id;
  expect(submitted).toEqual({
    created: true,
    view: {
      task: {
        id,
        status: "pending",
        status_endpoint: `${BASE}/access/v1/requests/${id}`,
        created_at: "2031-01-01T00:00:00.000Z",
        expires_at: "2031-01-01T01:00:00.000Z",
        links: { cancel: `${BASE}/access/v1/requests/${id}/cancel` },
      },
    },
  });
  // approvers are told, and see the request as redacted with the policy's mask
  expect(u.pending).toHaveLength(1);
  expect(u.pending[0]).toMatchObject({
    id,
    status: "pending",
    initiator: "alice",
    agent: AGENT,
    tool: "refunds.issue",
    request: { ...req, redacted_with: [{ op: "hash" }] },
    reasons: [{ code: "approval_required", message: "amount > 50" }],
    policy_revision: "rev-1",
    agent_justification: null,
    stats: { requested_today: 1, approved_today: 0 },
  });
  expect(u.service.list(maria, "pending", false).map((t) => t.id)).toEqual([id]);
  expect(u.service.check(withApproval(req, id))).toEqual({
    kind: "ignored",
    code: "approval_pending",
    message: `approval ${id} is still pending`,
  });

  u.clock.advance(10 * S);
  const decided = u.service.decide(id, maria, true, "fine");
  expect(decided).toMatchObject({
    status: "approved",
    decided_by: "maria",
    comment: "fine",
    approved_until: "2031-01-01T00:10:10.000Z",
  });
  expect(u.service.get(id, BASE, null).result).toEqual({
    mode: "reevaluate",
    approval: {
      id,
      approved_at: "2031-01-01T00:00:10.000Z",
      approved_until: "2031-01-01T00:10:10.000Z",
      state: u.service.hash(req),
    },
  });

  u.clock.advance(S);
  const check = u.service.check(withApproval(req, id));
  expect(check).toEqual({
    kind: "verified",
    taskId: id,
    singleUse: true,
    approval: {
      id,
      state: "approved",
      approver: { id: "maria", roles: ["support_manager"] },
      single_use: true,
      expires_at_ns: Date.parse("2031-01-01T00:10:10.000Z") * 1e6,
    },
  });
  expect(u.service.consume(id, "dec_2")).toBe(true);
  expect(u.service.consume(id, "dec_3")).toBe(false);
  expect(u.service.check(withApproval(req, id))).toEqual({
    kind: "deny",
    code: "approval_used",
    message: `approval ${id} was already used (single use)`,
  });
  expect(u.events.names()).toEqual(["requested", "approved", "used"]);
  expect(u.events.events[2]?.fields).toMatchObject({
    approval_id: id,
    evaluation_id: "ev_1",
    decision_id: "ev_1",
    initiator: "alice",
    approver: "maria",
    used_by_decision_id: "dec_2",
  });
});

test("a multi-use approval is verified until it expires; each use is audited", () => {
  const u = unit();
  const req = refund(100);
  const id = requestApproval(u, "ev_1", req, { single_use: false, ttl_seconds: 60 });
  u.service.decide(id, maria, true, undefined);
  for (const d of ["dec_2", "dec_3"]) {
    const check = u.service.check(withApproval(req, id));
    expect(check).toMatchObject({ kind: "verified", singleUse: false });
    u.service.used(id, d);
  }
  expect(u.events.names()).toEqual(["requested", "approved", "used", "used"]);
  u.clock.advance(60 * S);
  expect(u.service.check(withApproval(req, id))).toEqual({
    kind: "expired",
    message: `approval ${id} expired at 2031-01-01T00:01:00.000Z`,
  });
});

describe("who may decide", () => {
  test("never the initiator or the agent, nor whom the policy excludes, nor without the role", () => {
    const u = unit();
    const id = requestApproval(u, "ev_1", refund(100), { exclude: ["piet"] });
    const cases: Array<[ReturnType<typeof principal>, string]> = [
      [principal("alice", ["support_manager"]), "the approver is the initiator"],
      [principal(AGENT, ["support_manager"]), "the approver is the agent"],
      [principal("piet", ["support_manager"]), "the policy excludes this approver"],
      [principal("sam", ["support_agent"]), "the approver holds none of the roles support_manager"],
    ];
    for (const [who, why] of cases) {
      const err = refused(() => u.service.decide(id, who, true, undefined));
      expect([who.id, err.code, err.message]).toEqual([
        who.id,
        "forbidden",
        `not eligible to decide ${id}: ${why}`,
      ]);
    }
    // refusals are audited; the task stays pending, and approvers without the role do not see it
    expect(u.events.names()).toEqual(["requested", "refused", "refused", "refused", "refused"]);
    expect(u.events.events[1]?.fields).toMatchObject({
      approver: "alice",
      why: "the approver is the initiator",
      wanted: "approve",
    });
    expect(u.service.detail(id)).toMatchObject({ status: "pending", decided_by: null });
    expect(u.service.list(principal("sam", ["support_agent"]), undefined, false)).toEqual([]);
    expect(u.service.list(principal("sam", ["support_agent"]), undefined, true)).toHaveLength(1);
    expect(u.service.decide(id, maria, false, "no")).toMatchObject({ status: "denied" });
  });
});

describe("one evaluation, one request", () => {
  test("a resubmission returns the open request; once denied it is closed, and the approval denies", () => {
    const u = unit();
    const req = refund(100);
    const id = requestApproval(u, "ev_1", req);
    const again = u.service.submit(
      { ...req, denial: { evaluation_id: "ev_1" } },
      undefined,
      BASE,
      null,
    );
    expect(again.created).toBe(false);
    expect((again.view.task as { id: string }).id).toBe(id);
    expect(u.pending).toHaveLength(1);

    u.service.decide(id, maria, false, "no refunds today");
    expect(u.service.check(withApproval(req, id))).toEqual({
      kind: "deny",
      code: "approval_denied",
      message: `approval ${id} was denied by maria`,
    });
    const closed = refused(() =>
      u.service.submit({ ...req, denial: { evaluation_id: "ev_1" } }, undefined, BASE, null),
    );
    expect(closed.code).toBe("access_request_closed");
    expect(u.events.names()).toEqual(["requested", "denied"]);
  });

  test("a cancelled request is closed, and its approval is not usable", () => {
    const u = unit();
    const req = refund(100);
    const id = requestApproval(u, "ev_1", req);
    expect(u.service.cancel(id, BASE, null).task).toMatchObject({ id, status: "cancelled" });
    expect(u.service.check(withApproval(req, id))).toEqual({
      kind: "ignored",
      code: "approval_not_usable",
      message: `approval ${id} is cancelled`,
    });
    expect(
      refused(() =>
        u.service.submit({ ...req, denial: { evaluation_id: "ev_1" } }, undefined, BASE, null),
      ).code,
    ).toBe("access_request_closed");
  });

  test("a request nobody decides in time expires (audited); so does an evaluation nobody asked about", () => {
    const u = unit({ taskTtlSeconds: 60 });
    const req = refund(100);
    const id = requestApproval(u, "ev_1", req);
    u.clock.advance(60 * S);
    expect(u.service.check(withApproval(req, id))).toEqual({
      kind: "expired",
      message: `approval request ${id} expired before it was decided`,
    });
    expect(u.service.get(id, BASE, null).task).toMatchObject({ status: "expired" });
    expect(u.events.names()).toEqual(["requested", "expired"]);

    u.service.recordNeedsApproval(needsApproval(u, "ev_2"), req, verified());
    u.clock.advance(900 * S);
    const late = refused(() =>
      u.service.submit({ ...req, denial: { evaluation_id: "ev_2" } }, undefined, BASE, null),
    );
    expect(late.code).toBe("approval_expired");
    // more than an hour after it expired, the evaluation nobody asked about is pruned; a cited one stays
    u.clock.advance(3600 * S);
    expect(u.service.prune()).toBe(0);
    u.clock.advance(1);
    expect(u.service.prune()).toBe(1);
  });
});

describe("bound to the exact request", () => {
  test("another amount, resource or job: the approval does not apply; other context members do not matter", () => {
    const u = unit();
    const req = refund(100);
    const id = requestApproval(u, "ev_1", req);
    u.service.decide(id, maria, true, undefined);
    const others: DecisionRequest[] = [
      refund(101),
      { ...req, resource: { type: "customer", id: "cust_2" } },
      unitRequest({ tool: "refunds.issue", args: { amount: 100 }, job: "job_2" }),
      { ...req, subject: { type: "user", id: "sam" } },
    ];
    for (const other of others) {
      expect(u.service.check(withApproval(other, id))).toMatchObject({
        kind: "ignored",
        code: "approval_mismatch",
      });
    }
    expect(u.service.check(withApproval(refund(100, { note: "unbound" }), id)).kind).toBe(
      "verified",
    );
  });

  test("a submission that differs from the evaluation it cites is refused", () => {
    const u = unit();
    const req = refund(100);
    u.service.recordNeedsApproval(needsApproval(u, "ev_1"), req, verified());
    const err = refused(() =>
      u.service.submit(
        { ...refund(5000), denial: { evaluation_id: "ev_1" } },
        undefined,
        BASE,
        null,
      ),
    );
    expect(err.code).toBe("invalid_denial_binding");
    expect(
      refused(() =>
        u.service.submit({ ...req, denial: { evaluation_id: "ev_x" } }, undefined, BASE, null),
      ).code,
    ).toBe("approval_not_found");
    expect(u.events.names()).toEqual([]);
  });

  test("an approval presented without an id, unknown, or of another agent is unknown here", () => {
    const u = unit();
    const req = refund(100);
    expect(u.service.check(req)).toEqual({ kind: "none" });
    expect(u.service.check({ ...req, context: { ...req.context, approval: "apr_1" } })).toEqual({
      kind: "ignored",
      code: "approval_unknown",
      message: "context.approval has no id",
    });
    expect(u.service.check(withApproval(req, "apr_nope"))).toMatchObject({
      kind: "ignored",
      code: "approval_unknown",
    });
    const id = requestApproval(u, "ev_1", req);
    u.service.decide(id, maria, true, undefined);
    const neighbour = unit({ dir: u.dir, agentId: "another-agent" });
    expect(neighbour.service.check(withApproval(req, id))).toMatchObject({
      kind: "ignored",
      code: "approval_unknown",
    });
    expect(refused(() => neighbour.service.detail(id)).code).toBe("approval_not_found");
  });
});

test("in identity mode jwt, only the initiator may submit, read or cancel her request", () => {
  const u = unit();
  const req = refund(100);
  u.service.recordNeedsApproval(needsApproval(u, "ev_1"), req, verified("alice"));
  const body = { ...req, denial: { evaluation_id: "ev_1" } };
  expect(refused(() => u.service.submit(body, undefined, BASE, "sam")).code).toBe(
    "approval_not_found",
  );
  const { view } = u.service.submit(body, undefined, BASE, "alice");
  const id = (view.task as { id: string }).id;
  expect(refused(() => u.service.get(id, BASE, "sam")).code).toBe("approval_not_found");
  expect(refused(() => u.service.cancel(id, BASE, "sam")).code).toBe("approval_not_found");
  expect(u.service.get(id, BASE, "alice").task).toMatchObject({ id, status: "pending" });
});

test("new requests are rate-limited per initiator", () => {
  const u = unit({ requestLimit: { max: 2, windowSeconds: 60 } });
  requestApproval(u, "ev_1", refund(100));
  u.clock.advance(10 * S);
  requestApproval(u, "ev_2", refund(200));
  u.service.recordNeedsApproval(needsApproval(u, "ev_3"), refund(300), verified());
  const limited = refused(() =>
    u.service.submit({ ...refund(300), denial: { evaluation_id: "ev_3" } }, undefined, BASE, null),
  );
  expect(limited.code).toBe("access_request_rate_limited");
  expect(limited.details).toEqual({ retry_after: 50 });
  // another initiator is not limited by alice's requests
  const sams = unitRequest({ user: "sam", tool: "refunds.issue", args: { amount: 100 } });
  requestApproval(u, "ev_4", sams, {}, "sam");
  u.clock.advance(50 * S);
  expect(
    u.service.submit({ ...refund(300), denial: { evaluation_id: "ev_3" } }, undefined, BASE, null)
      .created,
  ).toBe(true);
});

test("a revoked approval denies, and is audited", () => {
  const u = unit();
  const req = refund(100);
  const id = requestApproval(u, "ev_1", req);
  u.service.decide(id, maria, true, undefined);
  u.service.revoke(id, principal("olga", ["admin"]));
  expect(u.service.check(withApproval(req, id))).toEqual({
    kind: "deny",
    code: "approval_revoked",
    message: `approval ${id} was revoked by olga`,
  });
  expect(u.events.names()).toEqual(["requested", "approved", "revoked"]);
});

test("status: NOT_READY before start, OK, NOT_READY once stopped", async () => {
  const u = unit();
  expect(u.service.status()).toEqual({ state: "NOT_READY", detail: "not started" });
  await u.service.start();
  expect(u.service.status()).toEqual({ state: "OK" });
  await u.service.stop();
  expect(u.service.status()).toEqual({ state: "NOT_READY", detail: "stopped" });
});
