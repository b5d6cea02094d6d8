/**
 * Audit of grants: the decision span carries the grant's jti, the trail
 * record and the log line carry {jti, aud, exp} — never the token.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace";
import type { Toolgate } from "../../src/app";
import { captureLogger } from "../helpers/capture";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

let tg: Toolgate;
const exporter = new InMemorySpanExporter();
const logs = captureLogger();

beforeAll(async () => {
  tg = await startTestToolgate({}, { spanExporter: exporter, log: logs.log });
});
afterAll(async () => {
  await tg.stop();
});

function trail(): Array<{ kind: string; record: Record<string, unknown> }> {
  const dir = tg.config.audit.trail.dir;
  return readdirSync(dir)
    .filter((f) => f.endsWith(".jsonl"))
    .sort()
    .flatMap((f) => readFileSync(join(dir, f), "utf8").split("\n"))
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as { kind: string; record: Record<string, unknown> });
}

test("the grant's jti joins the backend's log to the decision span, trail record and log line", async () => {
  const res = await postJson(
    tg.agentServer.url,
    "/v1/decisions",
    refRequest({ tool: "refunds.issue", args: { amount: 20 } }),
  );
  const d = res.json as { decision_id: string; outcome: string; grant: string };
  expect(d.outcome).toBe("allow");
  const claims = JSON.parse(
    Buffer.from(d.grant.split(".")[1] ?? "", "base64url").toString("utf8"),
  ) as { jti: string; aud: string; exp: number };
  const deny = await postJson(
    tg.agentServer.url,
    "/v1/decisions",
    refRequest({ tool: "records.delete" }),
  );
  const denyId = (deny.json as { decision_id: string }).decision_id;
  await tg.auditor?.flush();

  const spans = exporter.getFinishedSpans();
  const span = spans.find((s) => s.attributes["toolgate.decision.id"] === d.decision_id);
  expect(span?.attributes).toMatchObject({
    "toolgate.grant.jti": claims.jti,
    "toolgate.grant.audience": "tool:refunds.issue",
    "toolgate.grant.expires_at": claims.exp,
  });
  const denySpan = spans.find((s) => s.attributes["toolgate.decision.id"] === denyId);
  expect(denySpan?.attributes).not.toHaveProperty("toolgate.grant.jti");

  const grant = { jti: claims.jti, aud: claims.aud, exp: claims.exp };
  const rec = trail().find((r) => r.kind === "decision" && r.record.decision_id === d.decision_id);
  expect(rec?.record.grant).toEqual(grant);
  const line = logs.lines().find((l) => l.event === "decision" && l.decision_id === d.decision_id);
  expect(line?.grant).toEqual(grant);

  // the token itself is nowhere
  const signature = d.grant.split(".")[2] as string;
  expect(JSON.stringify(trail())).not.toContain(signature);
  expect(logs.raw()).not.toContain(signature);
  for (const s of spans) expect(JSON.stringify(s.attributes)).not.toContain(signature);
});
