/**
 * Bundle signatures against the real `opa`: digests equal those `opa sign`
 * writes, OPA-signed bundles verify, each tampering has its own code, and
 * bundles signed by `toolgate policy sign` pass `opa build --verification-key`.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { bundleFileDigest } from "../../src/bundles/hash";
import {
  signBundleFiles,
  verifyBundleSignature,
  type VerificationConfig,
} from "../../src/bundles/signing";
import { backoffMs } from "../../src/bundles/sources";
import { isToolgateError } from "../../src/errors";
import { readTarGz, writeTarGz } from "../../src/shared/tar";
import { fixturePolicy, keyPair, opaSign } from "../helpers/bundles";
import { buildWasmBundle, opaPath, tempDir } from "../helpers/opa";

const rsa = keyPair("rsa");
const other = keyPair("rsa");
const ec = keyPair("ec");

const cfg = (
  pub: string,
  extra: Partial<VerificationConfig> = {},
  alg = "RS256",
): VerificationConfig => ({
  keys: new Map([["default", { algorithm: alg as "RS256", key: readFileSync(pub) }]]),
  keyId: "default",
  ...extra,
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return isToolgateError(e) ? e.code : `untyped: ${String(e)}`;
  }
}

const tricky = {
  "p.rego": fixturePolicy()["p.rego"] as string,
  "data.json":
    '{"z": 1.50, "a": {"é": "<&>\\u2028\\u0001\\b", "\\ud83d\\ude00": [1e3, -0, true, null]}, "Z": "x"}',
  "sub/data.yaml": "k: 1.5\nlist: [b, a]\nnested: {y: 2, x: true}\n",
};
const bundle = buildWasmBundle(tricky, { revision: "sig-1" });
let files: Map<string, Buffer>;
beforeAll(async () => {
  files = await readTarGz(readFileSync(bundle));
});

describe("digests", () => {
  test("equal the ones `opa sign` records, for every file (JSON, YAML, manifest, wasm, rego)", async () => {
    const signed = await opaSign(bundle, { key: rsa.priv });
    const sigs = JSON.parse(
      (await readTarGz(readFileSync(signed))).get("/.signatures.json")!.toString(),
    ) as {
      signatures: string[];
    };
    const payload = JSON.parse(
      Buffer.from(sigs.signatures[0]!.split(".")[1]!, "base64url").toString(),
    ) as {
      files: Array<{ name: string; hash: string; algorithm: string }>;
    };
    expect(payload.files.map((f) => "/" + f.name).sort()).toEqual([...files.keys()].sort());
    for (const f of payload.files) {
      expect([
        f.name,
        bundleFileDigest("/" + f.name, files.get("/" + f.name)!, f.algorithm),
      ]).toEqual([f.name, f.hash]);
    }
  });
});

describe("verification matrix (bundles signed by the real opa sign)", () => {
  let signedFiles: Map<string, Buffer>;
  beforeAll(async () => {
    signedFiles = await readTarGz(readFileSync(await opaSign(bundle, { key: rsa.priv })));
  });
  const edit = (fn: (m: Map<string, Buffer>) => void): Map<string, Buffer> => {
    const m = new Map(signedFiles);
    fn(m);
    return m;
  };

  test("valid → accepted", async () => {
    expect(await codeOf(verifyBundleSignature(signedFiles, cfg(rsa.pub)))).toBe("ok");
  });
  test("ES256 and HS256 signatures verify too", async () => {
    const es = await readTarGz(readFileSync(await opaSign(bundle, { key: ec.priv, alg: "ES256" })));
    expect(await codeOf(verifyBundleSignature(es, cfg(ec.pub, {}, "ES256")))).toBe("ok");
    const secretFile = join(tempDir(), "secret");
    writeFileSync(secretFile, "a-shared-secret-of-enough-length");
    const hs = await readTarGz(
      readFileSync(
        await opaSign(bundle, { key: "a-shared-secret-of-enough-length", alg: "HS256" }),
      ),
    );
    expect(await codeOf(verifyBundleSignature(hs, cfg(secretFile, {}, "HS256")))).toBe("ok");
  });
  test.each<[string, () => Promise<unknown>, string]>([
    [
      "unsigned with verification on",
      () => verifyBundleSignature(files, cfg(rsa.pub)),
      "bundle_unsigned",
    ],
    [
      "signed, no key configured",
      () => verifyBundleSignature(signedFiles, undefined),
      "bundle_key_unknown",
    ],
    [
      "tampered data.json",
      () =>
        verifyBundleSignature(
          edit((m) => m.set("/data.json", Buffer.from('{"z": 2}'))),
          cfg(rsa.pub),
        ),
      "bundle_digest_mismatch",
    ],
    [
      "data.json reformatted only (same parsed value) still verifies",
      () =>
        verifyBundleSignature(
          edit((m) => m.set("/data.json", Buffer.from(`  ${m.get("/data.json")!.toString()}\n`))),
          cfg(rsa.pub),
        ),
      "ok",
    ],
    [
      "an added file",
      () =>
        verifyBundleSignature(
          edit((m) => m.set("/extra.rego", Buffer.from("package x"))),
          cfg(rsa.pub),
        ),
      "bundle_files_mismatch",
    ],
    [
      "a removed file",
      () =>
        verifyBundleSignature(
          edit((m) => m.delete("/data.json")),
          cfg(rsa.pub),
        ),
      "bundle_files_mismatch",
    ],
    [
      "a wrong key",
      () => verifyBundleSignature(signedFiles, cfg(other.pub)),
      "bundle_signature_invalid",
    ],
    [
      "a wrong algorithm",
      () => verifyBundleSignature(signedFiles, cfg(rsa.pub, {}, "PS256")),
      "bundle_signature_invalid",
    ],
    [
      "a wrong scope",
      () => verifyBundleSignature(signedFiles, cfg(rsa.pub, { scope: "prod" })),
      "bundle_scope_mismatch",
    ],
    [
      "an unknown key id",
      () => verifyBundleSignature(signedFiles, { keys: cfg(rsa.pub).keys, keyId: "nope" }),
      "bundle_key_unknown",
    ],
    [
      "no key id anywhere (keys file, token without kid)",
      () => verifyBundleSignature(signedFiles, { keys: cfg(rsa.pub).keys }),
      "bundle_key_unknown",
    ],
    [
      "two JWTs",
      () => {
        const jwt = (
          JSON.parse(signedFiles.get("/.signatures.json")!.toString()) as { signatures: string[] }
        ).signatures[0];
        return verifyBundleSignature(
          edit((m) =>
            m.set("/.signatures.json", Buffer.from(JSON.stringify({ signatures: [jwt, jwt] }))),
          ),
          cfg(rsa.pub),
        );
      },
      "bundle_signature_invalid",
    ],
  ])("%s", async (_name, run, code) => {
    expect(await codeOf(run())).toBe(code);
  });

  test("scope and key id from claims: matching scope passes, keyid claim picks the key", async () => {
    const scoped = await readTarGz(
      readFileSync(
        await opaSign(bundle, { key: rsa.priv, claims: { scope: "prod", keyid: "k1" } }),
      ),
    );
    const keys = new Map([["k1", { algorithm: "RS256" as const, key: readFileSync(rsa.pub) }]]);
    expect(await codeOf(verifyBundleSignature(scoped, { keys, scope: "prod" }))).toBe("ok");
    expect(await codeOf(verifyBundleSignature(scoped, { keys, scope: "dev" }))).toBe(
      "bundle_scope_mismatch",
    );
    expect(await codeOf(verifyBundleSignature(scoped, { keys }))).toBe("bundle_scope_mismatch");
  });
});

describe("toolgate's signer", () => {
  test("produces bundles the real opa verifies (opa build --verification-key)", async () => {
    for (const [keys, alg, extra] of [
      [rsa, "RS256", []],
      [rsa, "PS384", []],
      [ec, "ES256", []],
    ] as const) {
      const m = new Map(files);
      m.set(
        "/.signatures.json",
        Buffer.from(
          await signBundleFiles(files, {
            key: readFileSync(keys.priv),
            algorithm: alg,
            scope: "s1",
          }),
        ),
      );
      const dir = tempDir();
      const signed = join(dir, "signed.tar.gz");
      writeFileSync(signed, await writeTarGz(m));
      execFileSync(
        opaPath(),
        [
          "build",
          "-b",
          signed,
          "--verification-key",
          keys.pub,
          "--signing-alg",
          alg,
          "--scope",
          "s1",
          "-o",
          join(dir, "out.tar.gz"),
          ...extra,
        ],
        { stdio: "pipe" },
      );
      // and opa refuses it with another scope
      let stderr = "";
      try {
        execFileSync(
          opaPath(),
          [
            "build",
            "-b",
            signed,
            "--verification-key",
            keys.pub,
            "--signing-alg",
            alg,
            "--scope",
            "s2",
            "-o",
            join(dir, "out2.tar.gz"),
          ],
          { stdio: "pipe" },
        );
      } catch (e) {
        stderr =
          String((e as { stdout: Buffer }).stdout) + String((e as { stderr: Buffer }).stderr);
      }
      expect(stderr).toMatch(/scope mismatch/);
      expect(
        await codeOf(verifyBundleSignature(m, { ...cfg(keys.pub, {}, alg), scope: "s1" })),
      ).toBe("ok");
    }
  });
});

test("backoff grows exponentially, is capped and jittered", () => {
  const mid = () => 0.5;
  expect([1, 2, 3, 4, 10].map((n) => backoffMs(n, 5000, mid))).toEqual([
    500, 1000, 2000, 4000, 5000,
  ]);
  expect(backoffMs(1, 5000, () => 0)).toBe(400);
  expect(backoffMs(1, 5000, () => 1)).toBe(600);
});
