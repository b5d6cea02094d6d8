/**
 * An operator can always stop a tool (issue #13, item 11a): with
 * containment.db full — real SQLite answering SQLITE_FULL "database or disk
 * is full" — a kill switch still applies at once, in memory; the answer is
 * 202 with `persisted: false`, an error log line, a security event and a
 * metric say so, and toolgate keeps retrying until the change is on disk. The
 * same for lifting a switch. Budgeted allows fail closed meanwhile.
 */
import type { Toolgate } from "../../src/app";
import { captureLogger } from "../helpers/capture";
import {
  fillContainmentDb,
  freeContainmentDb,
  limitsBundle,
  readContainmentDb,
  startWithClock,
} from "../helpers/containment";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { decideAt, http, postJson, refRequest } from "../helpers/toolgate";

interface Decision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
}
interface Switch {
  id: string;
  persisted: boolean;
  deleted_by?: string;
}

const bundlePath = limitsBundle({
  budgets: [
    { tool: "refunds.issue", argument: "amount", per: "job", window_seconds: 60, max_total: 500 },
  ],
});

let olga: Record<string, string>;
let tg: Toolgate;
let stateDir: string;
let logs: ReturnType<typeof captureLogger>;
const start = async (): Promise<void> => {
  logs = captureLogger();
  tg = await startWithClock(
    { TOOLGATE_STATE_DIR: stateDir, TOOLGATE_BUNDLE: bundlePath },
    { log: logs.log },
  );
};
beforeAll(async () => {
  olga = bearer(await token("olga", { roles: ["admin"] }));
  stateDir = tempDir();
  await start();
});
afterAll(async () => {
  await tg.stop();
});

const ctl = (): string => tg.controlServer?.url ?? "";
const decide = (req: Record<string, unknown>): Promise<Decision> =>
  decideAt(tg.agentServer.url, req);
const codeOf = (d: Decision): string | undefined => d.reasons[0]?.code;
async function metricsText(): Promise<string> {
  return (await http(ctl(), "GET", "/metrics")).text;
}
async function listed(): Promise<Switch[]> {
  const r = await http(ctl(), "GET", "/v1/killswitches", undefined, olga);
  return (r.json as { killswitches: Switch[] }).killswitches;
}
const onDisk = () =>
  readContainmentDb<{ id: string; deleted_by: string | null }>(
    stateDir,
    "SELECT id, deleted_by FROM killswitches WHERE id LIKE 'ks_%'",
  );

/** Waits (no timing assertion) until the background retry has persisted everything. */
async function persistedAll(): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (/^toolgate_killswitch_changes_unpersisted 0$/m.test(await metricsText())) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the kill switch changes were never persisted");
}

describe("kill switches while containment.db is full", () => {
  test("set and lifted at once, answered 202 persisted:false, reported loudly, persisted later", async () => {
    const readReq = refRequest({ tool: "tickets.read" });
    const draftReq = refRequest({ tool: "replies.draft" });
    // a switch set while the disk had room: 201, persisted
    const early = await postJson(
      ctl(),
      "/v1/killswitches",
      { scope: { tool: "replies.draft" }, reason: "before the disk filled" },
      olga,
    );
    expect(early.status).toBe(201);
    const a = early.json as Switch;
    expect(a.persisted).toBe(true);
    expect(codeOf(await decide(draftReq))).toBe("tool_disabled");

    fillContainmentDb(tg);
    expect((await decide(readReq)).outcome).toBe("allow");

    // set: in force at once, though SQLite refused it
    const created = await postJson(
      ctl(),
      "/v1/killswitches",
      { scope: { tool: "tickets.read" }, reason: "INC-9 while the disk is full" },
      olga,
    );
    expect(created.status).toBe(202);
    const b = created.json as Switch;
    expect(b).toMatchObject({ persisted: false, created_by: "olga" });
    const denied = await decide(readReq);
    expect(codeOf(denied)).toBe("tool_disabled");
    expect(denied.reasons[0]?.message).toContain(b.id);
    expect(onDisk().map((r) => r.id)).not.toContain(b.id);

    // lift: lifted at once, also answered persisted:false
    const lifted = await http(ctl(), "DELETE", `/v1/killswitches/${a.id}`, undefined, olga);
    expect(lifted.status).toBe(202);
    expect(lifted.json).toMatchObject({ id: a.id, deleted_by: "olga", persisted: false });
    expect((await decide(draftReq)).outcome).toBe("allow");
    expect(onDisk().find((r) => r.id === a.id)?.deleted_by).toBeNull();

    // listed with its state; error log, security event and metrics say so
    expect((await listed()).map((s) => [s.id, s.persisted])).toEqual([[b.id, false]]);
    await tg.auditor?.flush();
    const errors = logs
      .lines()
      .filter((l) => l.level === "error" && l.event === "containment.killswitch_not_persisted");
    expect(errors.map((l) => l.op)).toEqual(["create", "delete"]);
    expect(String(errors[0]?.error)).toMatch(/database or disk is full/);
    const security = logs.lines().filter((l) => l.event === "security.killswitch_not_persisted");
    expect(security).toHaveLength(2);
    const text = await metricsText();
    expect(text).toMatch(/^toolgate_killswitch_changes_unpersisted 2$/m);
    expect(text).toMatch(
      /^toolgate_containment_store_failures_total\{op="killswitch_create"\} 1$/m,
    );

    // the disk has room again: the retry writes both changes, in order
    freeContainmentDb(tg);
    await persistedAll();
    expect((await listed()).map((s) => [s.id, s.persisted])).toEqual([[b.id, true]]);
    const rows = onDisk();
    expect(rows.find((r) => r.id === b.id)?.deleted_by).toBeNull();
    expect(rows.find((r) => r.id === a.id)?.deleted_by).toBe("olga");
    await tg.auditor?.flush();
    expect(logs.lines().filter((l) => l.event === "containment.killswitch.persisted")).toHaveLength(
      2,
    );

    // and a restart finds the disk's truth: b in force, a lifted
    await tg.stop();
    await start();
    expect(codeOf(await decide(readReq))).toBe("tool_disabled");
    expect((await decide(draftReq)).outcome).toBe("allow");
    await http(ctl(), "DELETE", `/v1/killswitches/${b.id}`, undefined, olga);
  });

  test("a budgeted allow whose reservation cannot be written is denied (fail closed)", async () => {
    const refund = refRequest({ tool: "refunds.issue", args: { amount: 10 } });
    expect((await decide(refund)).outcome).toBe("allow");
    fillContainmentDb(tg);
    const d = await decide(refund);
    expect(d.outcome).toBe("deny");
    expect(codeOf(d)).toBe("budget_unavailable");
    expect((d as { grant?: string }).grant).toBeUndefined();
    // an unbudgeted tool is not affected
    expect((await decide(refRequest({ tool: "tickets.read" }))).outcome).toBe("allow");
    expect(await metricsText()).toMatch(
      /^toolgate_containment_store_failures_total\{op="budget_reserve"\} 1$/m,
    );
    freeContainmentDb(tg);
    expect((await decide(refund)).outcome).toBe("allow");
  });
});
