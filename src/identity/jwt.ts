import { readFileSync } from "node:fs";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors as joseErrors,
  importSPKI,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
  type CryptoKey,
} from "jose";
import { TOKEN_ALGORITHMS } from "../shared/algorithms";
import { isLoopback } from "../shared/config-spec";
import type { JwtConfig } from "./config";
import { toolgateError } from "../errors";
import { parseUntrustedJson } from "../shared/guards";
import { isDevKey, jwksHoldsDevKey } from "./devkey";
import type { Principal } from "../model";
import { OrderedMap } from "../shared/ordered-map";

export type { Principal };

/** The bearer token of an Authorization header, if any. */
export function bearerToken(
  headers: Record<string, string | string[] | undefined>,
): string | undefined {
  const h = headers.authorization;
  if (typeof h !== "string") return undefined;
  const m = /^Bearer[ ]+([A-Za-z0-9._~+/-]+=*)\s*$/i.exec(h);
  return m?.[1];
}

/**
 * Verifies bearer tokens for one port: signature against configured keys (a
 * PEM public key, a JWKS file or a JWKS URL), issuer, audience, expiry (with
 * the configured skew). Verified tokens are cached until they expire, so a
 * repeated token costs a map lookup.
 */
export class TokenVerifier {
  private readonly cache = new OrderedMap<string, { principal: Principal; expMs: number }>();

  private constructor(
    private readonly cfg: JwtConfig,
    private readonly key: CryptoKey | JWTVerifyGetKey,
    private devMaterial: boolean,
  ) {}

  /**
   * Loads the keys of one port. `port` names where the port listens: the
   * committed development key — recognised by its key material, whatever the
   * file is called — is refused (`config_invalid`) on a port that listens off
   * loopback, and a JWKS URL that serves it has its tokens refused there.
   */
  static async create(
    cfg: JwtConfig,
    port: { hostKey: string; host: string; onDevKey?: () => void },
  ): Promise<TokenVerifier> {
    const exposed = !isLoopback(port.host);
    let key: CryptoKey | JWTVerifyGetKey;
    let dev = false;
    try {
      if (cfg.keys.kind === "jwks_url") {
        const remote = createRemoteJWKSet(new URL(cfg.keys.value), {
          timeoutDuration: 5000,
          cooldownDuration: 30_000,
        });
        const self: { verifier?: TokenVerifier } = {};
        const checked: JWTVerifyGetKey = async (header, token) => {
          const k = await remote(header, token);
          if (isDevKey(k)) {
            if (exposed) throw new DevKeyRefused();
            const verifier = self.verifier;
            if (verifier !== undefined && !verifier.devMaterial) {
              verifier.devMaterial = true;
              port.onDevKey?.();
            }
          }
          return k;
        };
        self.verifier = new TokenVerifier(cfg, checked, false);
        return self.verifier;
      } else if (cfg.keys.kind === "jwks_file") {
        const doc: unknown = parseUntrustedJson(readFileSync(cfg.keys.value, "utf8"));
        dev = jwksHoldsDevKey(doc);
        key = createLocalJWKSet(doc as Parameters<typeof createLocalJWKSet>[0]);
      } else {
        const pem = readFileSync(cfg.keys.value, "utf8");
        dev = isDevKey(pem);
        const alg = /BEGIN PUBLIC KEY/.test(pem) ? await guessAlg(pem) : "ES256";
        key = await importSPKI(pem, alg);
      }
    } catch (e) {
      throw toolgateError(
        "config_invalid",
        `cannot load token keys from ${cfg.keys.kind} ${cfg.keys.value}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    if (dev && exposed) {
      throw toolgateError(
        "config_invalid",
        `key "${port.hostKey}" is ${JSON.stringify(port.host)} but the keys in ${cfg.keys.kind} ${cfg.keys.value} are the committed development key (anyone can mint tokens with it). ` +
          `Fix: configure your issuer's keys, or keep "${port.hostKey}" on 127.0.0.1.`,
      );
    }
    return new TokenVerifier(cfg, key, dev || cfg.dev);
  }

  /** True when this port trusts the committed development key (by key material). */
  get dev(): boolean {
    return this.devMaterial || this.cfg.dev;
  }

  /** Verifies a token; throws `unauthenticated` (never echoing the token). */
  async verify(token: string | undefined): Promise<Principal> {
    if (token === undefined)
      throw toolgateError(
        "unauthenticated",
        "a bearer token is required (Authorization: Bearer <token>)",
      );
    const now = Date.now();
    const hit = this.cache.get(token);
    if (hit !== undefined) {
      if (hit.expMs + this.cfg.clockSkewSeconds * 1000 > now) return hit.principal;
      this.cache.delete(token);
    }
    let payload: JWTPayload;
    try {
      const opts = {
        issuer: this.cfg.issuer,
        audience: this.cfg.audience,
        clockTolerance: this.cfg.clockSkewSeconds,
        algorithms: [...TOKEN_ALGORITHMS],
        requiredClaims: ["exp", "sub"],
      };
      payload =
        typeof this.key === "function"
          ? (await jwtVerify(token, this.key, opts)).payload
          : (await jwtVerify(token, this.key, opts)).payload;
    } catch (e) {
      throw toolgateError(
        "unauthenticated",
        `the bearer token was refused: ${describeJoseError(e)}`,
        { cause: e },
      );
    }
    const sub = payload.sub as string;
    const rawRoles = payload[this.cfg.rolesClaim];
    const roles = Array.isArray(rawRoles)
      ? rawRoles.filter((r): r is string => typeof r === "string")
      : [];
    const principal: Principal = {
      id: sub,
      roles,
      method: "jwt",
      claims: { iss: payload.iss, sub, aud: payload.aud, exp: payload.exp },
    };
    if (this.cfg.jobClaim !== null && Object.hasOwn(payload, this.cfg.jobClaim)) {
      const job = payload[this.cfg.jobClaim];
      if (typeof job === "string" && job !== "") principal.job = job;
    }
    if (
      typeof this.cfg.sessionClaim === "string" &&
      Object.hasOwn(payload, this.cfg.sessionClaim)
    ) {
      const sid = payload[this.cfg.sessionClaim];
      // present but unusable: refused, never a silent fall back to the body's session id
      if (typeof sid !== "string" || sid === "" || sid.length > 256)
        throw toolgateError(
          "unauthenticated",
          `the token's session claim "${this.cfg.sessionClaim}" is not a session id (a string of 1-256 characters)`,
        );
      principal.session = sid;
    }
    const expMs = (payload.exp ?? 0) * 1000;
    this.cache.set(token, { principal, expMs });
    if (this.cache.size > 10_000) this.cache.shift();
    return principal;
  }
}

async function guessAlg(pem: string): Promise<string> {
  const { createPublicKey } = await import("node:crypto");
  const k = createPublicKey(pem);
  if (k.asymmetricKeyType === "ec") {
    const curve = k.asymmetricKeyDetails?.namedCurve;
    return curve === "secp384r1" ? "ES384" : curve === "secp521r1" ? "ES512" : "ES256";
  }
  if (k.asymmetricKeyType === "ed25519") return "EdDSA";
  if (k.asymmetricKeyType === "rsa-pss") return "PS256";
  return "RS256";
}

/** A JWKS URL served the development key to a port reachable off loopback. */
class DevKeyRefused extends Error {
  constructor() {
    super("the token is signed with the committed development key, which is refused off loopback");
  }
}

function describeJoseError(e: unknown): string {
  if (e instanceof DevKeyRefused) return e.message;
  if (e instanceof joseErrors.JWTExpired) return "expired";
  if (e instanceof joseErrors.JWTClaimValidationFailed)
    return `claim ${e.claim} is not acceptable (${e.reason})`;
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return "bad signature";
  if (e instanceof joseErrors.JWKSNoMatchingKey) return "no matching key";
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return "algorithm not allowed";
  if (e instanceof joseErrors.JWSInvalid || e instanceof joseErrors.JWTInvalid)
    return "malformed token";
  return e instanceof Error ? e.message : "invalid token";
}
