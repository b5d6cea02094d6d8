/**
 * The JWS signature algorithms toolgate knows (RFC 7518 §3.1, RFC 8037), in
 * one list, and by name the subset each use accepts. The subsets differ on
 * purpose:
 *
 * - bundle signatures (`BUNDLE_SIGNING_ALGORITHMS`): OPA's set, so that a
 *   bundle `opa sign` signed verifies here as it does in OPA. HMAC is in it:
 *   OPA lets a bundle be signed with a shared secret that the operator
 *   configures as such. OPA's list has no EdDSA.
 * - caller tokens in jwt mode (`TOKEN_ALGORITHMS`): public-key algorithms
 *   only. Never HMAC: the keys come from a JWKS or a PEM public key, and a
 *   verifier that accepted HS256 with a public key as the secret would take
 *   tokens anyone can forge (algorithm confusion, RFC 8725 §2.1).
 * - grants (`GRANT_ALGORITHMS`): what the grant issuer implements (ES256,
 *   ES384, RS256, PS256, EdDSA), which is also what a backend verifying a
 *   grant accepts unless told otherwise.
 */

const RSA = ["RS256", "RS384", "RS512"] as const;
const RSA_PSS = ["PS256", "PS384", "PS512"] as const;
const ECDSA = ["ES256", "ES384", "ES512"] as const;
const HMAC = ["HS256", "HS384", "HS512"] as const;

/** Every JWS algorithm some part of toolgate accepts. */
export const JWS_ALGORITHMS = [...RSA, ...RSA_PSS, ...ECDSA, ...HMAC, "EdDSA"] as const;

export type JwsAlgorithm = (typeof JWS_ALGORITHMS)[number];

/** A frozen subset of {@link JWS_ALGORITHMS}, named (the order is the one messages and docs list). */
function subset<const T extends readonly JwsAlgorithm[]>(names: T): T {
  return Object.freeze(names);
}

/** What a bundle signature may use (OPA's set): the verifier, `toolgate policy sign` and the config schema. */
export const BUNDLE_SIGNING_ALGORITHMS = subset([...RSA, ...RSA_PSS, ...ECDSA, ...HMAC]);

export type BundleSigningAlgorithm = (typeof BUNDLE_SIGNING_ALGORITHMS)[number];

/** What a caller's bearer token may be signed with in jwt mode (public-key algorithms only). */
export const TOKEN_ALGORITHMS = subset([...ECDSA, ...RSA, ...RSA_PSS, "EdDSA"]);

/** What toolgate signs grants with, and what a grant verifier accepts by default. */
export const GRANT_ALGORITHMS = subset(["ES256", "ES384", "RS256", "PS256", "EdDSA"]);

export type GrantAlgorithm = (typeof GRANT_ALGORITHMS)[number];

/** Whether `name` is one of `list` (a type guard for the subsets above). */
export function isOneOf<T extends string>(list: readonly T[], name: unknown): name is T {
  return typeof name === "string" && (list as readonly string[]).includes(name);
}
