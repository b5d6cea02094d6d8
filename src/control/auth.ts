/**
 * Who calls the control service: people on the human API (control.jwt, the
 * same tokens as a sidecar's control port) and sidecars on /fleet/v1
 * (fleet.jwt, audience toolgate-fleet), each credential bound to ONE agent id
 * read from the claim `fleet.jwt.agent_claim` (a `/`-separated path into
 * nested claims, e.g. `kubernetes.io/serviceaccount/name`).
 */
import type { IncomingMessage } from "node:http";
import { decodeJwt } from "jose";
import { toolgateError } from "../errors";
import { bearerToken, type Principal, type TokenVerifier } from "../identity";
import { hasOwn, isObject } from "../shared/guards";

/** What an agent id may look like (as agent.id). */
const AGENT_ID = /^[A-Za-z0-9._:@/-]{1,256}$/;

/** The value at a `/`-separated path of nested claims (own members only), if any. */
export function claimAt(claims: unknown, path: string): unknown {
  let node: unknown = claims;
  for (const seg of path.split("/")) {
    if (!isObject(node) || !hasOwn(node, seg)) return undefined;
    node = node[seg];
  }
  return node;
}

/** The principals SidecarCredentials made: a route checks which kind of caller it has. */
const SIDECARS = new WeakSet<Principal>();

/** Whether `p` is a verified sidecar (made by SidecarCredentials), not a person. */
export const isSidecar = (p: Principal | undefined): boolean => p !== undefined && SIDECARS.has(p);

/**
 * A verified sidecar: its principal's id is the agent id its credential
 * names (roles none); `sub` stays in the claims.
 */
export class SidecarCredentials {
  constructor(
    private readonly verifier: TokenVerifier,
    private readonly agentClaim: string,
  ) {}

  /** The caller, or `unauthenticated` (401): no token, a token refused, or no agent id in it. */
  async verify(req: IncomingMessage): Promise<Principal> {
    const token = bearerToken(req.headers);
    const principal = await this.verifier.verify(token);
    // the signature, issuer, audience and expiry are verified: its claims can be read
    const agent = claimAt(decodeJwt(token as string), this.agentClaim);
    if (typeof agent !== "string" || !AGENT_ID.test(agent)) {
      throw toolgateError(
        "unauthenticated",
        `the sidecar credential names no agent (claim ${this.agentClaim})`,
      );
    }
    const sidecar: Principal = { ...principal, id: agent, roles: [] };
    SIDECARS.add(sidecar);
    return sidecar;
  }
}

/**
 * Routes of the sidecar API (everything else is the human API), as the
 * router matches them: case-insensitively.
 */
export function isSidecarPath(url: string | undefined): boolean {
  if (url === undefined) return false;
  const path = url.toLowerCase();
  return path === "/fleet" || path.startsWith("/fleet/") || path.startsWith("/fleet?");
}
