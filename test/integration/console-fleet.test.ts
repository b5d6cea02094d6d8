/**
 * The approver console on `toolgate control` (src/console/backends/fleet.ts,
 * mounted by src/control/server.ts), end to end: real PostgreSQL (a fresh
 * database), two real control replicas sharing one console.session_key_file,
 * a real fleet sidecar (fleet.url) on loopback, the development login, forms
 * posted as a browser without JavaScript would (urlencoded, Origin, the
 * page's CSRF token). What it holds: a request made through a sidecar shows
 * in the inbox with the policy's words and the agent's justification; maria
 * approves it through the form and the sidecar's re-ask is allowed once;
 * alice (the initiator) sees it read-only and cannot decide it; a switch set
 * from the panel reaches the sidecar and lifted from it, leaves; a session
 * made on one replica works on the other, and not on a replica with another key.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { compileConfig } from "../../src/config";
import { startControlService, type ControlService } from "../../src/control";
import { silentLogger } from "../../src/shared/log";
import { until } from "../helpers/bundles";
import { limitsBundle } from "../helpers/containment";
import { freePort } from "../helpers/net";
import { freshDatabase, type FreshDatabase } from "../helpers/postgres";
import { decideAt, httpExact, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

jest.setTimeout(60_000);

let db: FreshDatabase;
let keyFile: string;
let a: ControlService | undefined;
let b: ControlService | undefined;
let sidecar: Toolgate | undefined;

async function startControl(
  replica: string,
  env: Record<string, string> = {},
): Promise<ControlService> {
  const config = compileConfig(
    {},
    {
      TOOLGATE_CONTROL_PORT: String(await freePort()),
      TOOLGATE_LOG_LEVEL: "silent",
      TOOLGATE_STATE_DIR: mkdtempSync(join(tmpdir(), "toolgate-control-")),
      TOOLGATE_AUDIT_HMAC_KEY: "test-key-0123456789abcdef",
      TOOLGATE_POSTGRES_URL: db.url,
      ...env,
    },
  );
  return startControlService(config, {
    log: silentLogger,
    env: { OTEL_SDK_DISABLED: "true" },
    replica,
    pingMs: 250,
    housekeepingIntervalMs: 500,
  });
}

/** A browser without JavaScript: one person's cookie, forms posted from the console's own origin. */
class Browser {
  cookie = "";
  constructor(readonly base: string) {}

  async get(path: string): Promise<{ status: number; location: string | null; text: string }> {
    const res = await fetch(`${this.base}${path}`, {
      redirect: "manual",
      headers: this.cookie === "" ? {} : { cookie: this.cookie },
    });
    return { status: res.status, location: res.headers.get("location"), text: await res.text() };
  }

  async post(
    path: string,
    form: Record<string, string>,
  ): Promise<{ status: number; location: string | null; text: string }> {
    const res = await fetch(`${this.base}${path}`, {
      method: "POST",
      redirect: "manual",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        origin: this.base,
        ...(this.cookie === "" ? {} : { cookie: this.cookie }),
      },
      body: new URLSearchParams(form).toString(),
    });
    for (const c of res.headers.getSetCookie()) {
      const pair = c.split(";")[0] ?? "";
      if (pair.startsWith("tg_console=")) this.cookie = pair;
    }
    return { status: res.status, location: res.headers.get("location"), text: await res.text() };
  }

  /** Signs in through the development login (the button with the person's name). */
  async login(user: string): Promise<void> {
    const page = await this.get("/console/login");
    expect(page.status).toBe(200);
    expect(page.text).toContain(user);
    const r = await this.post("/console/login/dev", { user });
    expect([r.status, r.location]).toEqual([303, "/console/"]);
    expect(this.cookie).toMatch(/^tg_console=/);
  }

  /** The CSRF token of a page's forms. */
  async csrf(path: string): Promise<string> {
    const page = await this.get(path);
    expect(page.status).toBe(200);
    const m = /name="csrf" value="([^"]+)"/.exec(page.text);
    if (m?.[1] === undefined) throw new Error(`no CSRF token on ${path}`);
    return m[1];
  }
}

interface Decision {
  outcome: string;
  reasons: Array<{ code: string; message: string }>;
  access_request?: { evaluation_id: string };
}

const decide = (req: Record<string, unknown>): Promise<Decision> =>
  decideAt(sidecar?.agentServer.url ?? "", req);

const refund = (amount: number) => refRequest({ tool: "refunds.issue", args: { amount } });
const escape = (s: string): string =>
  s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
const code = (d: Decision): string => d.reasons[0]?.code ?? "";

beforeAll(async () => {
  db = await freshDatabase();
  const dir = mkdtempSync(join(tmpdir(), "toolgate-console-key-"));
  keyFile = join(dir, "session.key");
  writeFileSync(keyFile, randomBytes(48), { mode: 0o600 });
  const env = { TOOLGATE_CONSOLE_SESSION_KEY_FILE: keyFile };
  [a, b] = await Promise.all([startControl("r1", env), startControl("r2", env)]);
  sidecar = await startTestToolgate({
    TOOLGATE_FLEET_URL: a.url,
    TOOLGATE_FLEET_MAX_STALENESS_SECONDS: "5",
  });
  await until(() => sidecar?.fleet?.client.status().state === "OK");
});

afterAll(async () => {
  await sidecar?.stop();
  await Promise.all([a?.stop(), b?.stop()]);
  await db.drop();
});

test("the console answers on the control service's port without a token: the login page, the inbox behind it", async () => {
  const anon = new Browser(a?.url ?? "");
  const inbox = await anon.get("/console/");
  expect([inbox.status, inbox.location]).toEqual([302, "/console/login"]);
  const login = await anon.get("/console/login");
  expect(login.status).toBe(200);
  for (const user of ["alice", "sam", "carol", "maria", "olga"]) expect(login.text).toContain(user);
  // the human API still needs a token
  expect((await fetch(`${a?.url ?? ""}/v1/approvals`)).status).toBe(401);
  // a POST without a session, or from another origin, is refused
  const forged = await fetch(`${a?.url ?? ""}/console/login/dev`, {
    method: "POST",
    redirect: "manual",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      origin: "http://evil.example",
    },
    body: "user=olga",
  });
  expect(forged.status).toBe(403);
  expect(forged.headers.getSetCookie()).toEqual([]);
});

test("the console opens no way around the gate: path tricks through /console never reach the human or sidecar API", async () => {
  const base = a?.url ?? "";
  const host = new URL(base).host;
  const reached: string[] = [];
  for (const target of [
    "/console/../v1/approvals",
    "/console/%2e%2e/v1/approvals",
    "/console/..%2fv1/approvals",
    "/CONSOLE/../v1/killswitches",
    "/console//v1/approvals",
    `http://${host}/console/../v1/approvals`,
    "/console/../fleet/v1/stream",
    "/console/requests/../../v1/approvals",
  ]) {
    for (const method of ["GET", "POST", "DELETE"]) {
      const r = await httpExact(base, method, target, method === "POST" ? "{}" : undefined, {
        "content-type": "application/json",
      });
      // the console's own 4xx page, or the gate's 401: never an API answer
      if (
        r.status < 400 ||
        (r.status !== 401 && /^application\/json/.test(String(r.headers["content-type"])))
      )
        reached.push(`${method} ${target} → ${r.status} ${String(r.headers["content-type"])}`);
    }
  }
  expect(reached).toEqual([]);
});

test("a request made through a sidecar: maria approves it from the inbox's form, the re-ask is allowed once; alice cannot decide it", async () => {
  const asked = await decide(refund(120));
  expect(asked.outcome).toBe("needs_approval");
  const sub = await postJson(sidecar?.agentServer.url ?? "", "/access/v1/requests", {
    ...refund(120),
    denial: { evaluation_id: asked.access_request?.evaluation_id ?? "" },
    justification: "Customer was double-charged <b>twice</b>; ticket T-42.",
  });
  expect(sub.status).toBe(201);
  const id = (sub.json as { task: { id: string } }).task.id;

  const maria = new Browser(a?.url ?? "");
  await maria.login("maria");
  const inbox = await maria.get("/console/");
  expect(inbox.status).toBe(200);
  expect(inbox.text).toContain(`data-request-id="${id}"`);
  expect(inbox.text).toContain("refunds.issue");
  // the row in full: customer, job, the amount, this agent's requests today
  expect(inbox.text).toContain("customer cust_1");
  expect(inbox.text).toContain("job job_1");
  expect(inbox.text).toMatch(/amount<\/span>\s*<code>120<\/code>/);
  expect(inbox.text).toContain("1 requested today, 0 approved");
  // the agent's words, escaped
  expect(inbox.text).toContain("double-charged &lt;b&gt;twice&lt;/b&gt;");
  expect(inbox.text).not.toContain("<b>twice</b>");

  const page = await maria.get(`/console/requests/${id}`);
  expect(page.status).toBe(200);
  expect(page.text).toMatch(/>\s*Approve\s*</);
  expect(page.text).toContain('id="comment"');
  // the policy's reason in words, not only its code
  const reason = asked.reasons.find((r) => r.message !== "")?.message ?? "";
  expect(reason).not.toBe("");
  expect(page.text).toContain(escape(reason));

  // alice initiated it: she sees it, read-only with why, and a forged approval is refused
  const alice = new Browser(b?.url ?? "");
  await alice.login("alice");
  const hers = await alice.get(`/console/requests/${id}`);
  expect(hers.status).toBe(200);
  expect(hers.text).toContain("the approver is the initiator");
  const aliceCsrf = await alice.csrf(`/console/requests/${id}`);
  const self = await alice.post(`/console/requests/${id}/approve`, {
    csrf: aliceCsrf,
    comment: "me",
  });
  expect(self.status).toBe(403);
  // carol holds no approver role: not in her inbox; its page (as the API's GET) says why she cannot decide
  const carol = new Browser(a?.url ?? "");
  await carol.login("carol");
  expect((await carol.get("/console/")).text).not.toContain(`data-request-id="${id}"`);
  const hersNot = await carol.get(`/console/requests/${id}`);
  expect(hersNot.status).toBe(200);
  expect(hersNot.text).toContain("the approver holds none of the roles support_manager");
  expect(hersNot.text).not.toMatch(/>\s*Approve\s*</);
  const carolCsrf = await carol.csrf(`/console/requests/${id}`);
  expect(
    (await carol.post(`/console/requests/${id}/approve`, { csrf: carolCsrf, comment: "" })).status,
  ).toBe(403);
  expect((await carol.get("/console/requests/apr_doesnotexist")).status).toBe(404);

  // without the page's token: refused; with it: approved
  expect((await maria.post(`/console/requests/${id}/approve`, { comment: "x" })).status).toBe(403);
  const csrf = await maria.csrf(`/console/requests/${id}`);
  const ok = await maria.post(`/console/requests/${id}/approve`, {
    csrf,
    comment: "Refund verified against the ledger",
  });
  expect([ok.status, ok.location]).toEqual([303, `/console/requests/${id}`]);
  // decided once: a second approval is refused
  expect((await maria.post(`/console/requests/${id}/approve`, { csrf, comment: "" })).status).toBe(
    409,
  );

  const present = {
    ...refund(120),
    context: { ...(refund(120).context as object), approval: { id } },
  };
  expect((await decide(present)).outcome).toBe("allow");
  const again = await decide(present);
  expect([again.outcome, code(again)]).toEqual(["deny", "approval_used"]);

  // the request page tells who decided, and its timeline
  const after = await maria.get(`/console/requests/${id}`);
  expect(after.text).toContain("Refund verified against the ledger");
  expect(after.text).not.toMatch(/>\s*Approve\s*</);
  for (const step of ["access request submitted", "approved", "approval used by a re-ask"])
    expect(after.text).toContain(step);
});

test("olga sets a kill switch from the panel and it reaches the sidecar; lifted from the panel, it leaves; maria has no panel", async () => {
  expect((await decide(refund(5))).outcome).toBe("allow");
  const olga = new Browser(a?.url ?? "");
  await olga.login("olga");
  const csrf = await olga.csrf("/console/containment");
  const set = await olga.post("/console/containment/switches", {
    csrf,
    tool: "refunds.issue",
    reason: "INC-7 <refund fraud>",
  });
  expect([set.status, set.location]).toEqual([303, "/console/containment"]);
  await until(() => (sidecar?.fleet?.containment.listSwitches().length ?? 0) === 1);
  const denied = await decide(refund(5));
  expect([denied.outcome, code(denied)]).toEqual(["deny", "tool_disabled"]);
  expect(denied.reasons[0]?.message).toContain("INC-7 <refund fraud>");

  // the panel (on the other replica too) shows it, with who and why, escaped
  const olgaOnB = new Browser(b?.url ?? "");
  olgaOnB.cookie = olga.cookie;
  const panel = await olgaOnB.get("/console/containment");
  expect(panel.status).toBe(200);
  expect(panel.text).toContain("INC-7 &lt;refund fraud&gt;");
  expect(panel.text).toContain("olga");
  const ids = [...panel.text.matchAll(/\/console\/containment\/switches\/([A-Za-z0-9_-]+)\/lift/g)];
  expect(ids).toHaveLength(1);
  const maria = new Browser(a?.url ?? "");
  await maria.login("maria");
  expect((await maria.get("/console/containment")).status).toBe(403);
  const mariaCsrf = await maria.csrf("/console/");
  expect(
    (
      await maria.post("/console/containment/switches", {
        csrf: mariaCsrf,
        tool: "tickets.read",
        reason: "not mine to set",
      })
    ).status,
  ).toBe(403);
  expect(
    (
      await maria.post(`/console/containment/switches/${ids[0]?.[1] ?? ""}/lift`, {
        csrf: mariaCsrf,
      })
    ).status,
  ).toBe(403);

  const lift = await olgaOnB.post(`/console/containment/switches/${ids[0]?.[1] ?? ""}/lift`, {
    csrf,
  });
  expect([lift.status, lift.location]).toEqual([303, "/console/containment"]);
  await until(() => (sidecar?.fleet?.containment.listSwitches().length ?? 1) === 0);
  expect((await decide(refund(5))).outcome).toBe("allow");
});

test("the panel shows the fleet's budgets' use and the bundle revisions its sidecars run", async () => {
  const budgeted = await startTestToolgate({
    TOOLGATE_FLEET_URL: b?.url ?? "",
    TOOLGATE_BUNDLE: limitsBundle(
      {
        budgets: [
          {
            id: "refund-cap",
            tool: "refunds.issue",
            argument: "amount",
            per: "job",
            window_seconds: 3600,
            max_total: 1000,
          },
        ],
      },
      "rev-budgeted",
    ),
  });
  try {
    await until(() => budgeted.fleet?.client.status().state === "OK");
    const r = await postJson(budgeted.agentServer.url, "/v1/decisions", refund(40));
    expect((r.json as Decision).outcome).toBe("allow");
    const olga = new Browser(a?.url ?? "");
    await olga.login("olga");
    await until(async () => (await olga.get("/console/containment")).text.includes("rev-budgeted"));
    const panel = await olga.get("/console/containment");
    expect(panel.text).toContain("refund-cap");
    expect(panel.text).toMatch(/refund-cap\|[^<]*: 40<\/li>/);
    expect(panel.text).toContain("in the sidecars&#39; bundle");
    expect(panel.text).not.toContain("NaN");
    expect(panel.text).toContain("not reported to the control service");
  } finally {
    await budgeted.stop();
  }
});

test("decided requests are the newest (listTasks newest first); pending ones oldest first", async () => {
  const ids: string[] = [];
  for (const amount of [61, 62, 63]) {
    const asked = await decide(refund(amount));
    const sub = await postJson(sidecar?.agentServer.url ?? "", "/access/v1/requests", {
      ...refund(amount),
      denial: { evaluation_id: asked.access_request?.evaluation_id ?? "" },
    });
    expect(sub.status).toBe(201);
    ids.push((sub.json as { task: { id: string } }).task.id);
  }
  const store = a?.store;
  if (store === undefined) throw new Error("no store");
  const newest = await store.listTasks({ order: "newest", limit: 2 });
  expect(newest.map((t) => t.id)).toEqual([ids[2], ids[1]]);
  const oldest = await store.listTasks({ status: "pending" });
  const at = oldest.map((t) => t.createdAt);
  expect(at).toEqual([...at].sort((x, y) => x - y));

  const maria = new Browser(a?.url ?? "");
  await maria.login("maria");
  const inbox = (await maria.get("/console/")).text;
  const pos = ids.map((id) => inbox.indexOf(`data-request-id="${id}"`));
  expect(pos.every((p) => p > 0)).toBe(true);
  expect(pos).toEqual([...pos].sort((x, y) => x - y));
  // deny the last two: the decided list shows the newest decision first
  for (const id of [ids[1], ids[2]]) {
    const csrf = await maria.csrf(`/console/requests/${id ?? ""}`);
    const r = await maria.post(`/console/requests/${id ?? ""}/deny`, { csrf, comment: "no" });
    expect(r.status).toBe(303);
  }
  const after = (await maria.get("/console/")).text;
  const d1 = after.indexOf(`data-request-id="${ids[1] ?? ""}"`);
  const d2 = after.indexOf(`data-request-id="${ids[2] ?? ""}"`);
  expect(d2).toBeGreaterThan(0);
  expect(d2).toBeLessThan(d1);
});

test("a session made on replica A works on replica B (one session key file); not on a replica with another key", async () => {
  const onA = new Browser(a?.url ?? "");
  await onA.login("maria");
  const onB = new Browser(b?.url ?? "");
  onB.cookie = onA.cookie;
  const inbox = await onB.get("/console/");
  expect(inbox.status).toBe(200);
  expect(inbox.text).toContain("maria");
  // the CSRF token is in the sealed session: a form from A's page posts on B
  const csrf = await onA.csrf("/console/");
  const out = await onB.post("/console/logout", { csrf });
  expect([out.status, out.location]).toEqual([303, "/console/login"]);

  const other = await startControl("r3", {
    TOOLGATE_CONSOLE_SESSION_KEY_FILE: (() => {
      const f = join(mkdtempSync(join(tmpdir(), "toolgate-console-key-")), "k");
      writeFileSync(f, randomBytes(48), { mode: 0o600 });
      return f;
    })(),
  });
  try {
    const onC = new Browser(other.url);
    onC.cookie = onA.cookie;
    const r = await onC.get("/console/");
    expect([r.status, r.location]).toEqual([302, "/console/login"]);
  } finally {
    await other.stop();
  }
});
