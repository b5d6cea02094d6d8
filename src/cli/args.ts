import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { normalizeError, toolgateError } from "../errors";

/** Options that take a string, by name: `{ name: { type: "string" } }` for each. */
export function stringOptions<const K extends string>(
  ...names: K[]
): { [N in K]: { type: "string" } } {
  return Object.fromEntries(names.map((n) => [n, { type: "string" }])) as {
    [N in K]: { type: "string" };
  };
}

/** `--bundle/-b B --input/-i I`: the bundle and the input a command evaluates. */
export const BUNDLE_AND_INPUT = {
  bundle: { type: "string", short: "b" },
  input: { type: "string", short: "i" },
} as const;

/**
 * A command's arguments (`parseArgs`, strict, positionals allowed); a word it
 * does not know is a usage error followed by the command's `help`.
 */
export function parseCommandArgs<const O extends ParseArgsOptionsConfig>(
  args: string[],
  options: O,
  help: string,
) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw toolgateError("usage", `${(e as Error).message}\n\n${help}`, { cause: e });
  }
}

/**
 * True when a command's words ask for its help: `--help` or `-h` anywhere
 * before a `--` (after it, words are positionals). One rule for every command
 * and subcommand: the CLI answers it before the command parses its options.
 */
export function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === "--") return false;
    if (a === "--help" || a === "-h") return true;
  }
  return false;
}

/**
 * Runs a started service until SIGTERM or SIGINT, then stops it once and
 * exits (1 if stopping failed). Never resolves.
 */
export function runUntilSignal(
  service: {
    log: { info(msg: string, fields: Record<string, unknown>): void };
    stop(): Promise<void>;
  },
  event: string,
  stderr: (s: string) => void,
): Promise<number> {
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    service.log.info("shutting down", { event, signal });
    service.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        stderr(`toolgate: error while stopping: ${normalizeError(e).message}\n`);
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
  return new Promise<number>(() => undefined);
}
