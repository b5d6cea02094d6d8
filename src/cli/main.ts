import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { BUNDLE_AND_INPUT, runUntilSignal, stringOptions, wantsHelp } from "./args";
import { buildParts, startToolgate } from "../app";
import { packageVersion } from "../shared/paths";
import { auditVerifyCommand } from "./audit";
import { CONTROL_HELP, CONTROL_MIGRATE_HELP, controlCommand } from "./control";
import { MCP_HELP, mcpCommand } from "./mcp";
import { devTokenCommand } from "./dev-token";
import { REPORT_HELP, reportCommand } from "./report";
import {
  explainCommand,
  POLICY_BUILD_HELP,
  POLICY_TEST_HELP,
  policyBuild,
  policyTest,
  replayCommand,
} from "./author";
import { POLICY_CHECK_HELP, POLICY_INIT_HELP, POLICY_SIGN_HELP, policyCommand } from "./policy";
import { compileConfig, loadConfig } from "../config";
import { normalizeError, toolgateError } from "../errors";
import { validateDecisionRequest } from "../shared/validate";
import { loadBundleFromPath } from "../policy/bundle";
import { parseJsonOr } from "../shared/guards";
import { createLogger } from "../shared/log";
import {
  ACTIVITY_MICROS,
  IDLE_FRACTION,
  IdleMemoryRelease,
  releaseMemory,
} from "../metrics/memory";
import type { Outcome } from "../model/decision";

/** Each command's usage lines, by its words ("policy sign"); the general help lists them all. */
const USAGE = new Map<string, string>([
  [
    "serve",
    `  toolgate serve [--config FILE]             run the sidecar (default: embedded support-triage policy)`,
  ],
  ["control", CONTROL_HELP],
  ["control migrate", CONTROL_MIGRATE_HELP],
  ["mcp", MCP_HELP],
  [
    "eval",
    `  toolgate eval --bundle B --input I [--agent ID] [--entrypoint E]
                                             decide one request offline (I may be - for stdin);
                                             prints the same JSON as POST /v1/decisions;
                                             exit status: 0 allow, 3 deny, 4 needs_approval, 2 usage or error`,
  ],
  [
    "audit verify",
    `  toolgate audit verify <file-or-dir…> [--json] [--allow-partial-start]
                                             check the local audit trail's hash chain;
                                             exit status: 0 intact, 1 broken, 2 usage or unreadable`,
  ],
  [
    "dev-token",
    `  toolgate dev-token <user> [--roles a,b] [--ttl-minutes N] [--config FILE]
                                             print a DEVELOPMENT token (alice, sam, carol, maria, olga);
                                             refused unless the config trusts the committed dev key`,
  ],
  ["policy init", POLICY_INIT_HELP],
  ["policy build", POLICY_BUILD_HELP],
  ["policy test", POLICY_TEST_HELP],
  ["policy sign", POLICY_SIGN_HELP],
  ["policy check", POLICY_CHECK_HELP],
  ["report rollout", REPORT_HELP],
  [
    "explain",
    `  toolgate explain --input I (--bundle B | --rego DIR) [--explain fails|full|notes|debug] [--json]
                                             why a decision came out as it did: reasons, and the
                                             rule-level trace of opa eval --explain over the sources`,
  ],
  [
    "replay",
    `  toolgate replay --audit <trail…> --bundle B [--json]
                                             re-decide recorded decisions with a candidate bundle and
                                             list those that would change (naming redacted fields)`,
  ],
  ["version", `  toolgate version                           print the version`],
  [
    "help",
    `  toolgate help [COMMAND]                    this text, or one command's (also: COMMAND --help)`,
  ],
]);

const HELP = `toolgate — authorization sidecar for AI agents that use tools

Usage:
${[...USAGE.values()].join("\n")}

Every command and subcommand answers --help (or -h) with its usage (exit 0).
Exit status: 0 success; 2 a usage error (an unknown command or option; no command at all prints
this text to stderr) or an error (\`toolgate: <code>: <message>\` on stderr, codes in docs/errors.md);
audit verify, policy check and report rollout exit 1 when what they check fails;
eval exits 0 allow, 3 deny, 4 needs_approval.
Configuration: docs/configuration.md (file via --config or TOOLGATE_CONFIG; TOOLGATE_* env overrides).`;

/**
 * The help for a command's words (`["policy"]`, `["policy", "sign"]`): the
 * subcommand's usage when it names one, else every usage line that starts
 * with the command (policy: init, build, test, sign, check); undefined for a word
 * toolgate does not know.
 */
export function helpFor(words: readonly string[]): string | undefined {
  const [cmd, sub] = words;
  if (cmd === undefined) return HELP;
  const exact = sub !== undefined ? USAGE.get(`${cmd} ${sub}`) : undefined;
  const lines =
    exact !== undefined
      ? [exact]
      : [...USAGE].filter(([k]) => k === cmd || k.startsWith(`${cmd} `)).map(([, v]) => v);
  return lines.length === 0 ? undefined : `Usage:\n${lines.join("\n")}`;
}

type Out = { stdout: (s: string) => void; stderr: (s: string) => void };
const stdio: Out = {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
};

const mb = (bytes: number): number => Math.round(bytes / 104857.6) / 10;

async function serve(args: string[], out: Out): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { config: { type: "string", short: "c" } },
    strict: true,
  });
  const config = loadConfig(values.config);
  const tg = await startToolgate(config);
  const release = (reason: "startup" | "idle"): void => {
    const released = releaseMemory();
    if (released !== undefined) {
      tg.log.debug(`${reason === "startup" ? "start-up" : "idle"} memory released`, {
        event: "server.memory_released",
        reason,
        heap_mb: [mb(released.heapBefore), mb(released.heapAfter)],
        gc_ms: Math.round(released.ms),
      });
    }
  };
  // start-up is done: give back the young generation it grew and its garbage (idle RSS, #20)
  release("startup");
  // and again whenever the sidecar goes idle after load: the worker after this thread, never
  // both at once (each takes its gc with the process-wide --expose-gc flag on for a moment)
  const seconds = config.server.idleMemoryReleaseSeconds;
  const idle =
    seconds > 0
      ? new IdleMemoryRelease(
          () => {
            release("idle");
            tg.auditor?.releaseMemory?.();
          },
          {
            windowMs: seconds * 1000,
            idleFraction: IDLE_FRACTION,
            activityMicros: ACTIVITY_MICROS,
          },
        )
      : undefined;
  const service = {
    log: tg.log,
    stop: (): Promise<void> => {
      idle?.stop();
      return tg.stop();
    },
  };
  return await runUntilSignal(service, "server.stopping", (m) => out.stderr(m));
}

async function evalCommand(args: string[], out: Out): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { ...BUNDLE_AND_INPUT, ...stringOptions("agent", "entrypoint") },
    strict: true,
  });
  if (!values.bundle || !values.input)
    throw toolgateError("usage", "eval needs --bundle B and --input I");
  const env: Record<string, string> = { TOOLGATE_BUNDLE: values.bundle };
  if (values.agent) env.TOOLGATE_AGENT_ID = values.agent;
  if (values.entrypoint) env.TOOLGATE_ENTRYPOINT = values.entrypoint;
  const config = compileConfig({}, { ...env, TOOLGATE_LOG_LEVEL: "error" });
  const parts = await buildParts(config, createLogger("silent"), {
    audit: false,
    approvals: false,
    grants: false,
  });
  await parts.bundles.activate(await loadBundleFromPath(config.policy.bundle));
  const text = readFileSync(values.input === "-" ? 0 : values.input, "utf8");
  const value = parseJsonOr("malformed_json", values.input, text);
  const { decision } = parts.decider.decideSync(
    validateDecisionRequest(value),
    { face: "cli" },
    text,
  );
  out.stdout(JSON.stringify(decision, null, 2) + "\n");
  return EVAL_EXIT[decision.outcome];
}

/**
 * `toolgate eval`'s exit status per outcome, so a script can branch without
 * parsing JSON. 1 (a failed check elsewhere) and 2 (usage or error) keep
 * their meaning.
 */
export const EVAL_EXIT: Readonly<Record<Outcome, number>> = {
  allow: 0,
  deny: 3,
  needs_approval: 4,
};

type Command = (args: string[], out: Out) => number | Promise<number>;

const print =
  (text: () => string): Command =>
  (_args, out) => {
    out.stdout(text() + "\n");
    return 0;
  };

const policy: Command = (args, out) =>
  args[0] === "build"
    ? policyBuild(args.slice(1), out)
    : args[0] === "test"
      ? policyTest(args.slice(1), out)
      : policyCommand(args, out);

/** The commands by name (a Map: the name is the caller's word, never a prototype member). */
const COMMANDS = new Map<string, Command>([
  ["serve", serve],
  ["control", controlCommand],
  ["mcp", mcpCommand],
  ["eval", evalCommand],
  ["dev-token", devTokenCommand],
  ["policy", policy],
  ["explain", explainCommand],
  ["replay", replayCommand],
  ["report", reportCommand],
  ["audit", auditVerifyCommand],
  ["version", print(packageVersion)],
  ["--version", print(packageVersion)],
]);

/** `toolgate help [COMMAND [SUB]]`, `toolgate --help`, `toolgate COMMAND … --help`. */
function help(words: string[], out: Out): number {
  const text = helpFor(words.filter((w) => !w.startsWith("-")));
  if (text === undefined) throw unknownCommand(words.join(" "));
  out.stdout(text + "\n");
  return 0;
}

function unknownCommand(cmd: string) {
  return toolgateError(
    "usage",
    `unknown command "${cmd}"; run \`toolgate --help\` for the commands`,
  );
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: string[], out: Out = stdio): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined) {
      // no command: a usage error (exit 2), the general help on stderr
      out.stderr(HELP + "\n");
      return 2;
    }
    if (cmd === "help") return help(rest, out);
    if (cmd === "--help" || cmd === "-h") return help([], out);
    const command = COMMANDS.get(cmd);
    if (command === undefined) throw unknownCommand(cmd);
    if (wantsHelp(rest)) {
      const sub = rest[0];
      return help(sub !== undefined && !sub.startsWith("-") ? [cmd, sub] : [cmd], out);
    }
    return await command(rest, out);
  } catch (e) {
    const err = normalizeError(
      e,
      e instanceof TypeError && /parseArgs|option/i.test(e.message) ? "usage" : "internal_error",
    );
    const hint =
      err.code === "usage" &&
      cmd !== undefined &&
      COMMANDS.has(cmd) &&
      !/--help|Usage:/.test(err.message)
        ? `\n(run \`toolgate ${cmd} --help\` for its usage)`
        : "";
    out.stderr(`toolgate: ${err.code}: ${err.message}${hint}\n`);
    return 2;
  }
}
