import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import type { SpanExporter } from "@opentelemetry/sdk-trace";
import { Auditor, Tracing } from "./audit";
import { Redactor } from "./audit/redact";
import { AuditTrail } from "./audit/trail";
import { join } from "node:path";
import { BundleManager } from "./bundles";
import type { CompiledConfig } from "./config";
import { checkPolicyOutput, Decider } from "./decision";
import { isToolgateError, toolgateError } from "./errors";
import { ApprovalService } from "./approvals/service";
import { ApprovalStore } from "./approvals/store";
import { webhookNotifier } from "./approvals/webhook";
import { startAgentServer, type RunningServer } from "./http/agent-server";
import { startControlServer } from "./http/control-server";
import { Identity, TokenVerifier } from "./identity";
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
  auditor: Auditor | undefined;
  approvals: ApprovalService | undefined;
}

export interface BuildOptions {
  /** Where OTEL_* settings come from (default process.env). */
  env?: Record<string, string | undefined>;
  /** Replaces the OTLP exporter (tests: an in-memory exporter). */
  spanExporter?: SpanExporter;
  /** Build without audit (the offline `toolgate eval`). */
  audit?: boolean;
  /** Build without the approval store (the offline `toolgate eval`). */
  approvals?: boolean;
}

function hmacKey(config: CompiledConfig, log: Logger): { key: Buffer; keyId: string } {
  const k = config.audit.hmacKey;
  let key: Buffer;
  if (k.source === "env") key = Buffer.from(k.value ?? "", "utf8");
  else if (k.source === "file") {
    try {
      key = readFileSync(k.file ?? "");
    } catch (e) {
      throw toolgateError(
        "config_invalid",
        `audit.hmac_key_file: cannot read ${k.file}: ${(e as Error).message}`,
      );
    }
    if (key.length < 16) {
      throw toolgateError(
        "config_invalid",
        `audit.hmac_key_file: ${k.file} holds ${key.length} bytes; at least 16 are needed`,
      );
    }
  } else {
    key = randomBytes(32);
    log.warn(
      "no audit.hmac_key_file configured: keyed hashes use a random per-process key and correlate only within this run",
      {
        event: "audit.random_hmac_key",
      },
    );
  }
  // The key id names the key without revealing it.
  const keyId = createHash("sha256")
    .update("toolgate-key-id")
    .update(key)
    .digest("base64url")
    .slice(0, 8);
  return { key, keyId };
}

function buildAuditor(config: CompiledConfig, log: Logger, opts: BuildOptions): Auditor {
  const { key, keyId } = hmacKey(config, log);
  const redactor = new Redactor({ hmacKey: key, keyId, mode: config.audit.redaction });
  const tracing = new Tracing({
    env: opts.env ?? process.env,
    log,
    serviceVersion: packageVersion(),
    ...(opts.spanExporter ? { exporter: opts.spanExporter } : {}),
    maxQueueSize: config.tracing.maxQueueSize,
    scheduledDelayMs: config.tracing.scheduledDelayMs,
  });
  const trail = config.audit.trail.enabled
    ? AuditTrail.open({
        dir: config.audit.trail.dir,
        maxFileBytes: config.audit.trail.maxFileBytes,
        flushIntervalMs: 50,
        fsyncIntervalMs: 1000,
        onError: (e) =>
          log.error("audit trail write failed", { event: "audit.trail_error", error: e.message }),
      })
    : undefined;
  return new Auditor({
    tracing,
    log,
    redactor,
    trail,
    agentId: config.agent.id,
    logDecisions: config.audit.logDecisions,
  });
}

/** The composition root: builds every module from the config; nothing global. */
export async function buildParts(
  config: CompiledConfig,
  log: Logger = createLogger(config.log.level),
  opts: BuildOptions = {},
): Promise<Parts> {
  const bundles = new BundleManager({
    path: config.policy.bundle,
    entrypoint: config.policy.entrypoint,
    log,
    smokeTest: (engine) => smokeTest(engine, config.agent.id, log),
  });
  const identity = new Identity({
    agentId: config.agent.id,
    mode: config.identity.mode,
    ...(config.identity.mode === "jwt"
      ? { verifier: await TokenVerifier.create(config.identity.jwt) }
      : {}),
  });
  const auditor = opts.audit === false ? undefined : buildAuditor(config, log, opts);
  const approvals =
    opts.approvals === false
      ? undefined
      : new ApprovalService({
          store: ApprovalStore.open(config.state.dir),
          agentId: config.agent.id,
          redact: (v) => (auditor ? auditor.redact(v) : v),
          ...(auditor ? { events: auditor } : {}),
          ...(config.approvals.webhook
            ? { onPending: webhookNotifier(config.approvals.webhook, log) }
            : {}),
        });
  const decider = new Decider({
    policy: bundles,
    identity,
    requestTtlSeconds: config.approvals.requestTtlSeconds,
    ...(auditor ? { sink: auditor } : {}),
    ...(approvals ? { approvals } : {}),
  });
  return { config, log, bundles, identity, decider, auditor, approvals };
}

export interface Toolgate extends Parts {
  agentServer: RunningServer;
  controlServer: RunningServer | undefined;
  stop(): Promise<void>;
}

/** Builds everything, loads the bundle and starts the agent and control ports. */
export async function startToolgate(
  config: CompiledConfig,
  log?: Logger,
  opts: BuildOptions = {},
): Promise<Toolgate> {
  const parts = await buildParts(config, log, opts);
  if (config.identity.mode === "trusted") {
    parts.log.warn(
      "identity.mode is trusted: subject ids are taken as the caller sends them (development only)",
      {
        event: "identity.trusted_mode",
      },
    );
  }
  if (
    (config.identity.mode === "jwt" && config.identity.jwt.dev) ||
    (config.control.enabled && config.control.jwt.dev)
  ) {
    parts.log.warn(
      "the development signing key is trusted: anyone can mint tokens (development only; see config/dev/README.md)",
      {
        event: "identity.dev_keys",
      },
    );
  }
  await parts.bundles.start();
  const version = packageVersion();
  const agentServer = await startAgentServer({
    config,
    decider: parts.decider,
    identity: parts.identity,
    ...(parts.auditor ? { auditor: parts.auditor } : {}),
    ...(parts.approvals ? { approvals: parts.approvals } : {}),
    bundles: parts.bundles,
    log: parts.log,
    startedAt: new Date(),
    version,
  });
  const controlServer = config.control.enabled
    ? await startControlServer({
        config,
        verifier: await TokenVerifier.create(config.control.jwt),
        bundles: parts.bundles,
        approvals: parts.approvals,
        auditor: parts.auditor,
        log: parts.log,
        version,
      })
    : undefined;
  const expiry = setInterval(() => parts.approvals?.expire(), 5000);
  expiry.unref();
  parts.log.info("toolgate listening", {
    event: "server.started",
    agent_port: agentServer.url,
    control_port: controlServer?.url ?? null,
    agent: config.agent.id,
    ready: parts.bundles.ready(),
  });
  return {
    ...parts,
    agentServer,
    controlServer,
    async stop() {
      clearInterval(expiry);
      await Promise.all([agentServer.close(), controlServer?.close()]);
      parts.bundles.stop();
      // flush pending spans and trail records before the process may exit
      await parts.auditor?.close();
      parts.approvals?.close();
    },
  };
}
