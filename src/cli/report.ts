import { parseCommandArgs } from "./args";
import {
  DEFAULT_THRESHOLDS,
  renderRollout,
  rolloutReport,
  thresholdsFrom,
} from "../containment/rollout";
import { toolgateError } from "../errors";
import { loadBundleFromPath } from "../policy/bundle";

type Out = { stdout: (s: string) => void; stderr: (s: string) => void };

export const REPORT_HELP = `  toolgate report rollout --audit <trail file or dir…> [--since ISO] [--bundle B] [--json]
                                             per tool: decisions, shadow, approvals, action errors,
                                             and a recommendation (stay, promote, demote) against the
                                             bundle's data.toolgate.deployment.rollout.thresholds`;

/**
 * `toolgate report rollout ...`: the promotion report (docs/containment.md).
 * Exit 0, or 1 when the trail's hash chain is broken (the report is still printed).
 */
export async function reportCommand(args: string[], out: Out): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== "rollout")
    throw toolgateError("usage", `report needs a subcommand: rollout\n\n${REPORT_HELP}`);
  const { values, positionals } = parseCommandArgs(
    rest,
    {
      audit: { type: "string", multiple: true },
      since: { type: "string" },
      bundle: { type: "string" },
      json: { type: "boolean", default: false },
    },
    REPORT_HELP,
  );
  // --audit takes one path; more trail files or dirs may follow as positionals
  const paths = [...(values.audit ?? []), ...positionals];
  if ((values.audit ?? []).length === 0 || paths.length === 0)
    throw toolgateError(
      "usage",
      `report rollout needs --audit <trail file or dir…>\n\n${REPORT_HELP}`,
    );
  const bundle = values.bundle === undefined ? undefined : await loadBundleFromPath(values.bundle);
  const report = rolloutReport(paths, {
    ...(values.since !== undefined ? { since: values.since } : {}),
    thresholds: bundle === undefined ? DEFAULT_THRESHOLDS : thresholdsFrom(bundle.data),
    thresholdsSource:
      bundle === undefined
        ? "defaults (no --bundle)"
        : `bundle ${bundle.name} revision ${bundle.manifest.revision}`,
  });
  out.stdout(values.json ? JSON.stringify(report, null, 2) + "\n" : renderRollout(report));
  if (!report.trail.ok)
    out.stderr(`toolgate: the audit trail's hash chain is broken: ${report.trail.problem}\n`);
  return report.trail.ok ? 0 : 1;
}
