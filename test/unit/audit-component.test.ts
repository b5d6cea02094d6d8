/**
 * The audit component's status (src/audit/component.ts): a worker that the
 * client reports gone (workerDown), until it is back; a trail that fails,
 * until a line is written; dropped spans as a detail on OK. The AuditService
 * it adapts is its collaborator here: counters and a worker state the test
 * sets. (test/integration/readiness.test.ts terminates a real worker.)
 */
import type { AuditService } from "../../src/audit";
import { AuditComponent } from "../../src/audit/component";
import type { TrailStats } from "../../src/trail";
import type { TracingStats } from "../../src/telemetry/tracing";

class FakeAudit {
  trail: TrailStats | undefined = {
    appended: 0,
    written: 0,
    writeErrors: 0,
    pending: 0,
    pendingBytes: 0,
    lastHash: "",
    file: "/state/audit/trail-000001.jsonl",
  };
  tracing: TracingStats = {
    enabled: true,
    queued: 0,
    exported: 0,
    dropped: 0,
    exportFailures: 0,
    endpoint: null,
  };
  down: string | undefined;
  full: string | undefined;
  closed = false;
  overloaded(): string | undefined {
    return this.full;
  }
  workerDown(): string | undefined {
    return this.down;
  }
  trailStats(): TrailStats | undefined {
    return this.trail;
  }
  tracingStats(): TracingStats {
    return this.tracing;
  }
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

function build(): { audit: FakeAudit; c: AuditComponent } {
  const audit = new FakeAudit();
  const c = new AuditComponent(audit as unknown as AuditService);
  return { audit, c };
}

test("NOT_READY before start and after stop; stop closes audit", async () => {
  const { audit, c } = build();
  expect(c.status()).toEqual({ state: "NOT_READY", detail: "not started" });
  await c.start();
  expect(c.status()).toEqual({ state: "OK" });
  await c.stop();
  expect(audit.closed).toBe(true);
  expect(c.status()).toEqual({ state: "NOT_READY", detail: "stopped" });
});

test("a worker the client reports gone: ERROR until it is back", async () => {
  const { audit, c } = build();
  await c.start();
  audit.down = "the audit worker stopped; starting a new one (exit code 1)";
  expect(c.status()).toEqual({
    state: "ERROR",
    detail: "audit worker: the audit worker stopped; starting a new one (exit code 1)",
  });
  audit.down = "the audit worker could not be restarted; trying again: EEXIST";
  expect(c.status().detail).toBe(
    "audit worker: the audit worker could not be restarted; trying again: EEXIST",
  );
  audit.down = undefined;
  expect(c.status()).toEqual({ state: "OK" });
});

test("a failing trail: ERROR from new write errors until a line is written", async () => {
  const { audit, c } = build();
  await c.start();
  const t = audit.trail as TrailStats;
  Object.assign(t, { appended: 10, written: 10 });
  expect(c.status().state).toBe("OK");
  Object.assign(t, { appended: 12, writeErrors: 1, pending: 2 });
  expect(c.status()).toEqual({
    state: "ERROR",
    detail:
      "the audit trail cannot be written (/state/audit/trail-000001.jsonl): 1 write error(s) since start, 2 record(s) waiting; see audit.trail_error in the log",
  });
  expect(c.status().state).toBe("ERROR"); // no new error, but nothing written either
  Object.assign(t, { written: 12, pending: 0 });
  expect(c.status()).toEqual({ state: "OK" });
  // a restarted worker's trail counts from 0 again: its first error is still seen
  Object.assign(t, { appended: 1, written: 0, writeErrors: 0, pending: 1 });
  expect(c.status().state).toBe("OK");
  Object.assign(t, { writeErrors: 1 });
  expect(c.status().state).toBe("ERROR");
});

test("a backlog past audit.max_backlog_bytes: ERROR, saying decisions are denied, until it is written", async () => {
  const { audit, c } = build();
  await c.start();
  audit.full = "1.2 MB of audit records wait to be written, past audit.max_backlog_bytes (1.0 MB)";
  expect(c.status()).toEqual({
    state: "ERROR",
    detail:
      "1.2 MB of audit records wait to be written, past audit.max_backlog_bytes (1.0 MB); decisions are denied audit_unavailable",
  });
  audit.full = undefined;
  expect(c.status()).toEqual({ state: "OK" });
});

test("dropped spans are a detail on OK: spans are best effort", async () => {
  const { audit, c } = build();
  await c.start();
  audit.tracing.dropped = 3;
  expect(c.status()).toEqual({
    state: "OK",
    detail:
      "3 span(s) dropped since start (queue full, export failed or timed out); the trail and the log have every record",
  });
  audit.trail = undefined; // trail off
  expect(c.status().state).toBe("OK");
});
