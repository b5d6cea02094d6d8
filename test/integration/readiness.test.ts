/**
 * Readiness is every component's (issue #14): /health/ready on both ports,
 * /v1/status on both ports and toolgate_component_status report audit,
 * approvals, containment, the bundle and the two ports; a dead audit worker
 * or a store that cannot be read makes the sidecar unready, saying which
 * component and why. Real parts: a real toolgate with its audit worker
 * thread (terminated for real), real SQLite files (removed for real), real
 * HTTP on loopback.
 */
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Worker } from "node:worker_threads";
import type { Toolgate } from "../../src/app";
import type { ComponentReport } from "../../src/shared/lifecycle";
import { until } from "../helpers/bundles";
import { fillContainmentDb, freeContainmentDb } from "../helpers/containment";
import { bearer, token } from "../helpers/tokens";
import { http, startTestToolgate } from "../helpers/toolgate";

jest.setTimeout(60_000);

type Components = Record<string, ComponentReport>;

interface Seen {
  agentReady: { status: number; json: { status: string; reason?: string; components: Components } };
  controlReady: { status: number; json: { status: string; components: Components } };
  agentStatus: { ready: boolean; components: Components; bundles: unknown[] };
  controlStatus: { ready: boolean; components: Components; bundles: unknown[] };
  gauge: Record<string, number>;
}

/** Everything that reports readiness, read over HTTP. */
async function look(tg: Toolgate): Promise<Seen> {
  const agent = tg.agentServer.url;
  const control = tg.controlServer?.url ?? "";
  const admin = bearer(await token("ops", { roles: ["admin"] }));
  const [agentReady, controlReady, agentStatus, controlStatus, metrics] = await Promise.all([
    http(agent, "GET", "/health/ready"),
    http(control, "GET", "/health/ready"),
    http(agent, "GET", "/v1/status"),
    http(control, "GET", "/v1/status", undefined, admin),
    http(control, "GET", "/metrics"),
  ]);
  expect(agentStatus.status).toBe(200);
  expect(controlStatus.status).toBe(200);
  const gauge: Record<string, number> = {};
  for (const m of metrics.text.matchAll(
    /^toolgate_component_status\{component="([a-z_]+)"\} (-?\d+)$/gm,
  ))
    gauge[m[1] as string] = Number(m[2]);
  return {
    agentReady: { status: agentReady.status, json: agentReady.json as Seen["agentReady"]["json"] },
    controlReady: {
      status: controlReady.status,
      json: controlReady.json as Seen["controlReady"]["json"],
    },
    agentStatus: agentStatus.json as Seen["agentStatus"],
    controlStatus: controlStatus.json as Seen["controlStatus"],
    gauge,
  };
}

const NAMES = ["audit", "approvals", "containment", "bundle", "agent_server", "control_server"];

/** Not ready everywhere, `name` in ERROR with a detail matching `detail`, and in the gauge as -1. */
function expectNotReady(seen: Seen, name: string, detail: RegExp): void {
  expect(seen.agentReady.status).toBe(503);
  expect(seen.agentReady.json.status).toBe("not_ready");
  expect(seen.controlReady.status).toBe(503);
  expect(seen.controlReady.json.status).toBe("not_ready");
  expect(seen.agentStatus.ready).toBe(false);
  expect(seen.controlStatus.ready).toBe(false);
  for (const components of [
    seen.agentReady.json.components,
    seen.controlReady.json.components,
    seen.agentStatus.components,
    seen.controlStatus.components,
  ]) {
    expect(components[name]?.state).toBe("ERROR");
    expect(components[name]?.detail).toMatch(detail);
  }
  expect(seen.gauge[name]).toBe(-1);
}

describe("a healthy sidecar", () => {
  let tg: Toolgate;
  beforeAll(async () => {
    tg = await startTestToolgate();
  });
  afterAll(async () => {
    await tg.stop();
  });

  test("every component is OK: both ports ready, /v1/status ready, the gauge at 1", async () => {
    const seen = await look(tg);
    expect(seen.agentReady.status).toBe(200);
    expect(seen.agentReady.json).toMatchObject({ status: "ok", bundle: "support-triage" });
    expect(seen.controlReady.status).toBe(200);
    expect(seen.controlReady.json.status).toBe("ok");
    expect(seen.agentStatus.ready).toBe(true);
    expect(seen.controlStatus.ready).toBe(true);
    for (const components of [
      seen.agentReady.json.components,
      seen.controlReady.json.components,
      seen.agentStatus.components,
      seen.controlStatus.components,
    ]) {
      expect(Object.keys(components)).toEqual(NAMES);
      for (const n of NAMES) expect(components[n]).toEqual({ state: "OK" });
    }
    expect(seen.gauge).toEqual(Object.fromEntries(NAMES.map((n) => [n, 1])));
  });
});

/**
 * The audit client's worker thread: a private field, reached on purpose —
 * the test terminates the thread for real.
 */
function auditWorker(tg: Toolgate): Worker {
  const w = (tg.auditor as unknown as { worker?: Worker }).worker;
  if (w === undefined) throw new Error("no audit worker is running");
  return w;
}

describe("a dead audit worker", () => {
  test("terminated, and no new one can start (its trail directory is taken): not ready on both ports, saying why", async () => {
    const tg = await startTestToolgate();
    const trailDir = tg.config.audit.trail.dir;
    try {
      expect((await look(tg)).agentReady.status).toBe(200);
      // a file where the trail directory was: a new worker fails to open its trail
      renameSync(trailDir, `${trailDir}.moved`);
      writeFileSync(trailDir, "not a directory");
      await auditWorker(tg).terminate();
      let seen = await look(tg);
      expectNotReady(seen, "audit", /audit worker: the audit worker stopped/);
      expect(seen.agentReady.json.reason).toMatch(/^audit: audit worker: /);
      // the rest of the sidecar is fine, and says so
      expect(seen.agentStatus.components.bundle).toEqual({ state: "OK" });
      expect(seen.agentStatus.components.approvals).toEqual({ state: "OK" });
      expect(seen.gauge.containment).toBe(1);
      // the client tries again after 1 s, and fails: still not ready, now saying that
      await until(async () =>
        /could not be restarted/.test((await look(tg)).agentStatus.components.audit?.detail ?? ""),
      );
      seen = await look(tg);
      expectNotReady(seen, "audit", /could not be restarted.*EEXIST/);
    } finally {
      await tg.stop();
    }
  });

  test("terminated once: not ready until the new worker answers, then ready again", async () => {
    const tg = await startTestToolgate();
    try {
      const first = auditWorker(tg);
      await first.terminate();
      // the client has seen the exit by now (its listener runs before terminate() resolves)
      expect(tg.lifecycle.status().components.audit).toMatchObject({ state: "ERROR" });
      expect(tg.lifecycle.status().ready).toBe(false);
      await until(
        async () => (await http(tg.agentServer.url, "GET", "/health/ready")).status === 200,
      );
      expect(auditWorker(tg)).not.toBe(first);
      const seen = await look(tg);
      expect(seen.controlReady.status).toBe(200);
      expect(seen.agentStatus.components.audit).toEqual({ state: "OK" });
      expect(seen.gauge.audit).toBe(1);
    } finally {
      await tg.stop();
    }
  });
});

test("a store that cannot be read: approvals.db removed, then the whole state directory", async () => {
  const tg = await startTestToolgate();
  const dir = tg.config.state.dir;
  try {
    expect((await look(tg)).agentReady.status).toBe(200);
    for (const f of ["approvals.db", "approvals.db-wal", "approvals.db-shm"])
      rmSync(join(dir, f), { force: true });
    let seen = await look(tg);
    expectNotReady(seen, "approvals", /approvals\.db.*ENOENT|ENOENT.*approvals\.db/);
    expect(seen.agentReady.json.reason).toMatch(/^approvals: /);
    expect(seen.agentStatus.components.containment).toEqual({ state: "OK" });
    expect(seen.gauge.containment).toBe(1);

    rmSync(dir, { recursive: true, force: true });
    seen = await look(tg);
    expectNotReady(seen, "approvals", /ENOENT/);
    expectNotReady(seen, "containment", /containment\.db.*ENOENT|ENOENT.*containment\.db/);
    // decisions are still answered by the bundle: the agent port itself is up
    expect(seen.agentStatus.components.bundle).toEqual({ state: "OK" });
  } finally {
    await tg.stop().catch(() => undefined); // the trail's directory is gone too
  }
});

test("a kill switch change containment.db cannot take: not ready until the retry writes it", async () => {
  const tg = await startTestToolgate();
  const admin = bearer(await token("olga", { roles: ["admin"] }));
  try {
    fillContainmentDb(tg); // real SQLite answering "database or disk is full"
    const res = await http(
      tg.controlServer?.url ?? "",
      "POST",
      "/v1/killswitches",
      JSON.stringify({ scope: { tool: "refunds.issue" }, reason: "incident" }),
      { ...admin, "content-type": "application/json" },
    );
    expect(res.status).toBe(202);
    const seen = await look(tg);
    expectNotReady(seen, "containment", /1 kill switch change\(s\) in force but not yet written/);
    expect(seen.agentStatus.components.approvals).toEqual({ state: "OK" });
    freeContainmentDb(tg);
    // the background retry (1 s) writes it: ready again
    await until(
      async () => (await http(tg.agentServer.url, "GET", "/health/ready")).status === 200,
    );
    expect((await look(tg)).gauge.containment).toBe(1);
  } finally {
    await tg.stop();
  }
});
