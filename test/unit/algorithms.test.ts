/**
 * The JWS algorithm subsets, pinned: each use's list (and its order, which
 * messages and docs show) and the rule that separates them.
 */
import {
  BUNDLE_SIGNING_ALGORITHMS,
  GRANT_ALGORITHMS,
  isOneOf,
  JWS_ALGORITHMS,
  TOKEN_ALGORITHMS,
} from "../../src/shared/algorithms";
import { GRANT_ALGORITHMS as VERIFIER_DEFAULT } from "../../src/grants/verify";

test("each use's list, in order", () => {
  expect(BUNDLE_SIGNING_ALGORITHMS).toEqual([
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "HS256",
    "HS384",
    "HS512",
  ]);
  expect(TOKEN_ALGORITHMS).toEqual([
    "ES256",
    "ES384",
    "ES512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "EdDSA",
  ]);
  expect(GRANT_ALGORITHMS).toEqual(["ES256", "ES384", "RS256", "PS256", "EdDSA"]);
  expect(VERIFIER_DEFAULT).toEqual(GRANT_ALGORITHMS);
});

test("subsets of the one list, frozen; caller tokens never accept HMAC", () => {
  for (const list of [BUNDLE_SIGNING_ALGORITHMS, TOKEN_ALGORITHMS, GRANT_ALGORITHMS]) {
    expect(Object.isFrozen(list)).toBe(true);
    for (const alg of list) expect(JWS_ALGORITHMS).toContain(alg);
  }
  expect(TOKEN_ALGORITHMS.filter((a) => a.startsWith("HS"))).toEqual([]);
  expect(isOneOf(BUNDLE_SIGNING_ALGORITHMS, "HS256")).toBe(true);
  expect(isOneOf(BUNDLE_SIGNING_ALGORITHMS, "EdDSA")).toBe(false);
  expect(isOneOf(GRANT_ALGORITHMS, 256)).toBe(false);
});
