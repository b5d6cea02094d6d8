/**
 * Budgets hold under concurrency (issue #13, item 2): an allow reserves its
 * amount before it leaves toolgate; only the action report bound to that
 * decision commits (ok) or releases (error) it; an unreported reservation
 * keeps counting after its TTL; reservations survive a restart. Real HTTP on
 * loopback, real bundles, a real containment.db, a controlled clock.
 */
import type { Toolgate } from "../../src/app";
import { limitsBundle, readContainmentDb, startWithClock } from "../helpers/containment";
import { tempDir } from "../helpers/opa";
import { decideAt, http, postJson, refRequest } from "../helpers/toolgate";

interface Decision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
  retry_after?: number;
}

const MAX = 100;
const AMOUNT = 7;
const FIT = Math.floor(MAX / AMOUNT); // 14
const WINDOW = 3600;

const bundlePath = limitsBundle({
  budgets: [
    {
      tool: "refunds.issue",
      argument: "amount",
      per: "job",
      window_seconds: WINDOW,
      max_total: MAX,
    },
  ],
});

function refund(job: string, amount = AMOUNT): Record<string, unknown> {
  const req = refRequest({ tool: "refunds.issue", args: { amount } });
  const ctx = req.context as { job: Record<string, unknown> };
  return { ...req, context: { ...ctx, job: { ...ctx.job, id: job } } };
}

let now = Date.parse("2031-03-01T00:00:00Z");
let stateDir: string;
let tg: Toolgate;
/** Starts on the same state dir; `null` leaves a variable out. */
const start = async (env: Record<string, string | null> = {}): Promise<void> => {
  const all: Record<string, string | null> = {
    TOOLGATE_STATE_DIR: stateDir,
    TOOLGATE_BUNDLE: bundlePath,
    TOOLGATE_RESERVATION_TTL_SECONDS: "600",
    ...env,
  };
  const set = Object.fromEntries(
    Object.entries(all).filter((e): e is [string, string] => e[1] !== null),
  );
  tg = await startWithClock(set, { now: () => now });
};

const decide = (req: Record<string, unknown>): Promise<Decision> =>
  decideAt(tg.agentServer.url, req);

async function report(
  id: string,
  status: "ok" | "error",
  extra: Record<string, unknown> = {},
): Promise<string | undefined> {
  const r = await postJson(tg.agentServer.url, "/v1/actions", {
    decision_id: id,
    status,
    ...extra,
  });
  expect(r.status).toBe(200);
  return (r.json as { budget?: string }).budget;
}

/** Fires `n` decisions at once over separate connections; returns them. */
async function burst(n: number, job: string): Promise<Decision[]> {
  return Promise.all(Array.from({ length: n }, () => decide(refund(job))));
}

const allows = (ds: Decision[]): Decision[] => ds.filter((d) => d.outcome === "allow");
const codes = (d: Decision): string[] => d.reasons.map((r) => r.code);

beforeAll(async () => {
  stateDir = tempDir();
  await start();
});
afterAll(async () => {
  await tg.stop();
});

describe("a budget under concurrent decisions", () => {
  test(`50 concurrent decisions of ${AMOUNT} against max_total ${MAX} admit exactly ${FIT}`, async () => {
    const ds = await burst(50, "job_burst");
    expect(allows(ds).length).toBe(FIT);
    const denied = ds.filter((d) => d.outcome !== "allow");
    expect(denied.length).toBe(50 - FIT);
    for (const d of denied) expect(codes(d)).toEqual(["budget_exceeded"]);
    // the deny names what is held: FIT × AMOUNT pending
    expect(denied[0]?.reasons[0]?.message).toContain(`${FIT * AMOUNT} of ${MAX}`);
    // the same through an AuthZEN batch: nothing more fits
    const batch = await postJson(tg.agentServer.url, "/access/v1/evaluations", {
      evaluations: Array.from({ length: 5 }, () => refund("job_burst")),
    });
    expect(batch.status).toBe(200);
    const results = (batch.json as { evaluations: Array<{ decision: boolean }> }).evaluations;
    expect(results.map((e) => e.decision)).toEqual([false, false, false, false, false]);
  });

  test("reservations are on disk before the allow is answered", async () => {
    const ds = allows(await burst(3, "job_disk"));
    expect(ds.length).toBe(3);
    const rows = readContainmentDb<{ decision_id: string; amount: number }>(
      stateDir,
      "SELECT decision_id, amount FROM budget_reservations WHERE budget_key LIKE '%|job_disk'",
    );
    expect(rows.map((r) => r.decision_id).sort()).toEqual(ds.map((d) => d.decision_id).sort());
    expect(rows.every((r) => r.amount === AMOUNT)).toBe(true);
  });

  test("an error report releases, an ok report commits, an error report listing changes commits", async () => {
    const job = "job_reports";
    const held = allows(await burst(20, job));
    expect(held.length).toBe(FIT);
    const [a, b, c] = held as [Decision, Decision, Decision];
    // error: the reservation is released, exactly one more call fits
    expect(await report(a.decision_id, "error", { error: { type: "upstream" } })).toBe("released");
    const after = await burst(5, job);
    expect(allows(after).length).toBe(1);
    // ok: committed, nothing is freed
    expect(await report(b.decision_id, "ok")).toBe("committed");
    expect(allows(await burst(5, job)).length).toBe(0);
    // an error that changed something happened: it keeps counting
    const kept = await report(c.decision_id, "error", {
      changed: [{ resource: { type: "refund", id: "rf_9" }, fields: [{ path: "amount" }] }],
    });
    expect(kept).toBe("committed");
    expect(allows(await burst(5, job)).length).toBe(0);
    const events = readContainmentDb<{ decision_id: string }>(
      stateDir,
      `SELECT decision_id FROM budget_events WHERE budget_key LIKE '%|${job}'`,
    );
    expect(events.map((e) => e.decision_id).sort()).toEqual([b.decision_id, c.decision_id].sort());
  });

  test("nothing lets allowed + pending exceed the max: interleaved bursts and reports", async () => {
    const job = "job_mixed";
    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    /** Allows that still count: not released by an error report. */
    const counting = new Map<string, number>();
    const unreported: string[] = [];
    for (let round = 0; round < 12; round++) {
      const amount = 1 + rand(20);
      const reports = unreported.splice(0, rand(4)).map((id) => {
        const ok = rand(2) === 0;
        if (!ok) counting.delete(id);
        return report(id, ok ? "ok" : "error");
      });
      const [ds] = await Promise.all([
        Promise.all(Array.from({ length: 6 }, () => decide(refund(job, amount)))),
        ...reports,
      ]);
      for (const d of allows(ds)) {
        counting.set(d.decision_id, amount);
        unreported.push(d.decision_id);
      }
      const total = [...counting.values()].reduce((s, v) => s + v, 0);
      expect(total).toBeLessThanOrEqual(MAX);
    }
    expect(counting.size).toBeGreaterThan(FIT / 2);
  });
});

describe("reservations outlive the process and their TTL", () => {
  test("a restart keeps pending reservations: the budget stays closed", async () => {
    const job = "job_restart";
    expect(allows(await burst(20, job)).length).toBe(FIT);
    await tg.stop();
    await start();
    const d = await decide(refund(job));
    expect(codes(d)).toEqual(["budget_exceeded"]);
  });

  test("an unreported reservation keeps counting after its TTL; a late error report releases nothing", async () => {
    const job = "job_ttl";
    const t0 = now;
    const held = allows(await burst(20, job));
    expect(held.length).toBe(FIT);
    // pending: the earliest it can free is TTL (600 s) + the window
    const denied = await decide(refund(job));
    expect(denied.retry_after).toBe(600 + WINDOW);
    now = t0 + 600_000; // the TTL has run out: spent at its expiry, not released
    expect(codes(await decide(refund(job)))).toEqual(["budget_exceeded"]);
    expect(await report((held[0] as Decision).decision_id, "error")).toBe("expired");
    expect(codes(await decide(refund(job)))).toEqual(["budget_exceeded"]);
    now = t0 + (600 + WINDOW) * 1000 - 1; // one ms before the window slides past the expiry
    expect(codes(await decide(refund(job)))).toEqual(["budget_exceeded"]);
    now = t0 + (600 + WINDOW) * 1000;
    expect((await decide(refund(job))).outcome).toBe("allow");
  });

  test("by default the TTL is the tool's grant lifetime plus 300 s", async () => {
    await tg.stop();
    await start({
      TOOLGATE_RESERVATION_TTL_SECONDS: null,
      TOOLGATE_GRANTS_TOOLS: JSON.stringify({ "refunds.issue": { ttl_seconds: 120 } }),
    });
    const job = "job_default_ttl";
    const first = allows(await burst(20, job));
    expect(first.length).toBe(FIT);
    const t0 = now;
    now = t0 + 419_999; // still pending: an error report releases it
    await report((first[0] as Decision).decision_id, "error");
    expect(allows(await burst(3, job)).length).toBe(1);
    now = t0 + 420_000; // the others have expired: an error report no longer releases
    await report((first[1] as Decision).decision_id, "error");
    expect(allows(await burst(3, job)).length).toBe(0);
  });

  test("reservation_fsync picks the reservation connection's durability", async () => {
    const modes = () =>
      (
        tg.containment as unknown as {
          store: {
            synchronousModes(): { main: string; reservations: string; reservationSync: string };
          };
        }
      ).store.synchronousModes();
    expect(modes()).toEqual({
      main: "FULL",
      reservations: "NORMAL",
      reservationSync: "group fdatasync of the WAL",
    });
    await tg.stop();
    await start({ TOOLGATE_RESERVATION_FSYNC: "false" });
    expect(modes()).toEqual({ main: "FULL", reservations: "NORMAL", reservationSync: "none" });
    // and it still reserves, and a restart still keeps what it reserved
    const job = "job_normal";
    expect(allows(await burst(20, job)).length).toBe(FIT);
    await tg.stop();
    await start({ TOOLGATE_RESERVATION_FSYNC: "false" });
    expect(codes(await decide(refund(job)))).toEqual(["budget_exceeded"]);
    const metrics = await http(tg.controlServer?.url ?? "", "GET", "/metrics");
    expect(metrics.text).toMatch(/^toolgate_budget_reservations_pending \d+$/m);
  });
});
