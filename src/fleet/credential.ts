/**
 * The sidecar's credential for the control service's /fleet/v1 API.
 *
 * - `fleet.credential_file` set: the file's content (a Kubernetes projected
 *   service-account token), read again for every connection and call, since
 *   the kubelet rotates it in place.
 * - unset while `fleet.jwt` trusts the committed development key: a JWT the
 *   sidecar signs itself with config/dev/dev-signing-key.pem (iss
 *   `fleet.jwt.issuer`, aud `fleet.jwt.audience`, sub `agent:<id>`, the agent
 *   claim `fleet.jwt.agent_claim` = agent.id, 5 minutes), minted again a
 *   minute before it expires. Development only.
 */
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { importPKCS8, SignJWT } from "jose";
import { toolgateError } from "../errors";
import { devPrivateKeyPath } from "../shared/paths";

export type Credential = () => Promise<string>;

const DEV_TTL_S = 300;
const REMINT_BEFORE_S = 60;

/** A bearer token read from `file` at every call (trimmed; empty is an error). */
export function fileCredential(file: string): Credential {
  return async () => {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (e) {
      throw toolgateError(
        "fleet_unavailable",
        `fleet.credential_file: cannot read ${file}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    const token = text.trim();
    if (token === "" || /\s/.test(token))
      throw toolgateError("fleet_unavailable", `fleet.credential_file: ${file} holds no token`);
    return token;
  };
}

/** The claims object with `value` at the `/`-separated `path` (nested objects). */
function claimAt(path: string, value: string): Record<string, unknown> {
  const segs = path.split("/");
  const out: Record<string, unknown> = {};
  let node = out;
  segs.forEach((seg, i) => {
    if (i === segs.length - 1) node[seg] = value;
    else {
      const child: Record<string, unknown> = {};
      node[seg] = child;
      node = child;
    }
  });
  return out;
}

export interface DevCredentialOptions {
  agentId: string;
  issuer: string;
  audience: string;
  agentClaim: string;
  now?: () => number;
}

/** A development credential signed with the committed key, cached until a minute before expiry. */
export function devCredential(opts: DevCredentialOptions): Credential {
  const now = opts.now ?? Date.now;
  const pem = readFileSync(devPrivateKeyPath(), "utf8");
  let cached: { token: string; exp: number } | undefined;
  let key: Awaited<ReturnType<typeof importPKCS8>> | undefined;
  return async () => {
    const t = Math.floor(now() / 1000);
    if (cached !== undefined && cached.exp - REMINT_BEFORE_S > t) return cached.token;
    key ??= await importPKCS8(pem, "ES256");
    const exp = t + DEV_TTL_S;
    const token = await new SignJWT({ ...claimAt(opts.agentClaim, opts.agentId), dev: true })
      .setProtectedHeader({ alg: "ES256", typ: "JWT", kid: "toolgate-dev" })
      .setIssuer(opts.issuer)
      .setAudience(opts.audience)
      .setSubject(`agent:${opts.agentId}`)
      .setIssuedAt(t)
      .setExpirationTime(exp)
      .setJti(randomUUID())
      .sign(key);
    cached = { token, exp };
    return token;
  };
}
