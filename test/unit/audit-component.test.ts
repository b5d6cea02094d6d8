/**
 * The audit component's status (src/audit/component.ts): a worker that the
 * client reports gone, until a flush is answered again; a trail that fails,
 * until a line is written; dropped spans as a detail on OK. The AuditService
 * it adapts is its collaborator here: counters the test sets, a flush the
 * test answers. (test/integration/readiness.test.ts terminates a real worker.)
 */
import type { AuditService } from "../../src/audit";
import { AuditComponent, WorkerWatch } from "../../src/audit/component";
import { silentLogger } from "../../src/shared/log";
import type { TrailStats } from "../../src/trail";
import type { TracingStats } from "../../src/telemetry/tracing";

class FakeAudit {
  trail: TrailStats | undefined = {
    appended: 0,
    written: 0,
    writeErrors: 0,
    pending: 0,
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
  workerRunning = true;
  flushes = 0;
  closed = false;
  trailStats(): TrailStats | undefined {
    return this.trail;
  }
  tracingStats(): TracingStats {
    return this.tracing;
  }
  flush(): Promise<void> {
    this.flushes++;
    return this.workerRunning ? Promise.resolve() : Promise.reject(new Error("not running"));
  }
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function build(): { audit: FakeAudit; watch: WorkerWatch; c: AuditComponent } {
  const audit = new FakeAudit();
  const watch = new WorkerWatch(silentLogger);
  const c = new AuditComponent(audit as unknown as AuditService, {
    worker: watch,
    probeIntervalMs: 20,
  });
  return { audit, watch, c };
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

test("a worker the client reports gone: ERROR until a flush is answered again", async () => {
  const { audit, watch, c } = build();
  await c.start();
  audit.workerRunning = false;
  // what AuditClient logs when its worker exits
  watch.log.error("the audit worker stopped; starting a new one", {
    event: "audit.worker_restart",
    exit_code: 1,
  });
  expect(c.status()).toEqual({
    state: "ERROR",
    detail: "audit worker: the audit worker stopped; starting a new one (exit code 1)",
  });
  await sleep(100);
  expect(audit.flushes).toBeGreaterThan(0); // probing, refused: still gone
  expect(c.status().state).toBe("ERROR");
  watch.log.error("the audit worker could not be restarted; trying again", {
    event: "audit.worker_error",
    error: "EEXIST",
  });
  expect(c.status().detail).toBe(
    "audit worker: the audit worker could not be restarted; trying again: EEXIST",
  );
  audit.workerRunning = true;
  await sleep(100);
  expect(c.status()).toEqual({ state: "OK" });
  const flushes = audit.flushes;
  await sleep(100);
  expect(audit.flushes).toBe(flushes); // no probing while the worker runs
  // other error lines are not about the worker; after stop, nothing is
  watch.log.error("audit trail write failed", { event: "audit.trail_error" });
  expect(c.status().state).toBe("OK");
  await c.stop();
  watch.log.error("the audit worker did not finish within the close timeout", {
    event: "audit.worker_error",
  });
  expect(watch.down).toBeUndefined();
});

test("a flush answered after the worker went again proves nothing", () => {
  const watch = new WorkerWatch(silentLogger);
  watch.log.error("gone", { event: "audit.worker_restart", exit_code: 1 });
  const stamp = watch.departures;
  watch.log.error("gone again", { event: "audit.worker_restart", exit_code: 1 });
  watch.up(stamp);
  expect(watch.down).toBe("gone again (exit code 1)");
  watch.up(watch.departures);
  expect(watch.down).toBeUndefined();
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
