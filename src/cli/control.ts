/**
 * `toolgate control` (serve the fleet's control service) and
 * `toolgate control migrate` (apply the fleet store's migrations and exit).
 * Both read the same config file and env as the sidecar; both need
 * fleet.postgres_url (TOOLGATE_POSTGRES_URL).
 */
import { loadConfig } from "../config";
import { toolgateError } from "../errors";
import { createLogger } from "../shared/log";
import { parseCommandArgs, runUntilSignal } from "./args";

export const CONTROL_HELP = `  toolgate control [--config FILE]           run the fleet control service (kill switches, approvals,
                                             budgets and rates for every sidecar of the fleet; state in
                                             PostgreSQL: fleet.postgres_url / TOOLGATE_POSTGRES_URL;
                                             listens on control.host:control.port; migrates first)`;

export const CONTROL_MIGRATE_HELP = `  toolgate control migrate [--config FILE]   apply the fleet store's PostgreSQL migrations and exit
                                             (idempotent; safe beside running replicas)`;

type Out = { stdout(s: string): void; stderr(s: string): void };

const OPTIONS = { config: { type: "string", short: "c" } } as const;

/** `toolgate control [migrate] [--config FILE]`. */
export async function controlCommand(args: string[], out: Out): Promise<number> {
  if (args[0] === "migrate") {
    const { values, positionals } = parseCommandArgs(
      args.slice(1),
      OPTIONS,
      `Usage:\n${CONTROL_MIGRATE_HELP}`,
    );
    if (positionals.length > 0)
      throw usage(`unexpected argument "${positionals[0]}"`, CONTROL_MIGRATE_HELP);
    const config = loadConfig(values.config);
    const log = createLogger(config.log.level);
    // loaded on use: the fleet control service and pg are for these commands only
    const { migrateFleetStore } = await import("../control");
    const applied = await migrateFleetStore(config, log);
    out.stdout(
      applied.length === 0
        ? "fleet store: up to date\n"
        : `fleet store: applied migration(s) ${applied.join(", ")}\n`,
    );
    await log.flush();
    return 0;
  }
  const { values, positionals } = parseCommandArgs(
    args,
    OPTIONS,
    `Usage:\n${CONTROL_HELP}\n${CONTROL_MIGRATE_HELP}`,
  );
  if (positionals.length > 0)
    throw usage(
      `unknown subcommand "${positionals[0]}"`,
      `${CONTROL_HELP}\n${CONTROL_MIGRATE_HELP}`,
    );
  const config = loadConfig(values.config);
  const { startControlService } = await import("../control");
  const svc = await startControlService(config);
  return await runUntilSignal(svc, "control.stopping", (m) => out.stderr(m));
}

function usage(message: string, help: string): Error {
  return toolgateError("usage", `${message}\n\nUsage:\n${help}`);
}
