/**
 * A policy steers redaction: its decision may carry `mask` ops (remove, hash,
 * replace, reveal) that apply to spans, logs and the trail alike; a malformed
 * mask is a contract breach and fails closed.
 */
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace";
import { captureLogger } from "../helpers/capture";
import { buildWasmBundle } from "../helpers/opa";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

const policy = (mask: string) => `package toolgate
import rego.v1
decision := {
  "outcome": "allow",
  "reasons": [{"code": "granted", "message": "fixture"}],
  "obligations": [],
  "mask": ${mask},
} if input.request.action.name == "masked.tool"
decision := {"outcome": "deny", "reasons": [{"code": "x", "message": "y"}], "obligations": []} if {
  input.request.action.name != "masked.tool"
}
`;

test("mask ops from the policy shape what audit records", async () => {
  const bundle = buildWasmBundle({
    "p.rego": policy(`[
      {"op": "remove", "path": "/action/properties/arguments/body"},
      {"op": "hash", "path": "/action/properties/arguments/email"},
      {"op": "replace", "path": "/action/properties/arguments/phone", "value": "[phone]"},
      {"op": "reveal", "path": "/action/properties/arguments/session_token"}
    ]`),
  });
  const exporter = new InMemorySpanExporter();
  const logs = captureLogger();
  const tg = await startTestToolgate(
    { TOOLGATE_BUNDLE: bundle },
    { spanExporter: exporter, log: logs.log },
  );
  try {
    const res = await postJson(
      tg.agentServer.url,
      "/v1/decisions",
      refRequest({
        tool: "masked.tool",
        args: {
          body: "Dear customer, the private text",
          email: "bob@example.com",
          phone: "+44 20 7946 0000",
          session_token: "visible-by-policy-choice",
          password: "hunter2-but-longer",
        },
      }),
    );
    expect(res.status).toBe(200);
    expect(res.json).not.toHaveProperty("mask"); // internal: never sent to the agent
    await tg.auditor?.flush();
    const span = exporter.getFinishedSpans().find((s) => s.name === "authorize masked.tool");
    const args = JSON.parse(span?.attributes["toolgate.tool.arguments"] as string) as Record<
      string,
      unknown
    >;
    expect(args).not.toHaveProperty("body");
    expect(args.email).toMatch(/^hmac-sha256:/);
    expect(args.phone).toBe("[phone]");
    expect(args.session_token).toBe("visible-by-policy-choice"); // the explicit allowance
    expect(args.password).toMatch(/^hmac-sha256:/); // defaults still apply elsewhere
    const line = logs.lines().find((l) => l.event === "decision");
    expect(line?.arguments).toEqual(args);
    expect(logs.raw()).not.toContain("private text");
    expect(logs.raw()).not.toContain("bob@example.com");
  } finally {
    await tg.stop();
  }
});

test("a malformed mask fails closed: deny with policy_output_invalid", async () => {
  const bundle = buildWasmBundle({ "p.rego": policy(`[{"op": "explode", "path": "/x"}]`) });
  const tg = await startTestToolgate({ TOOLGATE_BUNDLE: bundle });
  try {
    const res = await postJson(
      tg.agentServer.url,
      "/v1/decisions",
      refRequest({ tool: "masked.tool" }),
    );
    expect(res.json).toMatchObject({
      outcome: "deny",
      reasons: [{ code: "policy_output_invalid" }],
    });
  } finally {
    await tg.stop();
  }
});
