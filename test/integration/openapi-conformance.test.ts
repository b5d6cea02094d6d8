/**
 * The OpenAPI documents describe what the servers really answer. A real
 * sidecar (identity mode jwt, so the token paths are real too) with its
 * control port, and a real `toolgate control` replica over the run's
 * PostgreSQL, are driven through every documented operation — allow, deny
 * and needs_approval, batches, Action Search with paging, access requests
 * from submit to approval to re-evaluation, cancel, action reports and
 * their refusals, the OPA Data API, approvals, kill switches, budgets and
 * sidecars — and every response's status and body is checked against
 * docs/openapi.yaml or docs/openapi-control.yaml (test/helpers/openapi.ts):
 * the status must be documented, the body must match its schema, and an
 * error's code must be one the operation lists. The last test checks that
 * every documented operation was seen succeeding.
 */
import { mkdtempSync } from "node:fs";
import { createServer, request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { compileConfig } from "../../src/config";
import { startControlService, type ControlService } from "../../src/control";
import { silentLogger } from "../../src/shared/log";
import {
  DOC_FILES,
  expectResponseMatches,
  openapiDoc,
  templateOf,
  type DocFile,
} from "../helpers/openapi";
import { until } from "../helpers/bundles";
import { freshDatabase, type FreshDatabase } from "../helpers/postgres";
import { bearer, token } from "../helpers/tokens";
import { http, refRequest, startTestToolgate, type HttpResult } from "../helpers/toolgate";

jest.setTimeout(60_000);

const HMAC = "test-key-0123456789abcdef";
const METHODS = ["get", "put", "post", "delete", "patch"];

/** `METHOD /template` → the statuses seen, per document. */
const seen: Record<DocFile, Map<string, Set<number>>> = {
  "openapi.yaml": new Map(),
  "openapi-control.yaml": new Map(),
  "openapi-fleet.yaml": new Map(),
};

interface Call {
  body?: unknown;
  /** Sent as is (a wrong Content-Type, malformed JSON). */
  raw?: string;
  headers?: Record<string, string>;
}

/**
 * One real call, checked against `file`'s operation `method template`: the
 * status is `want`, and the document describes that status and this body.
 */
async function call(
  file: DocFile,
  base: string,
  method: string,
  template: string,
  path: string,
  want: number,
  c: Call = {},
): Promise<HttpResult> {
  const headers: Record<string, string> = { ...c.headers };
  let payload: string | undefined = c.raw;
  if (c.body !== undefined) {
    payload = JSON.stringify(c.body);
    headers["content-type"] ??= "application/json";
  }
  const res = await http(base, method, path, payload, headers);
  expect({ call: `${method} ${path}`, status: res.status }).toEqual({
    call: `${method} ${path}`,
    status: want,
  });
  expectResponseMatches(openapiDoc(file), method, template, res.status, res.json ?? res.text);
  const key = `${method.toUpperCase()} ${template}`;
  const statuses = seen[file].get(key) ?? new Set<number>();
  statuses.add(res.status);
  seen[file].set(key, statuses);
  return res;
}

interface Exchange {
  method: string;
  path: string;
  status: number;
  body: unknown;
}

/**
 * A pass-through HTTP proxy in front of `target` that keeps every exchange
 * (the event stream passed through as it flows, its body not kept): what a
 * fleet sidecar really sends `toolgate control`, and what it gets back.
 */
async function recordingProxy(
  target: string,
): Promise<{ url: string; exchanges: Exchange[]; close(): Promise<void> }> {
  const exchanges: Exchange[] = [];
  const t = new URL(target);
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const up = httpRequest(
        {
          host: t.hostname,
          port: t.port,
          method: req.method,
          path: req.url,
          headers: { ...req.headers, host: t.host },
        },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          const record = (body: unknown) =>
            exchanges.push({
              method: req.method ?? "",
              path: req.url ?? "",
              status: r.statusCode ?? 0,
              body,
            });
          if (String(r.headers["content-type"]).startsWith("text/event-stream")) {
            record("");
            r.pipe(res);
            return;
          }
          const out: Buffer[] = [];
          r.on("data", (c: Buffer) => out.push(c));
          r.on("end", () => {
            const text = Buffer.concat(out).toString("utf8");
            record(text === "" ? "" : (JSON.parse(text) as unknown));
            res.end(text);
          });
        },
      );
      up.on("error", () => res.destroy());
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    exchanges,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface Decision {
  decision_id: string;
  outcome: string;
  access_request?: { evaluation_id: string };
}
interface TaskView {
  task: { id: string; status: string; status_endpoint: string };
  result?: { approval: Record<string, unknown> };
}

const refund = (amount: number, user = "alice") =>
  refRequest({ user, tool: "refunds.issue", args: { amount } });
const withApproval = (req: Record<string, unknown>, approval: unknown) => ({
  ...req,
  context: { ...(req.context as object), approval },
});

describe("a sidecar answers as docs/openapi.yaml and docs/openapi-control.yaml say", () => {
  let tg: Toolgate;
  let agent: string;
  let control: string;
  let alice: Record<string, string>;
  let sam: Record<string, string>;
  let maria: Record<string, string>;
  let olga: Record<string, string>;
  const A = "openapi.yaml" as const;
  const C = "openapi-control.yaml" as const;

  beforeAll(async () => {
    tg = await startTestToolgate({
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_IDENTITY_MODE: "jwt",
      TOOLGATE_APPROVAL_REQUEST_LIMIT_MAX: "4",
    });
    agent = tg.agentServer.url;
    control = tg.controlServer?.url ?? "";
    alice = bearer(await token("alice"));
    sam = bearer(await token("sam"));
    maria = bearer(await token("maria", { roles: ["support_manager"] }));
    olga = bearer(await token("olga", { roles: ["admin"] }));
  });
  afterAll(async () => {
    await tg.stop();
  });

  /** POST /v1/decisions as alice (or `who`), checked; the decision. */
  const decide = async (req: Record<string, unknown>, who = alice): Promise<Decision> =>
    (
      await call(A, agent, "POST", "/v1/decisions", "/v1/decisions", 200, {
        body: req,
        headers: who,
      })
    ).json as Decision;

  test("health, status, metadata", async () => {
    await call(A, agent, "GET", "/health/live", "/health/live", 200);
    await call(A, agent, "GET", "/health/ready", "/health/ready", 200);
    await call(A, agent, "GET", "/v1/status", "/v1/status", 200);
    const meta = await call(
      A,
      agent,
      "GET",
      "/.well-known/authzen-configuration",
      "/.well-known/authzen-configuration",
      200,
    );
    expect(meta.json).toMatchObject({
      search_action_endpoint: `${agent}/access/v1/search/action`,
      access_request_endpoint: `${agent}/access/v1/requests`,
    });
  });

  test("decisions: allow, deny, needs_approval, and the errors", async () => {
    const p = "/v1/decisions";
    expect((await decide(refRequest({ tool: "accounts.summary.read" }))).outcome).toBe("allow");
    expect((await decide(refRequest({ tool: "billing.update" }))).outcome).toBe("deny");
    expect((await decide(refund(120))).outcome).toBe("needs_approval");
    const bad = await call(A, agent, "POST", p, p, 400, { body: { subject: 1 }, headers: alice });
    expect((bad.json as { code: string }).code).toBe("invalid_request");
    await call(A, agent, "POST", p, p, 400, {
      raw: "{}",
      headers: { ...alice, "content-type": "text/plain" },
    });
    await call(A, agent, "POST", p, p, 400, {
      raw: '{"subject":',
      headers: { ...alice, "content-type": "application/json" },
    });
    await call(A, agent, "POST", p, p, 401, { body: refRequest({ tool: "tickets.read" }) });
    const other = await call(A, agent, "POST", p, p, 403, {
      body: refRequest({ user: "sam", tool: "tickets.read" }),
      headers: alice,
    });
    expect((other.json as { code: string }).code).toBe("subject_mismatch");
    await call(A, agent, "POST", p, p, 413, {
      raw: JSON.stringify({ ...refRequest({ tool: "tickets.read" }), pad: "x".repeat(2_000_000) }),
      headers: { ...alice, "content-type": "application/json" },
    });
  });

  test("AuthZEN evaluation and evaluations", async () => {
    const e = "/access/v1/evaluation";
    for (const req of [
      refRequest({ tool: "accounts.summary.read" }),
      refRequest({ tool: "billing.update" }),
      refund(130),
    ])
      await call(A, agent, "POST", e, e, 200, { body: req, headers: alice });
    await call(A, agent, "POST", e, e, 400, { body: { action: {} }, headers: alice });
    await call(A, agent, "POST", e, e, 401, { body: refRequest({ tool: "tickets.read" }) });

    const b = "/access/v1/evaluations";
    const top = refRequest({ tool: "tickets.read" });
    const batch = await call(A, agent, "POST", b, b, 200, {
      body: {
        ...top,
        evaluations: [
          {},
          { action: { name: "billing.update" } },
          { action: { name: "refunds.issue", properties: { arguments: { amount: 140 } } } },
          { subject: "not an entity" },
        ],
      },
      headers: alice,
    });
    const items = (batch.json as { evaluations: Array<{ decision: boolean; context?: object }> })
      .evaluations;
    expect(items.map((i) => i.decision)).toEqual([true, false, false, false]);
    expect(items[3]?.context).toHaveProperty("error");
    await call(A, agent, "POST", b, b, 200, { body: top, headers: alice }); // no list: one decision
    await call(A, agent, "POST", b, b, 400, {
      body: { ...top, options: { evaluations_semantic: "sometimes" } },
      headers: alice,
    });
  });

  test("Action Search, paged", async () => {
    const s = "/access/v1/search/action";
    const q = refRequest({ tool: "x" });
    delete q.action;
    const all = await call(A, agent, "POST", s, s, 200, { body: q, headers: alice });
    const names = (all.json as { results: Array<{ name: string }> }).results.map((r) => r.name);
    expect(names).toContain("tickets.read");
    expect(names).not.toContain("billing.update");
    const first = await call(A, agent, "POST", s, s, 200, {
      body: { ...q, page: { limit: 2 } },
      headers: alice,
    });
    const token1 = (first.json as { page: { next_token: string } }).page.next_token;
    expect(token1).not.toBe("");
    await call(A, agent, "POST", s, s, 200, {
      body: { ...q, page: { limit: 2, token: token1 } },
      headers: alice,
    });
    const foreign = await call(A, agent, "POST", s, s, 400, {
      body: {
        ...q,
        resource: { type: "customer", id: "cust_2" },
        page: { limit: 2, token: token1 },
      },
      headers: alice,
    });
    expect((foreign.json as { code: string }).code).toBe("invalid_request");
    await call(A, agent, "POST", s, s, 401, { body: q });
  });

  test("OPA Data API", async () => {
    const input = refRequest({ tool: "accounts.summary.read" });
    await call(A, agent, "POST", "/v1/data/{path}", "/v1/data/toolgate/decision", 200, {
      body: { input },
      headers: alice,
    });
    await call(A, agent, "POST", "/v1/data/{path}", "/v1/data/toolgate/allow", 200, {
      body: { input },
      headers: alice,
    });
    await call(A, agent, "POST", "/v1/data", "/v1/data", 200, { body: { input }, headers: alice });
    await call(A, agent, "POST", "/v1/data/{path}", "/v1/data/toolgate/decision", 400, {
      body: { input: { subject: 1 } },
      headers: alice,
    });
    await call(A, agent, "POST", "/v1/data/{path}", "/v1/data/toolgate/decision", 401, {
      body: { input },
    });
  });

  test("action reports: recorded, flagged, refused", async () => {
    const a = "/v1/actions";
    const allowed = await decide(refRequest({ tool: "tickets.read" }));
    const ok = await call(A, agent, "POST", a, a, 200, {
      body: { decision_id: allowed.decision_id, tool: "tickets.read", status: "ok" },
      headers: alice,
    });
    expect(ok.json).toMatchObject({ recorded: true, anomalies: [] });
    const again = await call(A, agent, "POST", a, a, 409, {
      body: { decision_id: allowed.decision_id, status: "ok" },
      headers: alice,
    });
    expect((again.json as { code: string }).code).toBe("action_already_reported");
    // a read tool that changed something: recorded, and flagged
    const read = await decide(refRequest({ tool: "accounts.summary.read" }));
    const flagged = await call(A, agent, "POST", a, a, 200, {
      body: {
        decision_id: read.decision_id,
        status: "error",
        error: { type: "timeout", message: "slow" },
        changed: [
          {
            resource: { type: "customer", id: "cust_1" },
            fields: [{ path: "name", before: "a", after: "b" }],
          },
        ],
      },
      headers: alice,
    });
    expect((flagged.json as { anomalies: Array<{ kind: string }> }).anomalies[0]?.kind).toBe(
      "read_tool_changed",
    );
    const denied = await decide(refRequest({ tool: "billing.update" }));
    await call(A, agent, "POST", a, a, 409, {
      body: { decision_id: denied.decision_id, status: "ok" },
      headers: alice,
    });
    const other = await decide(refRequest({ tool: "tickets.read" }));
    await call(A, agent, "POST", a, a, 409, {
      body: { decision_id: other.decision_id, tool: "replies.send", status: "ok" },
      headers: alice,
    });
    await call(A, agent, "POST", a, a, 409, {
      body: { decision_id: "no-such-decision", status: "ok" },
      headers: alice,
    });
    await call(A, agent, "POST", a, a, 400, { body: { status: "ok" }, headers: alice });
    await call(A, agent, "POST", a, a, 401, { body: { decision_id: "x", status: "ok" } });
  });

  test("access requests and approvals, from both sides", async () => {
    const r = "/access/v1/requests";
    const one = "/access/v1/requests/{id}";
    const submit = async (req: Record<string, unknown>, want: number) => {
      const d = await decide(req);
      return call(A, agent, "POST", r, r, want, {
        body: {
          ...req,
          denial: { evaluation_id: d.access_request?.evaluation_id },
          justification: "the customer asked",
        },
        headers: alice,
      });
    };

    // submit, resubmit with the same key, read
    const req = refund(120);
    const d1 = await decide(req);
    const asked = { ...req, denial: { evaluation_id: d1.access_request?.evaluation_id } };
    const created = await call(A, agent, "POST", r, r, 201, {
      body: asked,
      headers: { ...alice, "idempotency-key": "k-1" },
    });
    const task = (created.json as TaskView).task;
    const d2 = await decide(req);
    await call(A, agent, "POST", r, r, 409, {
      body: { ...req, denial: { evaluation_id: d2.access_request?.evaluation_id } },
      headers: { ...alice, "idempotency-key": "k-1" },
    });
    await call(A, agent, "GET", one, `${r}/${task.id}`, 200, { headers: alice });
    await call(A, agent, "GET", one, `${r}/${task.id}`, 404, { headers: sam }); // not hers
    await call(A, agent, "GET", one, `${r}/${task.id}`, 401);
    await call(A, agent, "GET", one, `${r}/apr_nothing_here`, 404, { headers: alice });
    // the evaluation cited for another request
    const d3 = await decide(refund(121));
    await call(A, agent, "POST", r, r, 400, {
      body: { ...refund(999), denial: { evaluation_id: d3.access_request?.evaluation_id } },
      headers: alice,
    });
    await call(A, agent, "POST", r, r, 404, {
      body: { ...req, denial: { evaluation_id: "ev_nothing" } },
      headers: alice,
    });

    // the approver side: list, detail, errors
    const list = "/v1/approvals";
    const listed = await call(C, control, "GET", list, `${list}?status=pending&limit=10`, 200, {
      headers: maria,
    });
    expect(
      (listed.json as { approvals: Array<{ id: string }> }).approvals.map((x) => x.id),
    ).toContain(task.id);
    await call(C, control, "GET", list, list, 200, { headers: olga });
    await call(C, control, "GET", list, `${list}?status=maybe`, 400, { headers: maria });
    await call(C, control, "GET", list, list, 401);
    await call(C, control, "GET", "/v1/approvals/{id}", `${list}/${task.id}`, 200, {
      headers: maria,
    });
    await call(C, control, "GET", "/v1/approvals/{id}", `${list}/apr_nothing_here`, 404, {
      headers: maria,
    });
    // alice may not approve her own; maria may
    await call(
      C,
      control,
      "POST",
      "/v1/approvals/{id}/approve",
      `${list}/${task.id}/approve`,
      403,
      {
        headers: alice,
      },
    );
    await call(
      C,
      control,
      "POST",
      "/v1/approvals/{id}/approve",
      `${list}/${task.id}/approve`,
      200,
      {
        body: { comment: "fine" },
        headers: maria,
      },
    );
    await call(
      C,
      control,
      "POST",
      "/v1/approvals/{id}/approve",
      `${list}/${task.id}/approve`,
      409,
      {
        headers: maria,
      },
    );
    await call(
      C,
      control,
      "POST",
      "/v1/approvals/{id}/approve",
      `${list}/${task.id}/approve`,
      400,
      {
        raw: "{",
        headers: { ...maria, "content-type": "application/json" },
      },
    );

    // approved: the agent reads the approval and re-asks with it
    const approved = await call(A, agent, "GET", one, `${r}/${task.id}`, 200, { headers: alice });
    const approval = (approved.json as TaskView).result?.approval;
    expect(approval).toBeDefined();
    expect((await decide(withApproval(req, approval))).outcome).toBe("allow");
    // the same evaluation again: the approved request back (200)
    const same = await call(A, agent, "POST", r, r, 200, { body: asked, headers: alice });
    expect((same.json as TaskView).task.id).toBe(task.id);

    // revoke: admin only
    await call(C, control, "POST", "/v1/approvals/{id}/revoke", `${list}/${task.id}/revoke`, 403, {
      headers: maria,
    });
    await call(C, control, "POST", "/v1/approvals/{id}/revoke", `${list}/${task.id}/revoke`, 200, {
      headers: olga,
    });
    await call(C, control, "POST", "/v1/approvals/{id}/revoke", `${list}/${task.id}/revoke`, 409, {
      headers: olga,
    });

    // deny, and the closed evaluation
    const toDeny = (await submit(refund(200), 201)).json as TaskView;
    await call(
      C,
      control,
      "POST",
      "/v1/approvals/{id}/deny",
      `${list}/${toDeny.task.id}/deny`,
      200,
      {
        headers: maria,
      },
    );
    await call(
      C,
      control,
      "POST",
      "/v1/approvals/{id}/deny",
      `${list}/${toDeny.task.id}/deny`,
      409,
      {
        headers: maria,
      },
    );

    // cancel
    const toCancel = (await submit(refund(300), 201)).json as TaskView;
    const c = "/access/v1/requests/{id}/cancel";
    await call(A, agent, "POST", c, `${r}/${toCancel.task.id}/cancel`, 404, { headers: sam });
    await call(A, agent, "POST", c, `${r}/${toCancel.task.id}/cancel`, 200, { headers: alice });
    await call(A, agent, "POST", c, `${r}/${toCancel.task.id}/cancel`, 409, { headers: alice });
    await call(A, agent, "POST", c, `${r}/${toCancel.task.id}/cancel`, 401);

    // sam asks until his limit is used up
    let limited: HttpResult | undefined;
    for (let i = 0; i < 8 && limited === undefined; i++) {
      const req = refund(400 + i, "sam");
      const d = await decide(req, sam);
      const res = await http(
        agent,
        "POST",
        r,
        JSON.stringify({ ...req, denial: { evaluation_id: d.access_request?.evaluation_id } }),
        {
          ...sam,
          "content-type": "application/json",
        },
      );
      expectResponseMatches(openapiDoc(A), "POST", r, res.status, res.json);
      if (res.status === 429) limited = res;
      else expect(res.status).toBe(201);
    }
    expect(limited?.headers["retry-after"]).toMatch(/^\d+$/);
    expect(limited?.json).toMatchObject({ code: "access_request_rate_limited" });
  });

  test("plan approvals, from both sides", async () => {
    const p = "/access/v1/plans";
    const one = "/access/v1/plans/{id}";
    const plan = (max: number) => ({
      subject: { type: "user", id: "alice" },
      resource: { type: "customer", id: "cust_1" },
      context: { job: { id: "job_1", purpose: "support_triage", customer_id: "cust_1" } },
      plan: {
        calls: [{ tool: "refunds.issue", arguments: { amount: { min: 51, max } }, max_uses: 2 }],
      },
    });
    const made = (await call(A, agent, "POST", p, p, 201, { body: plan(200), headers: alice }))
      .json as { task: { id: string } };
    const id = made.task.id;
    const again = { body: plan(200), headers: { ...alice, "idempotency-key": "plan-1" } };
    await call(A, agent, "POST", p, p, 201, again);
    await call(A, agent, "POST", p, p, 200, again);
    await call(A, agent, "POST", p, p, 409, { body: plan(9000), headers: alice });
    await call(A, agent, "POST", p, p, 400, { body: { plan: {} }, headers: alice });
    await call(A, agent, "POST", p, p, 401, { body: plan(200) });
    await call(A, agent, "POST", p, p, 403, { body: plan(200), headers: sam });
    await call(A, agent, "GET", one, `${p}/${id}`, 200, { headers: alice });
    await call(A, agent, "GET", one, `${p}/${id}`, 404, { headers: sam });
    await call(A, agent, "GET", one, `${p}/${id}`, 401);
    // in the approvers' queue, approved there
    const listed = await call(C, control, "GET", "/v1/approvals", "/v1/approvals", 200, {
      headers: maria,
    });
    expect(
      (listed.json as { approvals: Array<{ id: string }> }).approvals.map((a) => a.id),
    ).toContain(id);
    await call(C, control, "GET", "/v1/approvals/{id}", `/v1/approvals/${id}`, 200, {
      headers: maria,
    });
    await call(
      C,
      control,
      "POST",
      "/v1/approvals/{id}/approve",
      `/v1/approvals/${id}/approve`,
      200,
      { body: { comment: "ok" }, headers: maria },
    );
    await call(A, agent, "GET", one, `${p}/${id}`, 200, { headers: alice });
    const used = await decide({
      ...refund(120),
      context: { ...(refund(120).context as object), plan: { id } },
    });
    expect(used.outcome).toBe("allow");
    await call(C, control, "POST", "/v1/approvals/{id}/revoke", `/v1/approvals/${id}/revoke`, 200, {
      headers: olga,
    });
    // cancel
    const toCancel = (await call(A, agent, "POST", p, p, 201, { body: plan(150), headers: alice }))
      .json as { task: { id: string } };
    const c = "/access/v1/plans/{id}/cancel";
    await call(A, agent, "POST", c, `${p}/${toCancel.task.id}/cancel`, 404, { headers: sam });
    await call(A, agent, "POST", c, `${p}/${toCancel.task.id}/cancel`, 200, { headers: alice });
    await call(A, agent, "POST", c, `${p}/${toCancel.task.id}/cancel`, 409, { headers: alice });
    await call(A, agent, "POST", c, `${p}/${toCancel.task.id}/cancel`, 401);
  });

  test("control port: health, status, metrics, grant keys, kill switches", async () => {
    await call(C, control, "GET", "/health/live", "/health/live", 200);
    await call(C, control, "GET", "/health/ready", "/health/ready", 200);
    await call(C, control, "GET", "/v1/status", "/v1/status", 200, { headers: maria });
    await call(C, control, "GET", "/v1/status", "/v1/status", 401, {
      headers: bearer(await token("mallory", { forged: true })),
    });
    const metrics = await http(control, "GET", "/metrics");
    expect([200, 404]).toContain(metrics.status);
    await call(C, control, "GET", "/metrics", "/metrics", metrics.status);
    const jwks = await call(
      C,
      control,
      "GET",
      "/.well-known/jwks.json",
      "/.well-known/jwks.json",
      200,
    );
    expect((JSON.parse(jwks.text) as { keys: unknown[] }).keys.length).toBeGreaterThan(0);

    const k = "/v1/killswitches";
    const created = await call(C, control, "POST", k, k, 201, {
      body: { scope: { tool: "replies.send" }, reason: "an incident" },
      headers: olga,
    });
    const id = (created.json as { id: string }).id;
    await call(C, control, "POST", k, k, 403, { body: { reason: "me too" }, headers: maria });
    await call(C, control, "POST", k, k, 400, { body: { scope: { tool: "" } }, headers: olga });
    await call(C, control, "GET", k, k, 200, { headers: olga });
    // the switch hides the tool from Action Search
    const q = refRequest({ tool: "x" });
    delete q.action;
    const s = await call(
      A,
      agent,
      "POST",
      "/access/v1/search/action",
      "/access/v1/search/action",
      200,
      {
        body: q,
        headers: alice,
      },
    );
    expect(
      (s.json as { results: Array<{ name: string }> }).results.map((x) => x.name),
    ).not.toContain("replies.send");
    await call(C, control, "DELETE", "/v1/killswitches/{id}", `${k}/${id}`, 200, { headers: olga });
    await call(C, control, "DELETE", "/v1/killswitches/{id}", `${k}/${id}`, 404, { headers: olga });
    const history = await call(C, control, "GET", k, `${k}?history=true&limit=5`, 200, {
      headers: olga,
    });
    expect(
      (history.json as { killswitches: Array<{ deleted_at?: string }> }).killswitches[0]
        ?.deleted_at,
    ).toBeDefined();
  });
});

describe("toolgate control answers as docs/openapi-control.yaml says", () => {
  let db: FreshDatabase;
  let svc: ControlService;
  let olga: Record<string, string>;
  let maria: Record<string, string>;
  const C = "openapi-control.yaml" as const;

  beforeAll(async () => {
    db = await freshDatabase();
    const config = compileConfig(
      {},
      {
        TOOLGATE_CONTROL_PORT: "0",
        TOOLGATE_LOG_LEVEL: "silent",
        TOOLGATE_STATE_DIR: mkdtempSync(join(tmpdir(), "toolgate-control-")),
        TOOLGATE_AUDIT_HMAC_KEY: HMAC,
        TOOLGATE_POSTGRES_URL: db.url,
      },
    );
    svc = await startControlService(config, {
      log: silentLogger,
      env: { OTEL_SDK_DISABLED: "true" },
      replica: "replica-a",
    });
    olga = bearer(await token("olga", { roles: ["admin"] }));
    maria = bearer(await token("maria", { roles: ["support_manager"] }));
  });
  afterAll(async () => {
    await svc?.stop();
    await db?.drop();
  });

  test("health, status, metrics, approvals, kill switches, budgets, sidecars", async () => {
    const u = svc.url;
    await call(C, u, "GET", "/health/live", "/health/live", 200);
    await call(C, u, "GET", "/health/ready", "/health/ready", 200);
    const st = await call(C, u, "GET", "/v1/status", "/v1/status", 200, { headers: maria });
    expect(st.json).toMatchObject({ service: "control", replica: "replica-a" });
    await call(C, u, "GET", "/v1/status", "/v1/status", 401);
    await call(C, u, "GET", "/metrics", "/metrics", 200);
    await call(C, u, "GET", "/v1/approvals", "/v1/approvals", 200, { headers: maria });
    await call(C, u, "GET", "/v1/approvals/{id}", "/v1/approvals/apr_nothing_here", 404, {
      headers: maria,
    });
    await call(
      C,
      u,
      "POST",
      "/v1/approvals/{id}/approve",
      "/v1/approvals/apr_nothing_here/approve",
      404,
      {
        headers: maria,
      },
    );

    const k = "/v1/killswitches";
    const created = await call(C, u, "POST", k, k, 201, {
      body: { reason: "fleet-wide stop" },
      headers: olga,
    });
    await call(C, u, "GET", k, k, 200, { headers: olga });
    await call(C, u, "POST", k, k, 403, { body: { reason: "x" }, headers: maria });
    const id = (created.json as { id: string }).id;
    await call(C, u, "DELETE", "/v1/killswitches/{id}", `${k}/${id}`, 200, { headers: olga });
    await call(C, u, "DELETE", "/v1/killswitches/{id}", `${k}/${id}`, 404, { headers: olga });
    await call(C, u, "GET", k, `${k}?history=true`, 200, { headers: olga });

    // a sidecar says hello and reserves budget (the sidecar API), so the views have rows
    const bot = bearer(
      await token("agent:support-bot", {
        audience: "toolgate-fleet",
        claims: { toolgate_agent: "support-bot" },
      }),
    );
    const F = "openapi-fleet.yaml" as const;
    const hello = await call(F, u, "POST", "/fleet/v1/hello", "/fleet/v1/hello", 200, {
      body: { instance: "sc-1", bundle: { name: "support", revision: "r1" }, version: "0.1.0" },
      headers: bot,
    });
    expect(hello.json).toEqual({ replica: "replica-a" });
    await call(F, u, "POST", "/fleet/v1/hello", "/fleet/v1/hello", 401, {
      body: { instance: "sc-1", bundle: null, version: null },
      headers: olga,
    });
    const item = {
      budget_id: "refunds",
      key: "refunds|cust_1",
      amount: 60,
      max_total: 100,
      window_seconds: 3600,
    };
    const r = "/fleet/v1/budgets/reserve";
    const reserve = await call(F, u, "POST", r, r, 200, {
      body: { decision_id: "d-1", ttl_seconds: 60, items: [item] },
      headers: bot,
    });
    expect(reserve.json).toEqual({ ok: true });
    const over = await call(F, u, "POST", r, r, 200, {
      body: { decision_id: "d-2", ttl_seconds: 60, items: [item] },
      headers: bot,
    });
    expect(over.json).toMatchObject({ ok: false, budget_id: "refunds" });
    await call(F, u, "POST", r, r, 400, { body: { decision_id: "d-3" }, headers: bot });
    const lease = "/fleet/v1/rates/lease";
    await call(F, u, "POST", lease, lease, 200, {
      body: { rate_id: "sends", key: "replies.send", rate_per_second: 1, burst: 2, want: 1 },
      headers: bot,
    });
    // session labels, fleet-wide: recorded, read back, refused for another agent's credential
    const touch = "/fleet/v1/sessions/touch";
    const touched = await call(F, u, "POST", touch, touch, 200, {
      body: {
        session_id: "s-1",
        labels: ["customer_pii"],
        tool: "tickets.read",
        decision_id: "d-9",
      },
      headers: bot,
    });
    expect(touched.json).toEqual({ ok: true });
    await call(F, u, "POST", touch, touch, 400, {
      body: { session_id: "s-1", labels: ["bad label!"], tool: "t", decision_id: "d" },
      headers: bot,
    });
    const sl = "/fleet/v1/sessions/labels";
    const labels = await call(F, u, "POST", sl, sl, 200, {
      body: { session_id: "s-1", retention_seconds: 3600 },
      headers: bot,
    });
    expect(labels.json).toMatchObject({
      labels: [
        { label: "customer_pii", count: 1, tools: ["tickets.read"], last_decision_id: "d-9" },
      ],
    });
    await call(F, u, "POST", sl, sl, 401, {
      body: { session_id: "s-1", retention_seconds: 3600 },
      headers: olga,
    });
    // session.fleet_scope full: an allowed call recorded, the session summarised
    const rec = "/fleet/v1/sessions/record";
    await call(F, u, "POST", rec, rec, 200, {
      body: {
        session_id: "s-2",
        tool: "refunds.issue",
        decision_id: "d-10",
        labels: [],
        sums: { amount: 12 },
      },
      headers: bot,
    });
    await call(F, u, "POST", rec, rec, 400, {
      body: { session_id: "s-2", tool: "t", decision_id: "d", labels: [], sums: { a: "x" } },
      headers: bot,
    });
    const sum = "/fleet/v1/sessions/summary";
    const summary = await call(F, u, "POST", sum, sum, 200, {
      body: { session_id: "s-2", retention_seconds: 3600 },
      headers: bot,
    });
    expect(summary.json).toMatchObject({
      labels: [],
      tools: [{ tool: "refunds.issue", allowed: 1, sums: { amount: { "3600": 12 } } }],
    });
    const budgets = await call(C, u, "GET", "/v1/budgets", "/v1/budgets", 200, { headers: olga });
    expect((budgets.json as { budgets: unknown[] }).budgets.length).toBe(1);
    await call(C, u, "GET", "/v1/budgets", "/v1/budgets", 403, { headers: maria });
    const resolved = await call(
      F,
      u,
      "POST",
      "/fleet/v1/budgets/resolve",
      "/fleet/v1/budgets/resolve",
      200,
      { body: { decision_id: "d-1", outcome: "commit" }, headers: bot },
    );
    expect(resolved.json).toEqual({ resolution: "committed" });
    const sidecars = await call(C, u, "GET", "/v1/fleet/sidecars", "/v1/fleet/sidecars", 200, {
      headers: olga,
    });
    expect((sidecars.json as { sidecars: Array<{ instance: string }> }).sidecars[0]?.instance).toBe(
      "sc-1",
    );
    await call(C, u, "GET", "/v1/fleet/sidecars", "/v1/fleet/sidecars", 401, { headers: bot });
  });
});

describe("a sidecar in fleet mode, and what it sends toolgate control, answer as the documents say", () => {
  let db: FreshDatabase;
  let svc: ControlService;
  let proxy: Awaited<ReturnType<typeof recordingProxy>>;
  let tg: Toolgate;
  let maria: Record<string, string>;
  let olga: Record<string, string>;
  const A = "openapi.yaml" as const;
  const C = "openapi-control.yaml" as const;

  beforeAll(async () => {
    db = await freshDatabase();
    const config = compileConfig(
      {},
      {
        TOOLGATE_CONTROL_PORT: "0",
        TOOLGATE_LOG_LEVEL: "silent",
        TOOLGATE_STATE_DIR: mkdtempSync(join(tmpdir(), "toolgate-control-")),
        TOOLGATE_AUDIT_HMAC_KEY: HMAC,
        TOOLGATE_POSTGRES_URL: db.url,
      },
    );
    svc = await startControlService(config, {
      log: silentLogger,
      env: { OTEL_SDK_DISABLED: "true" },
      replica: "replica-f",
    });
    proxy = await recordingProxy(svc.url);
    tg = await startTestToolgate({ TOOLGATE_CONTROL_PORT: "0", TOOLGATE_FLEET_URL: proxy.url });
    await until(() => tg.fleet?.client.status().state === "OK");
    maria = bearer(await token("maria", { roles: ["support_manager"] }));
    olga = bearer(await token("olga", { roles: ["admin"] }));
  });
  afterAll(async () => {
    await tg?.stop();
    await proxy?.close();
    await svc?.stop();
    await db?.drop();
  });

  test("access requests decided on the control service; the sidecar's control port refers there", async () => {
    const agent = tg.agentServer.url;
    const sidecarControl = tg.controlServer?.url ?? "";
    await call(A, agent, "GET", "/v1/status", "/v1/status", 200);
    const r = "/access/v1/requests";
    const ask = async (amount: number): Promise<TaskView> => {
      const req = refund(amount);
      const d = (await call(A, agent, "POST", "/v1/decisions", "/v1/decisions", 200, { body: req }))
        .json as Decision;
      expect(d.outcome).toBe("needs_approval");
      return (
        await call(A, agent, "POST", r, r, 201, {
          body: { ...req, denial: { evaluation_id: d.access_request?.evaluation_id } },
        })
      ).json as TaskView;
    };
    const first = await ask(120);
    const id = first.task.id;
    await call(A, agent, "GET", "/access/v1/requests/{id}", `${r}/${id}`, 200);
    const list = await call(C, svc.url, "GET", "/v1/approvals", "/v1/approvals", 200, {
      headers: maria,
    });
    expect(
      (list.json as { approvals: Array<{ id: string }> }).approvals.map((a) => a.id),
    ).toContain(id);
    await call(C, svc.url, "GET", "/v1/approvals/{id}", `/v1/approvals/${id}`, 200, {
      headers: maria,
    });
    await call(
      C,
      svc.url,
      "POST",
      "/v1/approvals/{id}/approve",
      `/v1/approvals/${id}/approve`,
      200,
      {
        body: { comment: "ok" },
        headers: maria,
      },
    );
    const approved = await call(A, agent, "GET", "/access/v1/requests/{id}", `${r}/${id}`, 200);
    const approval = (approved.json as TaskView).result?.approval;
    expect(approval).toBeDefined();
    // re-asked with the approval: allowed (the sidecar uses it on the control service)
    const reasked = await call(A, agent, "POST", "/v1/decisions", "/v1/decisions", 200, {
      body: withApproval(refund(120), approval),
    });
    expect((reasked.json as Decision).outcome).toBe("allow");
    await call(C, svc.url, "POST", "/v1/approvals/{id}/revoke", `/v1/approvals/${id}/revoke`, 200, {
      headers: olga,
    });
    const second = await ask(130);
    await call(
      C,
      svc.url,
      "POST",
      "/v1/approvals/{id}/deny",
      `/v1/approvals/${second.task.id}/deny`,
      200,
      { headers: maria },
    );
    const third = await ask(140);
    await call(
      A,
      agent,
      "POST",
      "/access/v1/requests/{id}/cancel",
      `${r}/${third.task.id}/cancel`,
      200,
    );

    // plan approvals are not supported in fleet mode: refused, and a presented plan is unavailable
    const planned = await call(A, agent, "POST", "/access/v1/plans", "/access/v1/plans", 409, {
      body: {
        subject: { type: "user", id: "alice" },
        resource: { type: "customer", id: "cust_1" },
        context: { job: { id: "job_1", purpose: "support_triage", customer_id: "cust_1" } },
        plan: { calls: [{ tool: "refunds.issue", max_uses: 1 }] },
      },
    });
    expect((planned.json as { code: string }).code).toBe("fleet_mode");
    const withPlan = await call(A, agent, "POST", "/v1/decisions", "/v1/decisions", 200, {
      body: {
        ...refund(120),
        context: { ...(refund(120).context as object), plan: { id: "pln_x" } },
      },
    });
    expect(withPlan.json).toMatchObject({ outcome: "needs_approval" });
    const reasons = (withPlan.json as { reasons: Array<{ code: string }> }).reasons;
    expect(reasons.map((x) => x.code)).toContain("plan_unavailable");

    // the sidecar's control port: approvals and switch writes are the control service's
    for (const [method, template, path, body] of [
      ["GET", "/v1/approvals", "/v1/approvals", undefined],
      ["GET", "/v1/approvals/{id}", `/v1/approvals/${id}`, undefined],
      ["POST", "/v1/approvals/{id}/approve", `/v1/approvals/${id}/approve`, undefined],
      ["POST", "/v1/approvals/{id}/revoke", `/v1/approvals/${id}/revoke`, undefined],
      ["POST", "/v1/killswitches", "/v1/killswitches", { reason: "stop" }],
      ["GET", "/v1/killswitches", "/v1/killswitches?history=true", undefined],
      ["DELETE", "/v1/killswitches/{id}", "/v1/killswitches/ks_1", undefined],
    ] as const) {
      const res = await call(C, sidecarControl, method, template, path, 409, {
        headers: olga,
        ...(body === undefined ? {} : { body }),
      });
      expect((res.json as { code: string }).code).toBe("fleet_mode");
    }
    await call(C, sidecarControl, "GET", "/v1/killswitches", "/v1/killswitches", 200, {
      headers: olga,
    });
    const status = await call(C, sidecarControl, "GET", "/v1/status", "/v1/status", 200, {
      headers: olga,
    });
    expect(status.json).toHaveProperty("fleet");

    // everything the sidecar said to toolgate control, and its answers, as docs/openapi-fleet.yaml says
    const fleet = openapiDoc("openapi-fleet.yaml");
    const F = "openapi-fleet.yaml" as const;
    expect(proxy.exchanges.length).toBeGreaterThan(0);
    for (const x of proxy.exchanges) {
      const template = templateOf(fleet, x.path);
      if (template === undefined)
        throw new Error(`${x.method} ${x.path}: not in the fleet document`);
      expectResponseMatches(fleet, x.method, template, x.status, x.body);
      const key = `${x.method} ${template}`;
      seen[F].set(key, (seen[F].get(key) ?? new Set<number>()).add(x.status));
    }
    const used = proxy.exchanges.map((x) => `${x.method} ${templateOf(fleet, x.path) ?? ""}`);
    for (const op of [
      "GET /fleet/v1/stream",
      "POST /fleet/v1/access-requests",
      "POST /fleet/v1/approvals/{id}/use",
      "POST /fleet/v1/access-requests/{id}/cancel",
    ])
      expect(used).toContain(op);
  });
});

test("every documented operation was seen succeeding", () => {
  for (const file of DOC_FILES) {
    const missing: string[] = [];
    for (const [path, item] of Object.entries(openapiDoc(file).paths)) {
      for (const m of Object.keys(item).filter((k) => METHODS.includes(k))) {
        const key = `${m.toUpperCase()} ${path}`;
        const ok = [...(seen[file].get(key) ?? [])].some((s) => s >= 200 && s < 300);
        if (!ok) missing.push(key);
      }
    }
    expect({ file, missing }).toEqual({ file, missing: [] });
  }
});
