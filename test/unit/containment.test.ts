/**
 * Containment on its own: a real Containment on its own real containment.db
 * in a temp dir (the store is its part), a clock the test moves, the limits as
 * a bundle's data document (Containment reads only `engine.data`), and a
 * receiver that collects its events. Kill switch scopes and expiry, token
 * buckets, budgets with reservations, restarts, and the path where SQLite
 * refuses a change. Job scoping by the verified job is in
 * containment-job.test.ts.
 */
import { rmSync } from "node:fs";
import {
  Containment,
  ContainmentStore,
  type KillSwitch,
  type LimitsSource,
} from "../../src/containment";
import { isToolgateError } from "../../src/errors";
import type { DecisionRequest, VerifiedFacts } from "../../src/model";
import { tempDir } from "../helpers/opa";
import { AGENT, CollectingEvents, FakeClock, refuseWrites, unitRequest } from "../helpers/units";

const T0 = Date.parse("2031-01-01T00:00:00Z");
const S = 1000;

function verified(subject = "alice"): VerifiedFacts {
  return { agent: { id: AGENT }, subject: { id: subject, method: "trusted" }, time_ns: T0 * 1e6 };
}

const limits = (l: Record<string, unknown>): LimitsSource => ({
  data: { toolgate: { deployment: { limits: l } } },
});

interface Unit {
  c: Containment;
  store: ContainmentStore;
  clock: FakeClock;
  events: CollectingEvents;
  dir: string;
}

const open: Containment[] = [];
function unit(
  opts: { dir?: string; clock?: FakeClock; ttlSeconds?: number; reservationFsync?: boolean } = {},
): Unit {
  const dir = opts.dir ?? tempDir("toolgate-containment-");
  const clock = opts.clock ?? new FakeClock(T0);
  const events = new CollectingEvents();
  const store = ContainmentStore.open(
    dir,
    opts.reservationFsync === undefined ? {} : { reservationFsync: opts.reservationFsync },
  );
  const ttl = opts.ttlSeconds;
  const c = new Containment({
    store,
    agentId: AGENT,
    events,
    now: clock.now,
    ...(ttl !== undefined ? { reservationTtlSeconds: () => ttl } : {}),
  });
  open.push(c);
  return { c, store, clock, events, dir };
}
afterAll(async () => {
  for (const c of open) await c.stop();
});

/** The code of the ToolgateError `f` throws. */
function thrownCode(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return isToolgateError(e) ? e.code : "not a ToolgateError";
  }
  return "nothing thrown";
}

const code = (u: Unit, req: DecisionRequest, v = verified(), engine?: LimitsSource) =>
  u.c.check(req, v, engine, u.clock.ms)?.code;

describe("kill switches", () => {
  test("each scope stops what it names, and the most specific member names the code", () => {
    const u = unit();
    const read = unitRequest({ tool: "tickets.read" });
    const refund = unitRequest({ tool: "refunds.issue", args: { amount: 1 } });
    const samRead = unitRequest({ user: "sam", tool: "tickets.read" });
    const job2 = unitRequest({ job: "job_2" });
    expect(code(u, read)).toBeUndefined();

    const tool = u.c.createSwitch({ scope: { tool: "refunds.issue" }, reason: "r" }, "olga");
    expect(code(u, refund)).toBe("tool_disabled");
    expect(code(u, read)).toBeUndefined();
    u.c.deleteSwitch(tool.id, "olga");

    const subject = u.c.createSwitch({ scope: { subject: "sam" }, reason: "r" }, "olga");
    expect(code(u, samRead, verified("sam"))).toBe("subject_disabled");
    expect(code(u, read)).toBeUndefined();
    u.c.deleteSwitch(subject.id, "olga");

    const job = u.c.createSwitch({ scope: { job: "job_2" }, reason: "r" }, "olga");
    expect(code(u, job2)).toBe("job_disabled");
    expect(code(u, read)).toBeUndefined();
    u.c.deleteSwitch(job.id, "olga");

    // tool and subject: both must match; the tool names the code
    const both = u.c.createSwitch(
      { scope: { tool: "tickets.read", subject: "sam" }, reason: "r" },
      "olga",
    );
    expect(code(u, samRead, verified("sam"))).toBe("tool_disabled");
    expect(code(u, read)).toBeUndefined();
    u.c.deleteSwitch(both.id, "olga");

    // this agent, or an empty scope: everything
    const agent = u.c.createSwitch({ scope: { agent: AGENT }, reason: "r" }, "olga");
    expect([code(u, read), code(u, refund), code(u, job2)]).toEqual([
      "agent_disabled",
      "agent_disabled",
      "agent_disabled",
    ]);
    u.c.deleteSwitch(agent.id, "olga");
    const all = u.c.createSwitch({ scope: {}, reason: "stop everything" }, "olga");
    const deny = u.c.check(samRead, verified("sam"), undefined, T0);
    expect(deny).toEqual({
      code: "agent_disabled",
      message: `stopped by kill switch ${all.id} (everything): stop everything`,
      killswitch_id: all.id,
    });
  });

  test("a switch for another agent, or one that expires now or never parses, is refused; nothing set", () => {
    // (the body's shape is checked where it arrives; these are the switch's meaning)
    const u = unit();
    const bad = [
      { scope: { agent: "another-agent" }, reason: "r" },
      { scope: {}, reason: "r", expires_at: "tomorrow" },
      { scope: {}, reason: "r", expires_at: new Date(T0).toISOString() },
    ];
    for (const body of bad) {
      expect([body, thrownCode(() => u.c.createSwitch(body, "olga"))]).toEqual([
        body,
        "invalid_request",
      ]);
    }
    expect(u.c.listSwitches()).toEqual([]);
    expect(u.events.events).toEqual([]);
  });

  test("a switch with expires_at stops until then, and not from then on", () => {
    const u = unit();
    const sw = u.c.createSwitch(
      { scope: {}, reason: "one minute", expires_at: new Date(T0 + 60 * S).toISOString() },
      "olga",
    );
    expect(sw.expires_at).toBe("2031-01-01T00:01:00.000Z");
    u.clock.advance(60 * S - 1);
    expect(code(u, unitRequest())).toBe("agent_disabled");
    expect(u.c.activeCount()).toBe(1);
    expect(u.c.view(u.clock.ms).killswitches).toEqual([
      { id: sw.id, scope: {}, reason: "one minute" },
    ]);
    u.clock.advance(1);
    expect(code(u, unitRequest())).toBeUndefined();
    expect(u.c.listSwitches()).toEqual([]);
    expect(u.c.view(u.clock.ms).killswitches).toEqual([]);
    // the history keeps it
    expect(u.c.switchHistory().map((s) => s.id)).toEqual([sw.id]);
  });

  test("set and lifted at once, audited, and kept across a restart", async () => {
    const u = unit();
    const kept = u.c.createSwitch({ scope: { tool: "refunds.issue" }, reason: "kept" }, "olga");
    const lifted = u.c.createSwitch({ scope: { subject: "sam" }, reason: "lifted" }, "olga");
    expect(kept).toMatchObject({
      scope: { tool: "refunds.issue" },
      reason: "kept",
      created_by: "olga",
      created_at: "2031-01-01T00:00:00.000Z",
      expires_at: null,
      persisted: true,
    });
    u.clock.advance(S);
    const view = u.c.deleteSwitch(lifted.id, "piet");
    expect(view).toMatchObject({ deleted_by: "piet", deleted_at: "2031-01-01T00:00:01.000Z" });
    expect(code(u, unitRequest({ user: "sam" }), verified("sam"))).toBeUndefined();
    expect(thrownCode(() => u.c.deleteSwitch(lifted.id, "piet"))).toBe("killswitch_not_found");
    expect(u.events.names()).toEqual([
      "killswitch.created",
      "killswitch.created",
      "killswitch.deleted",
    ]);
    expect(u.events.events[2]?.fields).toMatchObject({ actor: "piet" });

    await u.c.stop();
    const again = unit({ dir: u.dir, clock: u.clock });
    expect(again.c.listSwitches().map((s) => s.id)).toEqual([kept.id]);
    expect(code(again, unitRequest({ tool: "refunds.issue" }))).toBe("tool_disabled");
    expect(again.c.switchHistory().map((s) => [s.id, s.deleted_by ?? null])).toEqual(
      expect.arrayContaining([
        [kept.id, null],
        [lifted.id, "piet"],
      ]),
    );
  });
});

describe("when containment.db refuses a kill switch change", () => {
  test("the switch is in force at once, reported unpersisted (ERROR), and written at stop", async () => {
    const u = unit();
    await u.c.start();
    expect(u.c.status()).toEqual({ state: "OK" });
    refuseWrites(u.store, true);
    const sw = u.c.createSwitch({ scope: {}, reason: "disk is full" }, "olga");
    expect(sw.persisted).toBe(false);
    expect(sw.persist_error).toMatch(/readonly|read-only/i);
    expect(code(u, unitRequest())).toBe("agent_disabled");
    expect(u.c.listSwitches().map((s) => s.persisted)).toEqual([false]);
    expect(u.c.unpersistedCount()).toBe(1);
    expect(u.c.status()).toEqual({
      state: "ERROR",
      detail: "1 kill switch change(s) in force but not yet written to containment.db (retrying)",
    });
    refuseWrites(u.store, false);
    await u.c.stop(); // the last attempt
    expect(u.c.status()).toEqual({ state: "NOT_READY", detail: "stopped" });
    const again = unit({ dir: u.dir, clock: u.clock });
    const written: Partial<KillSwitch> = { ...sw, persisted: true };
    delete written.persist_error;
    expect(again.c.listSwitches()).toEqual([written]);
  });

  test("the background retry writes it once SQLite takes it again", async () => {
    jest.useFakeTimers();
    try {
      const u = unit();
      await u.c.start();
      refuseWrites(u.store, true);
      const sw = u.c.createSwitch({ scope: { tool: "refunds.issue" }, reason: "r" }, "olga");
      jest.advanceTimersByTime(1000); // a retry, refused again
      expect(u.c.unpersistedCount()).toBe(1);
      refuseWrites(u.store, false);
      jest.advanceTimersByTime(2000); // the next retry (1 s doubled)
      expect(u.c.unpersistedCount()).toBe(0);
      expect(u.c.status()).toEqual({ state: "OK" });
      expect(u.events.names()).toEqual(["killswitch.created", "killswitch.persisted"]);
      expect(u.events.events[1]?.fields).toEqual({
        op: "create",
        killswitch_id: sw.id,
        actor: "olga",
      });
    } finally {
      jest.useRealTimers();
    }
  });
});

describe("rates: token buckets on the test's clock", () => {
  test("burst, then rate_limited with retry_after, refilled at the rate", () => {
    const u = unit();
    const engine = limits({
      rates: [{ id: "r1", per: "subject", tool: "tickets.read", rate_per_second: 0.5, burst: 2 }],
    });
    const read = unitRequest();
    expect(code(u, read, verified(), engine)).toBeUndefined();
    expect(code(u, read, verified(), engine)).toBeUndefined();
    expect(u.c.check(read, verified(), engine, u.clock.ms)).toEqual({
      code: "rate_limited",
      message: "rate limit r1 (0.5/s, burst 2 per subject 'alice') reached",
      retry_after: 2,
    });
    // another subject has its own bucket; another tool is not limited
    expect(code(u, unitRequest({ user: "sam" }), verified("sam"), engine)).toBeUndefined();
    expect(code(u, unitRequest({ tool: "replies.draft" }), verified(), engine)).toBeUndefined();
    u.clock.advance(S); // half a token
    expect(u.c.check(read, verified(), engine, u.clock.ms)?.retry_after).toBe(1);
    u.clock.advance(S); // one token
    expect(code(u, read, verified(), engine)).toBeUndefined();
    expect(code(u, read, verified(), engine)).toBe("rate_limited");
  });

  test("a token is taken only when every rate and budget passes", () => {
    const u = unit();
    const engine = limits({
      rates: [{ per: "agent", rate_per_second: 0.001, burst: 1 }],
      budgets: [{ tool: "refunds.issue", per: "subject", window_seconds: 60, max_total: 0 }],
    });
    expect(code(u, unitRequest({ tool: "refunds.issue" }), verified(), engine)).toBe(
      "budget_exceeded",
    );
    expect(code(u, unitRequest(), verified(), engine)).toBeUndefined();
    expect(code(u, unitRequest(), verified(), engine)).toBe("rate_limited");
  });

  test("malformed limits throw limits_invalid (the Decider denies)", () => {
    const u = unit();
    const bad = limits({ rates: [{ per: "planet" }] });
    expect(thrownCode(() => u.c.check(unitRequest(), verified(), bad, T0))).toBe("limits_invalid");
  });
});

describe("budgets: reservations on the decision path", () => {
  const engine = limits({
    budgets: [
      {
        id: "refunds",
        tool: "refunds.issue",
        argument: "amount",
        per: "customer",
        window_seconds: 60,
        max_total: 100,
      },
    ],
  });
  const refund = (amount: number) => unitRequest({ tool: "refunds.issue", args: { amount } });
  const reserve = async (u: Unit, id: string, amount: number) =>
    await u.c.reserve(id, refund(amount), verified(), engine, u.clock.ms);

  test("a reservation counts while pending; released, it frees the budget", async () => {
    const u = unit();
    expect(code(u, refund(60), verified(), engine)).toBeUndefined();
    expect(await reserve(u, "d1", 60)).toBeUndefined();
    expect(u.c.check(refund(50), verified(), engine, u.clock.ms)).toEqual({
      code: "budget_exceeded",
      message:
        "budget refunds: 60 of 100 spent or reserved in the last 60 s per customer; this call needs 50",
      // pending until its TTL (360 s), then spent for a window
      retry_after: 360 + 60,
    });
    expect((await reserve(u, "d2", 50))?.code).toBe("budget_exceeded");
    expect(code(u, refund(40), verified(), engine)).toBeUndefined();
    u.clock.advance(S);
    expect(u.c.reported("d1", "error", false)).toBe("released");
    expect(u.c.reported("d1", "error", false)).toBe("none");
    expect(await reserve(u, "d3", 100)).toBeUndefined();
  });

  test("committed, it is spent now and slides out of the window", async () => {
    const u = unit();
    expect(await reserve(u, "d1", 70)).toBeUndefined();
    u.clock.advance(10 * S);
    expect(u.c.reported("d1", "ok", false)).toBe("committed");
    expect(u.c.check(refund(50), verified(), engine, u.clock.ms)?.retry_after).toBe(60);
    u.clock.advance(60 * S - 1);
    expect(code(u, refund(50), verified(), engine)).toBe("budget_exceeded");
    u.clock.advance(1);
    expect(code(u, refund(50), verified(), engine)).toBeUndefined();
    // an error that still changed something commits too
    expect(await reserve(u, "d2", 30)).toBeUndefined();
    expect(u.c.reported("d2", "error", true)).toBe("committed");
  });

  test("a reservation never reported counts as spent from its TTL, and a late report resolves nothing", async () => {
    const u = unit({ ttlSeconds: 10 });
    expect(await reserve(u, "d1", 100)).toBeUndefined();
    u.clock.advance(11 * S);
    expect(u.c.reported("d1", "error", false)).toBe("expired");
    // spent at T0 + 10 s: counted until T0 + 70 s
    expect(u.c.check(refund(1), verified(), engine, u.clock.ms)?.retry_after).toBe(70 - 11);
    u.clock.ms = T0 + 70 * S;
    expect(code(u, refund(1), verified(), engine)).toBeUndefined();
  });

  test("what is reserved survives a restart; nothing without an amount is reserved", async () => {
    const u = unit();
    expect(await reserve(u, "d1", 90)).toBeUndefined();
    expect(
      await u.c.reserve("d0", unitRequest({ tool: "refunds.issue" }), verified(), engine, T0),
    ).toBeUndefined();
    await u.c.stop();
    const again = unit({ dir: u.dir, clock: u.clock });
    expect(code(again, refund(20), verified(), engine)).toBe("budget_exceeded");
    expect(again.c.reported("d0", "ok", false)).toBe("none");
    expect(again.c.reported("d1", "error", false)).toBe("released");
    expect(code(again, refund(100), verified(), engine)).toBeUndefined();
  });

  test("a reservation SQLite refuses denies (budget_unavailable) and counts nothing", async () => {
    const u = unit();
    refuseWrites(u.store, true);
    const held = await reserve(u, "d1", 10);
    expect(held?.code).toBe("budget_unavailable");
    expect(held?.message).toMatch(
      /^the budget reservation could not be recorded; denied \(fail closed\): /,
    );
    refuseWrites(u.store, false);
    expect(await reserve(u, "d2", 100)).toBeUndefined();
  });

  test("by default an allow waits for a group fdatasync of the WAL; the budget counts at once", async () => {
    const u = unit();
    expect(u.store.synchronousModes()).toEqual({
      main: "FULL",
      reservations: "NORMAL",
      reservationSync: "group fdatasync of the WAL",
    });
    // 10 allows in one turn of the event loop: each counted before any is on disk
    const pending = Array.from({ length: 10 }, (_, i) =>
      u.c.reserve(`d${i}`, refund(10), verified(), engine, u.clock.ms),
    );
    for (const p of pending) expect(p).toBeInstanceOf(Promise);
    expect(code(u, refund(1), verified(), engine)).toBe("budget_exceeded");
    expect(await Promise.all(pending.map(async (p) => await p))).toEqual(Array(10).fill(undefined));
    // one fdatasync began with the first; the other nine share the next one
    expect(u.store.reservationSyncs()).toBeGreaterThanOrEqual(1);
    expect(u.store.reservationSyncs()).toBeLessThanOrEqual(2);
    // on disk: a restart still counts all ten
    await u.c.stop();
    const again = unit({ dir: u.dir, clock: u.clock });
    expect(code(again, refund(1), verified(), engine)).toBe("budget_exceeded");
  });

  test("reservation_fsync off: no wait, no fdatasync", () => {
    const u = unit({ reservationFsync: false });
    expect(u.store.synchronousModes().reservationSync).toBe("none");
    expect(u.c.reserve("d1", refund(10), verified(), engine, u.clock.ms)).toBeUndefined();
    expect(u.store.reservationSyncs()).toBe(0);
  });

  test("a reservation that cannot be made durable denies (budget_unavailable) and is released", async () => {
    const u = unit();
    // the WAL file gone before the first fdatasync: there is nothing to make durable with
    rmSync(`${u.store.path}-wal`);
    const held = await reserve(u, "d1", 60);
    expect(held?.code).toBe("budget_unavailable");
    expect(held?.message).toMatch(
      /^the budget reservation could not be made durable; denied \(fail closed\): .*ENOENT/,
    );
    // released: the 60 do not count
    expect(code(u, refund(100), verified(), engine)).toBeUndefined();
  });
});

test("status: NOT_READY before start, OK, NOT_READY once stopped", async () => {
  const u = unit();
  expect(u.c.status()).toEqual({ state: "NOT_READY", detail: "not started" });
  await u.c.start();
  expect(u.c.status()).toEqual({ state: "OK" });
  await u.c.stop();
  await u.c.stop(); // again: harmless
  expect(u.c.status()).toEqual({ state: "NOT_READY", detail: "stopped" });
});
