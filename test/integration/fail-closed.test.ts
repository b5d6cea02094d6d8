/**
 * Fail closed: no bundle, a bad bundle, an evaluation error, malformed policy
 * output, an unknown obligation — never an allow. Real opa-built bundles, real
 * HTTP.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import type { Toolgate } from "../../src/app";
import { buildWasmBundle, tempDir } from "../helpers/opa";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

const allowTickets = refRequest({ tool: "tickets.read" });

async function withToolgate(
  bundle: string,
  fn: (tg: Toolgate, base: string) => Promise<void>,
): Promise<void> {
  const tg = await startTestToolgate({ TOOLGATE_BUNDLE: bundle });
  try {
    await fn(tg, tg.agentServer.url);
  } finally {
    await tg.stop();
  }
}

/** Every face refuses (503) or denies; none allows. */
async function expectNoAllow(base: string): Promise<void> {
  const native = await postJson(base, "/v1/decisions", allowTickets);
  expect(native.status).toBe(503);
  expect((native.json as { code: string }).code).toBe("policy_unavailable");
  const authzen = await postJson(base, "/access/v1/evaluation", allowTickets);
  expect(authzen.status).toBe(503);
  expect(authzen.json).not.toHaveProperty("decision", true);
  const batch = await postJson(base, "/access/v1/evaluations", {
    evaluations: [allowTickets, allowTickets],
  });
  expect(batch.status).toBe(503);
  const opa = await postJson(base, "/v1/data/toolgate/allow", { input: allowTickets });
  expect(opa.status).toBe(503);
  expect(opa.json).not.toHaveProperty("result");
  const ready = await http(base, "GET", "/health/ready");
  expect(ready.status).toBe(503);
  expect((ready.json as { status: string }).status).toBe("not_ready");
  const live = await http(base, "GET", "/health/live");
  expect(live.status).toBe(200);
}

const contractOk = (outcome: string) => `package toolgate
import rego.v1
decision := {"outcome": "${outcome}", "reasons": [{"code": "fixture", "message": "fixture"}], "obligations": []}
`;

describe("no usable bundle: not ready, and no face allows", () => {
  const dir = tempDir();
  const cases: Array<[string, () => string, string]> = [
    ["a missing bundle file", () => join(dir, "nope.tar.gz"), "bundle_not_found"],
    [
      "a file that is not gzip",
      () => {
        const p = join(dir, "garbage.tar.gz");
        writeFileSync(p, "this is not a bundle");
        return p;
      },
      "bundle_unreadable",
    ],
    [
      "gzip of something that is not tar",
      () => {
        const p = join(dir, "notar.tar.gz");
        writeFileSync(p, gzipSync(Buffer.alloc(2048, 7)));
        return p;
      },
      "bundle_unreadable",
    ],
    [
      "a truncated bundle",
      () => {
        const p = join(dir, "truncated.tar.gz");
        const good = buildWasmBundle({ "p.rego": contractOk("deny") });
        writeFileSync(p, readFileSync(good).subarray(0, 200));
        return p;
      },
      "bundle_unreadable",
    ],
    [
      "a bundle without the toolgate/decision entrypoint",
      () =>
        buildWasmBundle(
          { "p.rego": "package other\nimport rego.v1\nx := 1\n" },
          { entrypoints: ["other/x"] },
        ),
      "entrypoint_missing",
    ],
    [
      "a bundle whose policy needs a builtin toolgate lacks",
      () =>
        buildWasmBundle(
          {
            "p.rego": `package toolgate
import rego.v1
decision := {"outcome": "allow", "reasons": [], "obligations": [], "x": http.send({"method": "GET", "url": "http://127.0.0.1:1"})}
`,
          },
          { capabilities: false },
        ),
      "wasm_invalid",
    ],
    [
      "a bundle whose output breaks the contract (smoke test)",
      () =>
        buildWasmBundle({
          "p.rego": 'package toolgate\nimport rego.v1\ndecision := {"outcome": "maybe"}\n',
        }),
      "policy_output_invalid",
    ],
  ];

  test.each(cases)("%s", async (_name, make, code) => {
    await withToolgate(make(), async (tg, base) => {
      expect(tg.bundles.ready()).toBe(false);
      expect(tg.bundles.status().last_error?.code).toBe(code);
      await expectNoAllow(base);
      const status = await http(base, "GET", "/v1/status");
      expect(
        (status.json as { ready: boolean; bundles: Array<{ state: string }> }).bundles[0]?.state,
      ).toBe("ERROR");
    });
  });
});

describe("a loaded policy that misbehaves on some inputs: deny, never allow", () => {
  let bundle: string;
  beforeAll(() => {
    bundle = buildWasmBundle({
      "p.rego": `package toolgate
import rego.v1

tool := input.request.action.name

# smoke test and ordinary tools: a well-formed deny
decision := {"outcome": "deny", "reasons": [{"code": "fixture_deny", "message": "m"}], "obligations": []} if {
  not tool in {"conflict", "bad.output", "weird.obligation", "undefined", "approval.noshape"}
}

# two complete values for one rule: a runtime error inside wasm
decision := {"outcome": "allow", "reasons": [], "obligations": []} if tool == "conflict"
decision := {"outcome": "deny", "reasons": [{"code": "x", "message": "y"}], "obligations": []} if tool == "conflict"

decision := {"outcome": "allow", "reasons": "not-an-array", "obligations": []} if tool == "bad.output"

decision := {"outcome": "allow", "reasons": [], "obligations": [{"id": "o1", "type": "notify_ceo"}]} if {
  tool == "weird.obligation"
}

decision := {"outcome": "needs_approval", "reasons": [{"code": "approval_required", "message": "m"}], "obligations": []} if {
  tool == "approval.noshape"
}
`,
    });
  });

  test.each([
    ["conflict", "evaluation_error"],
    ["bad.output", "policy_output_invalid"],
    ["weird.obligation", "unknown_obligation"],
    ["undefined", "policy_output_invalid"],
    ["approval.noshape", "policy_output_invalid"],
  ])("tool %s → deny with reason %s on every face", async (tool, reason) => {
    await withToolgate(bundle, async (tg, base) => {
      expect(tg.bundles.ready()).toBe(true);
      const req = refRequest({ tool });
      const native = await postJson(base, "/v1/decisions", req);
      expect(native.status).toBe(200);
      const d = native.json as { outcome: string; reasons: Array<{ code: string }> };
      expect(d.outcome).toBe("deny");
      expect(d.reasons.map((r) => r.code)).toEqual([reason]);
      const az = await postJson(base, "/access/v1/evaluation", req);
      expect(az.json).toMatchObject({ decision: false, context: { reason } });
      const opa = await postJson(base, "/v1/data/toolgate/allow", { input: req });
      expect(opa.json).toMatchObject({ result: false });
      // and the sidecar keeps serving
      expect((await http(base, "GET", "/health/ready")).status).toBe(200);
    });
  });
});
