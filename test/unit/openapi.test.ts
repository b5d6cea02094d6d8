/**
 * The published contract stays true: the OpenAPI document parses, references
 * the schema file the server validates with, and describes responses the
 * server actually sends.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Ajv2020 from "ajv/dist/2020";
import addFormats from "ajv-formats";
import { parse } from "yaml";
import type { Toolgate } from "../../src/app";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

const root = join(__dirname, "..", "..");
const doc = parse(readFileSync(join(root, "docs", "openapi.yaml"), "utf8")) as {
  paths: Record<
    string,
    Record<string, { requestBody?: { content: Record<string, { schema: { $ref?: string } }> } }>
  >;
  components: { schemas: Record<string, unknown> };
};

describe("docs/openapi.yaml", () => {
  test("covers every agent-port route", () => {
    expect(Object.keys(doc.paths).sort()).toEqual(
      [
        "/v1/decisions",
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/access/v1/requests",
        "/access/v1/requests/{id}",
        "/access/v1/requests/{id}/cancel",
        "/.well-known/authzen-configuration",
        "/v1/data/{path}",
        "/health/live",
        "/health/ready",
        "/v1/status",
      ].sort(),
    );
  });

  test("decision requests reference the schema the server validates with", () => {
    for (const p of ["/v1/decisions", "/access/v1/evaluation"]) {
      expect(doc.paths[p]?.post?.requestBody?.content["application/json"]?.schema.$ref).toBe(
        "../schemas/decision-request.schema.json",
      );
    }
  });

  describe("responses match the documented schemas", () => {
    let tg: Toolgate;
    const ajv = new Ajv2020({ strict: false });
    addFormats(ajv);
    for (const [name, schema] of Object.entries(doc.components.schemas)) {
      ajv.addSchema(schema as object, `#/components/schemas/${name}`);
    }
    const check = (name: string, value: unknown): void => {
      const v = ajv.getSchema(`#/components/schemas/${name}`);
      if (!v) throw new Error(`no schema ${name}`);
      const ok = v(value);
      expect(v.errors ?? []).toEqual([]);
      expect(ok).toBe(true);
    };
    beforeAll(async () => {
      tg = await startTestToolgate({ TOOLGATE_APPROVAL_REQUEST_LIMIT_MAX: "1" });
    });
    afterAll(async () => {
      await tg.stop();
    });

    test.each([
      ["allow", refRequest({ tool: "accounts.summary.read" })],
      ["deny", refRequest({ tool: "billing.update" })],
      ["needs_approval", refRequest({ tool: "refunds.issue", args: { amount: 120 } })],
    ])("native %s", async (outcome, req) => {
      const res = await postJson(tg.agentServer.url, "/v1/decisions", req);
      expect((res.json as { outcome: string }).outcome).toBe(outcome);
      check("Decision", res.json);
      const az = await postJson(tg.agentServer.url, "/access/v1/evaluation", req);
      check("AuthzenDecision", az.json);
    });

    test("access requests: the task, and the rate-limit error", async () => {
      const ask = async (amount: number) => {
        const req = refRequest({ tool: "refunds.issue", args: { amount } });
        const d = await postJson(tg.agentServer.url, "/v1/decisions", req);
        const evaluationId = (d.json as { access_request: { evaluation_id: string } })
          .access_request.evaluation_id;
        return postJson(tg.agentServer.url, "/access/v1/requests", {
          ...req,
          denial: { evaluation_id: evaluationId },
        });
      };
      const first = await ask(120);
      expect(first.status).toBe(201);
      check("AccessRequestTask", first.json);
      const limited = await ask(121);
      expect(limited.status).toBe(429);
      check("RateLimitError", limited.json);
    });

    test("errors", async () => {
      const res = await postJson(tg.agentServer.url, "/v1/decisions", { subject: 1 });
      expect(res.status).toBe(400);
      check("Error", res.json);
    });
  });
});
