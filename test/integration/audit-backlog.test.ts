/**
 * The audit backlog's bound while the audit worker is gone
 * (audit.max_backlog_bytes): a real toolgate, its real worker thread
 * terminated, and no new one able to start (its trail directory is taken by
 * a file). The records meanwhile are kept as compact JSON text for the next
 * worker, up to the bound; past it decisions are denied `audit_unavailable`
 * and not kept. The directory given back, a new worker starts, every kept
 * record reaches the trail, and decisions are allowed again.
 * (test/e2e/audit-backlog.test.ts: the same bound with a full disk.)
 */
import { renameSync, rmSync, writeFileSync } from "node:fs";
import type { Worker } from "node:worker_threads";
import type { Toolgate } from "../../src/app";
import { listTrailFiles, readTrail, verifyTrail } from "../../src/trail";
import { until } from "../helpers/bundles";
import { captureLogger } from "../helpers/capture";
import { decideAt, http, refRequest, startTestToolgate } from "../helpers/toolgate";

jest.setTimeout(60_000);

const LIMIT = 256 * 1024;

/** The audit client's worker thread: a private field, reached on purpose (terminated for real). */
function auditWorker(tg: Toolgate): Worker | undefined {
  return (tg.auditor as unknown as { worker?: Worker }).worker;
}

/** A decision over real HTTP (a 200): its outcome, first reason code and id. */
async function decide(
  tg: Toolgate,
  body: unknown,
): Promise<{ outcome: string; code: string | undefined; id: string }> {
  const d = await decideAt(tg.agentServer.url, body);
  return { outcome: d.outcome, code: d.reasons[0]?.code, id: d.decision_id };
}

test("the worker gone: records kept as text up to the bound, then audit_unavailable; all kept ones written by the next worker", async () => {
  const cap = captureLogger("info");
  const tg = await startTestToolgate(
    { TOOLGATE_AUDIT_MAX_BACKLOG_BYTES: String(LIMIT) },
    { log: cap.log },
  );
  const trailDir = tg.config.audit.trail.dir;
  try {
    // ~8 KB of arguments: kept in the parked record as given (the worker redacts them)
    const body = refRequest({
      tool: "tickets.read",
      args: { ticket_id: "T-1", note: "n".repeat(8000) },
    });
    expect(await decide(tg, body)).toMatchObject({ outcome: "allow" });
    await tg.auditor?.flush();

    renameSync(trailDir, `${trailDir}.moved`);
    writeFileSync(trailDir, "not a directory");
    await auditWorker(tg)?.terminate();
    expect(auditWorker(tg)).toBeUndefined();

    const answers: Array<Awaited<ReturnType<typeof decide>>> = [];
    while (answers.filter((a) => a.code === "audit_unavailable").length < 20) {
      answers.push(await decide(tg, body));
      expect(answers.length).toBeLessThan(1000);
    }
    const allowed = answers.filter((a) => a.outcome === "allow");
    const refused = answers.filter((a) => a.code === "audit_unavailable");
    expect(allowed.length + refused.length).toBe(answers.length);
    // the first ones were kept, then none: the refusals come after every allow
    expect(answers.findIndex((a) => a.outcome !== "allow")).toBe(allowed.length);
    expect(allowed.length).toBeGreaterThan(20);
    const held = tg.auditor?.backlogBytes() ?? 0;
    expect(held).toBeGreaterThan(LIMIT);
    // past it by at most what one batch (5 ms of decisions) took before it was counted
    expect(held).toBeLessThan(LIMIT * 1.25);
    // not ready, saying why; the metric says how much waits
    const ready = await http(tg.agentServer.url, "GET", "/health/ready");
    expect(ready.status).toBe(503);
    expect(JSON.stringify(ready.json)).toMatch(/past audit\.max_backlog_bytes/);
    const metrics = await http(tg.controlServer?.url ?? "", "GET", "/metrics");
    expect(metrics.text).toMatch(new RegExp(`^toolgate_audit_backlog_bytes ${held}$`, "m"));

    // the directory back: the client's next attempt (1, 2, 4 s ... apart) starts a worker
    rmSync(trailDir);
    renameSync(`${trailDir}.moved`, trailDir);
    await until(() => auditWorker(tg) !== undefined);
    await until(async () => (await decide(tg, body)).outcome === "allow");
    await tg.auditor?.flush();
    expect(tg.auditor?.backlogBytes()).toBe(0);
    await cap.log.flush();
    const recovered = cap.lines().filter((l) => l.event === "audit.backlog_recovered");
    expect(recovered).toHaveLength(1);
    expect(recovered[0]?.decisions).toBeGreaterThanOrEqual(refused.length);

    const files = listTrailFiles(trailDir);
    expect(verifyTrail(files).ok).toBe(true);
    const ids = new Set<unknown>();
    for (const line of readTrail(files)) {
      const e = line.entry();
      if (e?.kind === "decision") ids.add(e.record.decision_id);
    }
    for (const a of allowed) expect(ids.has(a.id)).toBe(true);
    for (const a of refused) expect(ids.has(a.id)).toBe(false);
  } finally {
    await tg.stop().catch(() => undefined);
  }
});
