/**
 * BacklogGate (src/audit/backlog.ts): the audit backlog's bound as the
 * Decider and the audit clients see it — an episode from the first look past
 * the bound until the backlog is back under three quarters of it, one log
 * line at each end (a real logger into memory), the refused and dropped
 * counts in the second.
 */
import { BacklogGate } from "../../src/audit/backlog";
import { captureLogger } from "../helpers/capture";

const MB = 1024 * 1024;
const decision = (code: string) => ({ kind: "decision", decision: { reasons: [{ code }] } });
const refused = decision("audit_unavailable");
const refusal = { kind: "refusal" };

function gate(): {
  g: BacklogGate;
  set: (n: number) => void;
  lines: () => Array<Record<string, unknown>>;
  flush: () => Promise<void>;
} {
  let bytes = 0;
  const cap = captureLogger("info");
  const g = new BacklogGate(MB, () => bytes, cap.log);
  return { g, set: (n) => (bytes = n), lines: cap.lines, flush: () => cap.log.flush() };
}

test("under the bound: nothing to say, nothing logged", async () => {
  const { g, set, lines, flush } = gate();
  set(MB); // at the bound is still under it
  expect(g.overloaded()).toBeUndefined();
  expect(g.admit(refusal)).toBe(true); // not past twice the bound
  g.recovered(); // nothing counted, no episode: no line
  await flush();
  expect(lines()).toEqual([]);
});

test("an episode: past the bound until under 3/4 of it, one line at each end with the counts", async () => {
  const { g, set, lines, flush } = gate();
  set(MB + 1);
  expect(g.overloaded()).toBe(
    "1.0 MB of audit records wait to be written, past audit.max_backlog_bytes (1.0 MB)",
  );
  expect(g.admit(refused)).toBe(false);
  // back under the bound but not under 3/4 of it: still refused (no flapping at the edge)
  set(0.8 * MB);
  expect(g.overloaded()).toMatch(/^0\.8 MB of audit records wait/);
  expect(g.admit(refused)).toBe(false);
  set(2 * MB + 1);
  expect(g.admit(refusal)).toBe(false); // past twice the bound: dropped
  expect(g.admit(decision("granted"))).toBe(true); // a decision never is
  set(0.75 * MB);
  expect(g.overloaded()).toBeUndefined();
  expect(g.overloaded()).toBeUndefined();
  await flush();
  const l = lines();
  expect(l.map((x) => x.event)).toEqual(["audit.backlog_full", "audit.backlog_recovered"]);
  expect(l[0]).toMatchObject({ level: "error", backlog_bytes: MB + 1, limit_bytes: MB });
  expect(l[1]).toMatchObject({
    level: "warn",
    decisions: 2,
    events_dropped: 1,
    backlog_bytes: 0.75 * MB,
    limit_bytes: MB,
  });
  // a second episode starts a new count
  set(MB + 10);
  expect(g.overloaded()).toBeDefined();
  expect(g.admit(refused)).toBe(false);
  g.recovered(); // at close, with the episode open: its counts are logged
  await flush();
  expect(
    lines()
      .slice(2)
      .map((x) => [x.event, x.decisions]),
  ).toEqual([
    ["audit.backlog_full", undefined],
    ["audit.backlog_recovered", 1],
  ]);
});

test("admit: all but a decision denied audit_unavailable, up to twice the bound; what it refuses is counted", async () => {
  const { g, set, lines, flush } = gate();
  set(2 * MB); // at twice the bound is still under it
  expect(g.admit(refused)).toBe(false);
  expect(g.admit(decision("budget_unavailable"))).toBe(true);
  expect(g.admit({ kind: "decision", decision: { reasons: [] } })).toBe(true);
  expect(g.admit(refusal)).toBe(true);
  g.recovered();
  await flush();
  expect(lines().map((x) => [x.event, x.decisions, x.events_dropped])).toEqual([
    ["audit.backlog_recovered", 1, 0],
  ]);
});
