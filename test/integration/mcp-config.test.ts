/**
 * The MCP proxy's config validation (every problem named by key, with its fix)
 * and its mapping rules (JSON Pointer into arguments, the COAZ-MCP subset),
 * on the real functions — no processes.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { compileMcpConfig, loadMcpConfig } from "../../src/mcp";
import { atPointer, buildRequest, readSchemaMapping } from "../../src/mcp/mapping";
import { tempDir } from "../helpers/opa";

const SESSION = {
  subject: { type: "user", id: "alice" },
  resource: { type: "customer", id: "cust_1" },
  context: { job: { id: "job_1", purpose: "support_triage", customer_id: "cust_1" } },
};
const base = {
  session: SESSION,
  servers: [{ name: "fx", command: "node", args: ["s.js"] }],
  serve: { stdio: true },
};

function problems(doc: unknown, env: Record<string, string> = {}): string {
  try {
    compileMcpConfig(doc, {}, env);
  } catch (e) {
    expect((e as { code: string }).code).toBe("config_invalid");
    return (e as Error).message;
  }
  throw new Error("the config was accepted");
}

describe("config", () => {
  test("a minimal config: defaults", () => {
    const c = compileMcpConfig(base);
    expect(c.sidecar).toEqual({ url: "http://127.0.0.1:8181", timeoutMs: 5000 });
    expect(c.consoleUrl).toBe("http://127.0.0.1:8182");
    expect(c.serve).toEqual({ stdio: true, path: "/mcp", auth: {}, maxSessions: 100 });
    expect(c.requireMapping).toBe(false);
    expect(c.passthrough).toEqual([]);
    expect(c.servers[0]).toMatchObject({ name: "fx", command: "node", honorSchemaMapping: true });
  });

  test.each([
    [{ ...base, servers: [] }, /key "servers" must list at least one upstream MCP server\. Fix:/],
    [{ ...base, session: {} }, /key "session\.subject" is required/],
    [{ ...base, serve: {} }, /key "serve" serves nothing\. Fix: pass --http/],
    [{ ...base, extra: 1 }, /key "extra" is unknown\. Fix: use one of sidecar,/],
    [
      { ...base, servers: [{ name: "a", url: "http://h/mcp", headers: { Authorization: "x" } }] },
      /key "servers\[0\]\.headers\.Authorization" is set by the proxy/,
    ],
    [
      { ...base, servers: [{ name: "a", url: "ftp://h/" }] },
      /key "servers\[0\]\.url" must be an http\(s\) URL/,
    ],
    [
      {
        ...base,
        servers: [
          { name: "a", command: "x" },
          { name: "a", command: "y" },
        ],
      },
      /key "servers\[1\]\.name" repeats "a"/,
    ],
    [
      { ...base, servers: [{ name: "a", command: "x", url: "http://h/" }] },
      /key "servers\[0\]" needs exactly one of command/,
    ],
    [
      { ...base, tools: { t: { resource: { id: "/x" } } } },
      /key "tools\.t\.resource\.id" is the literal "\/x", which looks like a JSON pointer\. Fix: write \{arg: "\/x"\}/,
    ],
    [{ ...base, tools: { t: { resource: { type: "invoice" } } } }, null],
    [
      { ...base, tools: { t: { resource: { id: { arg: "x" } } } } },
      /key "tools\.t\.resource\.id" must be a literal string or \{arg: <JSON pointer/,
    ],
    [{ ...base, methods: { passthrough: ["resources/read"] } }, /may not bypass decisions/],
    [{ ...base, serve: { http: "10.0.0.1:80" } }, /off loopback/],
    [
      { ...base, limits: { result_bytes: 1 } },
      /key "limits\.result_bytes" must be an integer from 1024/,
    ],
    [
      { ...base, session: { ...SESSION, context: { approval: {} } } },
      /key "session\.context\.approval" is set by the proxy/,
    ],
    [{ ...base, sidecar: { token_env: "NOPE_NOT_SET" } }, /names NOPE_NOT_SET, which is not set/],
  ])("%# refused, naming the key", (doc, re) => {
    if (re === null) expect(() => compileMcpConfig(doc)).not.toThrow();
    else expect(problems(doc)).toMatch(re);
  });

  test("all problems at once, and a forbidden key in the file", () => {
    const msg = problems({ servers: "x", serve: 1, log_level: "loud" });
    expect(msg.split("\n  - ").length).toBeGreaterThanOrEqual(4);
    const f = join(tempDir("mcp-config-"), "c.json");
    writeFileSync(f, '{"session": {"__proto__": {"x": 1}}}');
    expect(() => loadMcpConfig(f)).toThrow(/forbidden key "__proto__" at \/session/);
  });

  test("flags and env win over the file; a token comes from the named env variable", () => {
    const c = compileMcpConfig(
      { ...base, sidecar: { url: "http://127.0.0.1:1", token_env: "TG_TOKEN" } },
      { http: "127.0.0.1:0", consoleUrl: "http://127.0.0.1:9/" },
      { TOOLGATE_MCP_SIDECAR_URL: "http://127.0.0.1:2", TG_TOKEN: "t0k" },
    );
    expect(c.sidecar).toEqual({ url: "http://127.0.0.1:2", token: "t0k", timeoutMs: 5000 });
    expect(c.serve.http).toEqual({ host: "127.0.0.1", port: 0 });
    expect(c.consoleUrl).toBe("http://127.0.0.1:9");
  });
});

describe("mapping", () => {
  test("JSON Pointer: escapes, arrays, own members only", () => {
    const doc = { "a/b": { "m~n": [10, 20] }, x: {} };
    expect(atPointer(doc, "/a~1b/m~0n/1")).toBe(20);
    expect(atPointer(doc, "/x/constructor")).toBeUndefined();
    expect(atPointer(doc, "/x/toString")).toBeUndefined();
    expect(atPointer(doc, "/a~1b/m~0n/01")).toBeUndefined();
  });

  test("COAZ subset: literals and params paths; subject, action and token expressions are never taken", () => {
    const m = readSchemaMapping({
      "x-authzen-mapping": {
        evaluation: {
          subject: { type: "'user'", id: "'mallory'" },
          action: { name: "'tickets.read'" },
          resource: { type: "'invoice'", id: "$params.arguments.inv.id" },
          context: { channel: "'mcp'", agent: "'x'", caller: "token.sub", tool: "params.name" },
        },
      },
    });
    expect(m).not.toBeInstanceOf(Error);
    const req = buildRequest(
      SESSION,
      { action: "billing.send", upstreamName: "send", arguments: { inv: { id: 42 } } },
      m as Exclude<typeof m, Error>,
      undefined,
    );
    expect(req.subject).toEqual(SESSION.subject);
    expect(req.action).toEqual({
      name: "billing.send",
      properties: { arguments: { inv: { id: 42 } } },
    });
    expect(req.resource).toEqual({ type: "invoice", id: "42" });
    expect(req.context).toEqual({ ...SESSION.context, channel: "mcp", tool: "send" });
  });

  test("expressions outside the subset make the tool fail closed; no mapping is undefined", () => {
    expect(readSchemaMapping({ type: "object" })).toBeUndefined();
    expect(
      readSchemaMapping({ "x-authzen-mapping": { resource: { id: "size(params.arguments)" } } }),
    ).toBeInstanceOf(Error);
    expect(readSchemaMapping({ "x-authzen-mapping": { evaluations: [] } })).toBeInstanceOf(Error);
  });

  test("the proxy's own mapping wins; a missing argument refuses the call", () => {
    const schema = readSchemaMapping({
      "x-authzen-mapping": { resource: { id: "params.arguments.customer_id" } },
    }) as Exclude<ReturnType<typeof readSchemaMapping>, Error | undefined>;
    const call = { action: "t", upstreamName: "t", arguments: { customer_id: "c2", other: "c3" } };
    expect(buildRequest(SESSION, call, schema, undefined).resource.id).toBe("c2");
    expect(
      buildRequest(SESSION, call, schema, {
        resource: { id: { arg: "/other" } },
        job: { purpose: "billing_review" },
      }),
    ).toMatchObject({
      resource: { id: "c3" },
      context: { job: { id: "job_1", purpose: "billing_review", customer_id: "cust_1" } },
    });
    expect(() =>
      buildRequest(SESSION, { ...call, arguments: {} }, undefined, {
        resource: { id: { arg: "/customer_id" } },
      }),
    ).toThrow(/resource\.id \(argument \/customer_id\)/);
  });
});
