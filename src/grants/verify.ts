/**
 * toolgate/verify — the grant verifier for tool backends.
 *
 * toolgate puts a short-lived, request-bound grant (a compact JWS) on every
 * allow. The system that executes the tool verifies it before it acts:
 *
 *   import { createGrantVerifier } from "toolgate/verify";
 *   const grants = createGrantVerifier({ audience: "tool:refunds.issue", jwks: JWKS_URL });
 *   const claims = await grants.verify(token, request); // throws GrantError
 *
 * This module is its own package entry point and imports nothing of the
 * server: only the binding hash (../approvals/binding, ../shared/jcs), the
 * error registry and jose. See docs/grants.md.
 */
import { compactVerify, createLocalJWKSet, createRemoteJWKSet, errors as jose } from "jose";
import type { JSONWebKeySet, JWTVerifyGetKey } from "jose";
import {
  bindingHash,
  bindingHashesEqual,
  DEFAULT_BINDING_CONTEXT_MEMBERS,
} from "../approvals/binding";
import { ToolgateError } from "../errors";
import { GRANT_ALGORITHMS as SIGNED_GRANT_ALGORITHMS } from "../shared/algorithms";
import { isObject } from "../shared/guards";

/** The JWS `typ` of a toolgate grant (explicit typing, RFC 8725 §3.11). */
export const GRANT_TYP = "toolgate-grant+jwt";

/** Signature algorithms a verifier accepts unless told otherwise (the ones toolgate signs grants with). */
export const GRANT_ALGORITHMS: readonly string[] = SIGNED_GRANT_ALGORITHMS;

/** Default tolerated clock difference between toolgate and the backend. */
export const DEFAULT_CLOCK_SKEW_SECONDS = 5;

/** The claims of a toolgate grant (docs/grants.md). */
export interface GrantClaims {
  iss: string;
  /** The tool backend the grant is for (configured per tool; default `tool:<tool name>`). */
  aud: string;
  /** The subject (user) on whose behalf the agent acts. */
  sub: string;
  /** The agent (RFC 8693 actor). */
  act: { sub: string };
  tool: string;
  resource: { type: string; id: string };
  /** base64url(SHA-256(JCS({subject, resource, action, context: {job}}))), as for approvals. */
  binding_hash: string;
  decision_id: string;
  policy_revision: string;
  iat: number;
  exp: number;
  jti: string;
  single_use: boolean;
  /** Narrowing from the policy's `grant_scope` obligations; every key must be enforced. */
  scope?: Record<string, unknown>;
  /** Not set by toolgate; honoured when present. */
  nbf?: number;
}

/** The request the backend is about to execute, in toolgate's (AuthZEN's) model. */
export interface GrantRequest {
  subject: unknown;
  /** `{name, properties?: {arguments?}}`; checked by the verifier. */
  action: unknown;
  resource: unknown;
  context?: unknown;
}

export type GrantErrorCode =
  | "grant_malformed"
  | "grant_signature_invalid"
  | "grant_key_unknown"
  | "grant_keys_unavailable"
  | "grant_expired"
  | "grant_not_yet_valid"
  | "grant_audience_mismatch"
  | "grant_issuer_mismatch"
  | "grant_binding_mismatch"
  | "grant_replayed"
  | "grant_scope_violation";

/** A refused grant. `code` is stable (docs/errors.md); `status` is a suggested HTTP status. */
export class GrantError extends ToolgateError {
  declare readonly code: GrantErrorCode;
  constructor(code: GrantErrorCode, message?: string) {
    super(code, message);
    this.name = "GrantError";
  }
}

export function isGrantError(e: unknown): e is GrantError {
  return e instanceof GrantError;
}

/**
 * Single-use enforcement. `markUsed` must be atomic "mark if unused": it
 * returns true when `jti` was not used before (and is now marked), false when
 * it was. `expSeconds` is the grant's `exp` (epoch seconds): the store may
 * forget the jti after that (plus the clock skew), because the grant is dead
 * by then. A shared store (Redis `SET jti 1 NX EXAT exp`, a SQL unique key)
 * makes single use hold across backend replicas.
 */
export interface JtiStore {
  markUsed(jti: string, expSeconds: number): boolean | Promise<boolean>;
  /** Optional: whether the jti was used (not needed by the verifier). */
  has?(jti: string): boolean | Promise<boolean>;
}

/** The in-memory JtiStore: one process; entries are evicted once their grant expired. */
export class MemoryJtiStore implements JtiStore {
  private readonly used = new Map<string, number>();
  private nextSweep = 0;

  constructor(private readonly opts: { graceSeconds?: number; now?: () => number } = {}) {}

  private nowSec(): number {
    return (this.opts.now ?? Date.now)() / 1000;
  }

  markUsed(jti: string, expSeconds: number): boolean {
    const now = this.nowSec();
    if (now >= this.nextSweep) this.sweep(now);
    const until = this.used.get(jti);
    if (until !== undefined && until > now) return false;
    this.used.set(jti, expSeconds + (this.opts.graceSeconds ?? DEFAULT_CLOCK_SKEW_SECONDS * 2));
    return true;
  }

  has(jti: string): boolean {
    const until = this.used.get(jti);
    return until !== undefined && until > this.nowSec();
  }

  get size(): number {
    return this.used.size;
  }

  /** Drops entries whose grants can no longer verify (runs at most once a second). */
  sweep(now = this.nowSec()): void {
    for (const [jti, until] of this.used) if (until <= now) this.used.delete(jti);
    this.nextSweep = now + 1;
  }
}

/** Enforces one scope key; returns a reason string when the request exceeds it. */
export type ScopeCheck = (value: unknown, request: GrantRequest) => string | undefined;

function argumentsOf(request: GrantRequest): Record<string, unknown> | undefined {
  const action = request.action;
  if (!isObject(action) || !isObject(action.properties)) return undefined;
  const args = action.properties.arguments;
  return isObject(args) ? args : undefined;
}

/** The scope keys toolgate defines (docs/policy-contract.md, obligation `grant_scope`). */
export const SCOPE_CHECKS: Readonly<Record<string, ScopeCheck>> = Object.freeze({
  max_amount: (max, request) => {
    if (typeof max !== "number") return "scope.max_amount is not a number";
    const amount = argumentsOf(request)?.amount;
    if (typeof amount !== "number") return "the request has no numeric arguments.amount";
    return amount <= max ? undefined : `amount ${amount} exceeds the grant's max_amount ${max}`;
  },
  record_ids: (ids, request) => {
    if (!Array.isArray(ids)) return "scope.record_ids is not an array";
    const id = isObject(request.resource) ? request.resource.id : undefined;
    return ids.includes(id)
      ? undefined
      : `resource ${JSON.stringify(id)} is not among the grant's record_ids`;
  },
});

export type JwksSource = JSONWebKeySet | string | URL | JWTVerifyGetKey;

export interface VerifyOptions {
  /** This backend's audience (toolgate's `grants.tools.<tool>.audience`, default `tool:<tool>`). */
  audience: string;
  /** toolgate's keys: a JWKS object, its URL (`http://<control>/.well-known/jwks.json`, cached), or a jose key resolver. */
  jwks: JwksSource;
  /** Expected `iss` (toolgate's `grants.issuer`, default `toolgate:<agent id>`). Unchecked when absent. */
  issuer?: string;
  /** Tolerated clock difference for `exp`, `iat` and `nbf` (default 5 s). */
  clockSkewSeconds?: number;
  /** Single-use enforcement (default: one in-memory store per verifier / per process). */
  jtiStore?: JtiStore;
  /** The clock, epoch milliseconds (tests). */
  now?: number | (() => number);
  /** Accepted signature algorithms (default ES256, ES384, RS256, PS256, EdDSA). */
  algorithms?: readonly string[];
  /** Extra scope keys this backend enforces; unknown keys always fail closed. */
  scopeChecks?: Readonly<Record<string, ScopeCheck>>;
}

const remoteSets = new Map<string, JWTVerifyGetKey>();

function keyResolver(jwks: JwksSource): JWTVerifyGetKey {
  if (typeof jwks === "function") return jwks;
  if (typeof jwks === "string" || jwks instanceof URL) {
    const url = String(jwks);
    let set = remoteSets.get(url);
    if (set === undefined) {
      set = createRemoteJWKSet(new URL(url), { cooldownDuration: 5_000 });
      remoteSets.set(url, set);
    }
    return set;
  }
  return createLocalJWKSet(jwks);
}

function refuse(code: GrantErrorCode, message: string): never {
  throw new GrantError(code, message);
}

function mapJoseError(e: unknown): never {
  if (e instanceof GrantError) throw e;
  if (e instanceof jose.JWKSNoMatchingKey || e instanceof jose.JWKSMultipleMatchingKeys)
    refuse("grant_key_unknown", "no key in the JWKS matches the grant's kid and algorithm");
  if (e instanceof jose.JWSSignatureVerificationFailed)
    refuse("grant_signature_invalid", "the grant's signature does not verify");
  if (e instanceof jose.JOSEAlgNotAllowed || e instanceof jose.JOSENotSupported)
    refuse(
      "grant_signature_invalid",
      `the grant's algorithm is not accepted: ${(e as Error).message}`,
    );
  if (e instanceof jose.JWKSTimeout || e instanceof jose.JWKSInvalid)
    refuse("grant_keys_unavailable", `the JWKS cannot be used: ${(e as Error).message}`);
  if (e instanceof jose.JWSInvalid || e instanceof jose.JOSEError)
    refuse("grant_malformed", `the grant is not a valid JWS: ${(e as Error).message}`);
  refuse("grant_keys_unavailable", `verifying the grant failed: ${(e as Error).message}`);
}

function str(v: unknown): v is string {
  return typeof v === "string" && v !== "";
}

function checkShape(c: Record<string, unknown>): GrantClaims {
  const bad = (what: string): never => refuse("grant_malformed", `grant claim ${what}`);
  for (const k of ["iss", "aud", "sub", "tool", "binding_hash", "decision_id", "jti"]) {
    if (!str(c[k])) bad(`${k} is missing or not a string`);
  }
  for (const k of ["iat", "exp"]) if (!Number.isFinite(c[k])) bad(`${k} is not a number`);
  if (typeof c.single_use !== "boolean") bad("single_use is not a boolean");
  if (!isObject(c.act) || !str(c.act.sub)) bad("act.sub is missing");
  if (
    !isObject(c.resource) ||
    typeof c.resource.type !== "string" ||
    typeof c.resource.id !== "string"
  )
    bad("resource is not {type, id}");
  if (c.scope !== undefined && !isObject(c.scope)) bad("scope is not an object");
  if (c.nbf !== undefined && !Number.isFinite(c.nbf)) bad("nbf is not a number");
  return c as unknown as GrantClaims;
}

const defaultStore = new MemoryJtiStore();

/**
 * Verifies a grant for the request the backend is about to execute. Returns
 * the verified claims or throws a GrantError. Order: signature (and `typ`),
 * issuer, audience, time, tool and binding hash, scope, and last single use
 * (so a refused request never burns a grant).
 */
export async function verifyGrant(
  token: string | undefined | null,
  opts: VerifyOptions & { request: GrantRequest },
): Promise<GrantClaims> {
  return verifyWith(
    token,
    opts.request,
    opts,
    keyResolver(opts.jwks),
    opts.jtiStore ?? defaultStore,
  );
}

async function verifyWith(
  token: string | undefined | null,
  request: GrantRequest,
  opts: VerifyOptions,
  getKey: JWTVerifyGetKey,
  store: JtiStore,
): Promise<GrantClaims> {
  if (typeof token !== "string" || token === "") refuse("grant_malformed", "no grant presented");
  if (token.length > 16 * 1024) refuse("grant_malformed", "the grant is too long");
  let payload: Uint8Array;
  let typ: unknown;
  try {
    const r = await compactVerify(token, getKey, {
      algorithms: [...(opts.algorithms ?? GRANT_ALGORITHMS)],
    });
    payload = r.payload;
    typ = r.protectedHeader.typ;
  } catch (e) {
    return mapJoseError(e);
  }
  if (typ !== GRANT_TYP)
    refuse("grant_malformed", `the JWS typ is ${JSON.stringify(typ)}, not ${GRANT_TYP}`);
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(payload).toString("utf8"));
  } catch {
    refuse("grant_malformed", "the grant payload is not JSON");
  }
  if (!isObject(raw)) refuse("grant_malformed", "the grant payload is not a JSON object");
  const c = checkShape(raw);
  if (opts.issuer !== undefined && c.iss !== opts.issuer)
    refuse("grant_issuer_mismatch", `the grant was issued by ${JSON.stringify(c.iss)}`);
  if (c.aud !== opts.audience)
    refuse(
      "grant_audience_mismatch",
      `the grant is for ${JSON.stringify(c.aud)}, not ${JSON.stringify(opts.audience)}`,
    );
  const nowMs = typeof opts.now === "function" ? opts.now() : (opts.now ?? Date.now());
  const now = nowMs / 1000;
  const skew = opts.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_SECONDS;
  if (now >= c.exp + skew)
    refuse("grant_expired", `the grant expired at ${new Date(c.exp * 1000).toISOString()}`);
  if (c.iat > now + skew || (c.nbf !== undefined && c.nbf > now + skew))
    refuse("grant_not_yet_valid", "the grant's iat/nbf lies in the future");
  const action = request.action;
  const toolName = isObject(action) ? action.name : undefined;
  if (toolName !== c.tool)
    refuse(
      "grant_binding_mismatch",
      `the grant is for tool ${JSON.stringify(c.tool)}, the request calls ${JSON.stringify(toolName)}`,
    );
  let hash: string;
  try {
    hash = bindingHash(request, DEFAULT_BINDING_CONTEXT_MEMBERS);
  } catch (e) {
    refuse("grant_binding_mismatch", `the request cannot be bound: ${(e as Error).message}`);
  }
  if (!bindingHashesEqual(hash, c.binding_hash))
    refuse(
      "grant_binding_mismatch",
      "the request differs from the one the grant authorizes (binding_hash)",
    );
  if (c.scope !== undefined) {
    for (const [key, value] of Object.entries(c.scope)) {
      const check = opts.scopeChecks?.[key] ?? SCOPE_CHECKS[key];
      if (check === undefined)
        refuse(
          "grant_scope_violation",
          `the grant's scope has a key this verifier does not enforce: ${key}`,
        );
      const why = check(value, request);
      if (why !== undefined) refuse("grant_scope_violation", why);
    }
  }
  if (c.single_use) {
    let fresh: boolean;
    try {
      fresh = await store.markUsed(c.jti, c.exp);
    } catch (e) {
      refuse(
        "grant_replayed",
        `the jti store failed; refused (fail closed): ${(e as Error).message}`,
      );
    }
    if (!fresh) refuse("grant_replayed", `grant ${c.jti} was already used (single use)`);
  }
  return c;
}

export interface GrantVerifier {
  /** Verifies `token` for `request`; returns the claims or throws GrantError. */
  verify(token: string | undefined | null, request: GrantRequest): Promise<GrantClaims>;
}

/** A verifier with its options, key set and (by default in-memory) jti store bound once. */
export function createGrantVerifier(opts: VerifyOptions): GrantVerifier {
  const getKey = keyResolver(opts.jwks);
  const store = opts.jtiStore ?? new MemoryJtiStore();
  return { verify: (token, request) => verifyWith(token, request, opts, getKey, store) };
}

/** The grant of an `Authorization: Bearer <grant>` header (or undefined). */
export function grantFromHeaders(
  headers: Record<string, string | string[] | undefined>,
): string | undefined {
  const h = headers.authorization;
  if (typeof h !== "string") return undefined;
  const m = /^Bearer[ ]+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)\s*$/i.exec(h);
  return m?.[1];
}
