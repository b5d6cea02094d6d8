import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { stringOptions } from "./args";
import { smokeTest } from "../app";
import {
  readKeysFile,
  signBundleFiles,
  SIGNATURES_FILE,
  verifyBundleSignature,
  type VerificationConfig,
} from "../bundles/signing";
import {
  BUNDLE_SIGNING_ALGORITHMS,
  isOneOf,
  type BundleSigningAlgorithm,
} from "../shared/algorithms";
import { writeTarGz } from "../shared/tar";
import { normalizeError, toolgateError, rethrowAs } from "../errors";
import { bundleNameOf, parseBundle, readBundleFiles } from "../policy/bundle";
import { PolicyEngine } from "../policy/engine";
import { policyInit } from "./scaffold";

export { POLICY_INIT_HELP } from "./scaffold";

type Out = { stdout: (s: string) => void; stderr: (s: string) => void };

export const POLICY_SIGN_HELP = `  toolgate policy sign <bundle> --signing-key KEY [--signing-alg RS256] [--scope S] [--key-id K] [--claims-file F]
                                             sign a built bundle (.tar.gz or directory) in place, as \`opa sign\` would
                                             (KEY: a PEM private key file, or the HMAC secret / a file holding it)`;

export const POLICY_CHECK_HELP = `  toolgate policy check <bundle> [--verification-key KEY [--verification-alg RS256] [--key-id K] | --keys-file F]
                        [--scope S] [--entrypoint E] [--agent ID]
                                             verify and load a bundle exactly as the sidecar would; exits 1 with the
                                             error code if the sidecar would refuse it`;

function algorithm(v: string | undefined, flag: string): BundleSigningAlgorithm {
  const a = v ?? "RS256";
  if (!isOneOf(BUNDLE_SIGNING_ALGORITHMS, a)) {
    throw toolgateError("usage", `${flag} must be one of ${BUNDLE_SIGNING_ALGORITHMS.join(", ")}`);
  }
  return a;
}

/** OPA's rule: a path to an existing file is read; anything else is the secret itself. */
function keyMaterial(v: string): Buffer {
  return existsSync(v) && statSync(v).isFile() ? readFileSync(v) : Buffer.from(v);
}

async function sign(args: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: stringOptions("signing-key", "signing-alg", "scope", "key-id", "claims-file"),
    strict: true,
  });
  const path = positionals[0];
  if (path === undefined || positionals.length > 1 || values["signing-key"] === undefined) {
    throw toolgateError("usage", "policy sign needs <bundle> and --signing-key KEY");
  }
  const alg = algorithm(values["signing-alg"], "--signing-alg");
  const claimsFile = values["claims-file"];
  const claims =
    claimsFile === undefined
      ? undefined
      : rethrowAs(
          "usage",
          "--claims-file",
          () => JSON.parse(readFileSync(claimsFile, "utf8")) as Record<string, unknown>,
        );
  const isDir = existsSync(path) && statSync(path).isDirectory();
  const files = await readBundleFiles(path);
  files.delete(SIGNATURES_FILE);
  const text = await signBundleFiles(files, {
    key: keyMaterial(values["signing-key"]),
    algorithm: alg,
    ...(values["key-id"] !== undefined ? { keyId: values["key-id"] } : {}),
    ...(values.scope !== undefined ? { scope: values.scope } : {}),
    ...(claims !== undefined ? { claims } : {}),
  });
  if (isDir) {
    writeFileSync(join(path, ".signatures.json"), text);
  } else {
    files.set(SIGNATURES_FILE, Buffer.from(text));
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSync(tmp, await writeTarGz(files));
    renameSync(tmp, path);
  }
  out.stdout(`signed ${path}: ${files.size - (isDir ? 0 : 1)} files, ${alg}\n`);
  return 0;
}

async function check(args: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: stringOptions(
      "verification-key",
      "verification-alg",
      "keys-file",
      "key-id",
      "scope",
      "entrypoint",
      "agent",
    ),
    strict: true,
  });
  const path = positionals[0];
  if (path === undefined || positionals.length > 1) {
    throw toolgateError("usage", "policy check needs <bundle>");
  }
  if (values["verification-key"] !== undefined && values["keys-file"] !== undefined) {
    throw toolgateError("usage", "--verification-key and --keys-file are exclusive");
  }
  let cfg: VerificationConfig | undefined;
  if (values["verification-key"] !== undefined) {
    const id = values["key-id"] ?? "default";
    cfg = {
      keys: new Map([
        [
          id,
          {
            algorithm: algorithm(values["verification-alg"], "--verification-alg"),
            key: keyMaterial(values["verification-key"]),
          },
        ],
      ]),
      keyId: id,
    };
  } else if (values["keys-file"] !== undefined) {
    cfg = { keys: readKeysFile(values["keys-file"]) };
    if (values["key-id"] !== undefined) cfg.keyId = values["key-id"];
  }
  if (values.scope !== undefined) {
    if (cfg === undefined) throw toolgateError("usage", "--scope needs a verification key");
    cfg.scope = values.scope;
  }
  try {
    const files = await readBundleFiles(path);
    const claims = await verifyBundleSignature(files, cfg);
    const bundle = parseBundle(files, bundleNameOf(path), path);
    const engine = await PolicyEngine.create(bundle, {
      entrypoint: values.entrypoint ?? "toolgate/decision",
    });
    smokeTest(engine, values.agent ?? "support-triage");
    out.stdout(
      `ok: ${bundle.name} revision ${JSON.stringify(bundle.manifest.revision)}, ` +
        `${files.size} files, ${claims ? "signature verified" : "unsigned (no verification configured)"}\n`,
    );
    return 0;
  } catch (e) {
    const err = normalizeError(e);
    out.stderr(`toolgate: ${err.code}: ${err.message}\n`);
    return 1;
  }
}

/** `toolgate policy init|sign|check …` (build and test: author.ts) */
export async function policyCommand(args: string[], out: Out): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === "init") return policyInit(rest, out);
  if (sub === "sign") return sign(rest, out);
  if (sub === "check") return check(rest, out);
  throw toolgateError(
    "usage",
    `${sub === undefined ? "policy needs a subcommand" : `unknown policy subcommand "${sub}"`}: init, build, test, sign or check; run \`toolgate policy --help\``,
  );
}
