/**
 * `toolgate mcp`: the MCP enforcement proxy (docs/mcp.md) in front of one or
 * more MCP servers, serving the agent over streamable HTTP and/or stdio.
 */
import type { Overrides } from "../mcp";
import { toolgateError } from "../errors";
import { parseCommandArgs, runUntilSignal } from "./args";

export const MCP_HELP = `  toolgate mcp --config FILE [--stdio] [--http HOST:PORT [--http-token-file FILE]] [--sidecar URL] [--console URL] [--log-level L]
                                             the MCP enforcement proxy in front of MCP servers: every
                                             tools/call is decided by the toolgate sidecar first and
                                             tools/list shows only what the policy allows or gates
                                             (docs/mcp.md); --stdio (recommended) serves one agent on
                                             stdin/stdout (logs on stderr); --http serves loopback and
                                             requires Authorization: Bearer <secret> — read from FILE,
                                             or generated there (0600) when FILE is missing, or in a
                                             temp file whose path the mcp.started log line gives`;

type Out = { stdout(s: string): void; stderr(s: string): void };

const OPTIONS = {
  config: { type: "string", short: "c" },
  http: { type: "string" },
  "http-token-file": { type: "string" },
  stdio: { type: "boolean" },
  sidecar: { type: "string" },
  console: { type: "string" },
  "log-level": { type: "string" },
} as const;

/** `toolgate mcp …`: runs until SIGTERM/SIGINT (or stdin closes, when serving stdio). */
export async function mcpCommand(args: string[], out: Out): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, OPTIONS, `Usage:\n${MCP_HELP}`);
  if (positionals.length > 0)
    throw toolgateError("usage", `unexpected argument "${positionals[0]}"\n\nUsage:\n${MCP_HELP}`);
  const overrides: Overrides = {};
  if (values.http !== undefined) overrides.http = values.http;
  if (values.stdio === true) overrides.stdio = true;
  if (values["http-token-file"] !== undefined) overrides.httpTokenFile = values["http-token-file"];
  if (values.sidecar !== undefined) overrides.sidecarUrl = values.sidecar;
  if (values.console !== undefined) overrides.consoleUrl = values.console;
  if (values["log-level"] !== undefined) overrides.logLevel = values["log-level"];
  // loaded on use: the MCP SDK and zod (~13 MB resident, 300 modules) are for this command only
  const { loadMcpConfig, startMcpProxy } = await import("../mcp");
  const config = loadMcpConfig(values.config ?? process.env.TOOLGATE_MCP_CONFIG, overrides);
  const running = await startMcpProxy(config);
  if (config.serve.stdio) {
    // the agent closing our stdin ends the session, and the proxy with it
    process.stdin.once("end", () => {
      void running.stop().then(() => process.exit(0));
    });
  }
  return await runUntilSignal(running, "mcp.stopping", (m) => out.stderr(m));
}
