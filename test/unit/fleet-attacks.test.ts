/**
 * A malicious or compromised control service answering a fleet sidecar
 * (src/fleet) through a protocol peer (./fleet-peer.ts): what the sidecar can
 * check itself, it checks — an answer never makes it allow what its own
 * records deny.
 */
import { bindingHash, DEFAULT_BINDING_CONTEXT_MEMBERS } from "../../src/approvals/binding";
import { ApprovalStore } from "../../src/approvals/store";
import { FleetApprovals, FleetClient } from "../../src/fleet";
import { SseParser } from "../../src/fleet/sse";
import type { Decision, DecisionRequest, VerifiedFacts } from "../../src/model";
import { silentLogger } from "../../src/shared/log";
import { until } from "../helpers/bundles";
import { tempDir } from "../helpers/opa";
import { FakeClock, unitRequest } from "../helpers/units";
import { ProtocolPeer } from "./fleet-peer";

const AGENT = "support-triage";
const T0 = Date.now();

const stop: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const s of stop.splice(0).reverse()) await s();
});

const verified = (subject = "alice"): VerifiedFacts => ({
  agent: { id: AGENT },
  subject: { id: subject, method: "trusted" },
  time_ns: T0 * 1e6,
});

const refund = (amount: number): DecisionRequest =>
  unitRequest({ tool: "refunds.issue", args: { amount } });

const hash = (r: DecisionRequest): string => bindingHash(r, DEFAULT_BINDING_CONTEXT_MEMBERS);

const requirement = {
  approver_roles: ["support_manager"],
  single_use: true,
  ttl_seconds: 900,
  exclude: [],
};

async function setup(): Promise<{ peer: ProtocolPeer; fa: FleetApprovals; clock: FakeClock }> {
  const peer = await new ProtocolPeer().start();
  stop.push(() => peer.stop());
  const clock = new FakeClock(T0);
  const client = new FleetClient({
    url: peer.url,
    agentId: AGENT,
    maxStalenessSeconds: 10,
    credential: () => Promise.resolve("tok"),
    log: silentLogger,
    version: "0.1.0",
    now: clock.now,
    callTimeoutMs: 500,
  });
  await client.start();
  stop.push(() => client.stop());
  await until(() => client.status().state === "OK");
  const fa = new FleetApprovals({
    client,
    store: ApprovalStore.open(tempDir("toolgate-fleet-attacks-")),
    agentId: AGENT,
    redact: (v) => v,
    log: silentLogger,
    now: clock.now,
  });
  await fa.start();
  stop.push(() => fa.stop());
  return { peer, fa, clock };
}

function needsApproval(id: string, clockMs: number): Decision {
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

/** An approved task of `evaluationId`, as a control service would answer it. */
function approvedTask(id: string, evaluationId: string, decidedAt: number, until: number) {
  return {
    id,
    evaluation_id: evaluationId,
    agent_id: AGENT,
    status: "approved",
    idempotency_key: null,
    requester: null,
    created_at: new Date(T0).toISOString(),
    expires_at: new Date(T0 + 3_600_000).toISOString(),
    decided_by: "maria",
    decided_by_roles: ["support_manager"],
    decided_at: new Date(decidedAt).toISOString(),
    comment: null,
    approved_until: new Date(until).toISOString(),
    revoked_at: null,
    revoked_by: null,
    used_at: null,
    used_by_decision_id: null,
  };
}

function evaluationWire(
  evaluationId: string,
  req: DecisionRequest,
  over: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    evaluation_id: evaluationId,
    decision_id: evaluationId,
    agent_id: AGENT,
    binding_hash: hash(req),
    binding_context_members: [...DEFAULT_BINDING_CONTEXT_MEMBERS],
    redacted_request: req,
    requirement,
    reasons: ["approval_required"],
    initiator: "alice",
    tool: "refunds.issue",
    policy_revision: "r1",
    created_at: new Date(T0).toISOString(),
    expires_at: new Date(T0 + 600_000).toISOString(),
    ...over,
  };
}

const present = (r: DecisionRequest, id: string): DecisionRequest => ({
  ...r,
  context: { ...r.context, approval: { id } },
});

describe("FleetApprovals against a lying control service", () => {
  test("an approval of a refund of 80 recorded here is not turned into one of 5000 (nor into a multi-use one) by the answer's evaluation", async () => {
    const { peer, fa, clock } = await setup();
    const asked = refund(80);
    fa.recordNeedsApproval(needsApproval("ev_1", clock.ms), asked, verified());
    const wanted = refund(5000);
    // the control service answers the task approved, with an evaluation bound to the
    // request the attacker wants, and multi use
    peer.on("GET /fleet/v1/access-requests/:id", () => ({
      status: 200,
      body: {
        task: approvedTask("apr_1", "ev_1", clock.ms, clock.ms + 900_000),
        evaluation: evaluationWire("ev_1", wanted, {
          requirement: { ...requirement, single_use: false },
        }),
      },
    }));
    expect(await fa.check(present(wanted, "apr_1"), clock.ms)).toMatchObject({
      kind: "ignored",
      code: "approval_mismatch",
    });
    // the request this sidecar recorded is approved — single use, as recorded here
    expect(await fa.check(present(asked, "apr_1"), clock.ms)).toMatchObject({
      kind: "verified",
      singleUse: true,
    });
  });

  test("an evaluation of another agent, or an approval for longer than its TTL, is not taken on the answer's word", async () => {
    const { peer, fa, clock } = await setup();
    const req = refund(80);
    // not recorded here (another sidecar of the agent did): the answer's evaluation is judged
    peer.on("GET /fleet/v1/access-requests/:id", () => ({
      status: 200,
      body: {
        task: approvedTask("apr_2", "ev_2", clock.ms, clock.ms + 900_000),
        evaluation: evaluationWire("ev_2", req, { agent_id: "billing-bot" }),
      },
    }));
    expect(await fa.check(present(req, "apr_2"), clock.ms)).toMatchObject({
      kind: "ignored",
      code: "approval_unknown",
    });
    // approved for a year though the requirement's TTL is 900 s
    const decidedAt = clock.ms;
    peer.on("GET /fleet/v1/access-requests/:id", () => ({
      status: 200,
      body: {
        task: approvedTask("apr_3", "ev_3", decidedAt, decidedAt + 365 * 86_400_000),
        evaluation: evaluationWire("ev_3", req),
      },
    }));
    expect(await fa.check(present(req, "apr_3"), clock.ms)).toMatchObject({ kind: "verified" });
    clock.advance(902_000);
    expect(await fa.check(present(req, "apr_3"), clock.ms)).toMatchObject({ kind: "expired" });
  });
});

describe("FleetApprovals: answers about another task", () => {
  test("a cancel answered with another task (or another agent's evaluation) is refused, not audited as this one's cancellation", async () => {
    const { peer, fa, clock } = await setup();
    const req = refund(80);
    const mine = {
      task: { ...approvedTask("apr_1", "ev_1", clock.ms, clock.ms + 900_000), status: "pending" },
      evaluation: evaluationWire("ev_1", req),
    };
    peer.on("GET /fleet/v1/access-requests/:id", () => ({ status: 200, body: mine }));
    const cancelled = (over: Record<string, unknown>) => ({
      status: 200,
      body: { ...mine, ...over },
    });
    peer.on("POST /fleet/v1/access-requests/:id/cancel", () =>
      cancelled({
        task: { ...approvedTask("apr_9", "ev_9", clock.ms, clock.ms), status: "cancelled" },
        evaluation: evaluationWire("ev_9", req),
      }),
    );
    await expect(fa.cancel("apr_1", "http://agent", null)).rejects.toMatchObject({
      code: "fleet_unavailable",
    });
    peer.on("POST /fleet/v1/access-requests/:id/cancel", () =>
      cancelled({
        task: { ...mine.task, status: "cancelled" },
        evaluation: evaluationWire("ev_1", req, { agent_id: "billing-bot" }),
      }),
    );
    await expect(fa.cancel("apr_1", "http://agent", null)).rejects.toMatchObject({
      code: "fleet_unavailable",
    });
    peer.on("POST /fleet/v1/access-requests/:id/cancel", () =>
      cancelled({ task: { ...mine.task, status: "cancelled" } }),
    );
    await expect(fa.cancel("apr_1", "http://agent", null)).resolves.toMatchObject({
      task: { id: "apr_1", status: "cancelled" },
    });
  });
});

describe("the kill-switch stream's parser against a hostile peer", () => {
  test("a line sent a byte at a time costs linear time (it froze the sidecar's event loop for seconds: quadratic)", () => {
    const p = new SseParser();
    const t = Date.now();
    let events = 0;
    for (let i = 0; i < 200_000; i++) events += p.feed("a").length;
    expect(events).toBe(0);
    // the line ends: it was a comment-free unknown field, nothing is dispatched
    expect(p.feed("\n\n")).toEqual([]);
    const chunk = "\n".repeat(60_000);
    for (let i = 0; i < 20; i++) p.feed(chunk);
    expect(Date.now() - t).toBeLessThan(1500);
  });

  test("still bounded and still exact: an endless line fed slowly throws; events split anywhere come out whole", () => {
    const small = new SseParser(1000);
    expect(() => {
      for (let i = 0; i < 2000; i++) small.feed("x");
    }).toThrow(/longer than 1000/);
    const p = new SseParser();
    const text = 'event: ping\r\ndata: {"seq":1}\r\n\r\n: c\nevent: change\ndata: a\ndata: b\n\n';
    const out = [];
    for (const ch of text) out.push(...p.feed(ch));
    expect(out).toEqual([
      { event: "ping", data: '{"seq":1}', id: undefined },
      { event: "change", data: "a\nb", id: undefined },
    ]);
  });
});
