import { createPrivateKey, createPublicKey, createSecretKey, X509Certificate, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { CompactSign, compactVerify, decodeProtectedHeader } from "jose";
import { normalizeError, toolgateError, rethrowAs } from "../errors";
import { bundleFileDigest } from "./hash";
import { isObject, parseJsonOr } from "../shared/guards";
import {
  BUNDLE_SIGNING_ALGORITHMS,
  isOneOf,
  type BundleSigningAlgorithm,
} from "../shared/algorithms";

/**
 * Bundle signatures as `opa sign` writes them and OPA verifies them
 * (bundle/sign.go, bundle/verify.go): `/.signatures.json` holds
 * `{"signatures": ["<one JWT>"]}` whose payload is `{"files": [{name, hash,
 * algorithm}], "keyid"?, "scope"?, …}`; names are bundle paths without the
 * leading slash; every file of the bundle but `.signatures.json` itself must be
 * listed, with a matching digest.
 */

export const SIGNATURES_FILE = "/.signatures.json";

/** One verification key, as OPA's `keys` config holds it. */
export interface VerificationKey {
  algorithm: BundleSigningAlgorithm;
  /** PEM public key (or certificate) for RS/PS/ES; the shared secret for HS. */
  key: string | Buffer;
  scope?: string;
}

/** OPA's VerificationConfig: keys by id, the key id to use, the expected scope. */
export interface VerificationConfig {
  keys: Map<string, VerificationKey>;
  /** If set, this key verifies every bundle (the token's `kid` is ignored). */
  keyId?: string;
  scope?: string;
  /** Bundle paths ("/x/y") not covered by the signature (OPA's exclude_files). */
  excludeFiles?: string[];
}

export interface FileInfo {
  name: string;
  hash: string;
  algorithm: string;
}

function verifyKeyObject(k: VerificationKey): KeyObject {
  if (k.algorithm.startsWith("HS")) return createSecretKey(Buffer.from(k.key));
  const pem = k.key.toString();
  if (pem.includes("BEGIN CERTIFICATE")) return new X509Certificate(pem).publicKey;
  return createPublicKey(pem);
}

function signKeyObject(key: string | Buffer, alg: BundleSigningAlgorithm): KeyObject {
  if (alg.startsWith("HS")) return createSecretKey(Buffer.from(key));
  return createPrivateKey(key.toString());
}

/**
 * Verifies a bundle's signature against `cfg` with OPA's rules. `files` are
 * the bundle's files by bundle path, `.signatures.json` included if present.
 * `cfg` undefined means verification is not configured: a signed bundle is
 * then refused (OPA: "verification key not provided"), an unsigned one passes.
 * Throws a coded error; returns the decoded payload on success (or undefined).
 */
export async function verifyBundleSignature(
  files: Map<string, Buffer>,
  cfg: VerificationConfig | undefined,
): Promise<Record<string, unknown> | undefined> {
  const raw = files.get(SIGNATURES_FILE);
  if (raw === undefined) {
    if (cfg === undefined) return undefined;
    throw toolgateError(
      "bundle_unsigned",
      "bundle has no .signatures.json and signature verification is configured",
    );
  }
  if (cfg === undefined) {
    throw toolgateError(
      "bundle_key_unknown",
      "bundle is signed but no verification key is configured (policy.signing)",
    );
  }
  const sigs = parseJsonOr("bundle_signature_invalid", ".signatures.json is not JSON", raw);
  const list = (sigs as { signatures?: unknown } | null)?.signatures;
  if (!Array.isArray(list) || list.length === 0) {
    throw toolgateError(
      "bundle_signature_invalid",
      ".signatures.json: missing JWT (expected exactly one)",
    );
  }
  if (list.length > 1) {
    throw toolgateError(
      "bundle_signature_invalid",
      ".signatures.json: multiple JWTs not supported (expected exactly one)",
    );
  }
  const token: unknown = list[0];
  if (typeof token !== "string" || token.split(".").length !== 3) {
    throw toolgateError("bundle_signature_invalid", ".signatures.json: the signature is not a JWT");
  }
  const [header, claims] = rethrowAs(
    "bundle_signature_invalid",
    ".signatures.json: undecodable JWT",
    (): [{ kid?: unknown }, unknown] => [
      decodeProtectedHeader(token),
      JSON.parse(Buffer.from(token.split(".")[1] as string, "base64url").toString("utf8")),
    ],
  );
  if (!isObject(claims)) {
    throw toolgateError("bundle_signature_invalid", ".signatures.json: JWT payload is not an object");
  }
  // OPA: the configured key id first, then the token's kid, then the deprecated keyid claim.
  const keyId =
    cfg.keyId ||
    (typeof header.kid === "string" ? header.kid : "") ||
    (typeof claims.keyid === "string" ? claims.keyid : "");
  if (keyId === "") {
    throw toolgateError("bundle_key_unknown", "verification key ID is empty");
  }
  const key = cfg.keys.get(keyId);
  if (key === undefined) {
    throw toolgateError("bundle_key_unknown", `verification key corresponding to ID ${keyId} not found`);
  }
  try {
    await compactVerify(token, verifyKeyObject(key), { algorithms: [key.algorithm] });
  } catch (e) {
    throw toolgateError(
      "bundle_signature_invalid",
      `bundle signature does not verify with key "${keyId}" (${key.algorithm}): ${normalizeError(e).message}`,
      { cause: e },
    );
  }
  const scope = cfg.scope || key.scope || "";
  const got = typeof claims.scope === "string" ? claims.scope : "";
  if (got !== scope) {
    throw toolgateError(
      "bundle_scope_mismatch",
      `scope mismatch: the bundle is signed for ${JSON.stringify(got)}, expected ${JSON.stringify(scope)}`,
    );
  }
  const listed = new Map<string, FileInfo>();
  if (!Array.isArray(claims.files)) {
    throw toolgateError("bundle_signature_invalid", "JWT payload has no files list");
  }
  for (const f of claims.files as unknown[]) {
    const fi = f as Partial<FileInfo> | null;
    if (fi === null || typeof fi.name !== "string" || typeof fi.hash !== "string") {
      throw toolgateError("bundle_signature_invalid", "JWT payload has a malformed files entry");
    }
    listed.set("/" + fi.name.replace(/^\/+/, ""), {
      name: fi.name,
      hash: fi.hash,
      algorithm: typeof fi.algorithm === "string" ? fi.algorithm : "",
    });
  }
  const excluded = new Set(cfg.excludeFiles ?? []);
  const present = [...files.keys()].filter((p) => p !== SIGNATURES_FILE && !excluded.has(p));
  const unsigned = present.filter((p) => !listed.has(p));
  const missing = [...listed.keys()].filter((p) => !files.has(p) && !excluded.has(p));
  if (unsigned.length > 0 || missing.length > 0) {
    const parts: string[] = [];
    if (unsigned.length > 0)
      parts.push(`file(s) ${unsigned.join(", ")} not included in bundle signature`);
    if (missing.length > 0)
      parts.push(`file(s) ${missing.join(", ")} specified in bundle signature but not found in the bundle`);
    throw toolgateError("bundle_files_mismatch", parts.join("; "));
  }
  for (const path of present) {
    const fi = listed.get(path) as FileInfo;
    if (fi.algorithm === "") {
      throw toolgateError("bundle_signature_invalid", `no hashing algorithm provided for file ${path}`);
    }
    const digest = bundleFileDigest(path, files.get(path) as Buffer, fi.algorithm);
    if (digest !== fi.hash.toLowerCase()) {
      throw toolgateError(
        "bundle_digest_mismatch",
        `${path}: digest mismatch (want: ${fi.hash}, got: ${digest})`,
      );
    }
  }
  return claims;
}

export interface SignOptions {
  key: string | Buffer;
  algorithm?: BundleSigningAlgorithm;
  keyId?: string;
  scope?: string;
  /** Extra claims, as `opa sign --claims-file` adds them. */
  claims?: Record<string, unknown>;
  hashAlgorithm?: string;
}

/**
 * Produces the `.signatures.json` text `opa sign` would write for these files
 * (header {alg, kid?, typ: JWT}; payload {files, keyid? | claims}).
 */
export async function signBundleFiles(
  files: Map<string, Buffer>,
  opts: SignOptions,
): Promise<string> {
  const alg = opts.algorithm ?? "RS256";
  const hashAlg = opts.hashAlgorithm ?? "SHA-256";
  const infos: FileInfo[] = [];
  for (const [path, body] of files) {
    if (path === SIGNATURES_FILE) continue;
    infos.push({
      name: path.replace(/^\/+/, ""),
      hash: bundleFileDigest(path, body, hashAlg),
      algorithm: hashAlg,
    });
  }
  let payload: Record<string, unknown> = { files: infos };
  if (opts.claims !== undefined || opts.scope !== undefined) {
    // spread, not Object.assign: a claim named __proto__ stays a claim (as opa sign writes it)
    payload = { ...payload, ...opts.claims };
    if (opts.scope !== undefined) payload.scope = opts.scope;
  } else if (opts.keyId) payload.keyid = opts.keyId;
  const header: Record<string, string> = { alg };
  if (opts.keyId) header.kid = opts.keyId;
  header.typ = "JWT";
  let key: KeyObject;
  try {
    key = signKeyObject(opts.key, alg);
  } catch (e) {
    throw toolgateError(
      "usage",
      `cannot read the signing key: ${normalizeError(e).message}`,
      { cause: e },
    );
  }
  const jwt = await new CompactSign(Buffer.from(JSON.stringify(payload)))
    .setProtectedHeader(header as { alg: string })
    .sign(key);
  return JSON.stringify({ signatures: [jwt] });
}

/** Reads a keys file: a JSON (or YAML-free JSON) map keyid → {algorithm, key, scope?}. */
export function readKeysFile(path: string): Map<string, VerificationKey> {
  const raw = rethrowAs(
    "config_invalid",
    `policy.signing.keys_file: cannot read ${path}`,
    () => JSON.parse(readFileSync(path, "utf8")) as unknown,
  );
  if (!isObject(raw)) {
    throw toolgateError("config_invalid", `policy.signing.keys_file: ${path} must hold a JSON object`);
  }
  const keys = new Map<string, VerificationKey>();
  for (const [id, v] of Object.entries(raw)) {
    const e = v as { algorithm?: unknown; key?: unknown; scope?: unknown } | null;
    const alg = typeof e?.algorithm === "string" ? e.algorithm : "RS256";
    if (e === null || typeof e.key !== "string" || !isOneOf(BUNDLE_SIGNING_ALGORITHMS, alg)) {
      throw toolgateError(
        "config_invalid",
        `policy.signing.keys_file: key "${id}" needs "key" (PEM or HMAC secret) and an "algorithm" among ${BUNDLE_SIGNING_ALGORITHMS.join(", ")}`,
      );
    }
    keys.set(id, {
      algorithm: alg,
      key: e.key,
      ...(typeof e.scope === "string" ? { scope: e.scope } : {}),
    });
  }
  return keys;
}
