import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { startToolgate, type Toolgate } from "../../src/app";
import { compileConfig } from "../../src/config";
import { silentLogger, type Logger } from "../../src/util/log";
import { buildWasmBundle, tempDir } from "./opa";

const root = join(__dirname, "..", "..");

/** The reference deployment's data (rego/toolgate/deployment/data.json). */
export function referenceData(): Record<string, unknown> {
  return JSON.parse(
    readFileSync(join(root, "rego", "toolgate", "deployment", "data.json"), "utf8"),
  ) as Record<string, unknown>;
}

/**
 * Builds the policy library with the reference data edited by `edit` (the
 * reference bundle itself stays as the brief describes it).
 */
export function libraryBundle(
  edit: (data: Record<string, unknown>) => void,
  revision = "fixture-1",
): string {
  const dir = join(root, "rego", "toolgate");
  const files: Record<string, string> = {};
  for (const f of readdirSync(dir)) {
    if (f.endsWith(".rego") && !f.endsWith("_test.rego"))
      files[`toolgate/${f}`] = readFileSync(join(dir, f), "utf8");
  }
  const data = referenceData();
  edit(data);
  files["toolgate/deployment/data.json"] = JSON.stringify(data);
  return buildWasmBundle(files, { revision });
}

/** A real toolgate on free ports (agent and control), with a controllable clock. */
export async function startWithClock(
  env: Record<string, string>,
  opts: { now?: () => number; log?: Logger } = {},
): Promise<Toolgate> {
  const config = compileConfig(
    {},
    {
      TOOLGATE_AGENT_PORT: "0",
      TOOLGATE_CONTROL_PORT: "0",
      TOOLGATE_LOG_LEVEL: "silent",
      TOOLGATE_STATE_DIR: tempDir("toolgate-state-"),
      TOOLGATE_AUDIT_HMAC_KEY: "test-key-0123456789abcdef",
      ...env,
    },
  );
  return startToolgate(config, opts.log ?? silentLogger, {
    env: { OTEL_SDK_DISABLED: "true" },
    ...(opts.now ? { now: opts.now } : {}),
  });
}
