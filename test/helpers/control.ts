import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileConfig } from "../../src/config";
import { startControlService, type ControlService } from "../../src/control";
import { silentLogger } from "../../src/shared/log";

/**
 * A real `toolgate control` replica ("r1") on `port` over the PostgreSQL at
 * `postgresUrl`, silent, tracing off, with short ping (250 ms) and housekeeping
 * (500 ms) intervals so fleet tests do not wait long.
 */
export function startTestControl(
  port: number,
  postgresUrl: string,
  hmacKey = "test-key-0123456789abcdef",
): Promise<ControlService> {
  const config = compileConfig(
    {},
    {
      TOOLGATE_CONTROL_PORT: String(port),
      TOOLGATE_LOG_LEVEL: "silent",
      TOOLGATE_STATE_DIR: mkdtempSync(join(tmpdir(), "toolgate-control-")),
      TOOLGATE_AUDIT_HMAC_KEY: hmacKey,
      TOOLGATE_POSTGRES_URL: postgresUrl,
    },
  );
  return startControlService(config, {
    log: silentLogger,
    env: { OTEL_SDK_DISABLED: "true" },
    replica: "r1",
    pingMs: 250,
    housekeepingIntervalMs: 500,
  });
}
