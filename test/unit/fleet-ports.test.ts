/**
 * FleetContainment and FleetApprovals (src/fleet) against a protocol peer
 * (./fleet-peer.ts, a stand-in that speaks /fleet/v1 — not the control
 * service): the same denies as the sidecar's own Containment and
 * ApprovalService, what goes on the wire, and failing closed when the peer is
 * down, slow or hostile. The real control service: test/integration/fleet-sidecar.test.ts.
 */
import { ApprovalStore } from "../../src/approvals/store";
import { ApprovalService } from "../../src/approvals/service";
import { Containment, ContainmentStore, type LimitsSource } from "../../src/containment";
import { FleetApprovals, FleetClient, FleetContainment, LEASE_TTL_MS } from "../../src/fleet";
import type { Decision, DecisionRequest, VerifiedFacts } from "../../src/model";
import { silentLogger } from "../../src/shared/log";
import { isToolgateError } from "../../src/errors";
import { until } from "../helpers/bundles";
import { tempDir } from "../helpers/opa";
import { CollectingEvents, FakeClock, unitRequest } from "../helpers/units";
import { ProtocolPeer, switchWire } from "./fleet-peer";

const AGENT = "support-triage";
const T0 = Date.now();

function verified(subject = "alice"): VerifiedFacts {
  return { agent: { id: AGENT }, subject: { id: subject, method: "trusted" }, time_ns: T0 * 1e6 };
}

const engine = (limits: Record<string, unknown> = {}): LimitsSource => ({
  data: {
    toolgate: {
      deployment: {
        tools: {
          "tickets.read": { class: "read" },
          "replies.draft": { class: "draft" },
          "refunds.issue": { class: "execute" },
          "records.delete": { class: "admin" },
          "odd.tool": { class: "mystery" },
        },
        limits,
      },
    },
  },
});

const stop: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const s of stop.splice(0).reverse()) await s();
});

interface Setup {
  peer: ProtocolPeer;
  client: FleetClient;
  clock: FakeClock;
  fc: FleetContainment;
}

async function setup(opts: { sync?: boolean; callTimeoutMs?: number } = {}): Promise<Setup> {
  const peer = await new ProtocolPeer().start();
  stop.push(() => peer.stop());
  if (opts.sync === false) peer.streamMode = "silent";
  const clock = new FakeClock(T0);
  const client = new FleetClient({
    url: peer.url,
    agentId: AGENT,
    maxStalenessSeconds: 10,
    credential: () => Promise.resolve("tok"),
    log: silentLogger,
    version: "0.1.0",
    now: clock.now,
    callTimeoutMs: opts.callTimeoutMs ?? 500,
  });
  await client.start();
  stop.push(() => client.stop());
  if (opts.sync !== false) await until(() => client.status().state === "OK");
  const fc = new FleetContainment({
    client,
    agentId: AGENT,
    log: silentLogger,
    reservationTtlSeconds: () => 360,
    now: clock.now,
  });
  return { peer, client, clock, fc };
}

const refund = (amount: number): DecisionRequest =>
  unitRequest({ tool: "refunds.issue", args: { amount } });

describe("FleetContainment: kill switches and staleness", () => {
  test("a cached switch denies exactly as the sidecar's own Containment does", async () => {
    const { peer, fc, clock } = await setup();
    const local = new Containment({
      store: ContainmentStore.open(tempDir("toolgate-fleet-ks-")),
      agentId: AGENT,
      now: clock.now,
    });
    stop.push(() => local.stop());
    const made = local.createSwitch({ scope: { tool: "refunds.issue" }, reason: "fraud" }, "olga");
    peer.create({ ...switchWire(made.id, { tool: "refunds.issue" }, "fraud") });
    await until(() => fc.listSwitches().length === 1);
    const req = refund(10);
    expect(fc.check(req, verified(), engine(), clock.ms)).toEqual(
      local.check(req, verified(), engine(), clock.ms),
    );
    expect(fc.view(clock.ms)).toEqual(local.view(clock.ms));
    expect(fc.check(unitRequest({ tool: "tickets.read" }), verified(), engine(), clock.ms)).toBe(
      undefined,
    );
  });

  test("stale: approve/execute/admin and unknown classes denied containment_stale; reads and drafts go on", async () => {
    const { fc, clock } = await setup({ sync: false });
    const check = (tool: string) =>
      fc.check(unitRequest({ tool }), verified(), engine(), clock.ms) as
        { code: string; message: string } | undefined;
    expect(check("tickets.read")).toBeUndefined();
    expect(check("replies.draft")).toBeUndefined();
    for (const tool of ["refunds.issue", "records.delete", "odd.tool", "not.in.data"])
      expect(check(tool)?.code).toBe("containment_stale");
    expect(check("records.delete")?.message).toMatch(
      /has not delivered its first snapshot \(waiting 0 s\); admin-class tools are denied until it is back, reads and drafts go on$/,
    );
  });

  test("stale after max_staleness_seconds without an event; fresh again on a ping", async () => {
    const { peer, fc, clock } = await setup();
    expect(fc.check(refund(1), verified(), engine(), clock.ms)).toBeUndefined();
    clock.advance(10_001);
    const d = fc.check(refund(1), verified(), engine(), clock.ms) as { message: string };
    expect(d.message).toMatch(/has been down for 10 s; execute-class tools are denied/);
    peer.ping();
    await until(() => fc.check(refund(1), verified(), engine(), clock.ms) === undefined);
  });
});

describe("FleetContainment: rates through leases", () => {
  const limits = { rates: [{ id: "r", per: "agent", rate_per_second: 1, burst: 8 }] };

  test("an empty lease waits for the control service; tokens are then taken synchronously", async () => {
    const { peer, fc, clock } = await setup();
    let grant = 2;
    peer.on("POST /fleet/v1/rates/lease", () => ({
      status: 200,
      body: { granted: grant, retry_after: 0 },
    }));
    const first = fc.check(refund(1), verified(), engine(limits), clock.ms);
    expect(first).toBeInstanceOf(Promise);
    expect(await first).toBeUndefined();
    expect(peer.calls("POST", "/fleet/v1/rates/lease")[0]?.body).toEqual({
      rate_id: "r",
      key: `r|${AGENT}`,
      rate_per_second: 1,
      burst: 8,
      want: 2,
    });
    // one token left from the lease of 2: synchronous
    expect(fc.check(refund(1), verified(), engine(limits), clock.ms)).toBeUndefined();
    // below half: a prefetch went out in the background
    await until(() => peer.calls("POST", "/fleet/v1/rates/lease").length === 2);
    grant = 0;
    await new Promise((r) => setTimeout(r, 20));
    // leased tokens expire after 1 s
    clock.advance(LEASE_TTL_MS + 1);
    const late = fc.check(refund(1), verified(), engine(limits), clock.ms);
    expect(late).toBeInstanceOf(Promise);
  });

  test("the fleet bucket empty: rate_limited with the control's retry_after", async () => {
    const { peer, fc, clock } = await setup();
    peer.on("POST /fleet/v1/rates/lease", () => ({
      status: 200,
      body: { granted: 0, retry_after: 3 },
    }));
    expect(await fc.check(refund(1), verified(), engine(limits), clock.ms)).toEqual({
      code: "rate_limited",
      message: `rate limit r (1/s, burst 8 per agent '${AGENT}') reached`,
      retry_after: 3,
    });
  });

  test("no lease to be had (down, hostile answer): rate_limited, fail closed", async () => {
    const { peer, fc, clock } = await setup({ callTimeoutMs: 100 });
    peer.on("POST /fleet/v1/rates/lease", () => "hang");
    const d = (await fc.check(refund(1), verified(), engine(limits), clock.ms)) as {
      code: string;
      message: string;
    };
    expect(d.code).toBe("rate_limited");
    expect(d.message).toMatch(/no token could be leased from the fleet; denied \(fail closed\)/);
    peer.on("POST /fleet/v1/rates/lease", () => ({
      status: 200,
      body: { granted: "lots", retry_after: 0 },
    }));
    expect(
      ((await fc.check(refund(1), verified(), engine(limits), clock.ms)) as { code: string }).code,
    ).toBe("rate_limited");
  });

  test("a peer granting more than was asked is not believed: the rate cannot be widened", async () => {
    const { peer, fc, clock } = await setup();
    peer.on("POST /fleet/v1/rates/lease", () => ({
      status: 200,
      body: { granted: 1000, retry_after: 0 },
    }));
    const d = (await fc.check(refund(1), verified(), engine(limits), clock.ms)) as {
      code: string;
    };
    expect(d.code).toBe("rate_limited");
    // and nothing of the 1000 was kept for the next call
    const next = fc.check(refund(1), verified(), engine(limits), clock.ms);
    expect(next).toBeInstanceOf(Promise);
    expect(((await next) as { code: string }).code).toBe("rate_limited");
  });
});

describe("FleetContainment: budgets", () => {
  const limits = {
    budgets: [
      {
        id: "cap",
        tool: "refunds.issue",
        argument: "amount",
        per: "job",
        window_seconds: 3600,
        max_total: 100,
      },
      { id: "count", tool: "refunds.issue", per: "subject", window_seconds: 60, max_total: 5 },
    ],
  };

  test("reserve sends what Containment.reserve would count; ok allows, a refusal is budget_exceeded", async () => {
    const { peer, fc, clock } = await setup();
    const answers: unknown[] = [
      { ok: true },
      {
        ok: false,
        budget_id: "cap",
        used: 90,
        max_total: 100,
        amount: 30,
        window_seconds: 3600,
        retry_after: 12.2,
      },
    ];
    peer.on("POST /fleet/v1/budgets/reserve", () => ({ status: 200, body: answers.shift() }));
    expect(fc.check(refund(30), verified(), engine(limits), clock.ms)).toBeUndefined(); // no budget work
    expect(peer.calls("POST", "/fleet/v1/budgets/reserve")).toHaveLength(0);
    expect(
      await fc.reserve("d1", refund(30), verified(), engine(limits), clock.ms),
    ).toBeUndefined();
    expect(peer.calls("POST", "/fleet/v1/budgets/reserve")[0]?.body).toEqual({
      decision_id: "d1",
      ttl_seconds: 360,
      items: [
        { budget_id: "cap", key: "cap|job_1", amount: 30, max_total: 100, window_seconds: 3600 },
        { budget_id: "count", key: "count|alice", amount: 1, max_total: 5, window_seconds: 60 },
      ],
    });
    expect(await fc.reserve("d2", refund(30), verified(), engine(limits), clock.ms)).toEqual({
      code: "budget_exceeded",
      message:
        "budget cap: 90 of 100 spent or reserved in the last 3600 s per job; this call needs 30",
      retry_after: 13,
    });
    // a tool without budgets reserves nothing, synchronously
    expect(
      fc.reserve("d3", unitRequest({ tool: "tickets.read" }), verified(), engine(limits), clock.ms),
    ).toBeUndefined();
  });

  test("any failure is budget_unavailable (fail closed)", async () => {
    const { peer, fc, clock } = await setup({ callTimeoutMs: 100 });
    for (const answer of [
      "hang" as const,
      { status: 503, body: { code: "fleet_store_unavailable", message: "down" } },
      { status: 200, body: { ok: false, budget_id: "nope", used: 1, retry_after: 1 } },
      { status: 200, body: { ok: "yes" } },
    ]) {
      peer.on("POST /fleet/v1/budgets/reserve", () => answer);
      const d = (await fc.reserve("d", refund(30), verified(), engine(limits), clock.ms)) as {
        code: string;
        message: string;
      };
      expect(d.code).toBe("budget_unavailable");
      expect(d.message).toMatch(
        /^the budget reservation could not be recorded; denied \(fail closed\)/,
      );
    }
    // a reservation whose answer was lost may exist: a release follows, in the background
    await until(() => peer.calls("POST", "/fleet/v1/budgets/resolve").length > 0);
    expect(peer.calls("POST", "/fleet/v1/budgets/resolve")[0]?.body).toEqual({
      decision_id: "d",
      outcome: "release",
    });
  });

  test("reports and unreserve resolve in the background, retried while the control service is unreachable", async () => {
    const { peer, fc, clock } = await setup();
    peer.on("POST /fleet/v1/budgets/reserve", () => ({ status: 200, body: { ok: true } }));
    let failures = 1;
    peer.on("POST /fleet/v1/budgets/resolve", () =>
      failures-- > 0 ? "drop" : { status: 200, body: { resolution: "committed" } },
    );
    await fc.reserve("d1", refund(30), verified(), engine(limits), clock.ms);
    await fc.reserve("d2", refund(30), verified(), engine(limits), clock.ms);
    await fc.reserve("d3", refund(30), verified(), engine(limits), clock.ms);
    expect(fc.reported("d1", "ok", false)).toBe("committing");
    expect(fc.reported("d1", "ok", false)).toBe("none");
    expect(fc.reported("d2", "error", false)).toBe("releasing");
    expect(fc.reported("unknown", "ok", false)).toBe("none");
    fc.unreserve("d3");
    await until(() => peer.calls("POST", "/fleet/v1/budgets/resolve").length === 4);
    const bodies = peer.calls("POST", "/fleet/v1/budgets/resolve").map((c) => c.body);
    expect(bodies).toEqual(
      expect.arrayContaining([
        { decision_id: "d1", outcome: "commit" },
        { decision_id: "d2", outcome: "release" },
        { decision_id: "d3", outcome: "release" },
      ]),
    );
    // past the TTL nothing is sent: it counts as spent
    await fc.reserve("d4", refund(30), verified(), engine(limits), clock.ms);
    clock.advance(361_000);
    expect(fc.reported("d4", "ok", false)).toBe("expired");
  });
});

describe("FleetApprovals", () => {
  const requirement = {
    approver_roles: ["support_manager"],
    single_use: true,
    ttl_seconds: 900,
    exclude: [],
  };

  async function approvals(): Promise<{
    s: Setup;
    fa: FleetApprovals;
    events: CollectingEvents;
    store: ApprovalStore;
  }> {
    const s = await setup();
    const store = ApprovalStore.open(tempDir("toolgate-fleet-apr-"));
    const events = new CollectingEvents();
    const fa = new FleetApprovals({
      client: s.client,
      store,
      agentId: AGENT,
      redact: (v) => v,
      events,
      log: silentLogger,
      now: s.clock.now,
    });
    await fa.start();
    stop.push(() => fa.stop());
    return { s, fa, events, store };
  }

  /** A needs_approval decision for `req`, recorded by both a local ApprovalService and `fa`. */
  function needsApproval(req: DecisionRequest, id: string, clockMs: number): Decision {
    return {
      decision_id: id,
      outcome: "needs_approval",
      reasons: [{ code: "approval_required", message: "x" }],
      obligations: [],
      policy: { bundle: "b", revision: "r1" },
      evaluated_at: new Date(clockMs).toISOString(),
      approval: requirement,
      access_request: { evaluation_id: id, expires_at: new Date(clockMs + 600_000).toISOString() },
    };
  }

  function wireTask(id: string, evaluationId: string, over: Record<string, unknown> = {}) {
    return {
      id,
      evaluation_id: evaluationId,
      agent_id: AGENT,
      status: "pending",
      idempotency_key: null,
      requester: null,
      created_at: new Date(T0).toISOString(),
      expires_at: new Date(T0 + 3_600_000).toISOString(),
      decided_by: null,
      decided_by_roles: null,
      decided_at: null,
      comment: null,
      approved_until: null,
      revoked_at: null,
      revoked_by: null,
      used_at: null,
      used_by_decision_id: null,
      ...over,
    };
  }

  test("submit forwards the recorded evaluation and the request; the agent sees the local view", async () => {
    const { s, fa, events } = await approvals();
    const req = refund(80);
    fa.recordNeedsApproval(needsApproval(req, "ev_1", s.clock.ms), req, verified());
    let sent: Record<string, unknown> = {};
    s.peer.on("POST /fleet/v1/access-requests", (body) => {
      sent = body as Record<string, unknown>;
      return {
        status: 201,
        body: { created: true, task: wireTask("apr_1", "ev_1"), evaluation: sent.evaluation },
      };
    });
    const access = { ...req, denial: { evaluation_id: "ev_1" } };
    const r = await fa.submit(access, "idem-1", "http://agent", null);
    expect(r.created).toBe(true);
    expect(r.view).toEqual({
      task: {
        id: "apr_1",
        status: "pending",
        status_endpoint: "http://agent/access/v1/requests/apr_1",
        created_at: new Date(T0).toISOString(),
        expires_at: new Date(T0 + 3_600_000).toISOString(),
        links: { cancel: "http://agent/access/v1/requests/apr_1/cancel" },
      },
    });
    expect(sent).toMatchObject({
      request: access,
      idempotency_key: "idem-1",
      requester: null,
      evaluation: {
        evaluation_id: "ev_1",
        decision_id: "ev_1",
        agent_id: AGENT,
        initiator: "alice",
        requirement,
        binding_context_members: ["job"],
      },
    });
    expect(events.events.map((e) => e.event)).toEqual(["requested"]);
    // the local checks come first: another request, another requester, an unknown evaluation
    const refuse = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (e) {
        if (isToolgateError(e)) return e.code;
      }
      return "none";
    };
    expect(
      await refuse(
        fa.submit({ ...refund(81), denial: { evaluation_id: "ev_1" } }, undefined, "", null),
      ),
    ).toBe("invalid_denial_binding");
    expect(await refuse(fa.submit(access, undefined, "", "mallory"))).toBe("approval_not_found");
    expect(
      await refuse(fa.submit({ ...req, denial: { evaluation_id: "ev_x" } }, undefined, "", null)),
    ).toBe("approval_not_found");
  });

  test("check judges the control's task as ApprovalService judges its own", async () => {
    const { s, fa } = await approvals();
    const local = new ApprovalService({
      store: ApprovalStore.open(tempDir("toolgate-fleet-apr-local-")),
      agentId: AGENT,
      redact: (v) => v,
      now: s.clock.now,
    });
    stop.push(() => local.stop());
    const req = refund(80);
    const d = needsApproval(req, "ev_2", s.clock.ms);
    local.recordNeedsApproval(d, req, verified());
    const task = local.submit({ ...req, denial: { evaluation_id: "ev_2" } }, undefined, "", null);
    const taskId = (task.view.task as { id: string }).id;
    const evaluation = {
      evaluation_id: "ev_2",
      decision_id: "ev_2",
      agent_id: AGENT,
      binding_hash: local.hash(req),
      binding_context_members: ["job"],
      redacted_request: req,
      requirement,
      reasons: ["approval_required"],
      initiator: "alice",
      tool: "refunds.issue",
      policy_revision: "r1",
      created_at: new Date(s.clock.ms).toISOString(),
      expires_at: new Date(s.clock.ms + 600_000).toISOString(),
    };
    let wire = wireTask(taskId, "ev_2");
    s.peer.on("GET /fleet/v1/access-requests/:id", (_b, r) =>
      r.path.endsWith(taskId)
        ? { status: 200, body: { task: wire, evaluation } }
        : { status: 404, body: { code: "approval_not_found", message: "no" } },
    );
    const present = (r: DecisionRequest, id = taskId): DecisionRequest => ({
      ...r,
      context: { ...r.context, approval: { id } },
    });
    const same = async (r: DecisionRequest) =>
      expect(await fa.check(r, s.clock.ms)).toEqual(local.check(r, s.clock.ms));
    await same(present(req)); // pending
    await same(present(refund(90))); // bound to another request
    await same(present(req, "apr_unknown"));
    expect(fa.check(req, s.clock.ms)).toEqual({ kind: "none" });
    local.decide(
      taskId,
      { id: "maria", roles: ["support_manager"], method: "jwt", claims: {} } as never,
      true,
      undefined,
    );
    const approvedUntil = s.clock.ms + 900_000;
    wire = wireTask(taskId, "ev_2", {
      status: "approved",
      decided_by: "maria",
      decided_by_roles: ["support_manager"],
      decided_at: new Date(s.clock.ms).toISOString(),
      approved_until: new Date(approvedUntil).toISOString(),
    });
    await same(present(req)); // verified
    s.peer.on("POST /fleet/v1/approvals/:id/use", (b) => ({
      status: 200,
      body: { claimed: (b as { single_use: boolean }).single_use, task: wire },
    }));
    expect(await fa.consume(taskId, "dec_9")).toBe(true);
    expect(s.peer.calls("POST", `/fleet/v1/approvals/${taskId}/use`)[0]?.body).toEqual({
      decision_id: "dec_9",
      single_use: true,
    });
  });

  test("the control service down or hostile: check rejects (the decider denies approval_unavailable)", async () => {
    const { s, fa } = await approvals();
    s.peer.on("GET /fleet/v1/access-requests/:id", () => ({
      status: 200,
      body: { task: wireTask("apr_other", "ev"), evaluation: {} },
    }));
    const req = { ...refund(1), context: { approval: { id: "apr_1" } } };
    await expect(fa.check(req, s.clock.ms)).rejects.toMatchObject({ code: "fleet_unavailable" });
    s.peer.on("GET /fleet/v1/access-requests/:id", () => ({
      status: 500,
      body: { code: "internal_error", message: "x" },
    }));
    await expect(fa.check(req, s.clock.ms)).rejects.toMatchObject({ code: "fleet_unavailable" });
  });
});
