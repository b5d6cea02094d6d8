/**
 * The development login's people: the reference deployment's users and
 * their roles from the active bundle's data (`toolgate.deployment.users`),
 * and olga with the admin role — as `toolgate dev-token` signs them
 * (src/cli/dev-token.ts). Only offered while the control port trusts the
 * committed development key.
 */
import { deploymentData } from "./backends/views";

export const DEV_PEOPLE = ["alice", "sam", "carol", "maria", "olga"] as const;

const FALLBACK: Record<string, string[]> = {
  alice: ["support_agent"],
  sam: ["support_agent"],
  carol: ["contractor"],
  maria: ["support_manager"],
};

export function devConsoleUsers(
  bundleData: unknown,
  adminRole: string,
): Array<{ name: string; roles: string[] }> {
  const { users } = deploymentData(bundleData);
  return DEV_PEOPLE.map((name) => ({
    name,
    roles: name === "olga" ? [adminRole] : (users.get(name) ?? FALLBACK[name] ?? []),
  }));
}
