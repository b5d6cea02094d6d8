import { generateKeyPairSync, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { importPKCS8, SignJWT } from "jose";

const root = join(__dirname, "..", "..");
const devKeyPem = readFileSync(join(root, "config", "dev", "dev-signing-key.pem"), "utf8");
const otherKeyPem = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({
  type: "pkcs8",
  format: "pem",
}) as string;

export interface TokenOptions {
  roles?: string[];
  audience?: string | string[];
  issuer?: string;
  expiresInSeconds?: number;
  /** Sign with a key toolgate does not trust. */
  forged?: boolean;
  /** More claims (e.g. a job claim). */
  claims?: Record<string, unknown>;
}

/** A real ES256 JWT, signed with the committed development key (or a stranger's). */
export async function token(sub: string, opts: TokenOptions = {}): Promise<string> {
  const key = await importPKCS8(opts.forged ? otherKeyPem : devKeyPem, "ES256");
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ ...opts.claims, roles: opts.roles ?? [] })
    .setProtectedHeader({ alg: "ES256" })
    .setIssuer(opts.issuer ?? "toolgate-dev")
    .setAudience(opts.audience ?? ["toolgate-agent", "toolgate-control"])
    .setSubject(sub)
    .setIssuedAt(now - 5)
    .setExpirationTime(now + (opts.expiresInSeconds ?? 600))
    .setJti(randomUUID())
    .sign(key);
}

export const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });
