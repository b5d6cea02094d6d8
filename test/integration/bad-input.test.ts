/**
 * Bad input on the agent port and the control port: every client mistake gets
 * a clear 4xx that names the problem (never a crash, a hang or a 5xx), on every
 * face and route that reads JSON, with an X-Request-ID, and the server keeps
 * answering afterwards.
 */
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import type { Toolgate } from "../../src/app";
import {
  http,
  httpExact,
  postJson,
  refRequest,
  startTestToolgate,
  type HttpResult,
} from "../helpers/toolgate";
import { collect } from "../helpers/net";
import { bearer, token } from "../helpers/tokens";

const MiB = 1024 * 1024;
const AGENT = "support-triage";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const JSON_CT = { "content-type": "application/json" };

let tg: Toolgate;
let base: string;
let control: string;

beforeAll(async () => {
  tg = await startTestToolgate({ TOOLGATE_CONTROL_PORT: "0" });
  base = tg.agentServer.url;
  control = tg.controlServer?.url ?? "";
});

afterAll(async () => {
  await tg.stop();
});

// --- helpers -----------------------------------------------------------------

type Json = Record<string, unknown>;

/** A good request the reference policy allows (alice reads her job's customer's tickets). */
function good(): Json {
  return refRequest({ tool: "tickets.read" });
}

/** Deep-copies `v` and applies `edit` to the copy. */
function edited(edit: (r: Json) => void, v: Json = good()): Json {
  const copy = structuredClone(v);
  edit(copy);
  return copy;
}

function obj(v: unknown): Json {
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
  return v as Json;
}

/** `n` nested objects: {d:{d:{...{}}}}. */
function nestObj(n: number): Json {
  let v: Json = {};
  for (let i = 1; i < n; i++) v = { d: v };
  return v;
}

/** `n` nested arrays: [[[...[]]]]. */
function nestArr(n: number): unknown[] {
  let v: unknown[] = [];
  for (let i = 1; i < n; i++) v = [v];
  return v;
}

/**
 * A value carrying `key` as an own property where `placeholder` was
 * (object literals would set the prototype for "__proto__" instead).
 */
function withForbiddenKey(v: Json, key: string): Json {
  const text = JSON.stringify(v).replace('"FORBIDDEN"', JSON.stringify(key));
  return JSON.parse(text) as Json;
}

/** A JSON text of `v` padded with whitespace to exactly `bytes` bytes. */
function padded(v: unknown, bytes: number): string {
  const text = JSON.stringify(v);
  return text + " ".repeat(bytes - Buffer.byteLength(text));
}

/**
 * Sends `chunks` with Transfer-Encoding: chunked (no Content-Length).
 * Resolves with the response even when the server stops reading early.
 */
function sendChunked(
  baseUrl: string,
  path: string,
  chunks: Buffer[],
  headers: Record<string, string>,
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = httpRequest(
      new URL(path, baseUrl),
      { method: "POST", headers: { ...headers, "transfer-encoding": "chunked" } },
      (res) => {
        answered = true;
        collect(res, resolve, reject);
      },
    );
    req.on("error", (e) => {
      if (!answered) reject(e);
    });
    const writeNext = (i: number): void => {
      const c = chunks[i];
      if (c === undefined || answered) {
        req.end();
        return;
      }
      if (req.write(c)) setImmediate(() => writeNext(i + 1));
      else req.once("drain", () => writeNext(i + 1));
    };
    writeNext(0);
  });
}

/** Writes raw bytes on a socket and returns everything the server sends back. */
function rawExchange(data: string, to: string = base): Promise<string> {
  const u = new URL(to);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(u.port), u.hostname, () => socket.write(data));
    let out = "";
    socket.setEncoding("utf8");
    socket.on("data", (c: string) => (out += c));
    socket.on("close", () => resolve(out));
    socket.on("error", (e) => (out === "" ? reject(e) : resolve(out)));
  });
}

// --- the faces ---------------------------------------------------------------

interface Face {
  name: string;
  path: string;
  /** OPA Data API error shape. */
  opa: boolean;
  /** The request body carrying a decision request `r` on this face. */
  wrap(r: unknown): unknown;
  /** Checks a 200 answer to a good request on this face. */
  checkGood(r: HttpResult): void;
}

const FACES: Face[] = [
  {
    name: "native",
    path: "/v1/decisions",
    opa: false,
    wrap: (r) => r,
    checkGood: (r) => expect(obj(r.json).outcome).toBe("allow"),
  },
  {
    name: "authzen evaluation",
    path: "/access/v1/evaluation",
    opa: false,
    wrap: (r) => r,
    checkGood: (r) => expect(obj(r.json).decision).toBe(true),
  },
  {
    // no `evaluations` list: the top level is the single request
    name: "authzen evaluations",
    path: "/access/v1/evaluations",
    opa: false,
    wrap: (r) => r,
    checkGood: (r) => expect(obj(r.json).decision).toBe(true),
  },
  {
    name: "opa decision",
    path: "/v1/data/toolgate/decision",
    opa: true,
    wrap: (r) => ({ input: r }),
    checkGood: (r) => expect(obj(obj(r.json).result).outcome).toBe("allow"),
  },
  {
    name: "opa allow",
    path: "/v1/data/toolgate/allow",
    opa: true,
    wrap: (r) => ({ input: r }),
    checkGood: (r) => expect(obj(r.json).result).toBe(true),
  },
];

interface Expected {
  status: number;
  /** toolgate's error code (errors[0].code on the OPA face). */
  code: string;
  /** What the message must say. */
  message: RegExp;
}

function opaCode(status: number): string {
  if (status === 404) return "resource_not_found";
  if (status === 405) return "method_not_allowed";
  return status < 500 ? "invalid_parameter" : "internal_error";
}

/** Asserts an error response: status, code(s), message, JSON, X-Request-ID echo. */
function expectError(r: HttpResult, opa: boolean, want: Expected, requestId?: string): void {
  const body = r.json as Json | undefined;
  expect(body).toBeDefined();
  expect(String(r.headers["content-type"])).toMatch(/^application\/json/);
  const message = body?.message;
  if (opa) {
    const errors = body?.errors as Array<Json> | undefined;
    expect({ status: r.status, code: body?.code, inner: errors?.[0]?.code }).toEqual({
      status: want.status,
      code: opaCode(want.status),
      inner: want.code,
    });
    expect(typeof errors?.[0]?.message).toBe("string");
  } else {
    expect({ status: r.status, code: body?.code }).toEqual({
      status: want.status,
      code: want.code,
    });
  }
  expect(typeof message).toBe("string");
  expect((message as string).length).toBeGreaterThan(0);
  expect(message).toMatch(want.message);
  if (requestId !== undefined) expect(r.headers["x-request-id"]).toBe(requestId);
  else expect(r.headers["x-request-id"]).toMatch(UUID);
}

/** The server still answers: liveness and a good decision on `face`. */
async function expectStillServing(face?: Face): Promise<void> {
  const live = await http(base, "GET", "/health/live");
  expect(live.status).toBe(200);
  const f = face ?? FACES[0];
  if (f === undefined) throw new Error("no faces");
  const r = await postJson(base, f.path, f.wrap(good()));
  expect(r.status).toBe(200);
  f.checkGood(r);
}

// --- the table: bad request content -------------------------------------------

interface ContentCase {
  name: string;
  /** The decision request (wrapped in {input} on the OPA face). */
  request: unknown;
  want: Expected;
}

const invalid = (message: RegExp): Expected => ({ status: 400, code: "invalid_request", message });
const forbidden = (key: string): Expected => ({
  status: 400,
  code: "forbidden_key",
  message: new RegExp(key),
});
const mismatch = (where: RegExp): Expected => ({
  status: 403,
  code: "agent_mismatch",
  message: where,
});
const tooDeep: Expected = { status: 400, code: "nesting_too_deep", message: /32 levels/ };

const CONTENT_CASES: ContentCase[] = [
  // the top level is not an object
  { name: "top-level array", request: [good()], want: invalid(/object/) },
  { name: "top-level empty array", request: [], want: invalid(/object/) },
  { name: "top-level string", request: "allow me", want: invalid(/object/) },
  { name: "top-level number", request: 42, want: invalid(/object/) },
  { name: "top-level boolean", request: true, want: invalid(/object/) },
  { name: "top-level null", request: null, want: invalid(/object/) },
  // missing members
  { name: "empty object", request: {}, want: invalid(/subject is required/) },
  {
    name: "missing subject",
    request: edited((r) => delete r.subject),
    want: invalid(/subject is required/),
  },
  {
    name: "missing action",
    request: edited((r) => delete r.action),
    want: invalid(/action is required/),
  },
  {
    name: "missing resource",
    request: edited((r) => delete r.resource),
    want: invalid(/resource is required/),
  },
  // subject
  { name: "subject a string", request: { ...good(), subject: "alice" }, want: invalid(/subject/) },
  { name: "subject null", request: { ...good(), subject: null }, want: invalid(/subject/) },
  {
    name: "subject.id a number",
    request: { ...good(), subject: { type: "user", id: 42 } },
    want: invalid(/subject\/id must be string/),
  },
  {
    name: "subject.id empty",
    request: { ...good(), subject: { type: "user", id: "" } },
    want: invalid(/subject\/id/),
  },
  {
    name: "subject.type missing",
    request: { ...good(), subject: { id: "alice" } },
    want: invalid(/subject\/type is required/),
  },
  {
    name: "subject.properties an array",
    request: { ...good(), subject: { type: "user", id: "alice", properties: [] } },
    want: invalid(/subject\/properties/),
  },
  // action
  {
    name: "action.name empty",
    request: { ...good(), action: { name: "" } },
    want: invalid(/action\/name/),
  },
  {
    name: "action.name missing",
    request: { ...good(), action: {} },
    want: invalid(/action\/name is required/),
  },
  {
    name: "action.name a number",
    request: { ...good(), action: { name: 7 } },
    want: invalid(/action\/name must be string/),
  },
  {
    name: "action.name 257 characters",
    request: { ...good(), action: { name: "t".repeat(257) } },
    want: invalid(/action\/name .*256/),
  },
  {
    name: "action a string",
    request: { ...good(), action: "tickets.read" },
    want: invalid(/action/),
  },
  {
    name: "action.properties a string",
    request: { ...good(), action: { name: "tickets.read", properties: "x" } },
    want: invalid(/action\/properties must be object/),
  },
  {
    name: "action.properties.arguments an array",
    request: { ...good(), action: { name: "refunds.issue", properties: { arguments: [10] } } },
    want: invalid(/action\/properties\/arguments must be object/),
  },
  {
    name: "action.properties.call_id a number",
    request: { ...good(), action: { name: "tickets.read", properties: { call_id: 1 } } },
    want: invalid(/action\/properties\/call_id/),
  },
  // resource
  {
    name: "resource.type missing",
    request: { ...good(), resource: { id: "cust_1" } },
    want: invalid(/resource\/type is required/),
  },
  {
    name: "resource.id 1025 characters",
    request: { ...good(), resource: { type: "customer", id: "c".repeat(1025) } },
    want: invalid(/resource\/id .*1024/),
  },
  {
    name: "resource a number",
    request: { ...good(), resource: 1 },
    want: invalid(/resource/),
  },
  // context
  { name: "context a string", request: { ...good(), context: "job_1" }, want: invalid(/context/) },
  { name: "context an array", request: { ...good(), context: [] }, want: invalid(/context/) },
  {
    name: "context.job.customer_id a number",
    request: edited((r) => (obj(obj(r.context).job).customer_id = 1)),
    want: invalid(/context\/job\/customer_id must be string/),
  },
  {
    name: "context.agent a string",
    request: edited((r) => (obj(r.context).agent = AGENT)),
    want: invalid(/context\/agent must be object/),
  },
  // agent mismatch, in each of the three places
  {
    name: "context.agent.id names another agent",
    request: edited((r) => (obj(r.context).agent = { id: "other-agent" })),
    want: mismatch(/context\.agent\.id is "other-agent"/),
  },
  {
    name: "context.agent_id names another agent",
    request: edited((r) => (obj(r.context).agent_id = "other-agent")),
    want: mismatch(/context\.agent_id is "other-agent"/),
  },
  {
    name: "subject.properties.act.sub names another agent",
    request: edited((r) => (obj(r.subject).properties = { act: { sub: "other-agent" } })),
    want: mismatch(/subject\.properties\.act\.sub is "other-agent"/),
  },
  {
    name: "context.agent_id a number",
    request: edited((r) => (obj(r.context).agent_id = 42)),
    want: mismatch(/context\.agent_id is 42/),
  },
  {
    name: "context.agent.id differs only in case",
    request: edited((r) => (obj(r.context).agent = { id: "Support-Triage" })),
    want: mismatch(/context\.agent\.id/),
  },
  // nesting
  {
    name: "objects nested 40 levels deep in context",
    request: edited((r) => (obj(r.context).deep = nestObj(40))),
    want: tooDeep,
  },
  {
    name: "arrays nested 100 levels deep in arguments",
    request: {
      ...good(),
      action: { name: "tickets.read", properties: { arguments: { a: nestArr(100) } } },
    },
    want: tooDeep,
  },
  // prototype-polluting keys at various depths
  {
    name: "__proto__ at the top level",
    request: withForbiddenKey({ ...good(), FORBIDDEN: { admin: true } }, "__proto__"),
    want: forbidden("__proto__"),
  },
  {
    name: "constructor at the top level",
    request: withForbiddenKey({ ...good(), FORBIDDEN: {} }, "constructor"),
    want: forbidden("constructor"),
  },
  {
    name: "__proto__ in subject.properties",
    request: withForbiddenKey(
      {
        ...good(),
        subject: { type: "user", id: "alice", properties: { FORBIDDEN: { role: "admin" } } },
      },
      "__proto__",
    ),
    want: forbidden("__proto__"),
  },
  {
    name: "__proto__ in context.job",
    request: withForbiddenKey(
      edited((r) => (obj(obj(r.context).job).FORBIDDEN = { customer_id: "cust_2" })),
      "__proto__",
    ),
    want: forbidden("__proto__"),
  },
  {
    name: "constructor in action.properties.arguments",
    request: withForbiddenKey(
      {
        ...good(),
        action: {
          name: "refunds.issue",
          properties: { arguments: { FORBIDDEN: { prototype: 1 } } },
        },
      },
      "constructor",
    ),
    want: forbidden("constructor"),
  },
  {
    name: "prototype inside an array in resource.properties",
    request: withForbiddenKey(
      {
        ...good(),
        resource: { type: "customer", id: "cust_1", properties: { tags: [{ FORBIDDEN: 1 }] } },
      },
      "prototype",
    ),
    want: forbidden("prototype"),
  },
];

const contentTable = FACES.flatMap((face) =>
  CONTENT_CASES.map((c, i) => ({ label: `${face.name}: ${c.name}`, face, c, i })),
);

describe("bad request content on every face", () => {
  test.each(contentTable)("$label", async ({ face, c, i }) => {
    const rid = `bad-content-${i}-${face.name.replace(/ /g, "-")}`;
    const r = await postJson(base, face.path, face.wrap(c.request), { "x-request-id": rid });
    expectError(r, face.opa, c.want, rid);
    await expectStillServing(face);
  });
});

// --- the table: bad bytes and headers (sent as-is to every face) ---------------

interface RawCase {
  name: string;
  body: string | Buffer | undefined;
  headers: Record<string, string>;
  /** Send in chunks with Transfer-Encoding: chunked and no Content-Length. */
  chunked?: boolean;
  want: Expected;
  /** Per-face differences (the OPA face takes an absent body as absent input). */
  opaWant?: Expected;
}

const goodText = JSON.stringify(good());
const malformed = (message: RegExp = /not valid JSON/): Expected => ({
  status: 400,
  code: "malformed_json",
  message,
});
const badType = (message: RegExp): Expected => ({
  status: 400,
  code: "unsupported_content_type",
  message,
});
const tooLarge: Expected = { status: 413, code: "body_too_large", message: /1048576/ };

const RAW_CASES: RawCase[] = [
  { name: "truncated JSON", body: goodText.slice(0, 40), headers: JSON_CT, want: malformed() },
  { name: "truncated after a colon", body: '{"subject":', headers: JSON_CT, want: malformed() },
  { name: "trailing garbage", body: `${goodText} xyz`, headers: JSON_CT, want: malformed() },
  {
    name: "two JSON documents",
    body: `${goodText}${goodText}`,
    headers: JSON_CT,
    want: malformed(),
  },
  { name: "single quotes", body: goodText.replace(/"/g, "'"), headers: JSON_CT, want: malformed() },
  {
    name: "unquoted keys",
    body: '{subject:{type:"user",id:"alice"}}',
    headers: JSON_CT,
    want: malformed(),
  },
  {
    name: "trailing comma",
    body: goodText.replace(/}$/, ",}"),
    headers: JSON_CT,
    want: malformed(),
  },
  { name: "NaN literal", body: '{"subject":NaN}', headers: JSON_CT, want: malformed() },
  {
    name: "empty body",
    body: "",
    headers: JSON_CT,
    want: malformed(),
    opaWant: invalid(/input is required/),
  },
  { name: "whitespace-only body", body: "  \n ", headers: JSON_CT, want: malformed() },
  {
    name: "Content-Type text/plain",
    body: goodText,
    headers: { "content-type": "text/plain" },
    want: badType(/text\/plain/),
  },
  {
    name: "Content-Type form-urlencoded",
    body: "subject=alice&action=tickets.read",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    want: badType(/application\/x-www-form-urlencoded/),
  },
  {
    name: "Content-Type multipart/form-data",
    body: goodText,
    headers: { "content-type": "multipart/form-data; boundary=x" },
    want: badType(/multipart\/form-data/),
  },
  {
    name: "Content-Type application/jsonx",
    body: goodText,
    headers: { "content-type": "application/jsonx" },
    want: badType(/application\/jsonx/),
  },
  {
    name: "no Content-Type",
    body: goodText,
    headers: {},
    want: badType(/Content-Type must be application\/json/),
  },
  {
    name: "body of 1 MiB + 1 byte with Content-Length",
    body: padded(good(), MiB + 1),
    headers: JSON_CT,
    want: tooLarge,
  },
  {
    name: "body of 2 MiB with Content-Length",
    body: Buffer.alloc(2 * MiB, 0x20),
    headers: JSON_CT,
    want: tooLarge,
  },
  {
    name: "body of 1 MiB + 1 byte chunked, no Content-Length",
    body: padded(good(), MiB + 1),
    headers: JSON_CT,
    chunked: true,
    want: tooLarge,
  },
  {
    name: "body of 3 MiB chunked, no Content-Length",
    body: Buffer.alloc(3 * MiB, 0x20),
    headers: JSON_CT,
    chunked: true,
    want: tooLarge,
  },
  {
    name: "200000 nested arrays (parser depth)",
    body: "[".repeat(200000) + "]".repeat(200000),
    headers: JSON_CT,
    want: tooDeep,
  },
];

function chunksOf(body: string | Buffer, size: number): Buffer[] {
  const buf = typeof body === "string" ? Buffer.from(body) : body;
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
  return out;
}

const rawTable = FACES.flatMap((face) =>
  RAW_CASES.map((c, i) => ({ label: `${face.name}: ${c.name}`, face, c, i })),
);

describe("bad bytes and headers on every face", () => {
  test.each(rawTable)("$label", async ({ face, c, i }) => {
    const rid = `bad-raw-${i}-${face.name.replace(/ /g, "-")}`;
    const headers = { ...c.headers, "x-request-id": rid };
    const r =
      c.chunked === true && c.body !== undefined
        ? await sendChunked(base, face.path, chunksOf(c.body, 64 * 1024), headers)
        : await http(base, "POST", face.path, c.body, headers);
    expectError(r, face.opa, face.opa && c.opaWant ? c.opaWant : c.want, rid);
    await expectStillServing(face);
  });
});

describe("limits are limits, not off by one", () => {
  test.each(FACES)("$name: a body of exactly 1 MiB is read", async (face) => {
    const r = await http(base, "POST", face.path, padded(face.wrap(good()), MiB), JSON_CT);
    expect(r.status).toBe(200);
    face.checkGood(r);
  });

  test.each(FACES)("$name: a chunked body of exactly 1 MiB is read", async (face) => {
    const body = chunksOf(padded(face.wrap(good()), MiB), 64 * 1024);
    const r = await sendChunked(base, face.path, body, JSON_CT);
    expect(r.status).toBe(200);
    face.checkGood(r);
  });

  // the top-level object is level 1, context level 2, so 30 nested objects in
  // context reach level 32 (the limit) and 31 reach level 33
  test.each(FACES.filter((f) => !f.opa))("$name: 32 levels pass, 33 do not", async (face) => {
    const ok = await postJson(
      base,
      face.path,
      edited((r) => (obj(r.context).deep = nestObj(30))),
    );
    expect(ok.status).toBe(200);
    face.checkGood(ok);
    const deep = await postJson(
      base,
      face.path,
      edited((r) => (obj(r.context).deep = nestObj(31))),
    );
    expectError(deep, false, tooDeep);
  });

  test.each(FACES.filter((f) => f.opa))(
    "$name: 32 levels pass, 33 do not ({input} is level 2)",
    async (face) => {
      const ok = await postJson(base, face.path, {
        input: edited((r) => (obj(r.context).deep = nestObj(29))),
      });
      expect(ok.status).toBe(200);
      face.checkGood(ok);
      const deep = await postJson(base, face.path, {
        input: edited((r) => (obj(r.context).deep = nestObj(30))),
      });
      expectError(deep, true, tooDeep);
    },
  );

  test("action.name of exactly 256 characters is valid (and denied by default)", async () => {
    const r = await postJson(base, "/v1/decisions", {
      ...good(),
      action: { name: "t".repeat(256) },
    });
    expect(r.status).toBe(200);
    expect(obj(r.json).outcome).toBe("deny");
  });

  test("context.agent.id naming this sidecar's own agent is accepted", async () => {
    const r = await postJson(
      base,
      "/v1/decisions",
      edited((q) => (obj(q.context).agent = { id: AGENT })),
    );
    expect(r.status).toBe(200);
    expect(obj(r.json).outcome).toBe("allow");
  });
});

// --- routes and methods --------------------------------------------------------

interface RouteCase {
  name: string;
  method: string;
  path: string;
  opa: boolean;
  want: Expected;
}

const notFound = (message: RegExp): Expected => ({ status: 404, code: "not_found", message });
const notAllowed: Expected = { status: 405, code: "method_not_allowed", message: /POST/ };

const ROUTE_CASES: RouteCase[] = [
  {
    name: "native: POST to a misspelt route",
    method: "POST",
    path: "/v1/decision",
    opa: false,
    want: notFound(/\/v1\/decision\b/),
  },
  {
    name: "native: POST below the decisions route",
    method: "POST",
    path: "/v1/decisions/extra",
    opa: false,
    want: notFound(/\/v1\/decisions\/extra/),
  },
  {
    name: "authzen: POST to an unknown version",
    method: "POST",
    path: "/access/v2/evaluation",
    opa: false,
    want: notFound(/\/access\/v2\/evaluation/),
  },
  {
    name: "authzen: POST to a misspelt route",
    method: "POST",
    path: "/access/v1/evaluationz",
    opa: false,
    want: notFound(/\/access\/v1\/evaluationz/),
  },
  {
    name: "opa: POST to an OPA route toolgate does not serve",
    method: "POST",
    path: "/v1/query",
    opa: false,
    want: notFound(/\/v1\/query/),
  },
  {
    name: "no face: GET an unknown path",
    method: "GET",
    path: "/admin",
    opa: false,
    want: notFound(/\/admin/),
  },
  { name: "native: GET", method: "GET", path: "/v1/decisions", opa: false, want: notAllowed },
  { name: "native: PUT", method: "PUT", path: "/v1/decisions", opa: false, want: notAllowed },
  {
    name: "authzen evaluation: GET",
    method: "GET",
    path: "/access/v1/evaluation",
    opa: false,
    want: notAllowed,
  },
  {
    name: "authzen evaluation: DELETE",
    method: "DELETE",
    path: "/access/v1/evaluation",
    opa: false,
    want: notAllowed,
  },
  {
    name: "authzen evaluations: GET",
    method: "GET",
    path: "/access/v1/evaluations",
    opa: false,
    want: notAllowed,
  },
  {
    name: "opa decision: GET",
    method: "GET",
    path: "/v1/data/toolgate/decision",
    opa: true,
    want: notAllowed,
  },
  {
    name: "opa allow: PATCH",
    method: "PATCH",
    path: "/v1/data/toolgate/allow",
    opa: true,
    want: notAllowed,
  },
  {
    name: "opa: malformed percent-encoding in the data path",
    method: "POST",
    path: "/v1/data/%E0%A4%A",
    opa: true,
    want: invalid(/%E0%A4%A/),
  },
];

describe("unknown routes and wrong methods", () => {
  test.each(ROUTE_CASES.map((c, i) => ({ ...c, i })))("$name", async (c) => {
    const rid = `bad-route-${c.i}`;
    const body = c.method === "GET" || c.method === "DELETE" ? undefined : goodText;
    const r = await http(base, c.method, c.path, body, { ...JSON_CT, "x-request-id": rid });
    expectError(r, c.opa, c.want, rid);
    if (c.want.status === 405) {
      // RFC 9110 §15.5.6: a 405 response MUST carry Allow
      expect(String(r.headers.allow)).toMatch(/\bPOST\b/);
    }
    await expectStillServing();
  });

  test("opa: an undefined document is 200 without a result, as in OPA", async () => {
    const r = await postJson(base, "/v1/data/toolgate/nothing_here", { input: good() });
    expect(r.status).toBe(200);
    expect(obj(r.json)).not.toHaveProperty("result");
    expect(r.headers["x-request-id"]).toMatch(UUID);
  });
});

// --- malformed HTTP framing ----------------------------------------------------

describe("malformed HTTP framing", () => {
  test.each([
    {
      name: "Content-Length together with Transfer-Encoding",
      data:
        "POST /v1/decisions HTTP/1.1\r\nHost: x\r\nX-Request-ID: frame-1\r\n" +
        "Content-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    },
    {
      name: "a non-numeric Content-Length",
      data:
        "POST /v1/decisions HTTP/1.1\r\nHost: x\r\nX-Request-ID: frame-2\r\n" +
        "Content-Type: application/json\r\nContent-Length: abc\r\n\r\n",
    },
  ])("$name: 400 with a JSON body and an X-Request-ID", async ({ data }) => {
    const reply = await rawExchange(data);
    const [head = "", payload = ""] = reply.split("\r\n\r\n");
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(head).toMatch(/\r\nX-Request-ID: \S+/i);
    expect(head).toMatch(/\r\nContent-Type: application\/json/i);
    expect(() => obj(JSON.parse(payload))).not.toThrow();
    await expectStillServing();
  });
});

// --- X-Request-ID on error responses -------------------------------------------

describe("X-Request-ID on error responses", () => {
  const errors = [
    { name: "400 malformed JSON", method: "POST", path: "/v1/decisions", body: "{", status: 400 },
    { name: "404", method: "POST", path: "/nope", body: goodText, status: 404 },
    { name: "405", method: "GET", path: "/access/v1/evaluation", body: undefined, status: 405 },
    {
      name: "400 OPA",
      method: "POST",
      path: "/v1/data/toolgate/decision",
      body: "[]",
      status: 400,
    },
    {
      name: "413",
      method: "POST",
      path: "/access/v1/evaluations",
      body: padded(good(), MiB + 10),
      status: 413,
    },
  ];

  test.each(errors)("$name: issues one when none is sent", async (c) => {
    const r = await http(base, c.method, c.path, c.body, JSON_CT);
    expect(r.status).toBe(c.status);
    expect(r.headers["x-request-id"]).toMatch(UUID);
  });

  test.each(errors)("$name: echoes the one sent", async (c) => {
    const r = await http(base, c.method, c.path, c.body, {
      ...JSON_CT,
      "x-request-id": "req-Abc_123.x",
    });
    expect(r.status).toBe(c.status);
    expect(r.headers["x-request-id"]).toBe("req-Abc_123.x");
  });

  test.each([
    { name: "with a space", id: "two words" },
    { name: "201 characters long", id: "x".repeat(201) },
  ])("$name: an unusable id is replaced, not echoed", async ({ id }) => {
    const r = await http(base, "POST", "/v1/decisions", "{", { ...JSON_CT, "x-request-id": id });
    expect(r.status).toBe(400);
    expect(r.headers["x-request-id"]).toMatch(UUID);
  });
});

// --- AuthZEN evaluations -------------------------------------------------------

const EVALS = "/access/v1/evaluations";

interface EvalItem {
  decision: boolean;
  context?: { error?: { status: number; code: string; message: string } } & Json;
}

function evaluationsOf(r: HttpResult): EvalItem[] {
  expect(r.status).toBe(200);
  const list = obj(r.json).evaluations;
  expect(Array.isArray(list)).toBe(true);
  return list as EvalItem[];
}

/** A batch whose defaults are a good request; items override the action. */
function batch(items: unknown[], semantic?: unknown): Json {
  const top: Json = { ...good(), evaluations: items };
  if (semantic !== undefined) top.options = { evaluations_semantic: semantic };
  return top;
}

const readTickets = { action: { name: "tickets.read" } };
const deleteRecords = { action: { name: "records.delete" } };
const badAction = { action: { name: "" } };

describe("AuthZEN evaluations: request errors", () => {
  const cases: Array<{ name: string; body: unknown; want: Expected }> = [
    {
      name: "evaluations an object",
      body: { ...good(), evaluations: { 0: readTickets } },
      want: invalid(/evaluations must be an array/),
    },
    {
      name: "evaluations a string",
      body: { ...good(), evaluations: "all" },
      want: invalid(/evaluations must be an array/),
    },
    {
      name: "unknown evaluations_semantic",
      body: batch([readTickets], "deny_on_first_permit"),
      want: invalid(/evaluations_semantic .*deny_on_first_permit/),
    },
    {
      name: "evaluations_semantic a number",
      body: batch([readTickets], 1),
      want: invalid(/evaluations_semantic/),
    },
    {
      name: "options a string",
      body: { ...batch([readTickets]), options: "execute_all" },
      want: invalid(/options must be an object/),
    },
    {
      name: "options null",
      body: { ...batch([readTickets]), options: null },
      want: invalid(/options must be an object/),
    },
    {
      name: "257 evaluations",
      body: batch(Array.from({ length: 257 }, () => readTickets)),
      want: invalid(/257.*256/),
    },
    {
      name: "empty evaluations and no defaults",
      body: { evaluations: [] },
      want: invalid(/subject is required/),
    },
    {
      name: "a forbidden key inside an item",
      body: withForbiddenKey(
        batch([readTickets, { action: { name: "x", FORBIDDEN: 1 } }]),
        "__proto__",
      ),
      want: forbidden("__proto__"),
    },
    {
      name: "nesting too deep inside an item",
      body: batch([readTickets, { context: { deep: nestObj(40) } }]),
      want: tooDeep,
    },
    {
      name: "defaults naming another agent, no items",
      body: edited((r) => (obj(r.context).agent_id = "other-agent")),
      want: mismatch(/context\.agent_id/),
    },
  ];

  test.each(cases.map((c, i) => ({ ...c, i })))("$name", async (c) => {
    const rid = `bad-evals-${c.i}`;
    const r = await postJson(base, EVALS, c.body, { "x-request-id": rid });
    expectError(r, false, c.want, rid);
    await expectStillServing(FACES[2]);
  });

  test("256 evaluations (the limit) are all decided", async () => {
    const list = evaluationsOf(
      await postJson(base, EVALS, batch(Array.from({ length: 256 }, () => readTickets))),
    );
    expect(list).toHaveLength(256);
    expect(list.every((e) => e.decision)).toBe(true);
  });
});

describe("AuthZEN evaluations: a bad item is a false decision, not a request error", () => {
  test("execute_all: the bad item is false with context.error, the others are decided", async () => {
    const r = await postJson(
      base,
      EVALS,
      batch([readTickets, badAction, deleteRecords], "execute_all"),
      {
        "x-request-id": "evals-execute-all",
      },
    );
    expect(r.headers["x-request-id"]).toBe("evals-execute-all");
    const list = evaluationsOf(r);
    expect(list).toHaveLength(3);
    const [first, second, third] = list;
    expect(first?.decision).toBe(true);
    expect(first?.context?.error).toBeUndefined();
    expect(second?.decision).toBe(false);
    expect(second?.context?.error).toEqual({
      status: 400,
      code: "invalid_request",
      message: expect.stringMatching(/evaluations\/1\/action\/name/) as unknown,
    });
    expect(third?.decision).toBe(false);
    expect(third?.context?.error).toBeUndefined();
    expect(third?.context?.reason).toEqual(expect.any(String));
  });

  test("execute_all is the default semantic", async () => {
    const list = evaluationsOf(await postJson(base, EVALS, batch([badAction, readTickets])));
    expect(list.map((e) => e.decision)).toEqual([false, true]);
    expect(list[0]?.context?.error?.code).toBe("invalid_request");
  });

  test.each([
    { name: "null", item: null },
    { name: "a string", item: "tickets.read" },
    { name: "an array", item: [readTickets] },
    { name: "a number", item: 3 },
  ])("an item that is $name is false with context.error", async ({ item }) => {
    const list = evaluationsOf(
      await postJson(base, EVALS, batch([readTickets, item, readTickets])),
    );
    expect(list.map((e) => e.decision)).toEqual([true, false, true]);
    expect(list[1]?.context?.error).toEqual({
      status: 400,
      code: "invalid_request",
      message: expect.stringMatching(/evaluations\/1 must be an object/) as unknown,
    });
  });

  test.each([
    { name: "subject an array", item: { subject: [] }, message: /evaluations\/1\/subject/ },
    { name: "subject null", item: { subject: null }, message: /evaluations\/1\/subject/ },
    {
      name: "resource without type",
      item: { resource: { id: "cust_1" } },
      message: /evaluations\/1\/resource\/type is required/,
    },
    { name: "context a string", item: { context: "x" }, message: /evaluations\/1\/context/ },
    {
      name: "action.name 257 characters",
      item: { action: { name: "t".repeat(257) } },
      message: /evaluations\/1\/action\/name/,
    },
  ])("an item with $name is false with context.error naming it", async ({ item, message }) => {
    const list = evaluationsOf(
      await postJson(base, EVALS, batch([readTickets, item, readTickets])),
    );
    expect(list.map((e) => e.decision)).toEqual([true, false, true]);
    expect(list[1]?.context?.error?.code).toBe("invalid_request");
    expect(list[1]?.context?.error?.status).toBe(400);
    expect(list[1]?.context?.error?.message).toMatch(message);
  });

  test("an item naming another agent is false with a 403 agent_mismatch error", async () => {
    const other = { context: { ...obj(good().context), agent: { id: "other-agent" } } };
    const list = evaluationsOf(
      await postJson(base, EVALS, batch([readTickets, other, readTickets])),
    );
    expect(list.map((e) => e.decision)).toEqual([true, false, true]);
    expect(list[1]?.context?.error).toEqual({
      status: 403,
      code: "agent_mismatch",
      message: expect.stringMatching(/context\.agent\.id/) as unknown,
    });
  });

  test("bad defaults make every item that inherits them false, with the item's index", async () => {
    const body = {
      ...batch([readTickets, { subject: { type: "user", id: "alice" } }]),
      subject: { type: "user", id: 5 },
    };
    const list = evaluationsOf(await postJson(base, EVALS, body));
    expect(list).toHaveLength(2);
    expect(list[0]?.decision).toBe(false);
    expect(list[0]?.context?.error?.message).toMatch(/evaluations\/0\/subject\/id/);
    expect(list[1]?.decision).toBe(true);
  });

  test("deny_on_first_deny stops at the bad item", async () => {
    const list = evaluationsOf(
      await postJson(
        base,
        EVALS,
        batch([readTickets, badAction, readTickets, readTickets], "deny_on_first_deny"),
      ),
    );
    expect(list).toHaveLength(2);
    expect(list[0]?.decision).toBe(true);
    expect(list[1]?.decision).toBe(false);
    expect(list[1]?.context?.error?.code).toBe("invalid_request");
  });

  test("permit_on_first_permit passes over a bad item and stops at the first permit", async () => {
    const list = evaluationsOf(
      await postJson(
        base,
        EVALS,
        batch([badAction, readTickets, badAction], "permit_on_first_permit"),
      ),
    );
    expect(list.map((e) => e.decision)).toEqual([false, true]);
    expect(list[0]?.context?.error?.code).toBe("invalid_request");
  });

  afterAll(async () => {
    await expectStillServing(FACES[2]);
  });
});

// --- duplicate keys (I-JSON, RFC 7493 §2.3) ---------------------------------------

/**
 * JSON text of `v` with the member `"DUP":"DUP"` replaced by `raw` (one or
 * more members written as-is: JSON.stringify cannot write a duplicate key).
 */
function withRaw(v: unknown, raw: string): string {
  const text = JSON.stringify(v);
  if (!text.includes('"DUP":"DUP"')) throw new Error("no DUP placeholder");
  return text.replace('"DUP":"DUP"', raw);
}

interface DupCase {
  name: string;
  /** The decision request's JSON text. */
  text: string;
  key: string;
  /** Where the key repeats, from the request's top level. */
  at: string;
}

const refundArgs = (args: Json): Json => ({
  ...good(),
  action: { name: "refunds.issue", properties: { arguments: args } },
});

const DUP_CASES: DupCase[] = [
  {
    name: "the top level (a second subject after the first)",
    text: withRaw({ ...good(), DUP: "DUP" }, '"subject":{"type":"user","id":"mallory"}'),
    key: "subject",
    at: "",
  },
  {
    name: "the refund amount (9000 then 20: the attack in issue #13)",
    text: withRaw(refundArgs({ amount: 9000, DUP: "DUP" }), '"amount":20'),
    key: "amount",
    at: "/action/properties/arguments",
  },
  {
    name: "context.job.customer_id (the data boundary)",
    text: withRaw(
      edited((r) => (obj(obj(r.context).job).DUP = "DUP")),
      '"customer_id":"cust_2"',
    ),
    key: "customer_id",
    at: "/context/job",
  },
  {
    name: "context.agent.id (this agent, then another)",
    text: withRaw(
      edited((r) => (obj(r.context).agent = { id: AGENT, DUP: "DUP" })),
      '"id":"other-agent"',
    ),
    key: "id",
    at: "/context/agent",
  },
  {
    name: "an object inside an array",
    text: withRaw(
      {
        ...good(),
        resource: {
          type: "customer",
          id: "cust_1",
          properties: { tags: [{ k: 1 }, { k: 1, DUP: "DUP" }] },
        },
      },
      '"k":2',
    ),
    key: "k",
    at: "/resource/properties/tags/1",
  },
  {
    name: "a key and its \\u escape (amount, \\u0061mount)",
    text: withRaw(refundArgs({ amount: 9000, DUP: "DUP" }), '"\\u0061mount":20'),
    key: "amount",
    at: "/action/properties/arguments",
  },
  {
    name: "two different escapes of one key at the top level",
    text: withRaw(
      { DUP: "DUP", ...good() },
      '"\\u0073ubject":{"type":"user","id":"mallory"},"subjec\\u0074":{"type":"user","id":"eve"}',
    ),
    key: "subject",
    at: "",
  },
  {
    name: "a key repeated with the same value",
    text: withRaw(refundArgs({ amount: 20, DUP: "DUP" }), '"amount":20'),
    key: "amount",
    at: "/action/properties/arguments",
  },
];

/** The body for `face` with the request written as `text`. */
const wrapText = (face: Face, text: string): string => (face.opa ? `{"input":${text}}` : text);
const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
const duplicate = (key: string, at: string): Expected => ({
  status: 400,
  code: "duplicate_key",
  message: new RegExp(`^duplicate key ${escapeRe(JSON.stringify(key))} at ${escapeRe(at || "/")}$`),
});

const dupTable = FACES.flatMap((face) =>
  DUP_CASES.map((c, i) => ({ label: `${face.name}: ${c.name}`, face, c, i })),
);

describe("duplicate keys are refused on every face, naming the key and its path", () => {
  test.each(dupTable)("$label", async ({ face, c, i }) => {
    const rid = `dup-${i}-${face.name.replace(/ /g, "-")}`;
    const r = await http(base, "POST", face.path, wrapText(face, c.text), {
      ...JSON_CT,
      "x-request-id": rid,
    });
    expectError(r, face.opa, duplicate(c.key, face.opa ? `/input${c.at}` : c.at), rid);
    await expectStillServing(face);
  });

  test("AuthZEN evaluations: a duplicate inside an item refuses the whole request", async () => {
    const text = withRaw(
      batch([
        readTickets,
        {
          action: {
            name: "refunds.issue",
            properties: { arguments: { amount: 9000, DUP: "DUP" } },
          },
        },
      ]),
      '"amount":20',
    );
    const r = await http(base, "POST", EVALS, text, { ...JSON_CT, "x-request-id": "dup-evals" });
    expectError(
      r,
      false,
      duplicate("amount", "/evaluations/1/action/properties/arguments"),
      "dup-evals",
    );
  });

  test("the same request without the duplicate is decided (the check has no false alarm)", async () => {
    const r = await http(
      base,
      "POST",
      "/v1/decisions",
      JSON.stringify(refundArgs({ amount: 20 })),
      JSON_CT,
    );
    expect(r.status).toBe(200);
    expect(obj(r.json).outcome).toBe("allow");
  });
});

// --- the other agent-port routes that read JSON ------------------------------------

interface JsonRoute {
  name: string;
  path: string;
  /** A body of the route's shape with a "DUP":"DUP" member somewhere nested and one at the top. */
  body: Json;
  /** Where the nested placeholder is, and a second member for a key there. */
  nestedAt: string;
  nestedKey: string;
  nestedRaw: string;
  /** A second member for a key the body has at its top level. */
  topKey: string;
  topRaw: string;
}

const OTHER_ROUTES: JsonRoute[] = [
  {
    name: "action report",
    path: "/v1/actions",
    body: {
      decision_id: "00000000-0000-4000-8000-000000000000",
      status: "ok",
      error: { type: "x", DUP: "DUP" },
    },
    nestedAt: "/error",
    nestedKey: "type",
    nestedRaw: '"type":"y"',
    topKey: "status",
    topRaw: '"status":"error"',
  },
  {
    name: "access request",
    path: "/access/v1/requests",
    body: {
      ...refundArgs({ amount: 120, DUP: "DUP" }),
      denial: { evaluation_id: "00000000-0000-4000-8000-000000000000" },
    },
    nestedAt: "/action/properties/arguments",
    nestedKey: "amount",
    nestedRaw: '"amount":20',
    topKey: "subject",
    topRaw: '"subject":{"type":"user","id":"mallory"}',
  },
];

describe("duplicate and forbidden keys on the agent port's other JSON routes", () => {
  const rows = OTHER_ROUTES.flatMap((route) => [
    {
      label: `${route.name}: a duplicate at the top level`,
      route,
      text: JSON.stringify(route.body)
        .replace('"DUP":"DUP"', '"z":1')
        .replace(/}$/, `,${route.topRaw}}`),
      want: duplicate(route.topKey, "/"),
    },
    {
      label: `${route.name}: a duplicate nested`,
      route,
      text: withRaw(route.body, route.nestedRaw),
      want: duplicate(route.nestedKey, route.nestedAt),
    },
    ...["__proto__", "constructor", "prototype"].map((key) => ({
      label: `${route.name}: ${key} nested`,
      route,
      text: withRaw(route.body, `${JSON.stringify(key)}:{"polluted":true}`),
      want: forbidden(key),
    })),
  ]);

  test.each(rows.map((r, i) => ({ ...r, i })))("$label", async ({ route, text, want, i }) => {
    const rid = `other-route-${i}`;
    const r = await http(base, "POST", route.path, text, { ...JSON_CT, "x-request-id": rid });
    expectError(r, false, want, rid);
    await expectStillServing();
  });
});

// --- context.job.id missing, empty or blank ----------------------------------------

const JOB_ID_CASES = [
  { name: "missing", edit: (job: Json) => delete job.id },
  { name: "empty", edit: (job: Json) => (job.id = "") },
  { name: "whitespace only", edit: (job: Json) => (job.id = " \t ") },
];
const jobTable = FACES.flatMap((face) =>
  JOB_ID_CASES.map((c) => ({ label: `${face.name}: context.job.id ${c.name}`, face, c })),
);
/** The outcome and first reason code on any face (AuthZEN's deny carries its reason in context). */
function outcomeOn(face: Face, r: HttpResult): { outcome: unknown; reason: unknown } {
  const body = obj(r.json);
  if (face.path === "/v1/data/toolgate/allow")
    return { outcome: body.result ? "allow" : "deny", reason: undefined };
  if (face.opa) {
    const d = obj(body.result);
    return { outcome: d.outcome, reason: (d.reasons as Json[])[0]?.code };
  }
  if (!face.path.startsWith("/access"))
    return { outcome: body.outcome, reason: (body.reasons as Json[])[0]?.code };
  const ctx = obj(body.context);
  return { outcome: body.decision === true ? "allow" : "deny", reason: ctx.reason };
}

describe("context.job.id missing, empty or blank: denied missing_job (#13 item 3)", () => {
  test.each(jobTable)("$label", async ({ face, c }) => {
    const req = edited((r) => c.edit(obj(obj(r.context).job)));
    const r = await postJson(base, face.path, face.wrap(req));
    expect(r.status).toBe(200);
    const got = outcomeOn(face, r);
    expect(got.outcome).toBe("deny");
    // the OPA allow document is a bare boolean: no reason to check
    if (face.path !== "/v1/data/toolgate/allow") expect(got.reason).toBe("missing_job");
    await expectStillServing(face);
  });
});

// --- the control port ----------------------------------------------------------------

/** Tokens for the control port (the development issuer's keys, real ES256). */
const tokens: Record<"admin" | "approver" | "nobody", string> = {
  admin: "",
  approver: "",
  nobody: "",
};
beforeAll(async () => {
  tokens.admin = await token("olga", { roles: ["admin", "support_manager"] });
  tokens.approver = await token("maria", { roles: ["support_manager"] });
  tokens.nobody = await token("nemo");
});
const asAdmin = (): Record<string, string> => bearer(tokens.admin);

/** The control port still answers: liveness, and an authenticated status. */
async function expectControlServing(): Promise<void> {
  expect((await http(control, "GET", "/health/live")).status).toBe(200);
  const st = await http(control, "GET", "/v1/status", undefined, asAdmin());
  expect(st.status).toBe(200);
  expect(obj(st.json).ready).toBe(true);
  // no bad body set a kill switch
  const ks = await http(control, "GET", "/v1/killswitches", undefined, asAdmin());
  expect(obj(ks.json).killswitches).toEqual([]);
}

/**
 * Lifts any kill switch a row set by mistake, so that one failing row does not
 * fail every row after it (the row itself fails in expectControlServing).
 */
afterEach(async () => {
  if (control === "" || tokens.admin === "") return;
  const ks = await http(control, "GET", "/v1/killswitches", undefined, asAdmin());
  for (const s of (obj(ks.json).killswitches ?? []) as Json[])
    await http(control, "DELETE", `/v1/killswitches/${String(s.id)}`, undefined, asAdmin());
});

const NO_TASK = "apr_doesnotexist0000000000";
const BODY_ROUTES = [
  { name: "approve", path: `/v1/approvals/${NO_TASK}/approve` },
  { name: "deny", path: `/v1/approvals/${NO_TASK}/deny` },
  { name: "kill switch", path: "/v1/killswitches" },
];

const dupKey = (key: string, at: string): Expected => duplicate(key, at);
const CONTROL_BODY_CASES: RawCase[] = [
  { name: "malformed JSON", body: "{", headers: JSON_CT, want: malformed() },
  { name: "truncated after a colon", body: '{"comment":', headers: JSON_CT, want: malformed() },
  {
    name: "trailing garbage",
    body: '{"comment":"ok"} x',
    headers: JSON_CT,
    want: malformed(),
  },
  { name: "two JSON documents", body: "{}{}", headers: JSON_CT, want: malformed() },
  {
    name: "malformed JSON, chunked (no Content-Length)",
    body: '{"comment":',
    headers: JSON_CT,
    chunked: true,
    want: malformed(),
  },
  {
    name: "Content-Type text/plain",
    body: '{"comment":"ok"}',
    headers: { "content-type": "text/plain" },
    want: badType(/text\/plain/),
  },
  {
    name: "Content-Type form-urlencoded",
    body: "comment=ok",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    want: badType(/application\/x-www-form-urlencoded/),
  },
  {
    name: "no Content-Type",
    body: '{"comment":"ok"}',
    headers: {},
    want: badType(/Content-Type must be application\/json/),
  },
  {
    name: "no Content-Type, chunked",
    body: '{"comment":"ok"}',
    headers: {},
    chunked: true,
    want: badType(/Content-Type must be application\/json/),
  },
  {
    name: "body of 1 MiB + 1 byte with Content-Length",
    body: padded({ comment: "ok" }, MiB + 1),
    headers: JSON_CT,
    want: tooLarge,
  },
  {
    name: "body of 2 MiB chunked, no Content-Length",
    body: Buffer.alloc(2 * MiB, 0x20),
    headers: JSON_CT,
    chunked: true,
    want: tooLarge,
  },
  {
    name: "objects nested 40 levels deep",
    body: JSON.stringify({ comment: "ok", x: nestObj(40) }),
    headers: JSON_CT,
    want: tooDeep,
  },
  {
    name: "200000 nested arrays",
    body: "[".repeat(200000) + "]".repeat(200000),
    headers: JSON_CT,
    want: tooDeep,
  },
  {
    name: "a duplicate key at the top level",
    body: '{"comment":"ok","reason":"a","comment":"ok too"}',
    headers: JSON_CT,
    want: dupKey("comment", "/"),
  },
  {
    name: "a duplicate key nested, escaped",
    body: '{"reason":"r","scope":{"tool":"refunds.issue","\\u0074ool":"tickets.read"}}',
    headers: JSON_CT,
    want: dupKey("tool", "/scope"),
  },
  {
    name: "__proto__ at the top level",
    body: '{"__proto__":{"roles":["admin"]},"comment":"ok"}',
    headers: JSON_CT,
    want: forbidden("__proto__"),
  },
  {
    name: "constructor nested",
    body: '{"reason":"r","scope":{"constructor":{"prototype":{}}}}',
    headers: JSON_CT,
    want: forbidden("constructor"),
  },
  {
    name: "prototype in an array",
    body: '{"comment":"ok","x":[{"prototype":1}]}',
    headers: JSON_CT,
    want: forbidden("prototype"),
  },
  {
    name: "a lone surrogate",
    body: '{"comment":"\\ud800"}',
    headers: JSON_CT,
    want: invalid(/surrogate/),
  },
  {
    name: "comment a number",
    body: '{"comment":5}',
    headers: JSON_CT,
    want: invalid(/comment/),
  },
];

const controlBodyTable = BODY_ROUTES.flatMap((route) =>
  CONTROL_BODY_CASES.map((c, i) => ({ label: `${route.name}: ${c.name}`, route, c, i })),
);

describe("control port: bad bodies", () => {
  test.each(controlBodyTable)("$label", async ({ route, c, i }) => {
    const rid = `ctl-body-${i}-${route.name.replace(/ /g, "-")}`;
    const headers = { ...c.headers, ...asAdmin(), "x-request-id": rid };
    const r =
      c.chunked === true && c.body !== undefined
        ? await sendChunked(control, route.path, chunksOf(c.body, 64 * 1024), headers)
        : await http(control, "POST", route.path, c.body, headers);
    expectError(r, false, c.want, rid);
    await expectControlServing();
  });

  test("approve without a body reaches the approval (404 for an unknown one)", async () => {
    const r = await http(control, "POST", `/v1/approvals/${NO_TASK}/approve`, undefined, asAdmin());
    expectError(r, false, { status: 404, code: "approval_not_found", message: /./ });
  });

  test("a body of exactly the configured limit is read", async () => {
    const r = await http(
      control,
      "POST",
      `/v1/approvals/${NO_TASK}/approve`,
      padded({ comment: "ok" }, MiB),
      { ...JSON_CT, ...asAdmin() },
    );
    // read and parsed: the request gets as far as the (unknown) approval
    expectError(r, false, { status: 404, code: "approval_not_found", message: /./ });
  });
});

interface ControlCase {
  name: string;
  method: string;
  path: string;
  body?: string;
  headers: Record<string, string>;
  want: Expected;
  /** The Allow header a 405 must carry. */
  allow?: RegExp;
}

const unauth: Expected = { status: 401, code: "unauthenticated", message: /./ };
const AUTH_ROUTES = [
  { method: "GET", path: "/v1/status", body: undefined },
  { method: "GET", path: "/v1/approvals", body: undefined },
  { method: "POST", path: `/v1/approvals/${NO_TASK}/approve`, body: '{"comment":"ok"}' },
  // no reason: should the token pass by mistake, nothing is switched off
  { method: "POST", path: "/v1/killswitches", body: '{"scope":{"tool":"tickets.read"}}' },
  { method: "DELETE", path: "/v1/killswitches/ks_nope", body: undefined },
];
const AUTH_HEADERS: Array<{ name: string; headers: () => Record<string, string> }> = [
  { name: "no Authorization", headers: () => ({}) },
  { name: "Authorization empty", headers: () => ({ authorization: "" }) },
  { name: "Bearer without a token", headers: () => ({ authorization: "Bearer" }) },
  { name: "Bearer and spaces", headers: () => ({ authorization: "Bearer    " }) },
  { name: "Basic credentials", headers: () => ({ authorization: "Basic b2xnYTpzZWNyZXQ=" }) },
  { name: "a token that is no JWT", headers: () => ({ authorization: "Bearer not-a-jwt" }) },
  { name: "three empty segments", headers: () => ({ authorization: "Bearer .." }) },
  {
    name: "a JWT with alg none",
    headers: () => ({
      authorization: `Bearer ${Buffer.from('{"alg":"none"}').toString("base64url")}.${Buffer.from(
        '{"sub":"olga","roles":["admin"],"iss":"toolgate-dev","aud":"toolgate-control"}',
      ).toString("base64url")}.`,
    }),
  },
  {
    name: "8000 characters of garbage",
    headers: () => ({ authorization: `Bearer ${"A".repeat(8000)}` }),
  },
  { name: "Latin-1 bytes", headers: () => ({ authorization: "Bearer \u00ff\u00fe\u00e9" }) },
  {
    name: "a valid token twice",
    headers: () => ({ authorization: `Bearer ${tokens.admin} ${tokens.admin}` }),
  },
  { name: "the token without Bearer", headers: () => ({ authorization: tokens.admin }) },
];

describe("control port: missing and garbage Authorization", () => {
  const rows = AUTH_ROUTES.flatMap((route) =>
    AUTH_HEADERS.map((h) => ({ label: `${route.method} ${route.path}: ${h.name}`, route, h })),
  );
  test.each(rows.map((r, i) => ({ ...r, i })))("$label", async ({ route, h, i }) => {
    const rid = `ctl-auth-${i}`;
    const r = await http(control, route.method, route.path, route.body, {
      ...JSON_CT,
      ...h.headers(),
      "x-request-id": rid,
    });
    expectError(r, false, unauth, rid);
    expect(String(r.headers["www-authenticate"])).toMatch(/^Bearer/);
    await expectControlServing();
  });

  test.each([
    { name: "a forged token", make: () => token("olga", { roles: ["admin"], forged: true }) },
    {
      name: "an expired token",
      make: () => token("olga", { roles: ["admin"], expiresInSeconds: -120 }),
    },
    {
      name: "another audience",
      make: () => token("olga", { roles: ["admin"], audience: "someone-else" }),
    },
    { name: "another issuer", make: () => token("olga", { roles: ["admin"], issuer: "evil" }) },
  ])("$name: 401 on every route", async ({ make }) => {
    const t = await make();
    for (const route of AUTH_ROUTES) {
      const r = await http(control, route.method, route.path, route.body, {
        ...JSON_CT,
        ...bearer(t),
      });
      expectError(r, false, unauth);
    }
    await expectControlServing();
  });

  test("a token without the role: 403 forbidden, nothing done", async () => {
    const body = '{"reason":"r","scope":{"tool":"tickets.read"}}';
    const ks = await http(control, "POST", "/v1/killswitches", body, {
      ...JSON_CT,
      ...bearer(tokens.approver),
    });
    expectError(ks, false, { status: 403, code: "forbidden", message: /admin/ });
    const rv = await http(
      control,
      "POST",
      `/v1/approvals/${NO_TASK}/revoke`,
      undefined,
      bearer(tokens.nobody),
    );
    expectError(rv, false, { status: 403, code: "forbidden", message: /admin/ });
    await expectControlServing();
  });
});

const longId = "a".repeat(4000);
const noApproval: Expected = { status: 404, code: "approval_not_found", message: /./ };
const noSwitch: Expected = { status: 404, code: "killswitch_not_found", message: /./ };
const badPath: Expected = { status: 400, code: "invalid_request", message: /%E0%A4%A/ };
const noRoute = (m: RegExp): Expected => ({ status: 404, code: "not_found", message: m });
const ID_CASES: Array<Omit<ControlCase, "headers">> = [
  {
    name: "a 4000-character approval id",
    method: "GET",
    path: `/v1/approvals/${longId}`,
    want: noApproval,
  },
  {
    name: "approve a 4000-character id",
    method: "POST",
    path: `/v1/approvals/${longId}/approve`,
    want: noApproval,
  },
  {
    name: "revoke a 4000-character id",
    method: "POST",
    path: `/v1/approvals/${longId}/revoke`,
    want: noApproval,
  },
  {
    name: "delete a 4000-character switch id",
    method: "DELETE",
    path: `/v1/killswitches/${longId}`,
    want: noSwitch,
  },
  {
    name: "a unicode approval id",
    method: "GET",
    path: "/v1/approvals/%E2%9C%93%F0%9F%98%80",
    want: noApproval,
  },
  {
    name: "deny a unicode id",
    method: "POST",
    path: "/v1/approvals/%C3%A9t%C3%A9/deny",
    want: noApproval,
  },
  { name: "a NUL in the id", method: "GET", path: "/v1/approvals/apr_%00x", want: noApproval },
  {
    name: "delete a switch id with a NUL",
    method: "DELETE",
    path: "/v1/killswitches/ks_%00",
    want: noSwitch,
  },
  {
    name: "an encoded path traversal as the id",
    method: "GET",
    path: "/v1/approvals/..%2F..%2Fetc%2Fpasswd",
    want: noApproval,
  },
  {
    name: "approve an encoded traversal",
    method: "POST",
    path: "/v1/approvals/..%2Fkillswitches/approve",
    want: noApproval,
  },
  {
    name: "delete an encoded traversal",
    method: "DELETE",
    path: "/v1/killswitches/..%2F..%2Fapprovals",
    want: noSwitch,
  },
  {
    name: "a dot-dot segment in the path",
    method: "GET",
    path: "/v1/approvals/../../v1/status/x",
    want: noRoute(/\.\./),
  },
  { name: "an encoded dot-dot id", method: "GET", path: "/v1/approvals/%2e%2e", want: noApproval },
  {
    name: "SQL in the id",
    method: "GET",
    path: "/v1/approvals/x'%20OR%20'1'%3D'1",
    want: noApproval,
  },
  {
    name: "malformed percent-encoding in an approval id",
    method: "GET",
    path: "/v1/approvals/%E0%A4%A",
    want: badPath,
  },
  {
    name: "malformed percent-encoding before approve",
    method: "POST",
    path: "/v1/approvals/%E0%A4%A/approve",
    want: badPath,
  },
  {
    name: "malformed percent-encoding in a switch id",
    method: "DELETE",
    path: "/v1/killswitches/%E0%A4%A",
    want: badPath,
  },
  {
    name: "a lone percent sign",
    method: "GET",
    path: "/v1/approvals/%",
    want: { ...badPath, message: /%/ },
  },
  {
    name: "an unknown status filter",
    method: "GET",
    path: "/v1/approvals?status=__proto__",
    want: invalid(/status must be one of/),
  },
];

describe("control port: bad ids and paths", () => {
  test.each(ID_CASES.map((c, i) => ({ ...c, i })))("$name", async (c) => {
    const rid = `ctl-id-${c.i}`;
    const body = c.method === "POST" ? "" : undefined;
    const r = await httpExact(control, c.method, c.path, body, {
      ...asAdmin(),
      "x-request-id": rid,
    });
    expectError(r, false, c.want, rid);
    await expectControlServing();
  });

  test("query strings the routes do not expect are no server error", async () => {
    for (const q of [
      "/v1/approvals?limit=-1",
      "/v1/approvals?limit=1e999&status[]=pending",
      "/v1/approvals?status=pending&status=approved",
      "/v1/killswitches?history=true&limit=abc",
      "/v1/killswitches?history=true&limit=-5",
      "/v1/killswitches?history=true&limit=99999999999",
      "/v1/killswitches?history[x]=true",
    ]) {
      const r = await httpExact(control, "GET", q, undefined, asAdmin());
      expect([q, r.status < 500, typeof obj(r.json)]).toEqual([q, true, "object"]);
    }
    await expectControlServing();
  });
});

const METHOD_CASES: Array<Omit<ControlCase, "headers">> = [
  {
    name: "GET on approve",
    method: "GET",
    path: `/v1/approvals/${NO_TASK}/approve`,
    want: notAllowed,
    allow: /^POST$/,
  },
  {
    name: "PUT on deny",
    method: "PUT",
    path: `/v1/approvals/${NO_TASK}/deny`,
    want: notAllowed,
    allow: /^POST$/,
  },
  {
    name: "DELETE on an approval",
    method: "DELETE",
    path: `/v1/approvals/${NO_TASK}`,
    want: { ...notAllowed, message: /GET/ },
    allow: /^GET, HEAD$/,
  },
  {
    name: "POST on the approvals list",
    method: "POST",
    path: "/v1/approvals",
    want: { ...notAllowed, message: /GET/ },
    allow: /^GET, HEAD$/,
  },
  {
    name: "PUT on kill switches",
    method: "PUT",
    path: "/v1/killswitches",
    want: { ...notAllowed, message: /GET, HEAD, POST/ },
    allow: /^GET, HEAD, POST$/,
  },
  {
    name: "GET on a kill switch",
    method: "GET",
    path: "/v1/killswitches/ks_nope",
    want: { ...notAllowed, message: /DELETE/ },
    allow: /^DELETE$/,
  },
  {
    name: "PATCH on status",
    method: "PATCH",
    path: "/v1/status",
    want: { ...notAllowed, message: /GET/ },
    allow: /^GET, HEAD$/,
  },
  {
    name: "POST on liveness",
    method: "POST",
    path: "/health/live",
    want: { ...notAllowed, message: /GET/ },
    allow: /^GET, HEAD$/,
  },
  { name: "an unknown route", method: "GET", path: "/v1/admin", want: noRoute(/\/v1\/admin/) },
  {
    name: "the agent's decisions route",
    method: "POST",
    path: "/v1/decisions",
    want: noRoute(/\/v1\/decisions/),
  },
];

describe("control port: wrong methods and unknown routes", () => {
  test.each(METHOD_CASES.map((c, i) => ({ ...c, i })))("$name", async (c) => {
    const rid = `ctl-method-${c.i}`;
    const body = c.method === "GET" || c.method === "DELETE" ? undefined : '{"comment":"ok"}';
    const r = await http(control, c.method, c.path, body, {
      ...JSON_CT,
      ...asAdmin(),
      "x-request-id": rid,
    });
    expectError(r, false, c.want, rid);
    if (c.allow) expect(String(r.headers.allow)).toMatch(c.allow);
    await expectControlServing();
  });
});

describe("control port: malformed HTTP", () => {
  test.each([
    {
      name: "Content-Length together with Transfer-Encoding",
      status: 400,
      data:
        "POST /v1/killswitches HTTP/1.1\r\nHost: x\r\n" +
        "Content-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    },
    {
      name: "a non-numeric Content-Length",
      status: 400,
      data: "POST /v1/killswitches HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    },
    {
      name: "headers over the size limit",
      status: 431,
      data: `GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${"A".repeat(20_000)}\r\n\r\n`,
    },
    {
      name: "a request line that is no HTTP",
      status: 400,
      data: "HELLO\r\n\r\n",
    },
  ])("$name: $status with a JSON body", async ({ status, data }) => {
    const reply = await rawExchange(data, control);
    const [head = "", payload = ""] = reply.split("\r\n\r\n");
    expect(head).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(head).toMatch(/\r\nX-Request-ID: \S+/i);
    expect(head).toMatch(/\r\nContent-Type: application\/json/i);
    const body = obj(JSON.parse(payload));
    expect(body.code).toBe("invalid_request");
    expect(String(body.message)).toMatch(/malformed HTTP request/);
    await expectControlServing();
  });
});
