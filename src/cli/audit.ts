import { parseCommandArgs } from "./args";
import { verifyTrail } from "../trail";
import { normalizeError, toolgateError } from "../errors";

type Out = { stdout: (s: string) => void; stderr: (s: string) => void };

export const AUDIT_HELP = `Usage:
  toolgate audit verify <file-or-dir...> [--json] [--allow-partial-start]
      verify a local audit trail (files in order; a directory means its trail-*.jsonl files)
      --json                   print the full verification result as JSON
      --allow-partial-start    accept a trail whose oldest files were deleted (retained suffix)
  exit status: 0 intact, 1 broken, 2 usage or unreadable files`;

/**
 * `toolgate audit verify <file-or-dir...> [--json] [--allow-partial-start]`.
 * `args` are the words after `toolgate audit` (starting with `verify`).
 * Returns the exit code: 0 the chain is intact, 1 it is broken, 2 usage or
 * I/O errors (printed as `toolgate: <code>: <message>`, like the main CLI).
 */
export function auditVerifyCommand(args: string[], out: Out): number {
  try {
    const [sub, ...rest] = args;
    if (sub !== "verify")
      throw toolgateError(
        "usage",
        `${sub === undefined ? "missing" : `unknown`} audit subcommand${sub === undefined ? "" : ` "${sub}"`}\n\n${AUDIT_HELP}`,
      );
    const { values, positionals } = parseCommandArgs(
      rest,
      {
        json: { type: "boolean", default: false },
        "allow-partial-start": { type: "boolean", default: false },
      },
      AUDIT_HELP,
    );
    if (positionals.length === 0)
      throw toolgateError(
        "usage",
        `audit verify needs at least one file or directory\n\n${AUDIT_HELP}`,
      );
    const result = verifyTrail(positionals, { allowPartialStart: values["allow-partial-start"] });
    if (values.json) {
      out.stdout(JSON.stringify(result, null, 2) + "\n");
    } else {
      for (const r of result.recovered ?? [])
        out.stderr(`note: ${r.file}:${r.line}: ${r.message}\n`);
      const b = result.firstBreak;
      if (b === undefined) {
        out.stdout(
          `ok: ${result.records} records in ${result.files} files, last hash ${result.lastHash ?? "(none)"}\n`,
        );
      } else {
        out.stdout(
          `BROKEN at ${b.file}:${b.line} (seq ${b.seq ?? "?"}): ${b.reason}: ${b.message}\n`,
        );
      }
    }
    return result.ok ? 0 : 1;
  } catch (e) {
    const err = normalizeError(e);
    out.stderr(`toolgate: ${err.code}: ${err.message}\n`);
    return 2;
  }
}
