/**
 * Issue #13, item 1: a bundle author must not reach Object.prototype. Real
 * parts throughout: the committed reference bundle rewritten with a polluting
 * data.json (and signed by the real `opa sign`), a real toolgate on loopback
 * reading it from a watched file, real control-port tokens, every face over
 * real HTTP. No timing assertions: every wait is "until the status says so".
 */
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import type { Toolgate } from "../../src/app";
import type { BundleStatus } from "../../src/bundles";
import { keyPair, opaSign, rewriteBundle, until } from "../helpers/bundles";
import { tempDir } from "../helpers/opa";
import { bearer, token } from "../helpers/tokens";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

jest.setTimeout(120_000);

const REFERENCE = join(__dirname, "..", "..", "bundles", "support-triage.tar.gz");
const BUILTIN_KEYS = Reflect.ownKeys(Object.prototype);

/** What Object.prototype holds beyond its built-in members (must stay empty). */
function pollution(): PropertyKey[] {
  return Reflect.ownKeys(Object.prototype).filter((k) => !BUILTIN_KEYS.includes(k));
}

afterEach(() => {
  // On the unfixed code the attack succeeds: undo it so one failure does not cascade.
  for (const k of pollution()) delete (Object.prototype as Record<PropertyKey, unknown>)[k];
});

/**
 * The reference bundle with `prefix` spliced in front of its data.json's
 * members, as text (so the JSON holds exactly the attacker's bytes), or with
 * one more data file `file` holding `body`.
 */
function hostile(prefix: string): Promise<string> {
  return rewriteBundle(REFERENCE, (m) => {
    const text = (m.get("/data.json") as Buffer).toString("utf8").trim();
    m.set("/data.json", Buffer.from(`{${prefix},${text.slice(1)}`));
  });
}
function withFile(file: string, body: string): Promise<string> {
  return rewriteBundle(REFERENCE, (m) => m.set(file, Buffer.from(body)));
}

const POLLUTE_SUBJECT = '"__proto__":{"subject":"x","agent":"evil"}';

/** Waits until `cond` holds; fails after `ms` (generous: a bound, not a timing assertion). */
async function within(cond: () => boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  await until(() => {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    return cond();
  });
}

const status = (tg: Toolgate): BundleStatus => tg.bundles.status();
const refund = () => refRequest({ tool: "refunds.issue", args: { amount: 10, currency: "EUR" } });

/** The kill-switched refund on all three faces: each must deny with tool_disabled. */
async function expectSwitchDeniesEverywhere(tg: Toolgate): Promise<void> {
  const base = tg.agentServer.url;
  const native = await postJson(base, "/v1/decisions", refund());
  expect(native.status).toBe(200);
  expect(native.json).toMatchObject({
    outcome: "deny",
    reasons: [expect.objectContaining({ code: "tool_disabled" })],
  });
  const authzen = await postJson(base, "/access/v1/evaluation", refund());
  expect(authzen.status).toBe(200);
  expect(authzen.json).toMatchObject({ decision: false, context: { reason: "tool_disabled" } });
  const opa = await postJson(base, "/v1/data/toolgate/decision", { input: refund() });
  expect(opa.status).toBe(200);
  expect(opa.json).toMatchObject({
    result: { outcome: "deny", reasons: [expect.objectContaining({ code: "tool_disabled" })] },
  });
}

/** A control-port call with a real admin token: verifies only if jose's options are unpolluted. */
async function controlTokenWorks(tg: Toolgate): Promise<number> {
  const res = await http(
    tg.controlServer?.url ?? "",
    "GET",
    "/v1/killswitches",
    undefined,
    bearer(await token("olga", { roles: ["admin"] })),
  );
  return res.status;
}

function watchedFile(first: string): { path: string; env: Record<string, string> } {
  const path = join(tempDir("toolgate-pp-"), "policy.tar.gz");
  copyFileSync(first, path);
  return {
    path,
    env: {
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_BUNDLE: path,
      TOOLGATE_POLICY_FILE_WATCH_INTERVAL_MS: "100",
    },
  };
}

test("booting with a polluting bundle: refused with bundle_data_invalid naming the path, nothing reaches Object.prototype", async () => {
  const { env } = watchedFile(await hostile(POLLUTE_SUBJECT));
  const tg = await startTestToolgate(env);
  try {
    expect(pollution()).toEqual([]);
    expect(status(tg).revision).toBeNull();
    expect(status(tg).last_error?.code).toBe("bundle_data_invalid");
    expect(status(tg).last_error?.message).toBe('/data.json: forbidden key "__proto__" at /');
    const d = await postJson(tg.agentServer.url, "/v1/decisions", refund());
    expect(d.status).toBe(503);
    expect(d.json).toMatchObject({ code: "policy_unavailable" });
    expect(await controlTokenWorks(tg)).toBe(200);
  } finally {
    await tg.stop();
  }
});

describe("hot-swapping to a polluting bundle (file source, watched)", () => {
  let tg: Toolgate;
  let path: string;
  let switchId: string;

  beforeAll(async () => {
    const w = watchedFile(REFERENCE);
    path = w.path;
    tg = await startTestToolgate(w.env);
    const res = await postJson(
      tg.controlServer?.url ?? "",
      "/v1/killswitches",
      { scope: { tool: "refunds.issue" }, reason: "refund backend misbehaving" },
      bearer(await token("olga", { roles: ["admin"] })),
    );
    expect(res.status).toBe(201);
    switchId = (res.json as { id: string }).id;
  });
  afterAll(async () => {
    await tg.stop();
  });

  test("the kill switch denies on every face before the swap", async () => {
    expect(status(tg)).toMatchObject({ state: "OK", last_error: null });
    await expectSwitchDeniesEverywhere(tg);
  });

  test.each([
    ["a top-level __proto__", () => hostile(POLLUTE_SUBJECT), "/data.json", "/"],
    [
      "a nested __proto__",
      () => hostile('"a":{"b":{"__proto__":{"subject":"x"}}}'),
      "/data.json",
      "/a/b",
    ],
    [
      "constructor.prototype",
      () => hostile('"constructor":{"prototype":{"subject":"x"}}'),
      "/data.json",
      "/",
    ],
    [
      "a data.yaml with __proto__",
      () => withFile("/toolgate/extra/data.yaml", "__proto__:\n  subject: x\n"),
      "/toolgate/extra/data.yaml",
      "/",
    ],
    [
      "a data directory named __proto__",
      () => withFile("/toolgate/__proto__/data.json", '{"subject":"x"}'),
      "/toolgate/__proto__/data.json",
      "",
    ],
  ])(
    "%s: refused naming the path; the switch still denies on native, AuthZEN and OPA; control tokens verify",
    async (_what, make, file, at) => {
      const before = status(tg).last_successful_activation;
      copyFileSync(await make(), path);
      await within(
        () => (status(tg).last_error?.message ?? "").startsWith(file),
        `the refusal of ${file}`,
      );
      expect(pollution()).toEqual([]);
      const err = status(tg).last_error;
      expect(err?.code).toBe("bundle_data_invalid");
      expect(err?.message).toContain(`${file}: forbidden key`);
      if (at !== "") expect(err?.message).toMatch(new RegExp(` at ${at}$`));
      expect(status(tg).last_successful_activation).toBe(before);
      await expectSwitchDeniesEverywhere(tg);
      expect(await controlTokenWorks(tg)).toBe(200);
      // back to the clean bundle: still clean, the switch still applies
      copyFileSync(REFERENCE, path);
      await within(() => status(tg).last_successful_activation !== before, "the clean bundle");
      expect(pollution()).toEqual([]);
      await expectSwitchDeniesEverywhere(tg);
    },
  );

  test("the switch was never lifted", async () => {
    const res = await http(
      tg.controlServer?.url ?? "",
      "GET",
      "/v1/killswitches",
      undefined,
      bearer(await token("olga", { roles: ["admin"] })),
    );
    expect((res.json as { killswitches: Array<{ id: string }> }).killswitches).toEqual([
      expect.objectContaining({ id: switchId }),
    ]);
  });
});

test("a signed polluting bundle (valid signature, real opa sign) is refused the same way", async () => {
  const keys = keyPair("rsa");
  const signed = await opaSign(await hostile(POLLUTE_SUBJECT), { key: keys.priv });
  const { env } = watchedFile(signed);
  const tg = await startTestToolgate({ ...env, TOOLGATE_POLICY_SIGNING_PUBLIC_KEY_FILE: keys.pub });
  try {
    expect(pollution()).toEqual([]);
    expect(status(tg)).toMatchObject({ signature_verification: true, revision: null });
    expect(status(tg).last_error?.code).toBe("bundle_data_invalid");
    expect(status(tg).last_error?.message).toBe('/data.json: forbidden key "__proto__" at /');
    expect(await controlTokenWorks(tg)).toBe(200);
  } finally {
    await tg.stop();
  }
});
