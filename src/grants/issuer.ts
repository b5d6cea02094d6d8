/**
 * Grants: every allow carries a short-lived, request-bound credential (a
 * compact JWS) that the tool backend verifies with toolgate/verify
 * (./verify.ts). Issuing is on the decision path, so the keys are prepared
 * once and the JWS is built by hand: base64url(header) is precomputed per key,
 * the payload is one JSON.stringify, the signature one node:crypto `sign`
 * (ECDSA in IEEE P1363 r||s form, as JWS requires). See docs/grants.md.
 */
import {
  constants,
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomUUID,
  sign,
  type KeyObject,
} from "node:crypto";
import { readFileSync } from "node:fs";
import { bindingHash, DEFAULT_BINDING_CONTEXT_MEMBERS } from "../approvals/binding";
import { canonicalize } from "../shared/jcs";
import type { GrantsSectionConfig } from "./config";
import type { Decision, DecisionRequest, GrantInfo, VerifiedFacts } from "../model";
import { toolgateError, rethrowAs } from "../errors";
import type { Logger } from "../shared/log";
import { GRANT_TYP, type GrantClaims } from "./verify";
import type { GrantAlgorithm } from "../shared/algorithms";

export { GRANT_TYP } from "./verify";
export type { GrantClaims } from "./verify";

/** The obligation type through which a policy narrows a grant. */
export const GRANT_SCOPE_OBLIGATION = "grant_scope";

/** Tool classes whose grants are single-use unless configured otherwise. */
export const SINGLE_USE_CLASSES: ReadonlySet<string> = new Set(["execute", "admin"]);

/** A signing key, prepared once. */
interface SigningKey {
  kid: string;
  alg: GrantAlgorithm;
  key: KeyObject;
  /** base64url of the protected header, with a trailing ".". */
  headerB64: string;
}

export type GrantsConfig = GrantsSectionConfig;

/** A public JWK as published (`use: "sig"`, `alg`, `kid`). */
export type PublicJwk = Record<string, unknown> & { kid: string; alg: string };

/** What the decider needs of an issuer (tests may give a fake). */
export interface GrantMinter {
  issue(d: Decision, req: DecisionRequest, verified: VerifiedFacts, nowMs: number): IssuedGrant;
}

export interface IssuedGrant {
  token: string;
  info: GrantInfo;
}

function b64json(v: unknown): string {
  return Buffer.from(JSON.stringify(v), "utf8").toString("base64url");
}

function algFor(key: KeyObject, wanted: string | null, where: string): GrantAlgorithm {
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const derived: GrantAlgorithm | undefined =
    type === "ec" && curve === "prime256v1"
      ? "ES256"
      : type === "ec" && curve === "secp384r1"
        ? "ES384"
        : type === "rsa"
          ? "RS256"
          : type === "ed25519"
            ? "EdDSA"
            : undefined;
  if (derived === undefined) {
    throw toolgateError(
      "config_invalid",
      `${where}: unsupported key type ${type ?? "?"}${curve ? ` (${curve})` : ""}; use EC P-256 (ES256), P-384, RSA or Ed25519`,
    );
  }
  if (wanted === null || wanted === derived) return derived;
  if (wanted === "PS256" && type === "rsa") return "PS256";
  throw toolgateError("config_invalid", `${where}: alg ${wanted} does not fit a ${type} key`);
}

/** The public JWK of a key: kty/crv/x/y or n/e only (never private members). */
function publicJwk(pub: KeyObject, kid: string, alg: string): PublicJwk {
  const jwk = pub.export({ format: "jwk" });
  const out: Record<string, unknown> = { kty: jwk.kty };
  for (const k of ["crv", "x", "y", "n", "e"] as const) if (jwk[k] !== undefined) out[k] = jwk[k];
  return { ...out, kid, alg, use: "sig" };
}

/** RFC 7638 JWK thumbprint (SHA-256, base64url), the default kid. */
function thumbprint(pub: KeyObject): string {
  const jwk = pub.export({ format: "jwk" });
  const members =
    jwk.kty === "EC"
      ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
      : jwk.kty === "RSA"
        ? { e: jwk.e, kty: jwk.kty, n: jwk.n }
        : { crv: jwk.crv, kty: jwk.kty, x: jwk.x };
  return createHash("sha256").update(canonicalize(members), "utf8").digest("base64url");
}

/** The private or public key in the PEM file `file` (config key `where`), or config_invalid. */
function pemKey(file: string, where: string, kind: "private" | "public"): KeyObject {
  const pem = rethrowAs("config_invalid", `${where}: cannot read ${file}`, () =>
    readFileSync(file, "utf8"),
  );
  return rethrowAs("config_invalid", `${where}: ${file} is not a PEM ${kind} key`, () =>
    kind === "private" ? createPrivateKey(pem) : createPublicKey(pem),
  );
}

/**
 * Issues grants and publishes the JWKS. Built once from the config: the
 * active key signs; every configured key (active or not) is published so
 * backends keep verifying grants signed before a rotation.
 */
export class GrantIssuer implements GrantMinter {
  private readonly signing: SigningKey;
  private readonly jwksText: string;
  readonly issuer: string;
  readonly ephemeral: boolean;

  constructor(
    private readonly cfg: GrantsConfig,
    private readonly agentId: string,
    log?: Logger,
    private readonly newJti: () => string = randomUUID,
  ) {
    this.issuer = cfg.issuer ?? `toolgate:${agentId}`;
    const published: PublicJwk[] = [];
    let active: SigningKey | undefined;
    for (const k of cfg.keys) {
      const where = k.where;
      let priv: KeyObject | undefined;
      let pub: KeyObject;
      if (k.privateKeyFile !== null) {
        priv = pemKey(k.privateKeyFile, where, "private");
        pub = createPublicKey(priv);
      } else {
        pub = pemKey(k.publicKeyFile ?? "", where, "public");
      }
      const alg = algFor(pub, k.alg, where);
      const kid = k.kid ?? thumbprint(pub);
      if (published.some((p) => p.kid === kid)) {
        throw toolgateError("config_invalid", `${where}: kid ${kid} is configured twice`);
      }
      published.push(publicJwk(pub, kid, alg));
      if (k.active && priv !== undefined) active = this.prepare(priv, kid, alg);
    }
    this.ephemeral = active === undefined;
    if (active === undefined) {
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      const pub = createPublicKey(privateKey);
      const kid = `ephemeral-${thumbprint(pub).slice(0, 16)}`;
      active = this.prepare(privateKey, kid, "ES256");
      published.unshift(publicJwk(pub, kid, "ES256"));
      log?.warn(
        "no grants.private_key_file configured: grants are signed with a key generated at start; backends must refetch the JWKS after every restart",
        { event: "grants.ephemeral_key", kid },
      );
    }
    this.signing = active;
    this.jwksText = JSON.stringify({ keys: published });
  }

  private prepare(key: KeyObject, kid: string, alg: GrantAlgorithm): SigningKey {
    const header = { alg, typ: GRANT_TYP, kid };
    return { key, kid, alg, headerB64: `${b64json(header)}.` };
  }

  /** The active signing key's id. */
  get kid(): string {
    return this.signing.kid;
  }

  /** `{"keys": [...]}`: the public keys (active first if ephemeral), as JSON text. */
  jwksJson(): string {
    return this.jwksText;
  }

  /** The audience, lifetime and single-use flag of a tool's grants. */
  toolSettings(tool: string, toolClass: string | null | undefined) {
    // the tool name is the caller's: never read a member of Object.prototype
    const t = Object.hasOwn(this.cfg.tools, tool) ? this.cfg.tools[tool] : undefined;
    return {
      aud: t?.audience ?? `tool:${tool}`,
      ttl: t?.ttlSeconds ?? this.cfg.ttlSeconds,
      singleUse:
        t?.singleUse ?? (typeof toolClass === "string" && SINGLE_USE_CLASSES.has(toolClass)),
    };
  }

  /** Signs the grant for an allow. Throws only on a broken key (the decider then denies). */
  issue(d: Decision, req: DecisionRequest, verified: VerifiedFacts, nowMs: number): IssuedGrant {
    const tool = req.action.name;
    const { aud, ttl, singleUse } = this.toolSettings(tool, d.tool?.class);
    const iat = Math.floor(nowMs / 1000);
    const jti = this.newJti();
    const claims: GrantClaims = {
      iss: this.issuer,
      aud,
      sub: verified.subject.id,
      act: { sub: this.agentId },
      tool,
      resource: { type: req.resource.type, id: req.resource.id },
      binding_hash: bindingHash(req, DEFAULT_BINDING_CONTEXT_MEMBERS),
      decision_id: d.decision_id,
      policy_revision: d.policy.revision,
      iat,
      exp: iat + ttl,
      jti,
      single_use: singleUse,
    };
    const scope = scopeOf(d.obligations);
    if (scope !== undefined) claims.scope = scope;
    const input = this.signing.headerB64 + b64json(claims);
    const sig = this.signature(Buffer.from(input, "utf8"));
    return { token: `${input}.${sig.toString("base64url")}`, info: { jti, aud, exp: claims.exp } };
  }

  private signature(data: Buffer): Buffer {
    const { key, alg } = this.signing;
    switch (alg) {
      // Signing with the bare KeyObject (DER output) and converting is about
      // twice as fast as passing {key, dsaEncoding: "ieee-p1363"}: Node's
      // options-object path re-prepares the key on every call.
      case "ES256":
        return derToP1363(sign("sha256", data, key), 32);
      case "ES384":
        return derToP1363(sign("sha384", data, key), 48);
      case "RS256":
        return sign("sha256", data, key);
      case "PS256":
        return sign("sha256", data, {
          key,
          padding: constants.RSA_PKCS1_PSS_PADDING,
          saltLength: 32,
        });
      case "EdDSA":
        return sign(null, data, key);
    }
  }
}

/**
 * An ECDSA signature from DER (SEQUENCE { INTEGER r, INTEGER s }) to the
 * IEEE P1363 form JWS uses (r || s, each left-padded to `size` bytes).
 */
export function derToP1363(der: Buffer, size: number): Buffer {
  let i = 2;
  if (der[0] !== 0x30) throw new Error("ECDSA signature is not a DER SEQUENCE");
  if ((der[1] as number) & 0x80) i += (der[1] as number) & 0x7f; // long-form length
  const out = Buffer.alloc(size * 2);
  for (let part = 0; part < 2; part++) {
    if (der[i] !== 0x02) throw new Error("ECDSA signature part is not a DER INTEGER");
    const len = der[i + 1] as number;
    let start = i + 2;
    let n = len;
    while (n > size && der[start] === 0) {
      start++;
      n--;
    }
    if (n > size) throw new Error("ECDSA signature integer is too long");
    der.copy(out, part * size + (size - n), start, start + n);
    i += 2 + len;
  }
  return out;
}

/**
 * The grant's `scope`: the properties of every `grant_scope` obligation,
 * merged; when two obligations name the same key the narrower wins
 * (`max_amount`: the smaller; `record_ids`: the intersection; any other key:
 * both values must agree, else the scope holds an unsatisfiable marker).
 */
export function scopeOf(obligations: Decision["obligations"]): Record<string, unknown> | undefined {
  let scope: Record<string, unknown> | undefined;
  for (const o of obligations) {
    if (o.type !== GRANT_SCOPE_OBLIGATION || o.properties === undefined) continue;
    // null prototype: the keys are the policy's, and "toString" is no member
    scope ??= Object.create(null) as Record<string, unknown>;
    for (const [k, v] of Object.entries(o.properties)) {
      if (!Object.hasOwn(scope, k)) scope[k] = v;
      else if (k === "max_amount" && typeof v === "number" && typeof scope[k] === "number")
        scope[k] = Math.min(scope[k], v);
      else if (k === "record_ids" && Array.isArray(v) && Array.isArray(scope[k]))
        scope[k] = (scope[k] as unknown[]).filter((x) => v.includes(x));
      else if (JSON.stringify(scope[k]) !== JSON.stringify(v))
        scope[k] = { conflict: [scope[k], v] };
    }
  }
  return scope;
}
