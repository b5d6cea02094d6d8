import { readFileSync } from "node:fs";
import { join } from "node:path";
import { BundleManager } from "./bundles";
import type { CompiledConfig } from "./config";
import { checkPolicyOutput, Decider } from "./decision";
import { isToolgateError } from "./errors";
import { startAgentServer, type RunningServer } from "./http/agent-server";
import { Identity } from "./identity";
import type { PolicyEngine } from "./policy/engine";
import { createLogger, type Logger } from "./util/log";
import { packageRoot } from "./util/paths";

export function packageVersion(): string {
  return (
    JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version: string }
  ).version;
}

/** A request no sane policy allows: used to check a bundle before it serves. */
const SMOKE_REQUEST = {
  subject: { type: "user", id: "toolgate:smoke-test" },
  action: { name: "toolgate.smoke_test" },
  resource: { type: "toolgate", id: "smoke-test" },
};

/** Evaluates one fixed input and refuses the engine unless the output meets the decision contract. */
export function smokeTest(engine: PolicyEngine, agentId: string, log?: Logger): void {
  const nowNs = Date.now() * 1e6;
  const input = JSON.stringify({
    request: SMOKE_REQUEST,
    verified: {
      agent: { id: agentId },
      subject: { id: SMOKE_REQUEST.subject.id, method: "trusted" },
      time_ns: nowNs,
    },
  });
  const out = checkPolicyOutput(engine.evaluateJson(input, nowNs));
  if (isToolgateError(out)) throw out;
  if (out.outcome !== "deny") {
    log?.warn("bundle does not deny an unknown tool for an unknown subject", {
      event: "bundle.smoke_warning",
      bundle: engine.info.bundle,
      outcome: out.outcome,
    });
  }
}

/** The parts toolgate is made of, built from the compiled config. */
export interface Parts {
  config: CompiledConfig;
  log: Logger;
  bundles: BundleManager;
  identity: Identity;
  decider: Decider;
}

/** The composition root: builds every module from the config; nothing global. */
export function buildParts(
  config: CompiledConfig,
  log: Logger = createLogger(config.log.level),
): Parts {
  const bundles = new BundleManager({
    path: config.policy.bundle,
    entrypoint: config.policy.entrypoint,
    log,
    smokeTest: (engine) => smokeTest(engine, config.agent.id, log),
  });
  const identity = new Identity({ agentId: config.agent.id, mode: config.identity.mode });
  const decider = new Decider({
    policy: bundles,
    identity,
    requestTtlSeconds: config.approvals.requestTtlSeconds,
  });
  return { config, log, bundles, identity, decider };
}

export interface Toolgate extends Parts {
  agentServer: RunningServer;
  stop(): Promise<void>;
}

/** Builds everything, loads the bundle and starts the agent port. */
export async function startToolgate(config: CompiledConfig, log?: Logger): Promise<Toolgate> {
  const parts = buildParts(config, log);
  if (config.identity.mode === "trusted") {
    parts.log.warn(
      "identity.mode is trusted: subject ids are taken as the caller sends them (development only)",
      {
        event: "identity.trusted_mode",
      },
    );
  }
  await parts.bundles.start();
  const agentServer = await startAgentServer({
    config,
    decider: parts.decider,
    bundles: parts.bundles,
    log: parts.log,
    startedAt: new Date(),
    version: packageVersion(),
  });
  parts.log.info("toolgate listening", {
    event: "server.started",
    agent_port: agentServer.url,
    agent: config.agent.id,
    ready: parts.bundles.ready(),
  });
  return {
    ...parts,
    agentServer,
    async stop() {
      await agentServer.close();
      parts.bundles.stop();
    },
  };
}
