/**
 * Session state in fleet mode (#19, docs/sessions.md): a session may span
 * sidecars, so the labels its allowed calls read are kept by the control
 * service (real `toolgate control` on the jest run's PostgreSQL) and an
 * egress call reads them fresh. Two real sidecars of one agent: customer data
 * read through A gates web.post through B; control unreachable → a labelled
 * read and an egress call are denied session_unavailable (fail closed), and
 * a call that neither reads labels nor sends data out goes on.
 */
import { createHash } from "node:crypto";
import type { Toolgate } from "../../src/app";
import type { DecisionRequest } from "../../src/model";
import type { FleetSessions } from "../../src/fleet";
import type { ControlService } from "../../src/control";
import { until } from "../helpers/bundles";
import { freePort } from "../helpers/net";
import { freshDatabase, type FreshDatabase } from "../helpers/postgres";
import { decideAt, refRequest, startTestToolgate } from "../helpers/toolgate";
import { startTestControl } from "../helpers/control";

jest.setTimeout(60_000);

interface Decision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
}

let db: FreshDatabase;
let controlPort: number;
let control: ControlService | undefined;
const sidecars: Toolgate[] = [];

const startControl = (): Promise<ControlService> => startTestControl(controlPort, db.url);

async function synced(env: Record<string, string> = {}): Promise<Toolgate> {
  const tg = await startTestToolgate({
    TOOLGATE_FLEET_URL: `http://127.0.0.1:${controlPort}`,
    TOOLGATE_FLEET_MAX_STALENESS_SECONDS: "2",
    ...env,
  });
  sidecars.push(tg);
  await until(() => tg.fleet?.client.status().state === "OK");
  return tg;
}

const inSession = (tool: string, session: string, args?: Record<string, unknown>) => {
  const r = refRequest({ tool, ...(args ? { args } : {}) });
  r.context = { ...(r.context as object), session: { id: session } };
  return r;
};

const decide = (tg: Toolgate, req: Record<string, unknown>): Promise<Decision> =>
  decideAt(tg.agentServer.url, req);

const codes = (d: Decision) => d.reasons.map((r) => r.code);

beforeAll(async () => {
  db = await freshDatabase();
  controlPort = await freePort();
  control = await startControl();
});

afterAll(async () => {
  await Promise.all(sidecars.splice(0).map((t) => t.stop()));
  await control?.stop();
  await db.drop();
});

test("customer data read through sidecar A gates web.post through sidecar B, in that session only", async () => {
  const [a, b] = await Promise.all([synced(), synced()]);
  expect((await decide(b, inSession("web.post", "fs-1"))).outcome).toBe("allow");
  const read = await decide(a, inSession("accounts.summary.read", "fs-1"));
  expect(read.outcome).toBe("allow");
  const gated = await decide(b, inSession("web.post", "fs-1"));
  expect([gated.outcome, codes(gated)]).toEqual([
    "needs_approval",
    ["egress_after_sensitive_read"],
  ]);
  expect(gated.reasons[0]?.message).toContain(read.decision_id);
  expect((await decide(b, inSession("web.post", "fs-2"))).outcome).toBe("allow");
  // the row is the control service's: both sidecars see it
  const again = await decide(a, inSession("web.post", "fs-1"));
  expect(again.outcome).toBe("needs_approval");
});

test("control unreachable: a labelled read and an egress call are denied session_unavailable; other calls go on", async () => {
  const a = await synced();
  await control?.stop();
  control = undefined;
  try {
    const read = await decide(a, inSession("tickets.read", "fs-3"));
    expect([read.outcome, codes(read)]).toEqual(["deny", ["session_unavailable"]]);
    const post = await decide(a, inSession("web.post", "fs-3"));
    expect([post.outcome, codes(post)]).toEqual(["deny", ["session_unavailable"]]);
    const draft = await decide(a, inSession("replies.draft", "fs-3"));
    expect(draft.outcome).toBe("allow");
  } finally {
    control = await startControl();
  }
  await until(async () => (await decide(a, inSession("tickets.read", "fs-4"))).outcome === "allow");
});

describe("session.fleet_scope full: counts, windows and sums are fleet-wide too", () => {
  const full = { TOOLGATE_SESSION_FLEET_SCOPE: "full" };
  /** The Decider's key for alice's session `id` (a digest of the subject, then the id). */
  const key = (id: string) =>
    `${createHash("sha256").update("alice").digest("base64url").slice(0, 22)}:${id}`;

  test("refunds through A and B are counted and summed together, on both", async () => {
    const [a, b] = await Promise.all([synced(full), synced(full)]);
    expect((await decide(a, inSession("refunds.issue", "ff-1", { amount: 10 }))).outcome).toBe(
      "allow",
    );
    expect((await decide(b, inSession("refunds.issue", "ff-1", { amount: 20 }))).outcome).toBe(
      "allow",
    );
    expect((await decide(a, inSession("refunds.issue", "ff-2", { amount: 7 }))).outcome).toBe(
      "allow",
    );
    for (const tg of [a, b]) {
      const engine = tg.bundles.active();
      if (engine === undefined || tg.sessions === undefined) throw new Error("not ready");
      const req = inSession("refunds.issue", "ff-1", { amount: 1 }) as unknown as DecisionRequest;
      const sessions = tg.sessions as unknown as FleetSessions;
      const v = (await sessions.view(key("ff-1"), Date.now(), req, engine)) as {
        tools: Record<
          string,
          {
            allowed: number;
            in_window: Record<string, number>;
            sums: Record<string, Record<string, number>>;
          }
        >;
      };
      expect(v.tools["refunds.issue"]).toMatchObject({
        allowed: 2,
        in_window: { "60": 2, "3600": 2, "86400": 2 },
        sums: { amount: { "60": 30, "3600": 30, "86400": 30 } },
      });
    }
    // labels still gate egress across sidecars in this scope
    await decide(a, inSession("tickets.read", "ff-1"));
    const post = await decide(b, inSession("web.post", "ff-1"));
    expect([post.outcome, codes(post)]).toEqual([
      "needs_approval",
      ["egress_after_sensitive_read"],
    ]);
  });

  test("control unreachable: every decision in a session is denied session_unavailable; without one it goes on", async () => {
    const a = await synced(full);
    await control?.stop();
    control = undefined;
    try {
      const draft = await decide(a, inSession("replies.draft", "ff-3"));
      expect([draft.outcome, codes(draft)]).toEqual(["deny", ["session_unavailable"]]);
      const noSession = await decide(a, refRequest({ tool: "replies.draft" }));
      expect(noSession.outcome).toBe("allow");
    } finally {
      control = await startControl();
    }
  });
});
