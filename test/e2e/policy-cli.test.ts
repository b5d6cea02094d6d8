/**
 * `toolgate policy sign` / `policy check`: a bundle signed by toolgate is
 * accepted by the real `opa`, and `check` refuses what the sidecar refuses,
 * exiting non-zero with the error code.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { main } from "../../src/cli/main";
import { fixtureBundle, keyPair, opaSign, rewriteBundle } from "../helpers/bundles";
import { opaPath, tempDir } from "../helpers/opa";

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { stdout: (s) => (out += s), stderr: (s) => (err += s) });
  return { code, out, err };
}

const keys = keyPair("rsa");
const other = keyPair("rsa");

test("policy sign signs in place; opa verifies it; policy check accepts it", async () => {
  const dir = tempDir();
  const bundle = join(dir, "b.tar.gz");
  copyFileSync(fixtureBundle("cli-1"), bundle);
  const signed = await run(
    "policy",
    "sign",
    bundle,
    "--signing-key",
    keys.priv,
    "--scope",
    "prod",
    "--key-id",
    "k1",
  );
  expect(signed).toMatchObject({ code: 0 });
  execFileSync(
    opaPath(),
    [
      "build",
      "-b",
      bundle,
      "--verification-key",
      keys.pub,
      "--verification-key-id",
      "k1",
      "--scope",
      "prod",
      "-o",
      join(dir, "o.tar.gz"),
    ],
    {
      stdio: "pipe",
    },
  );
  const ok = await run(
    "policy",
    "check",
    bundle,
    "--verification-key",
    keys.pub,
    "--key-id",
    "k1",
    "--scope",
    "prod",
  );
  expect(ok.code).toBe(0);
  expect(ok.out).toMatch(/ok: .*cli-1.*signature verified/);
});

test("policy check verifies bundles signed by opa sign, with keys files and HMAC too", async () => {
  const bundle = await opaSign(fixtureBundle("cli-2"), {
    key: keys.priv,
    claims: { keyid: "team" },
  });
  const dir = tempDir();
  writeFileSync(
    join(dir, "keys.json"),
    JSON.stringify({ team: { algorithm: "RS256", key: readFileSync(keys.pub, "utf8") } }),
  );
  expect((await run("policy", "check", bundle, "--keys-file", join(dir, "keys.json"))).code).toBe(
    0,
  );
  const hs = join(dir, "hs.tar.gz");
  copyFileSync(fixtureBundle("cli-2"), hs);
  expect(
    (
      await run(
        "policy",
        "sign",
        hs,
        "--signing-key",
        "shared-secret-for-tests",
        "--signing-alg",
        "HS256",
      )
    ).code,
  ).toBe(0);
  expect(
    (
      await run(
        "policy",
        "check",
        hs,
        "--verification-key",
        "shared-secret-for-tests",
        "--verification-alg",
        "HS256",
      )
    ).code,
  ).toBe(0);
});

test.each<[string, () => Promise<string[]>, string]>([
  [
    "unsigned with a key",
    () => Promise.resolve([fixtureBundle("cli-3"), "--verification-key", keys.pub]),
    "bundle_unsigned",
  ],
  [
    "signed, no key",
    async () => [await opaSign(fixtureBundle("cli-3"), { key: keys.priv })],
    "bundle_key_unknown",
  ],
  [
    "wrong key",
    async () => [
      await opaSign(fixtureBundle("cli-3"), { key: keys.priv }),
      "--verification-key",
      other.pub,
    ],
    "bundle_signature_invalid",
  ],
  [
    "wrong scope",
    async () => [
      await opaSign(fixtureBundle("cli-3"), { key: keys.priv }),
      "--verification-key",
      keys.pub,
      "--scope",
      "x",
    ],
    "bundle_scope_mismatch",
  ],
  [
    "tampered",
    async () => [
      await rewriteBundle(await opaSign(fixtureBundle("cli-3"), { key: keys.priv }), (m) =>
        m.set("/data.json", Buffer.from('{"fixture":{"note":"x"}}')),
      ),
      "--verification-key",
      keys.pub,
    ],
    "bundle_digest_mismatch",
  ],
  [
    "wrong entrypoint",
    () => Promise.resolve([fixtureBundle("cli-3"), "--entrypoint", "nope/decision"]),
    "entrypoint_missing",
  ],
])("policy check refuses: %s", async (_what, args, code) => {
  const r = await run("policy", "check", ...(await args()));
  expect(r.code).toBe(1);
  expect(r.err).toContain(`toolgate: ${code}:`);
});

test("policy without a subcommand is a usage error", async () => {
  const r = await run("policy");
  expect(r.code).toBe(2);
  expect(r.err).toContain("usage");
});
