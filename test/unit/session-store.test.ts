/**
 * Session state (#19): what toolgate keeps of a session for the policy — the
 * real SessionStore, fed the decisions a Decider would give it.
 */
import type { Decision, DecisionRequest } from "../../src/model";
import { checkToolRegistry, SessionStore, toolRegistry } from "../../src/session";

const engine = {
  data: {
    toolgate: {
      deployment: {
        tools: {
          "accounts.summary.read": { class: "read", stage: "autonomous", reads: ["customer_pii"] },
          "tickets.read": {
            class: "read",
            stage: "autonomous",
            reads: ["customer_pii", "untrusted_content"],
          },
          "refunds.issue": { class: "execute", stage: "autonomous" },
          "web.post": { class: "execute", stage: "autonomous", egress: true },
          "odd.tool": { class: "read", reads: ["ok", 7, "bad label!", null] },
        },
      },
    },
  },
};

let n = 0;
function decision(outcome: Decision["outcome"]): Decision {
  return {
    decision_id: `d${++n}`,
    outcome,
    reasons: [],
    obligations: [],
    policy: { bundle: "b", revision: "r" },
    evaluated_at: new Date(0).toISOString(),
  };
}
const req = (tool: string, args?: Record<string, unknown>): DecisionRequest => ({
  subject: { type: "user", id: "alice" },
  action: { name: tool, ...(args ? { properties: { arguments: args } } : {}) },
  resource: { type: "customer", id: "cust_1" },
});
const store = (o: Partial<ConstructorParameters<typeof SessionStore>[0]> = {}) =>
  new SessionStore({ maxEvents: 100, maxSessions: 10, retentionSeconds: 3600, ...o });

test("the registry keeps only well-formed labels and the egress flag", () => {
  const reg = toolRegistry(engine);
  expect(reg.get("odd.tool")?.reads).toEqual(["ok"]);
  expect(reg.get("web.post")).toEqual({ class: "execute", reads: [], egress: true });
  expect(toolRegistry(engine)).toBe(reg);
});

test("a session with no history is empty", () => {
  const v = store().view("s-1", 1000);
  expect(v).toMatchObject({ id: "s-1", decisions: 0, dropped: 0, egress: { count: 0 } });
  expect(Object.keys(v.tools)).toEqual([]);
  expect(Object.keys(v.labels)).toEqual([]);
});

test("an allowed read touches its labels; a denied or gated one does not", () => {
  const s = store();
  s.record("s-1", decision("deny"), req("accounts.summary.read"), engine, 1000);
  s.record("s-1", decision("needs_approval"), req("tickets.read"), engine, 1000);
  expect(Object.keys(s.view("s-1", 1000).labels)).toEqual([]);
  const allowed = decision("allow");
  s.record("s-1", allowed, req("accounts.summary.read"), engine, 2000);
  const v = s.view("s-1", 2000);
  expect(v.labels.customer_pii).toEqual({
    count: 1,
    first_ns: 2000 * 1e6,
    last_ns: 2000 * 1e6,
    tools: ["accounts.summary.read"],
    first_decision_id: allowed.decision_id,
    last_decision_id: allowed.decision_id,
  });
  expect(v.tools["accounts.summary.read"]).toMatchObject({
    class: "read",
    allowed: 1,
    denied: 1,
    needs_approval: 0,
    last_outcome: "allow",
  });
  expect(v.tools["tickets.read"]).toMatchObject({ needs_approval: 1, allowed: 0 });
  expect(v.decisions).toBe(3);
  // other sessions are unaffected
  expect(Object.keys(s.view("s-2", 2000).labels)).toEqual([]);
});

test("unregistered tool names are counted but never become keys", () => {
  const s = store();
  for (const name of ["__proto__", "constructor", "nope", "x".repeat(300)])
    s.record("s-1", decision("allow"), req(name), engine, 1000);
  const v = s.view("s-1", 1000);
  expect(v.decisions).toBe(4);
  expect(Object.keys(v.tools)).toEqual([]);
  expect((JSON.parse(JSON.stringify(v)) as { tools: unknown }).tools).toEqual({});
});

test("egress is counted on allow", () => {
  const s = store();
  s.record("s-1", decision("allow"), req("web.post"), engine, 5000);
  s.record("s-1", decision("deny"), req("web.post"), engine, 6000);
  expect(s.view("s-1", 6000).egress).toEqual({ count: 1, last_ns: 5000 * 1e6 });
});

test("windows count allowed calls and sum their numeric arguments", () => {
  const s = store({ retentionSeconds: 7 * 86_400 });
  const h = 3600_000;
  s.record("s-1", decision("allow"), req("refunds.issue", { amount: 50, note: "x" }), engine, 0);
  s.record("s-1", decision("allow"), req("refunds.issue", { amount: 20 }), engine, h - 30_000);
  s.record("s-1", decision("deny"), req("refunds.issue", { amount: 999 }), engine, h - 20_000);
  s.record("s-1", decision("allow"), req("refunds.issue", { amount: 5 }), engine, h);
  const t = s.view("s-1", h + 10_000).tools["refunds.issue"];
  expect(t?.in_window).toEqual({ "60": 2, "3600": 2, "86400": 3 });
  expect(t?.sums).toEqual({ amount: { "60": 25, "3600": 25, "86400": 75 } });
  expect(s.view("s-1", h + 2 * 86_400_000 - 1).tools["refunds.issue"]?.in_window["86400"]).toBe(0);
});

test("beyond max_events the oldest leave the windows; labels and totals stay", () => {
  const s = store({ maxEvents: 3 });
  s.record("s-1", decision("allow"), req("accounts.summary.read"), engine, 0);
  for (let i = 1; i <= 5; i++)
    s.record("s-1", decision("allow"), req("refunds.issue", { amount: i }), engine, i);
  const v = s.view("s-1", 10);
  expect(v.dropped).toBe(3);
  expect(v.tools["refunds.issue"]?.sums.amount?.["60"]).toBe(3 + 4 + 5);
  expect(v.tools["refunds.issue"]?.allowed).toBe(5);
  expect(v.tools["accounts.summary.read"]?.in_window["60"]).toBe(0);
  expect(v.labels.customer_pii?.count).toBe(1);
});

test("the least recently active session goes first beyond max_sessions; idle ones retire", () => {
  const evicted: string[] = [];
  const s = store({ maxSessions: 2, onEvict: (id) => evicted.push(id) });
  s.record("a", decision("allow"), req("accounts.summary.read"), engine, 0);
  s.record("b", decision("allow"), req("accounts.summary.read"), engine, 1);
  s.record("a", decision("allow"), req("tickets.read"), engine, 2);
  s.record("c", decision("allow"), req("tickets.read"), engine, 3);
  expect(evicted).toEqual(["b"]);
  expect(s.view("b", 4).decisions).toBe(0);
  expect(s.view("a", 4).decisions).toBe(2);
  expect(s.view("a", 3600_000 + 2).decisions).toBe(0);
  expect(s.size()).toBeLessThanOrEqual(2);
});

test("action reports count on their decision's tool, once", () => {
  const s = store();
  const d = decision("allow");
  s.record("s-1", d, req("accounts.summary.read"), engine, 0);
  s.reported(d.decision_id, "ok", 1);
  s.reported(d.decision_id, "ok", 2);
  s.reported("unknown", "error", 2);
  expect(s.view("s-1", 3).tools["accounts.summary.read"]).toMatchObject({
    reported_ok: 1,
    reported_error: 0,
  });
});

test("max_events 0 keeps nothing", () => {
  const s = store({ maxEvents: 0 });
  s.record("s-1", decision("allow"), req("accounts.summary.read"), engine, 0);
  expect(s.enabled).toBe(false);
  expect(s.size()).toBe(0);
});

test("the running window totals equal a recount, over random histories and caps", () => {
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (const cap of [1, 5, 50]) {
    const s = store({ maxEvents: cap, retentionSeconds: 7 * 86_400 });
    const kept: Array<{ at: number; tool: string; amount: number }> = [];
    let now = 0;
    for (let i = 0; i < 600; i++) {
      now += Math.floor(rand() * 3 * 60_000);
      const tool = rand() < 0.5 ? "refunds.issue" : "accounts.summary.read";
      const amount = Math.floor(rand() * 100);
      s.record("s", decision("allow"), req(tool, { amount }), engine, now);
      kept.push({ at: now, tool, amount });
      if (kept.length > cap) kept.shift();
      if (i % 7 !== 0) continue;
      const probe = now + Math.floor(rand() * 90_000);
      const v = s.view("s", probe);
      for (const w of [60, 3600, 86_400]) {
        for (const tool of ["refunds.issue", "accounts.summary.read"]) {
          const inside = kept.filter((e) => e.tool === tool && probe - e.at < w * 1000);
          const t = v.tools[tool];
          if (t === undefined) continue;
          expect([cap, i, w, tool, t.in_window[w]]).toEqual([cap, i, w, tool, inside.length]);
          expect([cap, i, w, tool, t.sums.amount?.[w]]).toEqual([
            cap,
            i,
            w,
            tool,
            inside.reduce((n, e) => n + e.amount, 0),
          ]);
        }
      }
    }
  }
});

test("a session evicted to make room comes back with its sensitive labels (no laundering by flooding)", () => {
  const s = store({ maxSessions: 3 });
  s.record("victim", decision("allow"), req("accounts.summary.read"), engine, 0);
  s.record("clean", decision("allow"), req("refunds.issue", { amount: 1 }), engine, 0);
  // the agent floods new sessions until both are evicted
  for (let i = 0; i < 50; i++)
    s.record(`flood-${i}`, decision("allow"), req("refunds.issue"), engine, 1 + i);
  const back = s.view("victim", 100);
  expect(back.labels.customer_pii).toMatchObject({ forgotten: true, count: 1 });
  // and stays marked once it records again
  s.record("victim", decision("allow"), req("refunds.issue"), engine, 101);
  expect(s.view("victim", 102).labels.customer_pii?.forgotten).toBe(true);
  // a session that read nothing sensitive comes back clean
  expect(Object.keys(s.view("clean", 103).labels)).toEqual([]);
  // ids never evicted are clean (no false positive among these)
  for (let i = 0; i < 200; i++) expect(Object.keys(s.view(`new-${i}`, 104).labels)).toEqual([]);
});

test("max_total_events bounds the events of all sessions together; the oldest sessions go, remembered", () => {
  const evicted: string[] = [];
  const s = store({
    maxEvents: 10,
    maxSessions: 100,
    maxTotalEvents: 25,
    onEvict: (id) => evicted.push(id),
  });
  s.record("a", decision("allow"), req("accounts.summary.read"), engine, 0);
  for (let i = 0; i < 9; i++)
    s.record("a", decision("allow"), req("refunds.issue", { amount: 1 }), engine, 1);
  for (const id of ["b", "c"])
    for (let i = 0; i < 10; i++)
      s.record(id, decision("allow"), req("refunds.issue", { amount: 1 }), engine, 2);
  expect(evicted).toEqual(["a"]);
  expect(s.view("a", 3).labels.customer_pii?.forgotten).toBe(true);
  expect(s.size()).toBe(2);
});

test("labels past 32 per session are all kept (no silent cap)", () => {
  const many = Array.from({ length: 40 }, (_, i) => `label_${i}`);
  const wide = {
    data: {
      toolgate: {
        deployment: {
          tools: Object.fromEntries(many.map((l) => [`t.${l}`, { class: "read", reads: [l] }])),
        },
      },
    },
  };
  const s = store();
  for (const l of many) s.record("s", decision("allow"), req(`t.${l}`), wide, 0);
  expect(Object.keys(s.view("s", 1).labels).sort()).toEqual([...many].sort());
});

test("a bundle whose registry declares labels session state could not honour is refused", () => {
  const bad = (t: Record<string, unknown>) => ({ toolgate: { deployment: { tools: { x: t } } } });
  expect(() => checkToolRegistry(bad({ reads: ["pii/v2"] }))).not.toThrow();
  for (const t of [
    { reads: "customer_pii" },
    { reads: ["bad label!"] },
    { reads: [7] },
    { reads: Array.from({ length: 33 }, (_, i) => `l${i}`) },
    { egress: "yes" },
  ])
    expect(() => checkToolRegistry(bad(t))).toThrow(/data\.toolgate\.deployment\.tools\["x"\]/);
});

test("an evicted session's label is remembered by name however many labels came before", () => {
  const n = 5000;
  const tools = Object.fromEntries(
    Array.from({ length: n }, (_, i) => [`t.${i}`, { class: "read", reads: [`l_${i}`] }]),
  );
  const wide = { data: { toolgate: { deployment: { tools } } } };
  const s = store({ maxSessions: 1 });
  for (let i = 0; i < n; i++) s.record(`s-${i}`, decision("allow"), req(`t.${i}`), wide, i);
  s.record("last", decision("allow"), req("t.0"), wide, n);
  expect(s.view(`s-${n - 1}`, n + 1).labels[`l_${n - 1}`]).toMatchObject({ forgotten: true });
});
