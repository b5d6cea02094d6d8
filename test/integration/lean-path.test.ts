/**
 * The agent port's lean path (src/http/foundation.ts, issue #20): POST routes
 * are dispatched by exact path before express's routing. Every request must
 * be answered exactly as express answers it: the same status, error code,
 * shape and headers for good and hostile bodies. Express still takes every
 * other spelling of the path (trailing slash, other letter case, a query
 * string), so each request is sent both ways to one real toolgate and the
 * answers compared. Real HTTP on loopback.
 */
import type { Toolgate } from "../../src/app";
import { http, refRequest, startTestToolgate, type HttpResult } from "../helpers/toolgate";

jest.setTimeout(60_000);

let tg: Toolgate;
let base: string;
beforeAll(async () => {
  tg = await startTestToolgate();
  base = tg.agentServer.url;
});
afterAll(async () => {
  await tg.stop();
});

const JSON_CT = { "content-type": "application/json" };

/** What must agree: status, headers a client reads, and the body without per-decision values. */
function shape(r: HttpResult): unknown {
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (v === null || typeof v !== "object") return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      if (["decision_id", "evaluated_at", "grant", "id", "evaluation_id", "expires_at"].includes(k))
        out[k] = typeof x;
      else out[k] = strip(x);
    }
    return out;
  };
  return {
    status: r.status,
    contentType: r.headers["content-type"],
    cacheControl: r.headers["cache-control"],
    connection: r.headers.connection,
    requestId: typeof r.headers["x-request-id"],
    body: r.json === undefined ? r.text : strip(r.json),
  };
}

const deep = (n: number): string => `${"[".repeat(n)}${"]".repeat(n)}`;
const BODIES: Array<[string, string | undefined, Record<string, string>]> = [
  ["an allow", JSON.stringify(refRequest({ tool: "tickets.read" })), JSON_CT],
  ["a deny", JSON.stringify(refRequest({ tool: "billing.update" })), JSON_CT],
  [
    "a needs_approval",
    JSON.stringify(refRequest({ tool: "refunds.issue", args: { amount: 120, currency: "EUR" } })),
    JSON_CT,
  ],
  ["malformed JSON", "{nope", JSON_CT],
  ["no body", undefined, JSON_CT],
  [
    "text/plain",
    JSON.stringify(refRequest({ tool: "tickets.read" })),
    { "content-type": "text/plain" },
  ],
  ["too deep", deep(40), JSON_CT],
  ["a forbidden key", '{"subject":{"type":"user","id":"a","__proto__":{"x":1}}}', JSON_CT],
  ["a duplicate key", '{"subject":1,"subject":2}', JSON_CT],
  ["not the schema", '{"subject":{"type":"user"}}', JSON_CT],
  ["an array", "[]", JSON_CT],
];

describe.each([
  ["/v1/decisions", (b: string) => b],
  ["/access/v1/evaluation", (b: string) => b],
  ["/v1/data/toolgate/decision", (b: string) => (b.startsWith("{") ? `{"input":${b}}` : b)],
])("%s: the lean path answers as express does", (path, wrap) => {
  test.each(BODIES)("%s", async (_name, body, headers) => {
    const sent = body === undefined ? undefined : wrap(body);
    const lean = await http(base, "POST", path, sent, headers);
    // express: the same route through its router (non-strict: a trailing slash matches)
    const viaExpress = await http(base, "POST", `${path}/`, sent, headers);
    expect(shape(lean)).toEqual(shape(viaExpress));
    expect(lean.status).not.toBe(404);
  });
});

test("a caller's X-Request-ID is echoed on the lean path as through express", async () => {
  const body = JSON.stringify(refRequest({ tool: "tickets.read" }));
  for (const path of ["/v1/decisions", "/v1/decisions/", "/V1/DECISIONS"]) {
    const r = await http(base, "POST", path, body, { ...JSON_CT, "x-request-id": "abc-123" });
    expect(r.status).toBe(200);
    expect(r.headers["x-request-id"]).toBe("abc-123");
  }
});

test("another method or a path no route has still gets express's 405 and 404", async () => {
  const get = await http(base, "GET", "/v1/decisions");
  expect(get.status).toBe(405);
  expect(get.headers.allow).toBe("POST");
  const none = await http(base, "POST", "/v1/decisionz", "{}", JSON_CT);
  expect(none.status).toBe(404);
  expect((none.json as { code: string }).code).toBe("not_found");
  // an OPA path outside the decision document: express's and the lean path's answer agree
  const other = await http(base, "POST", "/v1/data/toolgate/other", '{"input":{}}', JSON_CT);
  const otherExpress = await http(
    base,
    "POST",
    "/v1/data/toolgate/other/",
    '{"input":{}}',
    JSON_CT,
  );
  expect(other.status).toBe(otherExpress.status);
  expect(other.json).toEqual(otherExpress.json);
});
