/**
 * A single-use approval and a budget on the same call: the approval is spent
 * only on a call that is really allowed. Real HTTP on both ports, the real
 * library bundle with a refunds budget (opa-wasm), real ES256 tokens, the
 * real SQLite stores; the reservation fails on a real SQLITE_FULL. (An
 * exceeded budget denies before the approval is looked at: containment's
 * check runs first, and on one sidecar it sees every reservation.)
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { fillContainmentDb, freeContainmentDb, limitsBundle } from "../helpers/containment";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { decideAt, http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

interface Decision {
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
  grant?: string;
  access_request?: { evaluation_id: string; expires_at: string };
}
interface TaskView {
  task: { id: string; status: string };
  result?: { approval: Record<string, unknown> };
}

const refund = (amount: number) =>
  refRequest({ tool: "refunds.issue", args: { amount, currency: "EUR" } });
const codes = (d: Decision) => d.reasons.map((r) => r.code);
const withApproval = (req: Record<string, unknown>, approval: unknown) => ({
  ...req,
  context: { ...(req.context as object), approval },
});

let stateDir: string;
let tg: Toolgate;
let agent: string;
let control: string;

beforeAll(async () => {
  stateDir = tempDir();
  tg = await startTestToolgate({
    TOOLGATE_STATE_DIR: stateDir,
    TOOLGATE_CONTROL_PORT: "0",
    // refunds reserve their amount in containment.db; 300 EUR per job and hour
    TOOLGATE_BUNDLE: limitsBundle({
      budgets: [
        {
          tool: "refunds.issue",
          argument: "amount",
          per: "job",
          window_seconds: 3600,
          max_total: 300,
        },
      ],
    }),
  });
  agent = tg.agentServer.url;
  control = tg.controlServer?.url ?? "";
});
afterAll(async () => {
  await tg.stop();
});

const decide = (req: Record<string, unknown>): Promise<Decision> => decideAt(agent, req);

/** needs_approval → access request → maria approves: the approval the agent presents. */
async function approved(req: Record<string, unknown>): Promise<{ id: string; approval: unknown }> {
  const d = await decide(req);
  expect(d.outcome).toBe("needs_approval");
  const res = await postJson(agent, "/access/v1/requests", {
    ...req,
    denial: { evaluation_id: d.access_request?.evaluation_id },
  });
  expect(res.status).toBe(201);
  const id = (res.json as TaskView).task.id;
  const ok = await postJson(
    control,
    `/v1/approvals/${id}/approve`,
    { comment: "ok" },
    bearer(await token("maria", { roles: ["support_manager"] })),
  );
  expect(ok.status).toBe(200);
  const view = (await http(agent, "GET", `/access/v1/requests/${id}`)).json as TaskView;
  expect(view.result?.approval).toBeDefined();
  return { id, approval: view.result?.approval };
}

/** What approvals.db holds of the task's use (NULL until a decision spends it). */
function usedBy(id: string): unknown {
  const db = new DatabaseSync(join(stateDir, "approvals.db"), { readOnly: true });
  try {
    const row = db
      .prepare("SELECT used_by_decision_id AS used_by FROM tasks WHERE id = ?")
      .get(id) as { used_by: unknown } | undefined;
    expect(row).toBeDefined();
    return row?.used_by ?? null;
  } finally {
    db.close();
  }
}

describe("a single-use approval is spent only on a call that is allowed", () => {
  test("the reservation cannot be written: denied, the approval unspent; then it allows once", async () => {
    const req = refund(120);
    const { id, approval } = await approved(req);

    fillContainmentDb(tg);
    try {
      const denied = await decide(withApproval(req, approval));
      expect(denied.outcome).toBe("deny");
      expect(codes(denied)).toEqual(["budget_unavailable"]);
      expect(denied.grant).toBeUndefined();
      expect(usedBy(id)).toBeNull();
    } finally {
      freeContainmentDb(tg);
    }

    const allowed = await decide(withApproval(req, approval));
    expect(allowed.outcome).toBe("allow");
    expect(codes(allowed)).toContain("approved");
    expect(typeof allowed.grant).toBe("string");
    expect(usedBy(id)).not.toBeNull();

    const replay = await decide(withApproval(req, approval));
    expect(replay.outcome).toBe("deny");
    expect(codes(replay)).toEqual(["approval_used"]);
  });
});
