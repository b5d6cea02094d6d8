/**
 * The published contracts stay true: docs/openapi.yaml (agent port),
 * docs/openapi-control.yaml (control port, and `toolgate control`'s human
 * API) and docs/openapi-fleet.yaml (`toolgate control`'s sidecar API) are
 * valid OpenAPI 3.1; they document exactly the routes the real
 * express apps register (read from the apps' router stacks); they reference
 * the schema files the server validates bodies with; and every error code
 * they name is one of the registry's, at the registry's status.
 * Real responses are checked against them in
 * test/integration/openapi-conformance.test.ts.
 */
import type { Express } from "express";
import { METHODS as METHODS_ALL, type Server } from "node:http";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import { compileConfig } from "../../src/config";
import { createControlServiceApp, type ControlServiceDeps } from "../../src/control";
import { ERRORS } from "../../src/errors/registry";
import { silentLogger } from "../../src/shared/log";
import {
  DOC_FILES,
  expectResponseMatches,
  jsonSchemas,
  openapiDoc,
  type DocFile,
  type OpenApiDoc,
} from "../helpers/openapi";
import { startTestToolgate } from "../helpers/toolgate";

interface OpenApiValidator {
  validate(spec: Record<string, unknown>): Promise<{ valid: boolean; errors?: unknown }>;
  addSpecRef(spec: Record<string, unknown>, uri: string): Promise<void>;
}

/** The validator is an ES module: loaded with import() (jest runs with --experimental-vm-modules). */
async function newValidator(): Promise<OpenApiValidator> {
  const name = "@seriousme/openapi-schema-validator";
  const mod = (await import(name)) as { Validator: new () => OpenApiValidator };
  return new mod.Validator();
}

/** Registry codes the CLI raises, never an HTTP port. */
const NOT_ON_A_PORT = ["usage", "config_invalid", "config_unreadable", "port_in_use"];

/** docs/openapi.yaml's ErrorCode: the codes an error body may carry (both documents use it). */
const errorCodeEnum = (): string[] =>
  (openapiDoc("openapi.yaml").components.schemas as Record<string, { enum?: string[] }>).ErrorCode
    ?.enum ?? [];

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/** `METHOD /template` for every operation a document describes. */
function documented(doc: OpenApiDoc): string[] {
  const out: string[] = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const m of Object.keys(item))
      if (METHODS.includes(m)) out.push(`${m.toUpperCase()} ${path}`);
  }
  return out.sort();
}

/** express's `:id` and `*path` as OpenAPI's `{id}` and `{path}`. */
const template = (p: string): string =>
  p.replace(/:([A-Za-z_]\w*)/g, "{$1}").replace(/\*([A-Za-z_]\w*)/g, "{$1}");

/** `METHOD /template` for every route an express app registers (app.all handlers, the 405s, skipped). */
function registered(app: Express): string[] {
  const out = new Set<string>();
  for (const layer of app.router.stack) {
    const route = layer.route as
      { path: string | string[]; stack: Array<{ method?: string }> } | undefined;
    if (route === undefined) continue;
    const paths = Array.isArray(route.path) ? route.path : [route.path];
    // app.all (the 405 answers) registers every method
    if (new Set(route.stack.map((l) => l.method)).size >= METHODS_ALL.length) continue;
    for (const l of route.stack) {
      if (typeof l.method !== "string" || l.method === "") continue;
      for (const p of paths) out.add(`${l.method.toUpperCase()} ${template(p)}`);
    }
  }
  return [...out].sort();
}

/** The express app a started server runs. */
const appOf = (server: Server): Express => server.listeners("request")[0] as Express;

/** Deep copy with every `$ref` that leaves a schema file made relative to docs/ (the validator resolves no relative URIs). */
function relocated(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(relocated);
  if (typeof schema !== "object" || schema === null) return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) {
    out[k] =
      k === "$ref" && typeof v === "string" && !v.startsWith("#")
        ? `../schemas/${v}`
        : relocated(v);
  }
  return out;
}

describe.each(DOC_FILES)("docs/%s", (file: DocFile) => {
  const doc = openapiDoc(file);

  test("is a valid OpenAPI 3.1 document, every $ref resolving", async () => {
    expect(doc.openapi).toMatch(/^3\.1\./);
    const v = await newValidator();
    for (const [name, schema] of jsonSchemas()) {
      await v.addSpecRef(relocated(schema) as Record<string, unknown>, `../schemas/${name}`);
    }
    if (file !== "openapi.yaml")
      await v.addSpecRef(structuredClone(openapiDoc("openapi.yaml")), "openapi.yaml");
    const res = await v.validate(structuredClone(doc));
    expect(res.errors).toBeUndefined();
    expect(res.valid).toBe(true);
  });

  test("every error code it names is in the registry, at the registry's status", () => {
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        if (!METHODS.includes(method)) continue;
        const where = `${method.toUpperCase()} ${path}`;
        const codes = op["x-error-codes"] ?? {};
        for (const [status, list] of Object.entries(codes)) {
          expect({ where, status, documented: op.responses[status] !== undefined }).toEqual({
            where,
            status,
            documented: true,
          });
          for (const code of list) {
            const entry = (ERRORS as Record<string, { status: number }>)[code];
            expect({ where, code, status: entry?.status }).toEqual({
              where,
              code,
              status: Number(status),
            });
          }
        }
        // every coded error response lists its codes
        for (const [status, r] of Object.entries(op.responses)) {
          const coded = JSON.stringify(r).includes("#/components/responses/Error");
          if (coded)
            expect({ where, status, listed: codes[status] !== undefined }).toEqual({
              where,
              status,
              listed: true,
            });
        }
      }
    }
  });

  test("the error body's code is one of the codes the ports answer: every registry code but the verifier's, the MCP proxy's and the CLI's", () => {
    const error = doc.components.schemas?.Error as { properties: { code: { $ref: string } } };
    expect(error.properties.code.$ref).toBe(
      file === "openapi.yaml"
        ? "#/components/schemas/ErrorCode"
        : "openapi.yaml#/components/schemas/ErrorCode",
    );
    const listed = [...errorCodeEnum()].sort();
    const offPort = (c: string): boolean =>
      c.startsWith("grant_") || c.startsWith("mcp_") || NOT_ON_A_PORT.includes(c);
    expect(listed).toEqual(
      Object.keys(ERRORS)
        .filter((c) => !offPort(c))
        .sort(),
    );
    // and each operation's codes are among them
    for (const item of Object.values(doc.paths))
      for (const op of Object.values(item))
        for (const codes of Object.values(op["x-error-codes"] ?? {}))
          for (const c of codes) expect(listed).toContain(c);
  });
});

describe("request bodies reference the schema the server validates with", () => {
  const body = (file: DocFile, method: string, path: string): string | undefined =>
    (
      openapiDoc(file).paths[path]?.[method]?.requestBody as
        { content: Record<string, { schema: { $ref?: string } }> } | undefined
    )?.content["application/json"]?.schema.$ref;

  test.each([
    ["openapi.yaml", "post", "/v1/decisions", "decision-request"],
    ["openapi.yaml", "post", "/access/v1/evaluation", "decision-request"],
    ["openapi.yaml", "post", "/access/v1/search/action", "action-search"],
    ["openapi.yaml", "post", "/access/v1/requests", "access-request"],
    ["openapi.yaml", "post", "/v1/actions", "action-report"],
    ["openapi-control.yaml", "post", "/v1/killswitches", "kill-switch"],
    ["openapi-control.yaml", "post", "/v1/approvals/{id}/approve", "approval-decision"],
    ["openapi-control.yaml", "post", "/v1/approvals/{id}/deny", "approval-decision"],
    ["openapi-fleet.yaml", "post", "/fleet/v1/access-requests", "fleet-access-request"],
    ["openapi-fleet.yaml", "post", "/fleet/v1/access-requests/{id}/cancel", "fleet-cancel"],
    ["openapi-fleet.yaml", "post", "/fleet/v1/approvals/{id}/use", "fleet-approval-use"],
    ["openapi-fleet.yaml", "post", "/fleet/v1/budgets/reserve", "fleet-budget-reserve"],
    ["openapi-fleet.yaml", "post", "/fleet/v1/budgets/resolve", "fleet-budget-resolve"],
    ["openapi-fleet.yaml", "post", "/fleet/v1/rates/lease", "fleet-rate-lease"],
    ["openapi-fleet.yaml", "post", "/fleet/v1/hello", "fleet-hello"],
  ] as const)("%s %s %s: %s", (file, method, path, schema) => {
    expect(body(file, method, path)).toBe(`../schemas/${schema}.schema.json`);
  });
});

describe("the documents cover the real apps' routes, and nothing else", () => {
  let tg: Toolgate;
  beforeAll(async () => {
    tg = await startTestToolgate({ TOOLGATE_CONTROL_PORT: "0" });
  });
  afterAll(async () => {
    await tg.stop();
  });

  test("agent port", () => {
    expect(documented(openapiDoc("openapi.yaml"))).toEqual(
      registered(appOf(tg.agentServer.server)),
    );
  });

  test("control port: a sidecar's, and toolgate control's human API and sidecar API", () => {
    const sidecar = registered(appOf(tg.controlServer!.server));
    expect(sidecar).toContain("GET /.well-known/jwks.json"); // grants on: the keys are served
    // toolgate control's routes; its deps are only reached once a request comes
    const config = compileConfig(
      {},
      {
        TOOLGATE_CONTROL_PORT: "0",
        TOOLGATE_LOG_LEVEL: "silent",
        TOOLGATE_STATE_DIR: mkdtempSync(join(tmpdir(), "toolgate-openapi-")),
        TOOLGATE_AUDIT_HMAC_KEY: "test-key-0123456789abcdef",
        TOOLGATE_POSTGRES_URL: "postgres://127.0.0.1:1/none",
      },
    );
    const service = registered(
      createControlServiceApp({
        config,
        log: silentLogger,
        version: "0",
        replica: "r1",
      } as unknown as ControlServiceDeps),
    );
    const wire = (r: string): boolean => r.split(" ")[1]!.startsWith("/fleet/v1/");
    const human = service.filter((r) => !wire(r));
    expect(documented(openapiDoc("openapi-control.yaml"))).toEqual(
      [...new Set([...sidecar, ...human])].sort(),
    );
    // the sidecar API: its own document
    expect(documented(openapiDoc("openapi-fleet.yaml"))).toEqual(service.filter(wire));
  });
});

describe("expectResponseMatches, the conformance test's oracle, refuses what the documents do not say", () => {
  const agent = openapiDoc("openapi.yaml");
  const control = openapiDoc("openapi-control.yaml");
  const decision = {
    decision_id: "6f1c1c4e-7f1b-4c1e-9d55-2d1f0f3c1a00",
    outcome: "allow",
    reasons: [],
    obligations: [],
    policy: { bundle: "support", revision: "r1" },
    evaluated_at: "2026-01-01T00:00:00.000Z",
  };

  test("a body that matches passes", () => {
    expect(() =>
      expectResponseMatches(agent, "POST", "/v1/decisions", 200, decision),
    ).not.toThrow();
    expect(() =>
      expectResponseMatches(agent, "POST", "/v1/actions", 409, {
        code: "action_not_allowed",
        message: "m",
      }),
    ).not.toThrow();
  });

  test.each([
    ["an unknown outcome", 200, { ...decision, outcome: "maybe" }, /does not match/],
    ["a missing member", 200, { ...decision, policy: undefined }, /does not match/],
    ["a bad $ref'd member", 200, { ...decision, reasons: [{ code: 1 }] }, /does not match/],
    ["an undocumented status", 418, { code: "not_found", message: "m" }, /not documented/],
    [
      "a code the operation does not list",
      409,
      { code: "idempotency_conflict", message: "m" },
      /x-error-codes/,
    ],
    ["a code no registry has", 409, { code: "no_such_code", message: "m" }, /does not match/],
  ])("%s", (_what, status, body, error) => {
    const path = status === 409 ? "/v1/actions" : "/v1/decisions";
    expect(() => expectResponseMatches(agent, "POST", path, status, body)).toThrow(error);
  });

  test("across documents and into schemas/: the control port's error codes come from the agent document", () => {
    expect(() =>
      expectResponseMatches(control, "DELETE", "/v1/killswitches/{id}", 404, {
        code: "killswitch_not_found",
        message: "m",
      }),
    ).not.toThrow();
    expect(() =>
      expectResponseMatches(control, "GET", "/v1/approvals", 200, { approvals: [{ id: "x" }] }),
    ).toThrow(/does not match/);
  });
});
