/**
 * Fleet mode, the sidecar side, end to end: real `toolgate control`
 * (src/control, on the jest run's PostgreSQL, a fresh database per file) and
 * several real sidecars (startToolgate with fleet.url) on loopback, the
 * development credentials each sidecar signs itself. What a sidecar
 * guarantees: a switch set on the control service denies on every sidecar;
 * a sidecar that starts (or loses the stream) is stale and denies
 * execute-class tools while reads go on, and says so on /health/ready and
 * /v1/status; one approval queue, single use across sidecars; budgets and
 * rates fleet-wide; its own control port refuses approval decisions and
 * switch writes with 409 fleet_mode.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { devTokenCommand } from "../../src/cli/dev-token";
import type { ControlService } from "../../src/control";
import { keyPair, until } from "../helpers/bundles";
import { limitsBundle } from "../helpers/containment";
import { freePort } from "../helpers/net";
import { freshDatabase, type FreshDatabase } from "../helpers/postgres";
import { token } from "../helpers/tokens";
import { decideAt, http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";
import { startTestControl } from "../helpers/control";

jest.setTimeout(60_000);

const HMAC = "test-key-0123456789abcdef";

interface Decision {
  decision_id: string;
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
  retry_after?: number;
  access_request?: { evaluation_id: string };
}

let db: FreshDatabase;
let controlPort: number;
let control: ControlService | undefined;
const sidecars: Toolgate[] = [];

const startControl = (): Promise<ControlService> => startTestControl(controlPort, db.url, HMAC);

async function sidecar(env: Record<string, string> = {}): Promise<Toolgate> {
  const tg = await startTestToolgate({
    TOOLGATE_FLEET_URL: `http://127.0.0.1:${controlPort}`,
    TOOLGATE_FLEET_MAX_STALENESS_SECONDS: "2",
    ...env,
  });
  sidecars.push(tg);
  return tg;
}

/** A sidecar whose first snapshot has arrived. */
async function synced(env: Record<string, string> = {}): Promise<Toolgate> {
  const tg = await sidecar(env);
  await until(() => tg.fleet?.client.status().state === "OK");
  return tg;
}

async function devToken(user: string): Promise<string> {
  let out = "";
  expect(await devTokenCommand([user], { stdout: (s) => (out += s) })).toBe(0);
  return out.trim();
}

async function human(
  method: string,
  path: string,
  user: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${controlPort}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${await devToken(user)}`,
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return {
    status: res.status,
    json: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>),
  };
}

const decide = (tg: Toolgate, req: Record<string, unknown>): Promise<Decision> =>
  decideAt(tg.agentServer.url, req);

const code = (d: Decision): string => d.reasons[0]?.code ?? "";
const refund = (amount: number) => refRequest({ tool: "refunds.issue", args: { amount } });
const read = () => refRequest({ tool: "tickets.read" });

beforeAll(async () => {
  db = await freshDatabase();
  controlPort = await freePort();
  control = await startControl();
});

afterEach(async () => {
  await Promise.all(sidecars.splice(0).map((t) => t.stop()));
});

afterAll(async () => {
  await control?.stop();
  await db.drop();
});

test("a kill switch set on the control service denies on every sidecar; lifted, they allow again", async () => {
  const [a, b] = await Promise.all([synced(), synced()]);
  expect((await decide(a, refund(10))).outcome).toBe("allow");
  const set = await human("POST", "/v1/killswitches", "olga", {
    scope: { tool: "refunds.issue" },
    reason: "refund fraud",
  });
  expect(set.status).toBe(201);
  const id = set.json.id as string;
  for (const tg of [a, b]) {
    await until(() => (tg.fleet?.containment.listSwitches().length ?? 0) === 1);
    const d = await decide(tg, refund(10));
    expect([d.outcome, code(d)]).toEqual(["deny", "tool_disabled"]);
    expect(d.reasons[0]?.message).toBe(
      `stopped by kill switch ${id} (tool 'refunds.issue'): refund fraud`,
    );
    // the policy sees the switch too; reads go on
    expect((await decide(tg, read())).outcome).toBe("allow");
  }
  // the sidecar's own control port lists it, and refuses writes
  const olga = { authorization: `Bearer ${await devToken("olga")}` };
  const ctl = a.controlServer?.url ?? "";
  const list = await http(ctl, "GET", "/v1/killswitches", undefined, olga);
  expect(list.status).toBe(200);
  expect(
    (list.json as { killswitches: Array<{ id: string }> }).killswitches.map((s) => s.id),
  ).toEqual([id]);
  const write = await http(ctl, "POST", "/v1/killswitches", JSON.stringify({ reason: "x" }), {
    ...olga,
    "content-type": "application/json",
  });
  expect(write.status).toBe(409);
  expect(write.json).toEqual({
    code: "fleet_mode",
    message: `this sidecar is in fleet mode: kill switches are set and lifted on the control service, http://127.0.0.1:${controlPort}/v1/killswitches`,
  });
  expect((await http(ctl, "DELETE", `/v1/killswitches/${id}`, undefined, olga)).status).toBe(409);
  const maria = { authorization: `Bearer ${await devToken("maria")}` };
  const approve = await http(ctl, "POST", "/v1/approvals/apr_x/approve", undefined, maria);
  expect([approve.status, (approve.json as { code: string }).code]).toEqual([409, "fleet_mode"]);

  expect((await human("DELETE", `/v1/killswitches/${id}`, "olga")).status).toBe(200);
  for (const tg of [a, b]) {
    await until(() => (tg.fleet?.containment.listSwitches().length ?? 1) === 0);
    expect((await decide(tg, refund(10))).outcome).toBe("allow");
  }
});

test("a sidecar started while a switch is set denies its first execute decision", async () => {
  const set = await human("POST", "/v1/killswitches", "olga", {
    scope: { tool: "billing.update" },
    reason: "billing freeze",
  });
  expect(set.status).toBe(201);
  try {
    const tg = await sidecar();
    // the very first decision, whether or not the snapshot has arrived
    const first = await decide(tg, refRequest({ tool: "billing.update" }));
    expect(first.outcome).toBe("deny");
    expect(["containment_stale", "tool_disabled"]).toContain(code(first));
    await until(() => tg.fleet?.client.status().state === "OK");
    const after = await decide(tg, refRequest({ tool: "billing.update" }));
    expect([after.outcome, code(after)]).toEqual(["deny", "tool_disabled"]);
  } finally {
    await human("DELETE", `/v1/killswitches/${set.json.id as string}`, "olga");
  }
});

test("before its first snapshot a sidecar is stale: execute denied containment_stale, reads go on, /health/ready 503", async () => {
  // a fleet.url nobody answers: the sidecar never syncs
  const tg = await startTestToolgate({
    TOOLGATE_FLEET_URL: `http://127.0.0.1:${await freePort()}`,
  });
  sidecars.push(tg);
  const d = await decide(tg, refund(10));
  expect([d.outcome, code(d)]).toEqual(["deny", "containment_stale"]);
  expect(d.reasons[0]?.message).toMatch(
    /fleet's kill-switch stream \(http:\/\/127\.0\.0\.1:\d+\) has not delivered its first snapshot .*execute-class tools are denied until it is back, reads and drafts go on/,
  );
  expect((await decide(tg, read())).outcome).toBe("allow");
  expect((await decide(tg, refRequest({ tool: "replies.draft" }))).outcome).not.toBe("deny");
  const ready = await http(tg.agentServer.url, "GET", "/health/ready");
  expect(ready.status).toBe(503);
  const body = ready.json as { reason: string; components: Record<string, { state: string }> };
  expect(body.components.fleet?.state).toBe("NOT_READY");
  expect(body.reason).toMatch(/^fleet: no kill-switch snapshot yet/);
  const status = await http(tg.agentServer.url, "GET", "/v1/status");
  const st = status.json as {
    ready: boolean;
    fleet: Record<string, unknown>;
    components: Record<string, { state: string }>;
  };
  expect(st.ready).toBe(false);
  expect(st.components.fleet?.state).toBe("NOT_READY");
  expect(st.fleet).toMatchObject({ synced: false, stale: true, connected: false, seq: -1 });
  const metrics = await http(tg.controlServer?.url ?? "", "GET", "/metrics");
  expect(metrics.text).toMatch(/^toolgate_fleet_stream_connected 0$/m);
  expect(metrics.text).toMatch(/^toolgate_component_status\{component="fleet"\} 0$/m);
});

test("one approval queue: requested through one sidecar, decided on the control service, used once across sidecars", async () => {
  const [a, b] = await Promise.all([synced(), synced()]);
  const asked = await decide(a, refund(80));
  expect(asked.outcome).toBe("needs_approval");
  const evaluationId = asked.access_request?.evaluation_id ?? "";
  const sub = await postJson(a.agentServer.url, "/access/v1/requests", {
    ...refund(80),
    denial: { evaluation_id: evaluationId },
  });
  expect(sub.status).toBe(201);
  const taskId = (sub.json as { task: { id: string; status: string } }).task.id;
  expect((sub.json as { task: { status: string } }).task.status).toBe("pending");
  expect(sub.headers.location).toBe(`${a.agentServer.url}/access/v1/requests/${taskId}`);
  // a resubmission through the other sidecar cannot cite an evaluation it never recorded
  const elsewhere = await postJson(b.agentServer.url, "/access/v1/requests", {
    ...refund(80),
    denial: { evaluation_id: evaluationId },
  });
  expect([elsewhere.status, (elsewhere.json as { code: string }).code]).toEqual([
    404,
    "approval_not_found",
  ]);
  // a resubmission through the same sidecar returns the same task
  const again = await postJson(a.agentServer.url, "/access/v1/requests", {
    ...refund(80),
    denial: { evaluation_id: evaluationId },
  });
  expect(again.status).toBe(200);
  expect((again.json as { task: { id: string } }).task.id).toBe(taskId);

  const pending = await decide(b, {
    ...refund(80),
    context: { ...(refund(80).context as object), approval: { id: taskId } },
  });
  expect(pending.outcome).toBe("needs_approval");
  expect(pending.reasons.map((r) => r.code)).toContain("approval_pending");

  const approved = await human("POST", `/v1/approvals/${taskId}/approve`, "maria", {});
  expect(approved.status).toBe(200);
  // the status through the other sidecar shows the approval to present
  const st = await http(b.agentServer.url, "GET", `/access/v1/requests/${taskId}`);
  expect(st.status).toBe(200);
  expect((st.json as { task: { status: string }; result: { mode: string } }).result.mode).toBe(
    "reevaluate",
  );
  const present = {
    ...refund(80),
    context: { ...(refund(80).context as object), approval: { id: taskId } },
  };
  const results = await Promise.all([
    decide(a, present),
    decide(b, present),
    decide(a, present),
    decide(b, present),
  ]);
  const allows = results.filter((d) => d.outcome === "allow");
  expect(allows).toHaveLength(1);
  for (const d of results.filter((x) => x.outcome !== "allow"))
    expect([d.outcome, code(d)]).toEqual(["deny", "approval_used"]);
  // bound to the request: another amount does not use it
  const other = await decide(a, {
    ...refund(90),
    context: { ...(refund(90).context as object), approval: { id: taskId } },
  });
  expect(other.reasons.map((r) => r.code)).toContain("approval_mismatch");
});

test("budgets and rates hold across sidecars", async () => {
  const bundle = limitsBundle({
    budgets: [
      {
        id: "refund-cap",
        tool: "refunds.issue",
        argument: "amount",
        per: "job",
        window_seconds: 3600,
        max_total: 100,
      },
    ],
    rates: [{ id: "reads", per: "agent", tool: "tickets.read", rate_per_second: 0.001, burst: 4 }],
  });
  const env = { TOOLGATE_BUNDLE: bundle };
  const [a, b] = await Promise.all([synced(env), synced(env)]);
  const refunds = await Promise.all([
    decide(a, refund(30)),
    decide(b, refund(30)),
    decide(a, refund(30)),
    decide(b, refund(30)),
  ]);
  const allowed = refunds.filter((d) => d.outcome === "allow");
  expect(allowed).toHaveLength(3);
  const refused = refunds.find((d) => d.outcome === "deny") as Decision;
  expect(code(refused)).toBe("budget_exceeded");
  expect(refused.reasons[0]?.message).toBe(
    "budget refund-cap: 90 of 100 spent or reserved in the last 3600 s per job; this call needs 30",
  );
  expect(refused.retry_after).toBeGreaterThan(0);
  // a failed action releases its reservation: the budget has room again
  const first = allowed[0] as Decision;
  const owner = refunds.indexOf(first) % 2 === 0 ? a : b;
  const report = await postJson(owner.agentServer.url, "/v1/actions", {
    decision_id: first.decision_id,
    status: "error",
  });
  expect(report.status).toBe(200);
  expect((report.json as { budget?: string }).budget).toBe("releasing");
  await until(async () => (await decide(b, refund(30))).outcome === "allow");

  // rates: a burst of 4 for the agent, fleet-wide (no refill to speak of)
  const reads = [];
  for (let i = 0; i < 4; i++) reads.push(await decide(i % 2 === 0 ? a : b, read()));
  for (let i = 0; i < 2; i++) reads.push(await decide(i % 2 === 0 ? a : b, read()));
  expect(reads.filter((d) => d.outcome === "allow").length).toBeLessThanOrEqual(4);
  const limited = reads.filter((d) => code(d) === "rate_limited");
  expect(limited.length).toBeGreaterThanOrEqual(2);
  expect(limited[0]?.retry_after).toBeGreaterThanOrEqual(1);
});

test("the control service lost: after max_staleness_seconds execute is denied, reads go on, /health/ready 503; back, it recovers", async () => {
  const tg = await synced();
  expect((await decide(tg, refund(10))).outcome).toBe("allow");
  const asked = await decide(tg, refund(80));
  expect(asked.outcome).toBe("needs_approval");
  await control?.stop();
  control = undefined;
  await until(() => tg.fleet?.client.status().state === "ERROR");
  const d = await decide(tg, refund(10));
  expect([d.outcome, code(d)]).toEqual(["deny", "containment_stale"]);
  expect(d.reasons[0]?.message).toMatch(/has been down for \d+ s; execute-class tools are denied/);
  expect((await decide(tg, read())).outcome).toBe("allow");
  const ready = await http(tg.agentServer.url, "GET", "/health/ready");
  expect(ready.status).toBe(503);
  expect((ready.json as { reason: string }).reason).toMatch(/^fleet: the kill-switch stream from/);
  // access requests answer 503 fleet_unavailable while it is gone
  const sub = await postJson(tg.agentServer.url, "/access/v1/requests", {
    ...refund(80),
    denial: { evaluation_id: asked.access_request?.evaluation_id },
  });
  expect([sub.status, (sub.json as { code: string }).code]).toEqual([503, "fleet_unavailable"]);
  control = await startControl();
  await until(() => tg.fleet?.client.status().state === "OK");
  expect((await decide(tg, refund(10))).outcome).toBe("allow");
  expect((await http(tg.agentServer.url, "GET", "/health/ready")).status).toBe(200);
});

test("a credential file (a projected token) is what the sidecar presents; without one and without the dev key, no start", async () => {
  const dir = mkdtempSync(join(tmpdir(), "toolgate-fleet-cred-"));
  const file = join(dir, "token");
  writeFileSync(
    file,
    await token("system:serviceaccount:agents:support-triage", {
      audience: "toolgate-fleet",
      claims: { toolgate_agent: "support-triage" },
    }),
  );
  const tg = await synced({ TOOLGATE_FLEET_CREDENTIAL_FILE: file });
  expect((await decide(tg, refund(10))).outcome).toBe("allow");
  // a credential that names no agent: the stream is refused (401), the sidecar stays stale
  writeFileSync(file, await token("agent:x", { audience: "toolgate-fleet", claims: {} }));
  const other = await sidecar({ TOOLGATE_FLEET_CREDENTIAL_FILE: file });
  await until(() => /answered 401/.test(other.fleet?.client.status().detail ?? ""));
  expect(code(await decide(other, refund(10)))).toBe("containment_stale");

  await expect(
    startTestToolgate({
      TOOLGATE_FLEET_URL: `http://127.0.0.1:${controlPort}`,
      TOOLGATE_FLEET_JWT_PUBLIC_KEY_FILE: keyPair("ec").pub,
    }),
  ).rejects.toThrow(
    /fleet.url is set but "fleet.credential_file" is not.*Fix: set fleet.credential_file/,
  );
});
