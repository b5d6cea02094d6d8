/**
 * Attacks on the approver console and the approval notifications, each a
 * defect found in review: the console over a stub backend on a loopback
 * port (real HTTP, real sealed cookies), the notification payloads without a
 * network.
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import express from "express";
import { messageFacts, slackMessage } from "../../src/approvals/notify";
import { approverView } from "../../src/approvals/rules";
import type { ApprovalTask, EvaluationRecord } from "../../src/approvals/store";
import { createConsole, type ConsoleSettings } from "../../src/console/app";
import type { ConsoleBackend } from "../../src/console/backend";
import { newCsrf, Sealer } from "../../src/console/session";
import type { KillSwitch } from "../../src/containment";
import { toolgateError } from "../../src/errors";
import type { Principal } from "../../src/model";
import { captureLogger } from "../helpers/capture";
import { tempDir } from "../helpers/opa";

// -- the console over a stub backend --------------------------------------------------

const ADMIN = "admin";

function stubBackend(over: Partial<ConsoleBackend> = {}): ConsoleBackend {
  const admin = (p: Principal) => {
    if (!p.roles.includes(ADMIN)) throw toolgateError("forbidden", "kill switches need admin");
  };
  const sw = (by: string): KillSwitch => ({
    id: "ks_1",
    scope: { tool: "refunds.issue" },
    reason: "stop",
    created_by: by,
    created_at: new Date().toISOString(),
    expires_at: null,
    persisted: true,
  });
  return {
    deployment: () =>
      Promise.resolve({ kind: "sidecar", name: "support-triage", adminRole: ADMIN }),
    inbox: () => Promise.resolve({ pending: [], readOnly: [], decided: [] }),
    request: (id) => Promise.reject(toolgateError("approval_not_found", `no approval ${id}`)),
    timeline: () => Promise.resolve([]),
    decide: (id) => Promise.reject(toolgateError("approval_not_found", `no approval ${id}`)),
    listSwitches: (p) => Promise.resolve().then(() => (admin(p), [])),
    setSwitch: (_i, p) => Promise.resolve().then(() => (admin(p), sw(p.id))),
    liftSwitch: (_id, p) => Promise.resolve().then(() => (admin(p), sw(p.id))),
    budgets: (p) => Promise.resolve().then(() => (admin(p), [])),
    rollout: (p) => Promise.resolve().then(() => (admin(p), [])),
    ...over,
  };
}

function settings(keyFile: string, issuer: string | null): ConsoleSettings {
  return {
    publicUrl: null,
    oidc: {
      issuer,
      clientId: "toolgate-console",
      clientSecretFile: null,
      rolesClaim: "roles",
      scopes: "openid",
    },
    sessionKeyFile: keyFile,
    sessionTtlSeconds: 3600,
    traceUrlTemplate: null,
  };
}

interface Served {
  url: string;
  events: Array<{ event: string; fields: Record<string, unknown> }>;
  lines: () => Array<Record<string, unknown>>;
  close(): Promise<void>;
}

const servers: Served[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function serve(opts: {
  keyFile: string;
  issuer?: string | null;
  dev?: boolean;
  backend?: ConsoleBackend;
}): Promise<Served> {
  const { log, lines } = captureLogger();
  const events: Served["events"] = [];
  const app = express();
  app.use(
    "/console",
    createConsole({
      backend: opts.backend ?? stubBackend(),
      settings: settings(opts.keyFile, opts.issuer ?? null),
      devUsers:
        opts.dev === true
          ? () => [
              { name: "maria", roles: ["support_manager"] },
              { name: "olga", roles: [ADMIN] },
            ]
          : undefined,
      secureCookies: false,
      log,
      onSecurityEvent: (event, fields) => events.push({ event, fields }),
    }),
  );
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  const served: Served = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    events,
    lines,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  servers.push(served);
  return served;
}

function keyFile(): string {
  const f = join(tempDir(), "session.key");
  writeFileSync(f, randomBytes(48), { mode: 0o600 });
  return f;
}

type FetchResponse = Awaited<ReturnType<typeof fetch>>;

const sessionCookie = (res: FetchResponse): string => {
  const line = res.headers.getSetCookie().find((c) => c.startsWith("tg_console=")) ?? "";
  return line.split(";")[0] ?? "";
};

const get = (base: string, path: string, cookie: string) =>
  fetch(`${base}${path}`, { headers: { cookie }, redirect: "manual" });

describe("a session is only as good as a login this console offers now", () => {
  test("a development login's session (olga, admin) opens nothing on a console without the development login, though it shares the session key", async () => {
    const key = keyFile();
    const dev = await serve({ keyFile: key, dev: true });
    const prod = await serve({ keyFile: key, issuer: "https://id.example.com" });
    const login = await fetch(`${dev.url}/console/login/dev`, {
      method: "POST",
      headers: { origin: dev.url, "content-type": "application/x-www-form-urlencoded" },
      body: "user=olga",
      redirect: "manual",
    });
    expect(login.status).toBe(303);
    const cookie = sessionCookie(login);
    expect(cookie).toMatch(/^tg_console=./);
    // where she logged in, the panel opens
    expect((await get(dev.url, "/console/containment", cookie)).status).toBe(200);
    // where the development login is off, the same cookie is no session at all
    const panel = await get(prod.url, "/console/containment", cookie);
    expect(panel.status).toBe(302);
    expect(panel.headers.get("location")).toMatch(/^\/console\/login/);
    expect((await get(prod.url, "/console/", cookie)).status).toBe(302);
  });

  test("an OpenID Connect session from another issuer (or where OIDC is off) is no session", async () => {
    const key = keyFile();
    const sealer = Sealer.fromFile(key);
    const session = (iss: string) =>
      `tg_console=${sealer.seal("session", {
        sub: "olga",
        roles: [ADMIN],
        csrf: newCsrf(),
        exp: Math.floor(Date.now() / 1000) + 600,
        via: "oidc",
        iss,
      })}`;
    const prod = await serve({ keyFile: key, issuer: "https://id.example.com" });
    // the configured issuer's session opens (with or without a trailing slash)
    expect((await get(prod.url, "/console/", session("https://id.example.com"))).status).toBe(200);
    expect((await get(prod.url, "/console/", session("https://id.example.com/"))).status).toBe(200);
    // another issuer's: no session
    expect((await get(prod.url, "/console/", session("https://old-idp.example.com"))).status).toBe(
      302,
    );
    // a console without OIDC (development login only): no OIDC session
    const dev = await serve({ keyFile: key, dev: true });
    expect((await get(dev.url, "/console/", session("https://id.example.com"))).status).toBe(302);
  });
});

// -- notifications ------------------------------------------------------------------------

const task: ApprovalTask = {
  id: "apr_1",
  evaluationId: "ev1",
  agentId: "support-triage",
  status: "pending",
  idempotencyKey: null,
  createdAt: Date.UTC(2031, 0, 1),
  expiresAt: Date.UTC(2031, 0, 1, 1),
  decidedAt: null,
  decidedBy: null,
  decidedByRoles: null,
  comment: null,
  approvedUntil: null,
  usedAt: null,
  usedByDecisionId: null,
  revokedAt: null,
  revokedBy: null,
  justification: null,
};

function evaluation(over: Partial<EvaluationRecord> = {}): EvaluationRecord {
  return {
    evaluationId: "ev1",
    decisionId: "d1",
    bindingHash: "h",
    bindingContextMembers: ["job"],
    redactedRequest: {
      subject: { type: "user", id: "alice" },
      action: {
        name: "refunds.issue",
        properties: { arguments: { amount: 120, currency: "EUR" } },
      },
      resource: { type: "customer", id: "cust_1" },
    },
    requirement: {
      approver_roles: ["support_manager"],
      single_use: true,
      ttl_seconds: 900,
      exclude: [],
    },
    reasons: [{ code: "refund_above_50", message: "argument 'amount' > 50 needs an approval" }],
    initiator: "alice",
    agentId: "support-triage",
    tool: "refunds.issue",
    toolClass: "execute",
    toolStage: "autonomous",
    policyRevision: "rev-1",
    createdAt: Date.UTC(2031, 0, 1),
    expiresAt: Date.UTC(2031, 0, 1, 0, 15),
    ...over,
  };
}

const slack = (e: EvaluationRecord, t: ApprovalTask = task) =>
  slackMessage(messageFacts(approverView(t, e), "https://c.example"));

/** Every mrkdwn text of a Slack message, with Slack's limit for it. */
function slackTexts(m: Record<string, unknown>): Array<{ text: string; max: number }> {
  const out: Array<{ text: string; max: number }> = [];
  for (const b of m.blocks as Array<Record<string, unknown>>) {
    const text = b.text as { type: string; text: string } | undefined;
    if (text !== undefined) out.push({ text: text.text, max: b.type === "header" ? 150 : 3000 });
    for (const f of (b.fields as Array<{ text: string }> | undefined) ?? [])
      out.push({ text: f.text, max: 2000 });
    for (const el of (b.elements as Array<Record<string, unknown>> | undefined) ?? [])
      if (b.type === "context") out.push({ text: el.text as string, max: 3000 });
  }
  return out;
}

describe("Slack: the agent's text cannot format, mention or link", () => {
  test("the message's top-level text (the push notification) escapes a hostile tool name and requester", () => {
    const m = slack(
      evaluation({
        tool: "<!channel> refunds.issue <https://evil.example/approve|Approve now>",
        initiator: "<!here>",
      }),
    );
    const text = m.text as string;
    expect(text).not.toMatch(/[<>]/);
    expect(text).toContain("&lt;!channel&gt;");
    expect(text).toContain("&lt;!here&gt;");
  });

  test("text that grows when escaped still fits Slack's limits (else Slack refuses the whole message and approvers hear nothing)", () => {
    const m = slack(
      evaluation({
        initiator: "<".repeat(1024),
        redactedRequest: {
          action: {
            name: "refunds.issue",
            properties: { arguments: { amount: 120, currency: "&".repeat(1000) } },
          },
        },
        reasons: [{ code: "x", message: "<".repeat(2000) }],
      }),
      { ...task, justification: "<&>".repeat(666) },
    );
    for (const { text, max } of slackTexts(m)) {
      expect(text.length).toBeLessThanOrEqual(max);
      // never half an entity at a cut
      expect(text).not.toMatch(/&(?!amp;|lt;|gt;)/);
    }
  });

  test("a newline in a one-line fact cannot fake another field", () => {
    const m = slack(
      evaluation({
        tool: "refunds.issue\n*Approved by*\nsecurity team",
        initiator: "alice\n\n*Customer*\nVIP",
      }),
    );
    const fields = (m.blocks as Array<{ fields?: Array<{ text: string }> }>)[1]?.fields ?? [];
    expect(fields.length).toBeGreaterThan(2);
    for (const f of fields) expect(f.text.split("\n")).toHaveLength(2);
  });
});

describe("the containment panel reports what the API reports", () => {
  test("a kill switch set or lifted from the panel but not written to disk: an error line and a security event, as POST /v1/killswitches gives", async () => {
    const notWritten = (by: string, deleted: boolean): KillSwitch => ({
      id: "ks_1",
      scope: { tool: "refunds.issue" },
      reason: "stop",
      created_by: by,
      created_at: new Date().toISOString(),
      expires_at: null,
      ...(deleted ? { deleted_at: new Date().toISOString(), deleted_by: by } : {}),
      persisted: false,
      persist_error: "SQLITE_FULL: database or disk is full",
    });
    const s = await serve({
      keyFile: keyFile(),
      dev: true,
      backend: stubBackend({
        setSwitch: (_i, p) => Promise.resolve(notWritten(p.id, false)),
        liftSwitch: (_id, p) => Promise.resolve(notWritten(p.id, true)),
      }),
    });
    const login = await fetch(`${s.url}/console/login/dev`, {
      method: "POST",
      headers: { origin: s.url, "content-type": "application/x-www-form-urlencoded" },
      body: "user=olga",
      redirect: "manual",
    });
    const cookie = sessionCookie(login);
    const panel = await (await get(s.url, "/console/containment", cookie)).text();
    const csrf = /name="csrf" value="([^"]+)"/.exec(panel)?.[1] ?? "";
    const post = (path: string, form: Record<string, string>) =>
      fetch(`${s.url}${path}`, {
        method: "POST",
        headers: {
          cookie,
          origin: s.url,
          "content-type": "application/x-www-form-urlencoded",
        },
        body: new URLSearchParams({ csrf, ...form }).toString(),
        redirect: "manual",
      });
    expect(
      (await post("/console/containment/switches", { tool: "refunds.issue", reason: "stop" }))
        .status,
    ).toBe(303);
    expect((await post("/console/containment/switches/ks_1/lift", {})).status).toBe(303);
    const reported = s.events.filter((e) => e.event === "killswitch_not_persisted");
    expect(reported.map((e) => e.fields.op)).toEqual(["create", "delete"]);
    expect(reported[0]?.fields.actor).toBe("olga");
    expect(reported[0]?.fields.error).toBe("SQLITE_FULL: database or disk is full");
    const errors = s
      .lines()
      .filter((l) => l.event === "containment.killswitch_not_persisted" && l.level === "error");
    expect(errors).toHaveLength(2);
  });
});

describe("Slack: no automatic parsing of the agent's plain text", () => {
  test("every mrkdwn text is verbatim: a bare @channel, #channel or URL in the agent's words stays text", () => {
    const m = slack(evaluation({ tool: "@channel" }), {
      ...task,
      justification: "@channel @here please approve at https://evil.example/approve #general",
    });
    const mrkdwn: Array<Record<string, unknown>> = [];
    const visit = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(visit);
      else if (v !== null && typeof v === "object") {
        const o = v as Record<string, unknown>;
        if (o.type === "mrkdwn") mrkdwn.push(o);
        Object.values(o).forEach(visit);
      }
    };
    visit(m.blocks);
    expect(mrkdwn.length).toBeGreaterThan(5);
    for (const t of mrkdwn) expect(t.verbatim).toBe(true);
  });
});

describe("a login whose session cannot be kept", () => {
  test("more roles than a cookie holds: no oversized cookie (a browser drops it and keeps the previous person's session), the previous session is ended, the person is told", async () => {
    const many = Array.from({ length: 120 }, (_, i) => `group-${i}-0123456789abcdef0123456789`);
    const { log } = captureLogger();
    const app = express();
    app.use(
      "/console",
      createConsole({
        backend: stubBackend(),
        settings: settings(keyFile(), null),
        devUsers: () => [
          { name: "olga", roles: [ADMIN] },
          { name: "carol", roles: many },
        ],
        secureCookies: false,
        log,
      }),
    );
    const server: Server = await new Promise((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    servers.push({
      url: "",
      events: [],
      lines: () => [],
      close: () => new Promise((resolve) => server.close(() => resolve())),
    });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const devLogin = (user: string, cookie = "") =>
      fetch(`${url}/console/login/dev`, {
        method: "POST",
        headers: {
          origin: url,
          "content-type": "application/x-www-form-urlencoded",
          ...(cookie !== "" ? { cookie } : {}),
        },
        body: `user=${user}`,
        redirect: "manual",
      });
    // olga (admin) used this browser before
    const olga = sessionCookie(await devLogin("olga"));
    const res = await devLogin("carol", olga);
    const set = res.headers.getSetCookie().filter((c) => c.startsWith("tg_console="));
    // every session cookie set fits a browser's 4096-byte limit (name and value) ...
    for (const c of set) expect((c.split(";")[0] ?? "").length).toBeLessThanOrEqual(4096);
    // ... and olga's session is ended: carol never lands in the console as olga
    expect(set.some((c) => /^tg_console=;/.test(c) && /Max-Age=0/.test(c))).toBe(true);
    expect(res.status).toBe(400);
    expect(await res.text()).toMatch(/roles/);
  });
});
