/**
 * Notifications of a new pending access request (docs/notifications.md),
 * against local receivers — real HTTP servers in this test — that check each
 * payload's shape: Slack Block Kit (blocks, the tool, the reason in words,
 * the agent's justification as the agent's, the console link), a Teams
 * Adaptive Card, the signed webhook as CloudEvents 1.0 (required attributes,
 * HMAC signature). Retries with backoff on 500s; a receiver that hangs never
 * delays a decision; `toolgate control` notifies once per new task, not on a
 * resubmission (real PostgreSQL); a fleet-mode sidecar sends nothing.
 */
import { createHmac, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import type { Toolgate } from "../../src/app";
import { bindingHash, DEFAULT_BINDING_CONTEXT_MEMBERS } from "../../src/approvals/binding";
import { ApprovalNotifier } from "../../src/approvals/notify";
import { compileConfig } from "../../src/config";
import { startControlService, type ControlService } from "../../src/control";
import { silentLogger, type Logger } from "../../src/shared/log";
import { until } from "../helpers/bundles";
import { freshDatabase, type FreshDatabase } from "../helpers/postgres";
import { bearer, token } from "../helpers/tokens";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

jest.setTimeout(60_000);

interface Received {
  at: number;
  path: string;
  headers: IncomingMessage["headers"];
  body: string;
  json: Record<string, unknown>;
}

/** A local receiver: records every POST; `answer` decides the status (or hangs). */
class Receiver {
  readonly got: Received[] = [];
  answer: (n: number) => number | "hang" = () => 200;
  private server: Server | undefined;
  private readonly hanging = new Set<ServerResponse>();

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(body) as Record<string, unknown>;
        } catch {
          json = {};
        }
        this.got.push({ at: Date.now(), path: req.url ?? "", headers: req.headers, body, json });
        const a = this.answer(this.got.length);
        if (a === "hang") {
          this.hanging.add(res);
          return;
        }
        res.writeHead(a, { "content-type": "text/plain" }).end(a === 200 ? "ok" : "no");
      });
    });
    await new Promise<void>((r) => this.server?.listen(0, "127.0.0.1", r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook/SECRET-PATH`;
  }

  async until(n: number, ms = 10_000): Promise<void> {
    const end = Date.now() + ms;
    while (this.got.length < n) {
      if (Date.now() > end) throw new Error(`receiver: ${this.got.length} of ${n} after ${ms} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    for (const r of this.hanging) r.destroy();
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}

/** A logger keeping every line (to check that no URL is ever logged). */
function capturingLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const rec =
    (level: string) =>
    (msg: string, fields?: Record<string, unknown>): void => {
      lines.push(JSON.stringify({ level, msg, ...fields }));
    };
  const log = {
    ...silentLogger,
    debug: rec("debug"),
    info: rec("info"),
    warn: rec("warn"),
    error: rec("error"),
  };
  return { log, lines };
}

const SECRET = "webhook-secret-0123456789";
const JWT_LIKE =
  "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTk5OTk5OTk5OX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

describe("a sidecar: Slack, Teams and the CloudEvents webhook on a new pending request", () => {
  const slack = new Receiver();
  const teams = new Receiver();
  const hook = new Receiver();
  let tg: Toolgate;
  let agent: string;
  let control: string;

  beforeAll(async () => {
    const [s, t, h] = await Promise.all([slack.start(), teams.start(), hook.start()]);
    tg = await startTestToolgate({
      TOOLGATE_APPROVALS_NOTIFY_SLACK_WEBHOOK_URL: s,
      TOOLGATE_APPROVALS_NOTIFY_TEAMS_WEBHOOK_URL: t,
      TOOLGATE_APPROVALS_WEBHOOK_URL: h,
      TOOLGATE_APPROVALS_WEBHOOK_SECRET: SECRET,
    });
    agent = tg.agentServer.url;
    control = tg.controlServer?.url ?? "";
  });
  afterAll(async () => {
    await tg.stop();
    await Promise.all([slack.stop(), teams.stop(), hook.stop()]);
  });

  test("each receiver gets its shape, naming the tool and linking under /console/", async () => {
    const req = refRequest({ tool: "refunds.issue", args: { amount: 120 } });
    const d = await postJson(agent, "/v1/decisions", req);
    const access = (d.json as { access_request: { evaluation_id: string } }).access_request;
    const justification = `The customer was charged twice (ticket 4711).\nMy token: ${JWT_LIKE}`;
    const t0 = Date.now();
    const res = await postJson(agent, "/access/v1/requests", {
      ...req,
      denial: { evaluation_id: access.evaluation_id },
      justification,
    });
    expect(res.status).toBe(201);
    expect(Date.now() - t0).toBeLessThan(2000);
    const id = (res.json as { task: { id: string } }).task.id;
    await Promise.all([slack.until(1), teams.until(1), hook.until(1)]);
    const link = `${control}/console/requests/${id}`;

    // Slack: Block Kit
    const sm = slack.got[0];
    expect(sm?.headers["content-type"]).toMatch(/^application\/json/);
    const blocks = sm?.json.blocks as Array<Record<string, unknown>>;
    expect(Array.isArray(blocks)).toBe(true);
    const text = JSON.stringify(blocks);
    expect(blocks[0]).toMatchObject({
      type: "header",
      text: { type: "plain_text", text: "Approval needed: refunds.issue" },
    });
    expect(text).toContain("refunds.issue");
    expect(text).toContain("amount: 120");
    expect(text).toContain("alice");
    expect(text).toContain("needs an approval"); // the reason in words, not the code
    expect(text).toContain("The agent's justification");
    expect(text).toContain(">The customer was charged twice (ticket 4711).");
    expect(text).not.toContain(JWT_LIKE); // redacted before it was stored
    const actions = blocks.find((b) => b.type === "actions") as {
      elements: Array<{ type: string; url: string }>;
    };
    expect(actions.elements[0]).toMatchObject({ type: "button", url: link });
    expect(typeof sm?.json.text).toBe("string");

    // Teams: an Adaptive Card in the incoming-webhook envelope
    const tm = teams.got[0]?.json as {
      type: string;
      attachments: Array<{ contentType: string; content: Record<string, unknown> }>;
    };
    expect(tm.type).toBe("message");
    expect(tm.attachments).toHaveLength(1);
    expect(tm.attachments[0]?.contentType).toBe("application/vnd.microsoft.card.adaptive");
    const card = tm.attachments[0]?.content as {
      type: string;
      version: string;
      body: Array<Record<string, unknown>>;
      actions: Array<{ type: string; url: string }>;
    };
    expect(card.type).toBe("AdaptiveCard");
    expect(card.version).toMatch(/^1\.\d$/);
    expect(Array.isArray(card.body) && card.body.length > 0).toBe(true);
    expect(card.body.every((b) => typeof b.type === "string")).toBe(true);
    expect(card.actions[0]).toEqual({
      type: "Action.OpenUrl",
      title: "Open in the console",
      url: link,
    });
    expect(JSON.stringify(card)).toContain("refunds.issue");
    expect(JSON.stringify(card)).not.toContain(JWT_LIKE);

    // the signed webhook: CloudEvents 1.0 structured mode, HMAC over the body
    const hm = hook.got[0];
    expect(hm?.headers["content-type"]).toMatch(/^application\/cloudevents\+json/);
    const expected = `sha256=${createHmac("sha256", SECRET)
      .update(hm?.body ?? "")
      .digest("hex")}`;
    expect(hm?.headers["x-toolgate-signature"]).toBe(expected);
    const ce = hm?.json as Record<string, unknown>;
    expect(ce).toMatchObject({
      specversion: "1.0",
      type: "dev.toolgate.approval.requested",
      source: "/toolgate",
      subject: id,
      datacontenttype: "application/json",
    });
    expect(typeof ce.id).toBe("string");
    expect(Number.isNaN(Date.parse(ce.time as string))).toBe(false);
    const data = ce.data as { event: string; approval: Record<string, unknown> };
    expect(data.event).toBe("approval.pending");
    expect(data.approval).toMatchObject({
      id,
      tool: "refunds.issue",
      status: "pending",
      console_url: link,
      tool_class: "execute",
      tool_stage: "autonomous",
      stats: { requested_today: 1, approved_today: 0 },
    });
    expect(data.approval.agent_justification).toContain(
      "The customer was charged twice (ticket 4711).\nMy token: ",
    );
    expect(data.approval.agent_justification).not.toContain(JWT_LIKE);

    // a resubmission notifies nobody again
    const again = await postJson(agent, "/access/v1/requests", {
      ...req,
      denial: { evaluation_id: access.evaluation_id },
    });
    expect(again.status).toBe(200);

    // the link opens the page; deciding there needs a login — and approvers see the same view
    const list = await fetch(`${control}/v1/approvals?status=pending`, {
      headers: bearer(await token("maria", { roles: ["support_manager"] })),
    });
    const views = (await list.json()) as { approvals?: Array<Record<string, unknown>> };
    const mine = (views.approvals ?? (views as unknown as Array<Record<string, unknown>>)).find(
      (v) => v.id === id,
    );
    expect(mine).toMatchObject({ agent_justification: data.approval.agent_justification });
    await new Promise((r) => setTimeout(r, 200));
    expect(slack.got).toHaveLength(1);
    expect(teams.got).toHaveLength(1);
    expect(hook.got).toHaveLength(1);
  });

  test("a justification with control characters or over 2000 characters is refused (400)", async () => {
    const req = refRequest({ tool: "refunds.issue", args: { amount: 130 } });
    const d = await postJson(agent, "/v1/decisions", req);
    const evaluationId = (d.json as { access_request: { evaluation_id: string } }).access_request
      .evaluation_id;
    for (const justification of ["bell\u0007", "\u001b[31mred", "x".repeat(2001), 42]) {
      const res = await postJson(agent, "/access/v1/requests", {
        ...req,
        denial: { evaluation_id: evaluationId },
        justification,
      });
      expect(res.status).toBe(400);
    }
  });
});

describe("delivery", () => {
  const view = (id: string) => ({
    id,
    tool: "refunds.issue",
    initiator: "alice",
    agent: "support-triage",
    reasons: [{ code: "approval_required", message: "refunds over 50 need a manager" }],
    request: { action: { name: "refunds.issue", properties: { arguments: { amount: 120 } } } },
    agent_justification: null,
  });

  test("a 500 is retried with growing delays until it is accepted; failures log no URL", async () => {
    const r = new Receiver();
    const url = await r.start();
    r.answer = (n) => (n <= 3 ? 500 : 200);
    const { log, lines } = capturingLogger();
    const n = new ApprovalNotifier({
      slackWebhookUrl: url,
      log,
      baseDelayMs: 50,
      consoleBase: "https://c.example",
    });
    n.notify(view("apr_1"));
    await r.until(4);
    const gaps = r.got.slice(1).map((g, i) => g.at - (r.got[i]?.at ?? 0));
    expect(gaps[0]).toBeGreaterThanOrEqual(35); // 50 ms ± 20 %
    expect(gaps[1]).toBeGreaterThanOrEqual(75); // 100 ms ± 20 %
    expect(gaps[2]).toBeGreaterThanOrEqual(155); // 200 ms ± 20 %
    expect(r.got.every((g) => g.body === r.got[0]?.body)).toBe(true);
    expect(lines.filter((l) => l.includes("approvals.notify_retry"))).toHaveLength(3);
    expect(lines.join("\n")).not.toContain("SECRET-PATH");
    expect(lines.join("\n")).not.toContain("127.0.0.1");
    await n.stop();
    await r.stop();
  });

  test("gives up after the attempts, and a 4xx is not retried", async () => {
    const r = new Receiver();
    const url = await r.start();
    r.answer = () => 500;
    const { log, lines } = capturingLogger();
    const n = new ApprovalNotifier({ teamsWebhookUrl: url, log, baseDelayMs: 10, attempts: 3 });
    n.notify(view("apr_2"));
    await r.until(3);
    await new Promise((res) => setTimeout(res, 200));
    expect(r.got).toHaveLength(3);
    expect(lines.filter((l) => l.includes('"approvals.notify_failed"'))).toHaveLength(1);
    r.answer = () => 404;
    n.notify(view("apr_3"));
    await r.until(4);
    await new Promise((res) => setTimeout(res, 100));
    expect(r.got).toHaveLength(4);
    expect(lines.join("\n")).not.toContain("SECRET-PATH");
    await n.stop();
    await r.stop();
  });

  test("the queue is bounded: past it notifications are dropped, never buffered without end", async () => {
    const r = new Receiver();
    const url = await r.start();
    r.answer = () => "hang";
    const { log } = capturingLogger();
    const n = new ApprovalNotifier({
      slackWebhookUrl: url,
      log,
      maxQueue: 5,
      concurrency: 1,
      timeoutMs: 30_000,
    });
    for (let i = 0; i < 20; i++) n.notify(view(`apr_q${i}`));
    expect(n.backlog).toBe(6); // one in flight, five queued
    expect(n.dropped).toBe(14);
    await n.stop();
    await r.stop();
  });

  test("a receiver that hangs does not delay the request nor the decision", async () => {
    const r = new Receiver();
    const url = await r.start();
    r.answer = () => "hang";
    const tg = await startTestToolgate({ TOOLGATE_APPROVALS_NOTIFY_SLACK_WEBHOOK_URL: url });
    try {
      const agent = tg.agentServer.url;
      const control = tg.controlServer?.url ?? "";
      const ids: string[] = [];
      const t0 = Date.now();
      for (let i = 0; i < 5; i++) {
        const req = refRequest({ tool: "refunds.issue", args: { amount: 100 + i } });
        const d = await postJson(agent, "/v1/decisions", req);
        const evaluationId = (d.json as { access_request: { evaluation_id: string } })
          .access_request.evaluation_id;
        const res = await postJson(agent, "/access/v1/requests", {
          ...req,
          denial: { evaluation_id: evaluationId },
        });
        expect(res.status).toBe(201);
        ids.push((res.json as { task: { id: string } }).task.id);
      }
      const maria = bearer(await token("maria", { roles: ["support_manager"] }));
      const ok = await postJson(
        control,
        `/v1/approvals/${ids[0]}/approve`,
        { comment: "ok" },
        maria,
      );
      expect(ok.status).toBe(200);
      expect(Date.now() - t0).toBeLessThan(3000);
      await r.until(4); // the receiver holds them; nothing waited on it
    } finally {
      await tg.stop();
      await r.stop();
    }
  });
});

describe("toolgate control: notifies once per new task, not on a resubmission", () => {
  let db: FreshDatabase;
  let svc: ControlService;
  const slack = new Receiver();

  beforeAll(async () => {
    db = await freshDatabase();
    const url = await slack.start();
    const config = compileConfig(
      {},
      {
        TOOLGATE_CONTROL_PORT: "0",
        TOOLGATE_LOG_LEVEL: "silent",
        TOOLGATE_STATE_DIR: mkdtempSync(join(tmpdir(), "toolgate-control-")),
        TOOLGATE_AUDIT_HMAC_KEY: "test-key-0123456789abcdef",
        TOOLGATE_POSTGRES_URL: db.url,
        TOOLGATE_APPROVALS_NOTIFY_SLACK_WEBHOOK_URL: url,
        TOOLGATE_CONSOLE_PUBLIC_URL: "https://approvals.example.com",
      },
    );
    svc = await startControlService(config, {
      log: silentLogger,
      env: { OTEL_SDK_DISABLED: "true" },
      replica: "r1",
    });
  });
  afterAll(async () => {
    await svc?.stop();
    await slack.stop();
    await db?.drop();
  });

  test("a sidecar's submission notifies once; the same again does not; the link uses console.public_url", async () => {
    const request = {
      subject: { type: "user", id: "alice" },
      action: { name: "refund.create", properties: { arguments: { amount: 120 } } },
      resource: { type: "order", id: "o-1" },
      context: { job: { id: "job-1" } },
    };
    const now = Date.now();
    const evaluation = {
      evaluation_id: randomUUID(),
      decision_id: randomUUID(),
      agent_id: "support-triage",
      binding_hash: bindingHash(request, DEFAULT_BINDING_CONTEXT_MEMBERS),
      binding_context_members: [...DEFAULT_BINDING_CONTEXT_MEMBERS],
      redacted_request: request,
      requirement: {
        approver_roles: ["support_manager"],
        single_use: true,
        ttl_seconds: 600,
        exclude: [],
      },
      reasons: [{ code: "refund_needs_approval", message: "refunds over 50 need a manager" }],
      initiator: "alice",
      tool: "refund.create",
      policy_revision: "rev-1",
      created_at: new Date(now).toISOString(),
      expires_at: new Date(now + 300_000).toISOString(),
    };
    const body = {
      evaluation,
      request: { ...request, denial: { evaluation_id: evaluation.evaluation_id } },
      idempotency_key: null,
      requester: "alice",
      justification: "a double charge, see the ticket",
    };
    const bot = await token("agent:support-triage", {
      audience: "toolgate-fleet",
      claims: { toolgate_agent: "support-triage" },
    });
    const post = () =>
      fetch(`${svc.url}/fleet/v1/access-requests`, {
        method: "POST",
        headers: { authorization: `Bearer ${bot}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const first = await post();
    expect(first.status).toBe(201);
    const id = ((await first.json()) as { task: { id: string } }).task.id;
    const second = await post();
    expect(second.status).toBe(200);
    await slack.until(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(slack.got).toHaveLength(1);
    const text = JSON.stringify(slack.got[0]?.json.blocks);
    expect(text).toContain("refund.create");
    expect(text).toContain("refunds over 50 need a manager");
    expect(text).toContain(">a double charge, see the ticket");
    expect(text).toContain(`https://approvals.example.com/console/requests/${id}`);
  });

  test("a fleet-mode sidecar forwards the justification redacted and notifies nobody; the control service does, once", async () => {
    const sidecarSlack = new Receiver();
    const url = await sidecarSlack.start();
    const tg = await startTestToolgate({
      TOOLGATE_FLEET_URL: svc.url,
      TOOLGATE_APPROVALS_NOTIFY_SLACK_WEBHOOK_URL: url,
    });
    try {
      await until(() => tg.fleet?.client.status().state === "OK");
      expect(tg.notifier).toBeUndefined();
      const before = slack.got.length;
      const req = refRequest({ tool: "refunds.issue", args: { amount: 120 } });
      const d = await postJson(tg.agentServer.url, "/v1/decisions", req);
      const evaluationId = (d.json as { access_request: { evaluation_id: string } }).access_request
        .evaluation_id;
      const body = {
        ...req,
        denial: { evaluation_id: evaluationId },
        justification: `Charged twice.\nbearer ${JWT_LIKE}`,
      };
      const res = await postJson(tg.agentServer.url, "/access/v1/requests", body);
      expect(res.status).toBe(201);
      const id = (res.json as { task: { id: string } }).task.id;
      expect((await postJson(tg.agentServer.url, "/access/v1/requests", body)).status).toBe(200);
      await slack.until(before + 1);
      await new Promise((r) => setTimeout(r, 300));
      expect(slack.got).toHaveLength(before + 1);
      expect(sidecarSlack.got).toHaveLength(0);
      const text = JSON.stringify(slack.got[before]?.json.blocks);
      expect(text).toContain(">Charged twice.");
      expect(text).not.toContain(JWT_LIKE);
      expect(text).toContain(`https://approvals.example.com/console/requests/${id}`);
      // the approvers' view on the control service
      const list = await fetch(`${svc.url}/v1/approvals?status=pending`, {
        headers: bearer(await token("maria", { roles: ["support_manager"] })),
      });
      expect(list.status).toBe(200);
      const views = ((await list.json()) as { approvals: Array<Record<string, unknown>> })
        .approvals;
      const v = views.find((x) => x.id === id);
      expect(v?.agent_justification).toMatch(/^Charged twice\.\nbearer /);
      expect(v?.agent_justification).not.toContain(JWT_LIKE);
      expect(v?.reasons).toEqual([
        {
          code: "approval_required",
          message: "argument 'amount' > 50 needs an approval (rule 'refund_above_50')",
        },
      ]);
      expect(v?.stats).toEqual({ requested_today: 1, approved_today: 0 });
      expect(v).toMatchObject({ tool_class: "execute", tool_stage: "autonomous" });
    } finally {
      await tg.stop();
      await sidecarSlack.stop();
    }
  });
});
