/**
 * The grant issuer (src/grants) and the backend verifier (src/grants/verify):
 * claims, scope from policy, key types and rotation, single use, config.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as nodeSign,
  verify,
} from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { compileConfig } from "../../src/config";
import { checkPolicyOutput } from "../../src/decision";
import type { Decision, DecisionRequest, VerifiedFacts } from "../../src/model";
import { isToolgateError } from "../../src/errors";
import { derToP1363, GrantIssuer, scopeOf } from "../../src/grants";
import {
  createGrantVerifier,
  GrantError,
  MemoryJtiStore,
  verifyGrant,
  type JtiStore,
} from "../../src/grants/verify";
import { tempDir } from "../helpers/opa";
import { refRequest } from "../helpers/toolgate";

const dir = tempDir();
let n = 0;
function keyFile(kind: "p256" | "p384" | "rsa" | "ed25519"): string {
  const { privateKey } =
    kind === "rsa"
      ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : kind === "ed25519"
        ? generateKeyPairSync("ed25519")
        : generateKeyPairSync("ec", { namedCurve: kind === "p256" ? "P-256" : "P-384" });
  const file = join(dir, `key-${++n}.pem`);
  writeFileSync(file, privateKey.export({ type: "pkcs8", format: "pem" }));
  return file;
}
function publicFile(privateFile: string): string {
  const pub = createPublicKey(createPrivateKey(readFileSync(privateFile, "utf8")));
  const file = join(dir, `pub-${++n}.pem`);
  writeFileSync(file, pub.export({ type: "spki", format: "pem" }));
  return file;
}

const grantsConfig = (env: Record<string, string> = {}) =>
  compileConfig({}, { TOOLGATE_STATE_DIR: dir, ...env }).grants;

const verified: VerifiedFacts = {
  agent: { id: "support-triage" },
  subject: { id: "alice", method: "trusted" },
  time_ns: 0,
};

function allow(obligations: Decision["obligations"] = [], toolClass = "execute"): Decision {
  return {
    decision_id: "dec-1",
    outcome: "allow",
    reasons: [],
    obligations,
    policy: { bundle: "b", revision: "rev-1" },
    evaluated_at: new Date().toISOString(),
    tool: { name: "refunds.issue", class: toolClass, stage: "autonomous" },
  };
}

const refund = (amount: number, customer = "cust_1") =>
  refRequest({ tool: "refunds.issue", args: { amount }, customer }) as unknown as DecisionRequest;

function jwks(issuer: GrantIssuer) {
  return JSON.parse(issuer.jwksJson()) as { keys: Array<Record<string, string>> };
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(GrantError);
    return (e as GrantError).code;
  }
  return "verified";
}

describe("issuing and verifying", () => {
  test.each([
    ["p256", "ES256"],
    ["p384", "ES384"],
    ["rsa", "RS256"],
    ["ed25519", "EdDSA"],
  ] as const)("a %s key signs %s grants that verify", async (kind, alg) => {
    const issuer = new GrantIssuer(
      grantsConfig({ TOOLGATE_GRANTS_PRIVATE_KEY_FILE: keyFile(kind) }),
      "support-triage",
    );
    expect(jwks(issuer).keys[0]).toMatchObject({ alg, use: "sig", kid: issuer.kid });
    const req = refund(20);
    const { token, info } = issuer.issue(allow(), req, verified, Date.now());
    const claims = await verifyGrant(token, {
      audience: "tool:refunds.issue",
      issuer: "toolgate:support-triage",
      request: req,
      jwks: jwks(issuer),
      jtiStore: new MemoryJtiStore(),
    });
    expect(claims).toMatchObject({
      jti: info.jti,
      aud: info.aud,
      exp: info.exp,
      policy_revision: "rev-1",
    });
  });

  test("RSA with alg PS256 (rotation list)", async () => {
    const cfg = grantsConfig({
      TOOLGATE_GRANTS_KEYS: JSON.stringify([
        { kid: "ps", private_key_file: keyFile("rsa"), active: true, alg: "PS256" },
      ]),
    });
    const issuer = new GrantIssuer(cfg, "a");
    const req = refund(1);
    const { token } = issuer.issue(allow(), req, verified, Date.now());
    expect(
      JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString()),
    ).toMatchObject({ alg: "PS256", kid: "ps" });
    await expect(
      verifyGrant(token, {
        audience: "tool:refunds.issue",
        request: req,
        jwks: jwks(issuer),
        jtiStore: new MemoryJtiStore(),
      }),
    ).resolves.toMatchObject({ iss: "toolgate:a" });
  });

  test("rotation: the old key stays published, so its grants keep verifying", async () => {
    const oldKey = keyFile("p256");
    const before = new GrantIssuer(
      grantsConfig({
        TOOLGATE_GRANTS_KEYS: JSON.stringify([
          { kid: "old", private_key_file: oldKey, active: true },
        ]),
      }),
      "a",
    );
    const req = refund(5);
    const { token } = before.issue(allow(), req, verified, Date.now());
    const after = new GrantIssuer(
      grantsConfig({
        TOOLGATE_GRANTS_KEYS: JSON.stringify([
          { kid: "new", private_key_file: keyFile("p256"), active: true },
          { kid: "old", public_key_file: publicFile(oldKey) },
        ]),
      }),
      "a",
    );
    expect(after.kid).toBe("new");
    expect(jwks(after).keys.map((k) => k.kid)).toEqual(["new", "old"]);
    for (const k of jwks(after).keys) expect(k).not.toHaveProperty("d");
    const opts = {
      audience: "tool:refunds.issue",
      request: req,
      jwks: jwks(after),
      jtiStore: new MemoryJtiStore(),
    };
    await expect(verifyGrant(token, opts)).resolves.toBeDefined();
    // once the old key is dropped from the JWKS, its grants are unknown
    const onlyNew = { keys: jwks(after).keys.filter((k) => k.kid === "new") };
    expect(await code(verifyGrant(token, { ...opts, jwks: onlyNew }))).toBe("grant_key_unknown");
  });

  test("no key configured: an ephemeral ES256 key, with a warning", () => {
    const warn = jest.fn();
    const log = { warn, info: jest.fn(), error: jest.fn(), debug: jest.fn() } as never;
    const issuer = new GrantIssuer(grantsConfig(), "a", log);
    expect(issuer.ephemeral).toBe(true);
    expect(jwks(issuer).keys).toEqual([expect.objectContaining({ alg: "ES256", kid: issuer.kid })]);
    expect(warn).toHaveBeenCalledWith(
      expect.stringMatching(/generated at start/),
      expect.anything(),
    );
  });

  test("per-tool audience, ttl and single use; read tools are not single-use by default", () => {
    const issuer = new GrantIssuer(
      grantsConfig({
        TOOLGATE_GRANTS_ISSUER: "https://tg.example",
        TOOLGATE_GRANTS_TOOLS: JSON.stringify({
          "refunds.issue": {
            audience: "https://refunds.example",
            ttl_seconds: 10,
            single_use: false,
          },
        }),
      }),
      "a",
    );
    expect(issuer.toolSettings("refunds.issue", "execute")).toEqual({
      aud: "https://refunds.example",
      ttl: 10,
      singleUse: false,
    });
    expect(issuer.toolSettings("tickets.read", "read")).toEqual({
      aud: "tool:tickets.read",
      ttl: 60,
      singleUse: false,
    });
    expect(issuer.toolSettings("records.delete", "admin").singleUse).toBe(true);
    expect(issuer.issuer).toBe("https://tg.example");
  });
});

describe("the verifier", () => {
  const issuer = new GrantIssuer(
    grantsConfig({ TOOLGATE_GRANTS_PRIVATE_KEY_FILE: keyFile("p256") }),
    "support-triage",
  );
  const base = () => ({
    audience: "tool:refunds.issue",
    jwks: jwks(issuer),
    jtiStore: new MemoryJtiStore() as JtiStore,
  });

  test("issuer, audience, time and malformed tokens", async () => {
    const req = refund(20);
    const now = Date.now();
    const { token } = issuer.issue(allow(), req, verified, now);
    expect(await code(verifyGrant(token, { ...base(), request: req, issuer: "someone" }))).toBe(
      "grant_issuer_mismatch",
    );
    expect(await code(verifyGrant(token, { ...base(), request: req, audience: "tool:x" }))).toBe(
      "grant_audience_mismatch",
    );
    expect(await code(verifyGrant(token, { ...base(), request: req, now: now + 66_000 }))).toBe(
      "grant_expired",
    );
    expect(await code(verifyGrant(token, { ...base(), request: req, now: now + 64_000 }))).toBe(
      "verified",
    ); // 5 s skew
    expect(await code(verifyGrant(token, { ...base(), request: req, now: now - 60_000 }))).toBe(
      "grant_not_yet_valid",
    );
    for (const bad of ["", "a.b", "x.y.z", `${token}x`.replace(/\./, "!")]) {
      expect(["grant_malformed", "grant_signature_invalid"]).toContain(
        await code(verifyGrant(bad, { ...base(), request: req })),
      );
    }
  });

  test("scope from policy: max_amount and record_ids are enforced, unknown keys fail closed", async () => {
    const verifier = (
      scopeObl: Record<string, unknown>,
      req: DecisionRequest,
      at: DecisionRequest = req,
    ) => {
      const { token } = issuer.issue(
        allow([{ id: "s", type: "grant_scope", properties: scopeObl }]),
        req,
        verified,
        Date.now(),
      );
      return code(verifyGrant(token, { ...base(), request: at }));
    };
    expect(await verifier({ max_amount: 50 }, refund(50))).toBe("verified");
    expect(await verifier({ max_amount: 50 }, refund(51))).toBe("grant_scope_violation");
    expect(await verifier({ record_ids: ["cust_1"] }, refund(5))).toBe("verified");
    expect(await verifier({ record_ids: ["cust_9"] }, refund(5))).toBe("grant_scope_violation");
    expect(await verifier({ max_records: 3 }, refund(5))).toBe("grant_scope_violation");
    // a backend may enforce its own keys
    const req = refund(5);
    const { token } = issuer.issue(
      allow([{ id: "s", type: "grant_scope", properties: { max_records: 3 } }]),
      req,
      verified,
      Date.now(),
    );
    await expect(
      verifyGrant(token, {
        ...base(),
        request: req,
        scopeChecks: { max_records: (v) => (v === 3 ? undefined : "no") },
      }),
    ).resolves.toMatchObject({ scope: { max_records: 3 } });
  });

  test("scopeOf merges grant_scope obligations, the narrower wins", () => {
    expect(scopeOf([{ id: "r", type: "redact" }])).toBeUndefined();
    expect(
      scopeOf([
        { id: "a", type: "grant_scope", properties: { max_amount: 50, record_ids: ["a", "b"] } },
        { id: "b", type: "grant_scope", properties: { max_amount: 20, record_ids: ["b", "c"] } },
      ]),
    ).toEqual({ max_amount: 20, record_ids: ["b"] });
  });

  test("scopeOf: a policy key named like an Object member is a plain key", () => {
    const scope = scopeOf([
      { id: "a", type: "grant_scope", properties: { toString: "x", hasOwnProperty: 1 } },
    ]);
    expect(JSON.parse(JSON.stringify(scope))).toEqual({ toString: "x", hasOwnProperty: 1 });
  });

  test("the policy's grant_scope obligation is checked like any output", () => {
    const out = (properties: unknown) =>
      checkPolicyOutput({
        outcome: "allow",
        reasons: [],
        obligations: [{ id: "s", type: "grant_scope", properties }],
      });
    expect(isToolgateError(out({ max_amount: 50 }))).toBe(false);
    expect(isToolgateError(out({ record_ids: ["x"] }))).toBe(false);
    for (const bad of [{}, { max_amount: -1 }, { max_amount: "50" }, { record_ids: [1] }]) {
      const r = out(bad);
      expect(isToolgateError(r) && r.code).toBe("policy_output_invalid");
    }
  });

  test("single use: one store marks atomically; a store failure refuses", async () => {
    const req = refund(20);
    const { token } = issuer.issue(allow(), req, verified, Date.now());
    const v = createGrantVerifier(base());
    await expect(v.verify(token, req)).resolves.toBeDefined();
    expect(await code(v.verify(token, req))).toBe("grant_replayed");
    const broken: JtiStore = { markUsed: () => Promise.reject(new Error("redis down")) };
    const { token: t2 } = issuer.issue(allow(), req, verified, Date.now());
    expect(await code(verifyGrant(t2, { ...base(), request: req, jtiStore: broken }))).toBe(
      "grant_replayed",
    );
    // not single-use (read class): the same grant verifies twice
    const { token: t3 } = issuer.issue(allow([], "read"), req, verified, Date.now());
    await expect(v.verify(t3, req)).resolves.toMatchObject({ single_use: false });
    await expect(v.verify(t3, req)).resolves.toBeDefined();
  });

  test("MemoryJtiStore forgets a jti once its grant has expired", () => {
    let now = 1_000_000_000_000;
    const store = new MemoryJtiStore({ graceSeconds: 10, now: () => now });
    expect(store.markUsed("a", now / 1000 + 60)).toBe(true);
    expect(store.markUsed("a", now / 1000 + 60)).toBe(false);
    expect(store.has("a")).toBe(true);
    now += 71_000;
    store.sweep();
    expect(store.size).toBe(0);
    expect(store.has("a")).toBe(false);
  });
});

describe("grants config", () => {
  const err = (env: Record<string, string>): string => {
    try {
      compileConfig({}, env);
    } catch (e) {
      return (e as Error).message;
    }
    return "";
  };
  test("defaults", () => {
    expect(grantsConfig()).toEqual({
      enabled: true,
      issuer: null,
      ttlSeconds: 60,
      keys: [],
      tools: {},
      jwksPath: "/.well-known/jwks.json",
    });
  });
  test("a YAML mapping of tools is one key, not unknown keys", () => {
    const c = compileConfig(
      { grants: { tools: { "refunds.issue": { audience: "svc:refunds" } } } },
      {},
    );
    expect(c.grants.tools).toEqual({ "refunds.issue": { audience: "svc:refunds" } });
  });
  test("mistakes are named", () => {
    expect(err({ TOOLGATE_GRANTS_TOOLS: "{" })).toMatch(/TOOLGATE_GRANTS_TOOLS must be JSON/);
    expect(err({ TOOLGATE_GRANTS_TOOLS: '{"x":{"ttl_seconds":0}}' })).toMatch(/ttl_seconds/);
    expect(err({ TOOLGATE_GRANTS_KEYS: '[{"kid":"a","public_key_file":"x"}]' })).toMatch(
      /exactly one entry with active: true/,
    );
    expect(err({ TOOLGATE_GRANTS_KEYS: "[]", TOOLGATE_GRANTS_PRIVATE_KEY_FILE: "k.pem" })).toMatch(
      /exclusive/,
    );
    expect(
      () =>
        new GrantIssuer(
          grantsConfig({ TOOLGATE_GRANTS_PRIVATE_KEY_FILE: join(dir, "nope.pem") }),
          "a",
        ),
    ).toThrow(/cannot read/);
  });
});

describe("derToP1363", () => {
  test("matches node's own ieee-p1363 encoding (verifies both ways)", () => {
    for (const curve of ["P-256", "P-384"] as const) {
      const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: curve });
      const size = curve === "P-256" ? 32 : 48;
      const hash = curve === "P-256" ? "sha256" : "sha384";
      for (let i = 0; i < 200; i++) {
        const data = Buffer.from(`message ${i}`);
        const p1363 = derToP1363(nodeSign(hash, data, privateKey), size);
        expect(p1363.length).toBe(size * 2);
        expect(verify(hash, data, { key: publicKey, dsaEncoding: "ieee-p1363" }, p1363)).toBe(true);
      }
    }
  });
});
