/**
 * AuthZEN 1.0 Action Search on the agent port (#17): which tools may this
 * subject use on this resource in this context. Real HTTP, the real reference
 * bundle on opa-wasm, real kill switches on the control port.
 */
import type { Toolgate } from "../../src/app";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

interface SearchResponse {
  page?: { next_token: string; count: number; total: number };
  context: { policy: { bundle: string; revision: string } };
  results: Array<{
    name: string;
    properties?: { needs_approval?: true; approval?: unknown; depends_on_arguments?: true };
  }>;
}

let tg: Toolgate;
let agent: string;

beforeAll(async () => {
  tg = await startTestToolgate({ TOOLGATE_STATE_DIR: tempDir(), TOOLGATE_CONTROL_PORT: "0" });
  agent = tg.agentServer.url;
});
afterAll(async () => {
  await tg.stop();
});

/** The search body for a user on a customer, in the reference job's context. */
function query(user = "alice", customer = "cust_1", extra: Record<string, unknown> = {}) {
  const { subject, resource, context } = refRequest({ user, tool: "x", customer });
  return { subject, resource, context, ...extra };
}

async function search(body: unknown): Promise<SearchResponse> {
  const r = await postJson(agent, "/access/v1/search/action", body);
  expect(r.status).toBe(200);
  return r.json as SearchResponse;
}

const names = (s: SearchResponse) => s.results.map((r) => r.name);

test("the metadata names search_action_endpoint", async () => {
  const r = await http(agent, "GET", "/.well-known/authzen-configuration");
  const meta = r.json as Record<string, string>;
  expect(meta.search_action_endpoint).toBe(`${agent}/access/v1/search/action`);
});

test("alice on cust_1 in her support job: tickets.read listed, billing.update not", async () => {
  const s = await search(query());
  expect(names(s)).toContain("tickets.read");
  expect(names(s)).not.toContain("billing.update");
  expect(names(s)).toEqual([...names(s)].sort());
  expect(s.context.policy.bundle).toBe("support-triage");
  expect(s.page).toBeUndefined();
});

test("every registered tool is listed exactly as a decision without arguments answers it", async () => {
  const data = tg.bundles.active()?.data as {
    toolgate: { deployment: { tools: Record<string, unknown> } };
  };
  const tools = Object.keys(data.toolgate.deployment.tools);
  expect(tools.length).toBeGreaterThan(5);
  for (const user of ["alice", "carol", "maria", "nobody"]) {
    const s = await search(query(user));
    const listed = new Map(s.results.map((r) => [r.name, r]));
    const outcomes = new Set<string>();
    for (const tool of tools) {
      const d = await postJson(agent, "/v1/decisions", refRequest({ user, tool }));
      const outcome = (d.json as { outcome: string }).outcome;
      outcomes.add(outcome);
      const r = listed.get(tool);
      const codes = (d.json as { reasons: Array<{ code: string }> }).reasons.map((x) => x.code);
      const onlyArguments =
        codes.length > 0 && codes.every((c) => c === "invalid_arguments" || c === "limit_exceeded");
      if (outcome === "deny" && onlyArguments) {
        expect({ user, tool, props: r?.properties }).toEqual({
          user,
          tool,
          props: { depends_on_arguments: true, reasons: [...new Set(codes)] },
        });
      } else if (outcome === "deny")
        expect({ user, tool, listed: r }).toEqual({ user, tool, listed: undefined });
      else
        expect({ user, tool, needs: r?.properties?.needs_approval === true }).toEqual({
          user,
          tool,
          needs: outcome === "needs_approval",
        });
    }
    if (user === "alice") expect(outcomes).toEqual(new Set(["allow", "deny", "needs_approval"]));
    if (user === "nobody") expect(s.results).toEqual([]);
  }
});

test("a tool denied only for its missing arguments is listed, marked; not for a contractor", async () => {
  const refunds = (await search(query())).results.find((r) => r.name === "refunds.issue");
  expect(refunds?.properties).toEqual({
    depends_on_arguments: true,
    reasons: ["invalid_arguments"],
  });
  expect(names(await search(query("carol")))).not.toContain("refunds.issue");
});

test("a needs_approval tool carries the approval requirement", async () => {
  const s = await search(query());
  const gated = s.results.filter((r) => r.properties?.needs_approval === true);
  expect(gated.length).toBeGreaterThan(0);
  for (const g of gated) expect(g.properties?.approval).toEqual(expect.any(Object));
});

test("paging: limit 2 walks every result once; the last next_token is empty", async () => {
  const all = names(await search(query()));
  const seen: string[] = [];
  let token: string | undefined;
  for (let i = 0; i < 20; i++) {
    const s = await search(
      query("alice", "cust_1", { page: { limit: 2, ...(token ? { token } : {}) } }),
    );
    expect(s.page?.total).toBe(all.length);
    expect(s.page?.count).toBe(s.results.length);
    seen.push(...names(s));
    token = s.page?.next_token;
    if (token === "") break;
    expect(s.results).toHaveLength(2);
  }
  expect(token).toBe("");
  expect(seen).toEqual(all);
});

test("a token is bound to its query: another subject, limit or a forged token is refused", async () => {
  const first = await search(query("alice", "cust_1", { page: { limit: 1 } }));
  const token = first.page?.next_token ?? "";
  expect(token).not.toBe("");
  for (const body of [
    query("carol", "cust_1", { page: { limit: 1, token } }),
    query("alice", "cust_1", { page: { limit: 2, token } }),
    query("alice", "cust_2", { page: { limit: 1, token } }),
    query("alice", "cust_1", { page: { limit: 1, token: token.slice(0, -2) } }),
    query("alice", "cust_1", { page: { limit: 1, token: "not a token!" } }),
    query("alice", "cust_1", {
      page: { limit: 1, token: Buffer.from('{"o":-1,"q":"x"}').toString("base64url") },
    }),
  ]) {
    const r = await postJson(agent, "/access/v1/search/action", body);
    expect(r.status).toBe(400);
    expect((r.json as { code: string }).code).toBe("invalid_request");
  }
});

test("bad bodies are 400 invalid_request naming the member", async () => {
  for (const [body, member] of [
    [{ subject: { type: "user", id: "alice" } }, "resource"],
    [query("alice", "cust_1", { page: { limit: 1001 } }), "page/limit"],
    [query("alice", "cust_1", { page: { limit: -1 } }), "page/limit"],
    [{ ...query(), subject: { type: "user" } }, "subject"],
  ] as const) {
    const r = await postJson(agent, "/access/v1/search/action", body);
    expect(r.status).toBe(400);
    const err = r.json as { code: string; message: string };
    expect(err.code).toBe("invalid_request");
    expect(err.message).toContain(member);
  }
});

test("a search records no decision and reserves nothing; a kill switch hides the tool", async () => {
  const metric = async () => {
    const m = await http(tg.controlServer?.url ?? "", "GET", "/metrics");
    return (m.text.match(/^toolgate_decisions_total\{[^}]*\} (\d+)/gm) ?? [])
      .map((l) => Number(l.split(" ").pop()))
      .reduce((a, b) => a + b, 0);
  };
  const before = await metric();
  await search(query());
  await search(query("carol"));
  expect(await metric()).toBe(before);

  const olga = bearer(await token("olga", { roles: ["admin"] }));
  const ks = await postJson(
    tg.controlServer?.url ?? "",
    "/v1/killswitches",
    { scope: { tool: "tickets.read" }, reason: "search test" },
    olga,
  );
  expect(ks.status).toBe(201);
  try {
    const s = await search(query());
    expect(names(s)).not.toContain("tickets.read");
    expect(names(s)).toContain("accounts.summary.read");
  } finally {
    const id = (ks.json as { id: string }).id;
    await http(tg.controlServer?.url ?? "", "DELETE", `/v1/killswitches/${id}`, undefined, olga);
  }
  expect(names(await search(query()))).toContain("tickets.read");
});
