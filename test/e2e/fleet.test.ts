/**
 * Fleet mode end to end, with real parts only: a real PostgreSQL started by
 * the project's own script (scripts/postgres.mjs, its own server for this
 * file, as the fault tests stop it), `toolgate control` from bin/toolgate.js
 * in child processes, and sidecars in fleet mode — child processes where the
 * issue's own scenario runs them so, in-process (startTestToolgate: real
 * HTTP, real SQLite, real opa-wasm) where many are needed at once.
 *
 * Speed targets (propagation p99 ≤ 1 s, budgeted p99 ≤ 5 ms) live in
 * scripts/bench/fleet.mjs; here every wait is "eventually, within a generous
 * deadline".
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { readTarGz, writeTarGz } from "../../src/shared/tar";
import { tempDir } from "../helpers/opa";
import { freshDatabase } from "../helpers/postgres";
import { bearer } from "../helpers/tokens";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

jest.setTimeout(120_000);

const root = join(__dirname, "..", "..");
const bin = join(root, "bin", "toolgate.js");
const postgresScript = join(root, "scripts", "postgres.mjs");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Json = Record<string, unknown>;
const json = (body: string): Json => JSON.parse(body) as Json;

// ---- processes ---------------------------------------------------------------------------

const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a !== null ? a.port : 0));
    });
  });
}

/** bin/toolgate.js with `args`, its output in a log file under `dir`. */
function toolgate(args: string[], env: Record<string, string>, dir: string): ChildProcess {
  mkdirSync(dir, { recursive: true });
  const out = openSync(join(dir, "out.log"), "w");
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? "",
      TOOLGATE_LOG_LEVEL: "warn",
      TOOLGATE_STATE_DIR: join(dir, "state"),
      OTEL_SDK_DISABLED: "true",
      ...env,
    },
    stdio: ["ignore", out, out],
  });
  children.push(child);
  return child;
}

async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 15_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    let v: T | undefined;
    try {
      v = await probe();
    } catch {
      v = undefined;
    }
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function ready(base: string, what: string): Promise<void> {
  await until(what, async () => ((await fetch(`${base}/health/ready`)).ok ? true : undefined));
}

function stopped(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill(signal);
  });
}

/** A real PostgreSQL of the test's own (scripts/postgres.mjs, as people run it), data in `dir`. */
function postgres(cmd: "start" | "stop", dir: string): string {
  const r = spawnSync(process.execPath, [postgresScript, cmd, dir], {
    encoding: "utf8",
    timeout: 90_000,
  });
  if (r.status !== 0) throw new Error(`postgres ${cmd}: ${r.stderr}`);
  return r.stdout.trim().split("\n").pop() ?? "";
}

/** A control service replica: `toolgate control` on a free port. */
async function controlReplica(
  pgUrl: string,
  dir: string,
): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = toolgate(
    ["control"],
    {
      TOOLGATE_POSTGRES_URL: pgUrl,
      TOOLGATE_CONTROL_PORT: String(port),
      TOOLGATE_BUNDLE: bundlePath,
    },
    dir,
  );
  const url = `http://127.0.0.1:${port}`;
  await ready(url, `control replica in ${dir}`);
  return { url, child };
}

/**
 * What a Kubernetes Service is to the replicas behind it: a TCP proxy that
 * sends each new connection to the next replica that accepts it.
 */
function serviceProxy(targets: () => number[]): Promise<{ url: string; server: Server }> {
  let next = 0;
  const server = createServer((client: Socket) => {
    const ports = targets();
    const tryPort = (attempt: number): void => {
      if (attempt >= ports.length) {
        client.destroy();
        return;
      }
      const port = ports[(next + attempt) % ports.length] ?? 0;
      const upstream = connect(port, "127.0.0.1");
      upstream.once("connect", () => {
        next = (next + attempt + 1) % ports.length;
        client.pipe(upstream).pipe(client);
        client.on("error", () => upstream.destroy());
        upstream.on("error", () => client.destroy());
        client.on("close", () => upstream.destroy());
        upstream.on("close", () => client.destroy());
      });
      upstream.once("error", () => tryPort(attempt + 1));
    };
    tryPort(0);
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const a = server.address();
      resolve({ url: `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}`, server });
    }),
  );
}

// ---- the bundle: the reference deployment plus fleet limits -------------------------------

const REFUND_BUDGET = 500;
let bundlePath = "";

/** The reference bundle with a budget on refunds.issue (500 per customer per day) and a rate on replies.draft. */
async function fleetBundle(dir: string): Promise<string> {
  const files = await readTarGz(readFileSync(join(root, "bundles", "support-triage.tar.gz")));
  const name = [...files.keys()].find((k) => /(^|\/)data\.json$/.test(k)) ?? "data.json";
  const data = JSON.parse((files.get(name) ?? Buffer.from("{}")).toString("utf8")) as {
    toolgate: { deployment: Json };
  };
  data.toolgate.deployment.limits = {
    budgets: [
      {
        id: "refund-amount-per-customer",
        tool: "refunds.issue",
        argument: "amount",
        per: "customer",
        window_seconds: 86400,
        max_total: REFUND_BUDGET,
      },
    ],
    rates: [{ id: "drafts", per: "tool", tool: "replies.draft", rate_per_second: 1, burst: 10 }],
  };
  files.set(name, Buffer.from(JSON.stringify(data)));
  const out = join(dir, "fleet.tar.gz");
  writeFileSync(out, await writeTarGz(files));
  return out;
}

// ---- requests ----------------------------------------------------------------------------

function refund(amount: number, customer = "cust_1", approval?: string): Json {
  const req = refRequest({
    tool: "refunds.issue",
    args: { amount },
    customer,
    jobCustomer: customer,
  }) as Json & { context: Json };
  if (approval !== undefined) req.context.approval = { id: approval };
  return req;
}
const read = (): Json => refRequest({ tool: "tickets.read" });

async function decide(base: string, req: Json): Promise<Json> {
  const r = await postJson(base, "/v1/decisions", req);
  if (r.status !== 200) throw new Error(`decision ${r.status}: ${r.text}`);
  return json(r.text);
}
const reason = (d: Json): string | undefined =>
  (d.reasons as Array<{ code: string }> | undefined)?.[0]?.code;

function devToken(who: string): string {
  const r = spawnSync(process.execPath, [bin, "dev-token", who], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`dev-token ${who}: ${r.stderr}`);
  return r.stdout.trim();
}

// ---- the suite ---------------------------------------------------------------------------

const base = tempDir("toolgate-fleet-e2e-");
// PostgreSQL runs as an unprivileged user when the tests run as root: it must reach its data dir
chmodSync(base, 0o755);
let pgUrl = "";
let dropDb: () => Promise<void> = () => Promise.resolve();
let olga = "";
let maria = "";

beforeAll(async () => {
  bundlePath = await fleetBundle(base);
  const db = await freshDatabase();
  pgUrl = db.url;
  dropDb = () => db.drop();
  olga = devToken("olga");
  maria = devToken("maria");
});
afterAll(async () => {
  await dropDb();
});

describe("the issue's scenario: one control service, three sidecars as processes", () => {
  let control: { url: string; child: ChildProcess };
  const sidecars: Array<{ agent: string; child: ChildProcess }> = [];

  beforeAll(async () => {
    control = await controlReplica(pgUrl, join(base, "control-1"));
    for (let i = 1; i <= 3; i++) {
      const port = await freePort();
      const child = toolgate(
        ["serve"],
        {
          TOOLGATE_FLEET_URL: control.url,
          TOOLGATE_AGENT_PORT: String(port),
          TOOLGATE_CONTROL_PORT: String(await freePort()),
          TOOLGATE_BUNDLE: bundlePath,
        },
        join(base, `sidecar-${i}`),
      );
      sidecars.push({ agent: `http://127.0.0.1:${port}`, child });
    }
    for (const s of sidecars) await ready(s.agent, "a sidecar");
  });
  afterAll(async () => {
    await Promise.all([...sidecars.map((s) => stopped(s.child)), stopped(control.child)]);
  });

  test("a kill switch posted to the control service denies the next decision on all three", async () => {
    for (const s of sidecars) expect((await decide(s.agent, read())).outcome).toBe("allow");
    const set = await postJson(
      control.url,
      "/v1/killswitches",
      { scope: { tool: "tickets.read" }, reason: "INC-7: stop reads fleet-wide" },
      bearer(olga),
    );
    expect(set.status).toBe(201);
    const sw = json(set.text);
    expect(sw).toMatchObject({ scope: { tool: "tickets.read" }, created_by: "olga" });
    for (const s of sidecars) {
      const d = await until("the switch on a sidecar", async () => {
        const d = await decide(s.agent, read());
        return d.outcome === "deny" ? d : undefined;
      });
      expect(reason(d)).toBe("tool_disabled");
      // once denied, it stays denied
      expect((await decide(s.agent, read())).outcome).toBe("deny");
    }
    // the sidecars' own control ports show it, and refuse to change it
    const lifted = await http(
      control.url,
      "DELETE",
      `/v1/killswitches/${String(sw.id)}`,
      undefined,
      bearer(olga),
    );
    expect(lifted.status).toBe(200);
    for (const s of sidecars) {
      await until("the lift on a sidecar", async () =>
        (await decide(s.agent, read())).outcome === "allow" ? true : undefined,
      );
    }
  });

  test("a refund of 120 requested through sidecar 1, approved by maria at the control service, is allowed once on sidecar 2 and not on sidecar 3", async () => {
    const [s1, s2, s3] = sidecars as [
      (typeof sidecars)[0],
      (typeof sidecars)[0],
      (typeof sidecars)[0],
    ];
    const asked = await decide(s1.agent, refund(120));
    expect(asked.outcome).toBe("needs_approval");
    const evaluationId = (asked.access_request as Json).evaluation_id as string;
    const submitted = await postJson(s1.agent, "/access/v1/requests", {
      ...refund(120),
      denial: { evaluation_id: evaluationId },
    });
    expect([200, 201, 202]).toContain(submitted.status);
    const taskId = (json(submitted.text).task as Json).id as string;
    expect(typeof taskId).toBe("string");

    const pending = await http(
      control.url,
      "GET",
      "/v1/approvals?status=pending",
      undefined,
      bearer(maria),
    );
    expect(pending.status).toBe(200);
    const listed = (json(pending.text).approvals ?? JSON.parse(pending.text)) as Json[];
    expect(listed.map((t) => t.id)).toContain(taskId);

    // the initiator's own agent cannot approve through a sidecar: the sidecar's control port is not the fleet's
    const approved = await postJson(
      control.url,
      `/v1/approvals/${taskId}/approve`,
      { comment: "ok" },
      bearer(maria),
    );
    expect(approved.status).toBe(200);

    const once = await decide(s2.agent, refund(120, "cust_1", taskId));
    expect(once.outcome).toBe("allow");
    expect(typeof once.grant).toBe("string");
    const again = await decide(s3.agent, refund(120, "cust_1", taskId));
    expect(again.outcome).toBe("deny");
    expect(reason(again)).toBe("approval_used");
  });
});

describe("guarantees under concurrency (in-process sidecars, one control replica)", () => {
  let control: { url: string; child: ChildProcess };
  const fleet: Toolgate[] = [];

  beforeAll(async () => {
    control = await controlReplica(pgUrl, join(base, "control-conc"));
    for (let i = 0; i < 8; i++) {
      fleet.push(
        await startTestToolgate({ TOOLGATE_FLEET_URL: control.url, TOOLGATE_BUNDLE: bundlePath }),
      );
    }
    for (const tg of fleet) await ready(tg.agentServer.url, "an in-process sidecar");
  });
  afterAll(async () => {
    for (const tg of fleet) await tg.stop();
    await stopped(control.child);
  });

  test("8 sidecars, 40 concurrent re-asks with one single-use approval: exactly one allow", async () => {
    const first = fleet[0] as Toolgate;
    const asked = await decide(first.agentServer.url, refund(150, "cust_2"));
    const evaluationId = (asked.access_request as Json).evaluation_id as string;
    const submitted = await postJson(first.agentServer.url, "/access/v1/requests", {
      ...refund(150, "cust_2"),
      denial: { evaluation_id: evaluationId },
    });
    const taskId = (json(submitted.text).task as Json).id as string;
    const approved = await postJson(
      control.url,
      `/v1/approvals/${taskId}/approve`,
      {},
      bearer(maria),
    );
    expect(approved.status).toBe(200);
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        decide((fleet[i % 8] as Toolgate).agentServer.url, refund(150, "cust_2", taskId)),
      ),
    );
    expect(answers.filter((d) => d.outcome === "allow")).toHaveLength(1);
    // the approval's use is claimed after the budget reservation (a call the budget denies
    // spends no use): a twin whose reservation did not fit is denied by the budget, one
    // that reserved and lost the claim by the approval, its reservation released
    const losers = answers.filter((d) => d.outcome !== "allow");
    for (const d of losers) {
      expect(d.outcome).toBe("deny");
      expect(["approval_used", "budget_exceeded"]).toContain(reason(d));
    }
    expect(losers.some((d) => reason(d) === "approval_used")).toBe(true);
  });

  test("4 sidecars × 100 concurrent refunds: the sum allowed never exceeds the fleet budget", async () => {
    const customer = "cust_budget";
    const answers = await Promise.all(
      Array.from({ length: 400 }, (_, i) =>
        decide((fleet[i % 4] as Toolgate).agentServer.url, refund(10, customer)),
      ),
    );
    const allowed = answers.filter((d) => d.outcome === "allow");
    expect(allowed.length * 10).toBeLessThanOrEqual(REFUND_BUDGET);
    expect(allowed.length).toBeGreaterThan(0);
    for (const d of answers.filter((d) => d.outcome !== "allow")) {
      expect(["budget_exceeded", "budget_unavailable"]).toContain(reason(d));
    }
    // the control service sees the same sum
    const usage = await http(control.url, "GET", "/v1/budgets", undefined, bearer(olga));
    expect(usage.status).toBe(200);
    expect(usage.text).toContain(customer);
  });

  test("a fleet rate limit holds across sidecars (leases never exceed the bucket)", async () => {
    const draft = (): Json => refRequest({ tool: "replies.draft" });
    const t0 = Date.now();
    const answers = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        decide((fleet[i % 3] as Toolgate).agentServer.url, draft()),
      ),
    );
    const elapsed = (Date.now() - t0) / 1000;
    const allowed = answers.filter((d) => d.outcome === "allow").length;
    // burst 10 + 1/s refill: never more across the fleet
    expect(allowed).toBeLessThanOrEqual(10 + Math.ceil(elapsed * 1) + 1);
    expect(allowed).toBeGreaterThan(0);
    for (const d of answers.filter((d) => d.outcome !== "allow"))
      expect(reason(d)).toBe("rate_limited");
  });
});

describe("faults", () => {
  const pgDirs: string[] = [];
  afterAll(() => {
    for (const d of pgDirs) postgres("stop", d);
  });

  test("a sidecar started while a switch is set: its first execute decision is already denied", async () => {
    const control = await controlReplica(pgUrl, join(base, "control-restart"));
    const set = await postJson(
      control.url,
      "/v1/killswitches",
      { scope: { tool: "refunds.issue" }, reason: "INC-8" },
      bearer(olga),
    );
    expect(set.status).toBe(201);
    const tg = await startTestToolgate({
      TOOLGATE_FLEET_URL: control.url,
      TOOLGATE_BUNDLE: bundlePath,
    });
    try {
      // no waiting for readiness: the very first execute decision
      const d = await decide(tg.agentServer.url, refund(10, "cust_r"));
      expect(d.outcome).toBe("deny");
      expect(["tool_disabled", "containment_stale"]).toContain(reason(d));
      await ready(tg.agentServer.url, "the restarted sidecar");
      const after = await decide(tg.agentServer.url, refund(10, "cust_r"));
      expect(reason(after)).toBe("tool_disabled");
    } finally {
      await http(
        control.url,
        "DELETE",
        `/v1/killswitches/${String(json(set.text).id)}`,
        undefined,
        bearer(olga),
      );
      await tg.stop();
      await stopped(control.child);
    }
  });

  test("one of two control replicas killed under load: sidecars reconnect to the other; no switch or approval lost", async () => {
    const a = await controlReplica(pgUrl, join(base, "control-a"));
    const b = await controlReplica(pgUrl, join(base, "control-b"));
    const port = (u: string) => Number(new URL(u).port);
    let alive = [port(a.url), port(b.url)];
    const svc = await serviceProxy(() => alive);
    const sidecars = [
      await startTestToolgate({ TOOLGATE_FLEET_URL: svc.url, TOOLGATE_BUNDLE: bundlePath }),
      await startTestToolgate({ TOOLGATE_FLEET_URL: svc.url, TOOLGATE_BUNDLE: bundlePath }),
    ];
    try {
      for (const s of sidecars) await ready(s.agentServer.url, "a sidecar behind the service");
      // an approval pending before the kill
      const s0 = sidecars[0] as Toolgate;
      const asked = await decide(s0.agentServer.url, refund(200, "cust_ha"));
      const submitted = await postJson(s0.agentServer.url, "/access/v1/requests", {
        ...refund(200, "cust_ha"),
        denial: { evaluation_id: (asked.access_request as Json).evaluation_id },
      });
      const taskId = (json(submitted.text).task as Json).id as string;
      // load while replica A dies
      let stop = false;
      const load = sidecars.map(async (s) => {
        while (!stop) await decide(s.agentServer.url, read());
      });
      await sleep(200);
      await stopped(a.child, "SIGKILL");
      alive = [port(b.url)];
      const set = await postJson(
        b.url,
        "/v1/killswitches",
        { scope: { tool: "tickets.read" }, reason: "after the failover" },
        bearer(olga),
      );
      expect(set.status).toBe(201);
      for (const s of sidecars) {
        await until("the switch after failover", async () =>
          (await decide(s.agentServer.url, read())).outcome === "deny" ? true : undefined,
        );
      }
      stop = true;
      await Promise.all(load);
      // the approval is decided on the surviving replica and honoured once
      const approved = await postJson(b.url, `/v1/approvals/${taskId}/approve`, {}, bearer(maria));
      expect(approved.status).toBe(200);
      const used = await decide(
        (sidecars[1] as Toolgate).agentServer.url,
        refund(200, "cust_ha", taskId),
      );
      expect(used.outcome).toBe("allow");
      await http(
        b.url,
        "DELETE",
        `/v1/killswitches/${String(json(set.text).id)}`,
        undefined,
        bearer(olga),
      );
    } finally {
      for (const s of sidecars) await s.stop();
      svc.server.close();
      await stopped(b.child);
    }
  });

  test("the control service lost: after fleet.max_staleness_seconds execute tools deny containment_stale, reads go on, and readiness says so", async () => {
    const control = await controlReplica(pgUrl, join(base, "control-stale"));
    const tg = await startTestToolgate({
      TOOLGATE_FLEET_URL: control.url,
      TOOLGATE_BUNDLE: bundlePath,
      TOOLGATE_FLEET_MAX_STALENESS_SECONDS: "1",
    });
    try {
      await ready(tg.agentServer.url, "the sidecar");
      expect((await decide(tg.agentServer.url, refund(10, "cust_s"))).outcome).toBe("allow");
      await stopped(control.child, "SIGKILL");
      const stale = await until("containment_stale", async () => {
        const d = await decide(tg.agentServer.url, refund(10, "cust_s"));
        return reason(d) === "containment_stale" ? d : undefined;
      });
      expect(stale.outcome).toBe("deny");
      const stillRead = await decide(tg.agentServer.url, read());
      expect(stillRead.reasons).toEqual(expect.anything());
      expect(stillRead.outcome).toBe("allow");
      const r = await fetch(`${tg.agentServer.url}/health/ready`);
      expect(r.status).toBe(503);
      expect(await r.text()).toMatch(/stale|fleet/i);
      const status = await http(
        tg.controlServer?.url ?? "",
        "GET",
        "/v1/status",
        undefined,
        bearer(olga),
      );
      expect(status.text).toMatch(/stale|fleet/i);
    } finally {
      await tg.stop();
    }
  });

  test("PostgreSQL down: the control service answers 503 and says so; sidecars keep their switches and fail closed on budgets and approvals", async () => {
    const ownPg = join(base, "pg-down");
    const url = postgres("start", ownPg);
    pgDirs.push(ownPg);
    const control = await controlReplica(url, join(base, "control-pgdown"));
    const tg = await startTestToolgate({
      TOOLGATE_FLEET_URL: control.url,
      TOOLGATE_BUNDLE: bundlePath,
    });
    try {
      await ready(tg.agentServer.url, "the sidecar");
      const set = await postJson(
        control.url,
        "/v1/killswitches",
        { scope: { tool: "accounts.summary.read" }, reason: "kept through the outage" },
        bearer(olga),
      );
      expect(set.status).toBe(201);
      await until("the switch", async () =>
        reason(
          await decide(tg.agentServer.url, refRequest({ tool: "accounts.summary.read" }) as Json),
        ) === "tool_disabled"
          ? true
          : undefined,
      );
      postgres("stop", ownPg);
      const health = await until("control not ready", async () => {
        const r = await fetch(`${control.url}/health/ready`);
        return r.status === 503 ? await r.text() : undefined;
      });
      expect(health).toMatch(/postgres|store/i);
      const write = await postJson(
        control.url,
        "/v1/killswitches",
        { scope: { tool: "replies.send" }, reason: "during the outage" },
        bearer(olga),
      );
      expect(write.status).toBe(503);
      expect(json(write.text).code).toBe("fleet_store_unavailable");
      // the switch in force stays in force; reads go on
      expect(
        reason(
          await decide(tg.agentServer.url, refRequest({ tool: "accounts.summary.read" }) as Json),
        ),
      ).toBe("tool_disabled");
      expect((await decide(tg.agentServer.url, read())).outcome).toBe("allow");
      // budgets and approvals need fleet state: fail closed
      const budget = await decide(tg.agentServer.url, refund(10, "cust_pg"));
      expect(budget.outcome).toBe("deny");
      expect(reason(budget)).toBe("budget_unavailable");
      const approval = await decide(tg.agentServer.url, refund(120, "cust_pg", "apr_unknown"));
      expect(approval.outcome).not.toBe("allow");
    } finally {
      await tg.stop();
      await stopped(control.child);
    }
  });
});
