import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { importPKCS8, SignJWT } from "jose";
import { loadConfig } from "../config";
import { toolgateError } from "../errors";
import { devPrivateKeyPath } from "../shared/paths";

/** The reference deployment's people and their roles (BRIEF.md), for development tokens. */
export const DEV_USERS: Record<string, string[]> = {
  alice: ["support_agent"],
  sam: ["support_agent"],
  carol: ["contractor"],
  maria: ["support_manager"],
  olga: ["admin"],
};

/**
 * `toolgate dev-token <user> [--roles r1,r2] [--ttl-minutes N] [--config F]`:
 * prints a token signed with the committed development key — and only when the
 * configuration in force trusts that key (development only).
 */
export async function devTokenCommand(
  args: string[],
  out: { stdout(s: string): void },
): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      roles: { type: "string" },
      "ttl-minutes": { type: "string" },
      config: { type: "string", short: "c" },
    },
    strict: true,
  });
  const user = positionals[0];
  if (user === undefined || !/^[A-Za-z0-9._:@-]{1,128}$/.test(user)) {
    throw toolgateError("usage", "dev-token needs a user id, e.g. `toolgate dev-token maria`");
  }
  const config = loadConfig(values.config);
  const devAgent = config.identity.mode !== "jwt" || config.identity.jwt.dev;
  if (!config.control.jwt.dev || !devAgent) {
    throw toolgateError(
      "usage",
      "dev-token only works with the development identity (the committed key in config/dev/); this configuration trusts other keys",
    );
  }
  const roles =
    values.roles !== undefined
      ? values.roles
          .split(",")
          .map((r) => r.trim())
          .filter(Boolean)
      : (DEV_USERS[user] ?? []);
  const ttl = values["ttl-minutes"] === undefined ? 12 * 60 : Number(values["ttl-minutes"]);
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > 7 * 24 * 60) {
    throw toolgateError("usage", "--ttl-minutes must be a whole number from 1 to 10080");
  }
  const key = await importPKCS8(readFileSync(devPrivateKeyPath(), "utf8"), "ES256");
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ [config.control.jwt.rolesClaim]: roles, dev: true })
    .setProtectedHeader({ alg: "ES256", typ: "JWT", kid: "toolgate-dev" })
    .setIssuer(config.control.jwt.issuer)
    .setAudience([config.identity.jwt.audience, config.control.jwt.audience])
    .setSubject(user)
    .setIssuedAt(now)
    .setExpirationTime(now + ttl * 60)
    .setJti(randomUUID())
    .sign(key);
  out.stdout(token + "\n");
  return 0;
}
