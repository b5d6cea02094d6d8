/**
 * `toolgate mcp` end to end: the SDK's Client ↔ the proxy (streamable HTTP)
 * ↔ real MCP servers over stdio — the repo's fixture server and the published
 * @modelcontextprotocol/server-everything — with a real toolgate sidecar and
 * a real policy bundle (rego library + test data) behind it. No mocks.
 */
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { ElicitRequestSchema, ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import { verifyGrant } from "../../src/grants/verify";
import { startMcpProxy, type RunningProxy } from "../../src/mcp";
import { postJson } from "../helpers/toolgate";
import {
  approve,
  deny,
  EVERYTHING,
  EVERYTHING_TOOLS,
  FIXTURE,
  httpClient,
  mcpBundle,
  metaOf,
  NODE,
  proxyConfig,
  SESSION,
  startSidecar,
  TEST_TOOLS,
  textOf,
  type Sidecar,
} from "../fixtures/mcp/harness";

jest.setTimeout(60_000);

const eid = (params: unknown): string => (params as { elicitationId: string }).elicitationId;

let sc: Sidecar;
let proxy: RunningProxy;
let calls: string;

beforeAll(async () => {
  sc = await startSidecar(
    mcpBundle([
      { prefix: "fx", tools: TEST_TOOLS },
      { prefix: "everything", tools: EVERYTHING_TOOLS },
    ]),
  );
  calls = join(mkdtempSync(join(tmpdir(), "mcp-fixture-")), "calls.jsonl");
  proxy = await startMcpProxy(
    proxyConfig(sc, {
      servers: [
        { name: "fx", command: NODE, args: [FIXTURE], env: { MCP_FIXTURE_CALLS: calls } },
        { name: "everything", command: NODE, args: [EVERYTHING, "stdio"] },
      ],
      tools: { "fx.lookup": { resource: { id: { arg: "/customer_id" } } } },
      methods: { passthrough: ["resources/list"] },
    }),
  );
});
afterAll(async () => {
  await proxy?.stop();
  await sc?.tg.stop();
});

/** What reached the fixture server, one record per call. */
function reached(): Array<{ tool: string; arguments: unknown; meta: Record<string, unknown> }> {
  try {
    return readFileSync(calls, "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map(
        (l) => JSON.parse(l) as { tool: string; arguments: unknown; meta: Record<string, unknown> },
      );
  } catch {
    return [];
  }
}

function trail(): Array<Record<string, unknown>> {
  const dir = sc.tg.config.audit.trail.dir;
  return readdirSync(dir)
    .filter((f) => f.endsWith(".jsonl"))
    .flatMap((f) =>
      readFileSync(join(dir, f), "utf8")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    );
}

async function actionRecord(decisionId: string): Promise<Record<string, unknown> | undefined> {
  await sc.tg.auditor?.flush();
  const r = trail().find(
    (x) => x.kind === "action" && (x.record as Record<string, unknown>).decision_id === decisionId,
  );
  return r?.record as Record<string, unknown> | undefined;
}

describe("tools/list: action search decides what the agent sees", () => {
  let client: Client;
  beforeAll(async () => {
    client = await httpClient(proxy);
  });
  afterAll(async () => {
    await client.close();
  });

  test("allowed tools are listed, gated ones marked, denied and unregistered ones hidden", async () => {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name).sort();
    expect(names).toEqual(
      [
        "everything.echo",
        "everything.get-sum",
        "everything.trigger-long-running-operation",
        "fx.account_summary",
        "fx.broken",
        "fx.lookup",
        "fx.refund",
      ].sort(),
    );
    // denied (admin, not granted) and tools the deployment does not register are absent
    expect(names).not.toContain("fx.wipe");
    expect(names).not.toContain("everything.get-env");
    expect(names).not.toContain("everything.get-tiny-image");
    const refund = tools.find((t) => t.name === "fx.refund");
    expect(refund?._meta?.["io.toolgate/needs_approval"]).toBe(true);
    expect(refund?._meta?.["io.toolgate/approval"]).toMatchObject({
      approver_roles: ["support_manager"],
    });
    expect(refund?.description).toMatch(/^Refund a customer\.\n\n\[toolgate\] .*approval/);
    const lookup = tools.find((t) => t.name === "fx.lookup");
    expect(lookup?._meta?.["io.toolgate/needs_approval"]).toBeUndefined();
    expect(lookup?.description).toBe("Look up a customer's tickets.");
    expect(lookup?.inputSchema).toMatchObject({ required: ["customer_id"] });
  });
});

describe("tools/call", () => {
  let client: Client;
  beforeAll(async () => {
    client = await httpClient(proxy);
  });
  afterAll(async () => {
    await client.close();
  });

  test("allow: forwarded with the grant in _meta; the grant verifies for this exact call; the action is reported ok", async () => {
    const args = { customer_id: "cust_1", query: "late delivery" };
    const r = await client.callTool({ name: "fx.lookup", arguments: args });
    expect(r.isError).toBeFalsy();
    const got = JSON.parse(textOf(r)) as { arguments: unknown; meta: Record<string, unknown> };
    expect(got.arguments).toEqual(args);
    const grant = got.meta["io.toolgate/grant"] as string;
    expect(typeof grant).toBe("string");
    const decisionId = metaOf(r)["io.toolgate/decision_id"] as string;
    expect(got.meta["io.toolgate/decision_id"]).toBe(decisionId);
    // the backend's check: toolgate/verify against the sidecar's JWKS
    const claims = await verifyGrant(grant, {
      audience: "tool:fx.lookup",
      jwks: `${sc.control}/.well-known/jwks.json`,
      request: {
        subject: SESSION.subject,
        action: { name: "fx.lookup", properties: { arguments: args } },
        resource: SESSION.resource,
        context: SESSION.context,
      },
    });
    expect(claims).toMatchObject({ sub: "alice", tool: "fx.lookup", decision_id: decisionId });
    // the grant is bound: other arguments do not verify
    await expect(
      verifyGrant(grant, {
        audience: "tool:fx.lookup",
        jwks: `${sc.control}/.well-known/jwks.json`,
        request: {
          subject: SESSION.subject,
          action: { name: "fx.lookup", properties: { arguments: { ...args, query: "x" } } },
          resource: SESSION.resource,
          context: SESSION.context,
        },
      }),
    ).rejects.toMatchObject({ code: "grant_binding_mismatch" });
    // reported: the trail holds the action; a second report of it is refused
    expect(await actionRecord(decisionId)).toMatchObject({ status: "ok", tool: "fx.lookup" });
    const again = await postJson(sc.agent, "/v1/actions", {
      decision_id: decisionId,
      status: "ok",
    });
    expect(again.status).toBe(409);
    expect((again.json as { code: string }).code).toBe("action_already_reported");
  });

  test("per-tool mapping: resource.id from the arguments — another customer is outside the job's boundary and denied", async () => {
    const before = reached().length;
    const r = await client.callTool({ name: "fx.lookup", arguments: { customer_id: "cust_2" } });
    expect(r.isError).toBe(true);
    expect(metaOf(r)["io.toolgate/outcome"]).toBe("deny");
    const reasons = metaOf(r)["io.toolgate/reasons"] as Array<{ code: string }>;
    expect(reasons.map((x) => x.code)).toContain("out_of_scope");
    expect(reached().length).toBe(before);
    // a mapping whose argument is missing: refused before any decision
    const m = await client.callTool({ name: "fx.lookup", arguments: { query: "q" } });
    expect(m.isError).toBe(true);
    expect(textOf(m)).toMatch(/mcp_mapping_failed/);
  });

  test("deny: a tool error carrying the reasons (codes and messages); the server never sees the call", async () => {
    const before = reached().length;
    const r = await client.callTool({ name: "fx.wipe", arguments: {} });
    expect(r.isError).toBe(true);
    const reasons = metaOf(r)["io.toolgate/reasons"] as Array<{ code: string; message: string }>;
    expect(reasons.length).toBeGreaterThan(0);
    for (const x of reasons) {
      expect(x.code).toMatch(/^[a-z_]+$/);
      expect(textOf(r)).toContain(`${x.code}: ${x.message}`);
    }
    expect(metaOf(r)["io.toolgate/outcome"]).toBe("deny");
    expect(reached().length).toBe(before);
  });

  test("a tool the deployment does not register is denied (hidden tools stay unreachable)", async () => {
    const r = await client.callTool({ name: "everything.get-tiny-image", arguments: {} });
    expect(r.isError).toBe(true);
    expect(metaOf(r)["io.toolgate/outcome"]).toBe("deny");
  });

  test("unknown tool → mcp_unknown_tool; no decision is needed to refuse it", async () => {
    const r = await client.callTool({ name: "fx.nope", arguments: {} });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/mcp_unknown_tool/);
  });

  test("the published server-everything: echo and get-sum through the proxy", async () => {
    const e = await client.callTool({ name: "everything.echo", arguments: { message: "hi" } });
    expect(textOf(e)).toBe("Echo: hi");
    expect(metaOf(e)["io.toolgate/outcome"]).toBe("allow");
    const s = await client.callTool({ name: "everything.get-sum", arguments: { a: 2, b: 40 } });
    expect(textOf(s)).toMatch(/42/);
    const denied = await client.callTool({ name: "everything.get-env", arguments: {} });
    expect(denied.isError).toBe(true);
    expect(textOf(denied)).not.toMatch(/PATH/);
  });

  test("an upstream isError result is passed on and reported as error", async () => {
    const r = await client.callTool({ name: "fx.broken", arguments: {} });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toBe("the backend is down");
    const id = metaOf(r)["io.toolgate/decision_id"] as string;
    expect(await actionRecord(id)).toMatchObject({ status: "error", tool: "fx.broken" });
  });

  test("x-authzen-mapping (COAZ-MCP): resource from the arguments; redact obligations applied to the result", async () => {
    const ok = await client.callTool({
      name: "fx.account_summary",
      arguments: { customer_id: "cust_1" },
    });
    expect(ok.isError).toBeFalsy();
    const record = JSON.parse(textOf(ok)) as { payment: Record<string, unknown> };
    expect(record.payment).toEqual({ brand: "visa" });
    expect(ok.structuredContent).toMatchObject({ payment: { brand: "visa" } });
    expect(JSON.stringify(ok)).not.toMatch(/4111111111111111|DE89/);
    // the mapping put the argument in resource.id: another customer is outside the boundary
    const other = await client.callTool({
      name: "fx.account_summary",
      arguments: { customer_id: "cust_9" },
    });
    expect(other.isError).toBe(true);
    expect(metaOf(other)["io.toolgate/outcome"]).toBe("deny");
  });

  test("methods outside the rule: denied (MethodNotFound); the explicit passthrough answers", async () => {
    await expect(client.readResource({ uri: "fixture://notes/1" })).rejects.toMatchObject({
      code: ErrorCode.MethodNotFound,
    });
    await expect(client.listPrompts()).rejects.toBeInstanceOf(McpError);
    await expect(
      client.complete({
        ref: { type: "ref/prompt", name: "x" },
        argument: { name: "a", value: "b" },
      }),
    ).rejects.toBeInstanceOf(McpError);
    // resources/list is configured as passthrough: the fixture's list (merged) comes back
    const res = await client.listResources();
    expect(res.resources.map((r) => r.uri)).toContain("fixture://notes/1");
  });
});

describe("needs_approval", () => {
  test("without elicitation: a tool error with the console link; the same call goes through once approved", async () => {
    const client = await httpClient(proxy);
    try {
      const args = { customer_id: "cust_1", amount: 30 };
      const before = reached().filter((c) => c.tool === "refund").length;
      const first = await client.callTool({ name: "fx.refund", arguments: args });
      expect(first.isError).toBe(true);
      expect(textOf(first)).toMatch(/approval_required/);
      const url = metaOf(first)["io.toolgate/approval_url"] as string;
      const id = metaOf(first)["io.toolgate/access_request_id"] as string;
      expect(url).toBe(`${sc.control}/console/requests/${id}`);
      expect(textOf(first)).toContain(url);
      // asked again before anyone approved: still pending, the same request
      const second = await client.callTool({ name: "fx.refund", arguments: args });
      expect(textOf(second)).toMatch(/approval_pending/);
      expect(metaOf(second)["io.toolgate/access_request_id"]).toBe(id);
      // other arguments are another call: not covered by that request
      const other = await client.callTool({
        name: "fx.refund",
        arguments: { ...args, amount: 31 },
      });
      expect(metaOf(other)["io.toolgate/access_request_id"]).not.toBe(id);
      expect(reached().filter((c) => c.tool === "refund").length).toBe(before);
      await approve(sc, id);
      const third = await client.callTool({ name: "fx.refund", arguments: args });
      expect(third.isError).toBeFalsy();
      expect(JSON.parse(textOf(third))).toMatchObject({ tool: "refund", arguments: args });
      expect(reached().filter((c) => c.tool === "refund").length).toBe(before + 1);
      // single use (execute class): the next identical call needs a new approval
      const fourth = await client.callTool({ name: "fx.refund", arguments: args });
      expect(textOf(fourth)).toMatch(/approval_required/);
      expect(metaOf(fourth)["io.toolgate/access_request_id"]).not.toBe(id);
    } finally {
      await client.close();
    }
  });

  test("with URL elicitation: the client is sent the console page, the approver approves, the call completes", async () => {
    const client = await httpClient(proxy, {
      capabilities: { elicitation: { url: {} } },
    });
    const seen: Array<Record<string, unknown>> = [];
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      seen.push(req.params);
      await approve(sc, eid(req.params));
      return { action: "accept" };
    });
    try {
      const args = { customer_id: "cust_1", amount: 12 };
      const r = await client.callTool({ name: "fx.refund", arguments: args });
      expect(seen).toHaveLength(1);
      expect(seen[0]).toMatchObject({
        mode: "url",
        url: `${sc.control}/console/requests/${seen[0]?.elicitationId as string}`,
      });
      expect(r.isError).toBeFalsy();
      expect(JSON.parse(textOf(r))).toMatchObject({ tool: "refund", arguments: args });
      const id = metaOf(r)["io.toolgate/decision_id"] as string;
      expect(await actionRecord(id)).toMatchObject({ status: "ok", tool: "fx.refund" });
    } finally {
      await client.close();
    }
  });

  test("with URL elicitation: a failed elicitation leaves the link; the same call again elicits the same request", async () => {
    const client = await httpClient(proxy, {
      capabilities: { elicitation: { url: {} } },
    });
    const ids: string[] = [];
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      ids.push(eid(req.params));
      if (ids.length === 1) throw new Error("the user closed the window");
      await approve(sc, eid(req.params));
      return { action: "accept" };
    });
    try {
      const args = { customer_id: "cust_1", amount: 15 };
      const first = await client.callTool({ name: "fx.refund", arguments: args });
      expect(first.isError).toBe(true);
      expect(textOf(first)).toMatch(/approval_pending/);
      expect(metaOf(first)["io.toolgate/access_request_id"]).toBe(ids[0]);
      const second = await client.callTool({ name: "fx.refund", arguments: args });
      expect(ids).toHaveLength(2);
      expect(ids[1]).toBe(ids[0]); // the request already submitted, not a new one
      expect(second.isError).toBeFalsy();
      expect(JSON.parse(textOf(second))).toMatchObject({ tool: "refund", arguments: args });
    } finally {
      await client.close();
    }
  });

  test("with URL elicitation: declined by the user → a tool error, the request is cancelled; denied by the approver → approval_denied", async () => {
    const client = await httpClient(proxy, {
      capabilities: { elicitation: { url: {} } },
    });
    let mode: "decline" | "deny" = "decline";
    client.setRequestHandler(ElicitRequestSchema, async (req) => {
      if (mode === "decline") return { action: "decline" };
      await deny(sc, eid(req.params));
      return { action: "accept" };
    });
    try {
      const before = reached().filter((c) => c.tool === "refund").length;
      const declined = await client.callTool({
        name: "fx.refund",
        arguments: { customer_id: "cust_1", amount: 13 },
      });
      expect(declined.isError).toBe(true);
      expect(textOf(declined)).toMatch(/approval_declined/);
      const task = metaOf(declined)["io.toolgate/access_request_id"] as string;
      const view = await fetch(`${sc.agent}/access/v1/requests/${task}`).then((x) => x.json());
      expect((view as { task: { status: string } }).task.status).toBe("cancelled");
      mode = "deny";
      const denied = await client.callTool({
        name: "fx.refund",
        arguments: { customer_id: "cust_1", amount: 14 },
      });
      expect(denied.isError).toBe(true);
      expect(textOf(denied)).toMatch(/approval_denied/);
      expect(reached().filter((c) => c.tool === "refund").length).toBe(before);
    } finally {
      await client.close();
    }
  });
});
