import type { SpanExporter } from "@opentelemetry/sdk-trace";
import { Auditor, type AuditService } from "./audit";
import type * as TracingModule from "./telemetry/tracing";
import { AuditClient } from "./audit/client";
import { Redactor, type MaskOp, type SecretsSeen } from "./redaction/redact";
import { AuditTrail } from "./trail";
import { BundleManager, sourceFromConfig, verificationFromConfig } from "./bundles";
import type { CompiledConfig } from "./config";
import { checkPolicyOutput, Decider, type PolicySource } from "./decision";
import { compileLimits, Containment, ContainmentStore } from "./containment";
import { loadBundleFromPath } from "./policy/bundle";
import { PolicyEngine as Engine } from "./policy/engine";
import { isToolgateError, toolgateError } from "./errors";
import { ApprovalService, type ApprovalEventName } from "./approvals/service";
import { ApprovalStore } from "./approvals/store";
import { notifierFromConfig, type ApprovalNotifier } from "./approvals/notify";
import { startAgentServer, type RunningServer } from "./http/agent-server";
import { checkToolRegistry, SessionStore } from "./session";
import { PortComponent } from "./http/listen";
import { GrantIssuer } from "./grants";
import { startControlServer } from "./http/control-server";
import { devKeyWarning, Identity, TokenVerifier } from "./identity";
import { meteredSink, Metrics } from "./metrics";
import type { PolicyEngine } from "./policy/engine";
import { AuditComponent } from "./audit/component";
import {
  Lifecycle,
  stateValue,
  type Component,
  type ComponentStatus,
  type Readiness,
  notRunning,
} from "./shared/lifecycle";
import { createLogger, type Logger } from "./shared/log";
import { packageVersion } from "./shared/paths";
import { loadHmacKey } from "./redaction/key";
import {
  devCredential,
  fileCredential,
  FleetApprovals,
  FleetClient,
  FleetContainment,
  type Credential,
  FleetSessions,
} from "./fleet";

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
  compileLimits(engine.data); // malformed containment limits refuse the bundle
  checkToolRegistry(engine.data); // so do labels and egress flags session state could not honour
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
  auditor: AuditService | undefined;
  approvals: ApprovalService | undefined;
  /** Signs grants onto allows and publishes their keys (undefined: grants off). */
  grants: GrantIssuer | undefined;
  metrics: Metrics;
  /** Kill switches, rates and budgets (undefined: built without state, e.g. `toolgate eval`, or in fleet mode). */
  containment: Containment | undefined;
  /** What each session did, for the policy (undefined: session.max_events 0). */
  sessions: SessionStore | FleetSessions | undefined;
  /**
   * Fleet mode (`fleet.url`): the control service's client and the ports
   * over it, in place of `containment` and `approvals` (both undefined then).
   */
  fleet: FleetParts | undefined;
  /**
   * Tells approvers of each new pending access request (Slack, Teams, the
   * signed webhook); undefined when none is configured, and in fleet mode
   * (the control service notifies, once per task).
   */
  notifier: ApprovalNotifier | undefined;
  /**
   * The parts that run, in start order: audit, approvals, containment, the
   * bundle manager, the candidate policy (those that are on). startToolgate
   * adds the two ports and runs them (src/shared/lifecycle.ts).
   */
  components: Component[];
}

/** A sidecar's side of fleet mode. */
export interface FleetParts {
  client: FleetClient;
  containment: FleetContainment;
  /** Undefined when built without approvals (offline tools). */
  approvals: FleetApprovals | undefined;
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
  /** The decision clock (replay decides at each record's time). */
  now?: () => number;
  /** Build without grants even if enabled (the offline `toolgate eval`). */
  grants?: boolean;
  /** Build without containment (kill switches, limits); also off whenever audit is off (offline tools). */
  containment?: boolean;
}

/**
 * The candidate policy as a component: loaded when the parts are built,
 * OK or ERROR (not loaded) after that. Advisory: it is evaluated for the
 * record only, so a broken candidate never makes the sidecar unready.
 */
class CandidatePolicy implements Component {
  readonly name = "candidate";
  readonly advisory = true;
  private started = false;
  private stopped = false;
  constructor(private readonly loaded: { source: PolicySource } | { error: string }) {}
  get source(): PolicySource | undefined {
    return "source" in this.loaded ? this.loaded.source : undefined;
  }
  start(): Promise<void> {
    this.started = true;
    return Promise.resolve();
  }
  stop(): Promise<void> {
    this.stopped = true;
    return Promise.resolve();
  }
  status(): ComponentStatus {
    const idle = notRunning(this.started, this.stopped);
    if (idle !== undefined) return idle;
    return "error" in this.loaded
      ? { state: "ERROR", detail: `candidate policy not loaded: ${this.loaded.error}` }
      : { state: "OK" };
  }
}

/** Loads the candidate bundle (policy.candidate.bundle); a failure is logged, never fatal. */
async function candidatePolicy(
  config: CompiledConfig,
  log: Logger,
): Promise<CandidatePolicy | undefined> {
  if (config.policy.candidate === null) return undefined;
  try {
    const engine = await Engine.create(await loadBundleFromPath(config.policy.candidate), {
      entrypoint: config.policy.entrypoint,
    });
    log.info("candidate policy loaded: evaluated beside the active one, for the record only", {
      event: "candidate.loaded",
      bundle: engine.info.bundle,
      revision: engine.info.revision,
    });
    return new CandidatePolicy({ source: { active: () => engine } });
  } catch (e) {
    log.error("candidate policy not loaded", {
      event: "candidate.load_failed",
      path: config.policy.candidate,
      error: (e as Error).message,
    });
    return new CandidatePolicy({ error: (e as Error).message });
  }
}

/** The OTEL_* variables (what the audit worker's tracing reads). */
function otelEnv(env: Record<string, string | undefined>): Record<string, string | undefined> {
  return Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith("OTEL_")));
}

/**
 * Audit on a worker thread (AuditClient), unless audit.worker is false or the
 * caller hands in an in-process span exporter (tests), which cannot cross
 * threads: then an Auditor on this thread.
 */
async function buildAuditor(
  config: CompiledConfig,
  log: Logger,
  opts: BuildOptions,
): Promise<{ auditor: AuditService; component: AuditComponent }> {
  const { key, keyId } = loadHmacKey(config.audit.hmacKey, log);
  const redactor = new Redactor({ hmacKey: key, keyId, mode: config.audit.redaction });
  const env = opts.env ?? process.env;
  if (config.audit.worker && opts.spanExporter === undefined) {
    const client = await AuditClient.start({
      log,
      redactor,
      maxBacklogBytes: config.audit.maxBacklogBytes,
      data: {
        env: otelEnv(env),
        serviceVersion: packageVersion(),
        logLevel: log.level, // the worker writes through `log`, at its level
        agentId: config.agent.id,
        logDecisions: config.audit.logDecisions,
        redaction: { key: new Uint8Array(key), keyId, mode: config.audit.redaction },
        trail: config.audit.trail.enabled
          ? { dir: config.audit.trail.dir, maxFileBytes: config.audit.trail.maxFileBytes }
          : null,
        tracing: {
          maxQueueSize: config.tracing.maxQueueSize,
          scheduledDelayMs: config.tracing.scheduledDelayMs,
          maxConcurrentExports: config.tracing.maxConcurrentExports,
        },
        statsIntervalMs: 250,
      },
    });
    return { auditor: client, component: new AuditComponent(client) };
  }
  // loaded here, not at start-up: with the audit worker (above) the OTel SDK lives on that thread only
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Tracing } = require("./telemetry/tracing") as typeof TracingModule;
  const tracing = new Tracing({
    env,
    log,
    serviceVersion: packageVersion(),
    ...(opts.spanExporter ? { exporter: opts.spanExporter } : {}),
    maxQueueSize: config.tracing.maxQueueSize,
    scheduledDelayMs: config.tracing.scheduledDelayMs,
    maxConcurrentExports: config.tracing.maxConcurrentExports,
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
  const auditor = new Auditor({
    tracing,
    log,
    redactor,
    trail,
    agentId: config.agent.id,
    logDecisions: config.audit.logDecisions,
    maxBacklogBytes: config.audit.maxBacklogBytes,
  });
  return { auditor, component: new AuditComponent(auditor) };
}

/** Gauges read at scrape time from the modules that own the state. */
function registerGauges(
  metrics: Metrics,
  bundles: BundleManager,
  approvals: ApprovalService | undefined,
  auditor: AuditService | undefined,
): void {
  metrics.addGauge({
    name: "toolgate_bundle_active",
    help: "1 for the active bundle and revision; no sample while none is active.",
    read: () => {
      const st = bundles.status();
      return bundles.ready()
        ? [{ labels: { bundle: st.name, revision: st.revision ?? "" }, value: 1 }]
        : [];
    },
  });
  metrics.addGauge({
    name: "toolgate_ready",
    help: "1 while a bundle is active (the sidecar answers decisions), else 0.",
    read: () => [{ value: bundles.ready() ? 1 : 0 }],
  });
  if (approvals) {
    metrics.addGauge({
      name: "toolgate_approvals_pending",
      help: "Approval tasks waiting for a decision.",
      read: () => [{ value: approvals.pendingCount() }],
    });
  }
  if (auditor) {
    metrics.addGauge({
      name: "toolgate_spans_dropped",
      help: "Spans dropped since start (queue full, export failed or shutdown timeout). A counter's value, exposed as a gauge read from the exporter.",
      read: () => [{ value: auditor.tracingStats().dropped }],
    });
    metrics.addGauge({
      name: "toolgate_audit_backlog",
      help: "Audit records handed to the audit worker thread and not yet handled by it (0 with audit.worker false).",
      read: () => [{ value: auditor.backlog() }],
    });
    metrics.addGauge({
      name: "toolgate_audit_backlog_bytes",
      help: "Audit records not yet written (parked for a restarting audit worker, handed to it and not yet handled, or in the trail's buffer), in characters of JSON text. Past audit.max_backlog_bytes decisions are denied audit_unavailable.",
      read: () => [{ value: auditor.backlogBytes() }],
    });
    metrics.addGauge({
      name: "toolgate_audit_trail_write_errors",
      help: "Audit trail write errors since start.",
      read: () => [{ value: auditor.trailStats()?.writeErrors ?? 0 }],
    });
  }
}

/** The composition root: builds every module from the config; nothing global. */
export async function buildParts(
  config: CompiledConfig,
  log: Logger = createLogger(config.log.level),
  opts: BuildOptions = {},
): Promise<Parts> {
  const identity = new Identity({
    agentId: config.agent.id,
    mode: config.identity.mode,
    ...(config.identity.mode === "jwt" && config.identity.jwt.jobClaim !== null
      ? { jobClaim: config.identity.jwt.jobClaim }
      : {}),
    ...(config.identity.mode === "jwt"
      ? {
          verifier: await TokenVerifier.create(config.identity.jwt, {
            hostKey: "server.agent.host",
            host: config.server.agent.host,
            onDevKey: () => devKeyWarning(log, "identity.jwt.jwks_url"),
          }),
        }
      : {}),
  });
  const audit = opts.audit === false ? undefined : await buildAuditor(config, log, opts);
  const auditor = audit?.auditor;
  try {
    const parts = await assemble(config, log, opts, identity, auditor);
    if (audit !== undefined) parts.components.unshift(audit.component);
    return parts;
  } catch (e) {
    // a worker thread must not outlive a failed start
    await auditor?.close().catch(() => undefined);
    throw e;
  }
}

async function assemble(
  config: CompiledConfig,
  log: Logger,
  opts: BuildOptions,
  identity: Identity,
  auditor: AuditService | undefined,
): Promise<Parts> {
  const metrics = new Metrics();
  const verification = verificationFromConfig(config.policy.signing);
  const bundles = new BundleManager({
    path: config.policy.bundle,
    entrypoint: config.policy.entrypoint,
    log,
    smokeTest: (engine) => smokeTest(engine, config.agent.id, log),
    source: sourceFromConfig(config.policy),
    ...(verification ? { verification } : {}),
    persistDir: config.policy.persistDir,
    ...(auditor
      ? {
          spans: {
            bundleSpan: (name, attributes, error) =>
              auditor.record({ kind: "bundle", name, attributes, error }),
          },
        }
      : {}),
    onEvent: (result, code) => metrics.bundleEvents.inc(code ? { result, code } : { result }),
  });
  const redact = <T>(v: T, mask?: readonly unknown[], seen?: SecretsSeen): T =>
    auditor ? auditor.redact(v, mask as readonly MaskOp[], seen) : v;
  const approvalEvents = {
    approvalEvent: (event: ApprovalEventName, fields: Record<string, unknown>) => {
      metrics.approvals.inc({ event });
      auditor?.record({ kind: "approval", event, fields });
    },
  };
  const reservationTtlSeconds = (tool: string): number =>
    config.containment.reservationTtlSeconds ??
    (config.grants.tools[tool]?.ttlSeconds ?? config.grants.ttlSeconds) + 300;
  // fleet mode: no kill switch SQLite, no local approval queue; the control service holds both
  const fleet =
    config.fleet.url !== null && opts.containment !== false && opts.audit !== false
      ? buildFleet(config, log, opts, bundles, {
          redact,
          events: approvalEvents,
          reservationTtlSeconds,
        })
      : undefined;
  // a fleet-mode sidecar sends no notification: the control service does, once per new task
  const notifier =
    opts.approvals === false || fleet !== undefined
      ? undefined
      : notifierFromConfig(config.approvals, config.console.publicUrl, log);
  const approvals =
    opts.approvals === false || fleet !== undefined
      ? undefined
      : new ApprovalService({
          store: ApprovalStore.open(config.state.dir),
          requestLimit: config.approvals.requestLimit,
          agentId: config.agent.id,
          redact,
          events: approvalEvents,
          ...(notifier ? { onPending: (view) => notifier.notify(view) } : {}),
          log,
        });
  const grants =
    config.grants.enabled && opts.grants !== false
      ? new GrantIssuer(config.grants, config.agent.id, log)
      : undefined;
  const containment =
    opts.containment === false || opts.audit === false || fleet !== undefined
      ? undefined
      : new Containment({
          store: ContainmentStore.open(config.state.dir, {
            reservationFsync: config.containment.reservationFsync,
          }),
          agentId: config.agent.id,
          ...(opts.now ? { now: opts.now } : {}),
          reservationTtlSeconds,
          log,
          metrics,
          events: {
            containmentEvent: (event, fields) => {
              auditor?.record({ kind: "containment", event, fields });
              if (auditor === undefined)
                log.warn(`containment ${event}`, { event: `containment.${event}`, ...fields });
            },
          },
        });
  const candidate = await candidatePolicy(config, log);
  const candidateSource = candidate?.source;
  const localSessions =
    config.session.maxEvents > 0
      ? new SessionStore({
          maxEvents: config.session.maxEvents,
          maxSessions: config.session.maxSessions,
          maxTotalEvents: config.session.maxTotalEvents,
          retentionSeconds: config.session.retentionSeconds,
          onEvict: () => metrics.sessionsEvicted.inc(),
        })
      : undefined;
  // fleet mode: the labels a session touched are kept fleet-wide (src/fleet/sessions.ts)
  const sessions =
    localSessions !== undefined && fleet !== undefined
      ? new FleetSessions(
          localSessions,
          fleet.client,
          config.session.retentionSeconds,
          config.session.fleetScope,
        )
      : localSessions;
  const decider = new Decider({
    policy: bundles,
    identity,
    requestTtlSeconds: config.approvals.requestTtlSeconds,
    sink: meteredSink(metrics, auditor),
    ...(opts.now ? { now: opts.now } : {}),
    ...(approvals ? { approvals } : fleet?.approvals ? { approvals: fleet.approvals } : {}),
    ...(grants ? { grants } : {}),
    ...(containment ? { containment } : fleet ? { containment: fleet.containment } : {}),
    ...(candidateSource ? { candidate: candidateSource } : {}),
    ...(sessions ? { session: sessions } : {}),
  });
  registerGauges(metrics, bundles, approvals, auditor);
  if (sessions) {
    metrics.addGauge({
      name: "toolgate_sessions",
      help: "Sessions whose history toolgate keeps for the policy (session.max_sessions at most).",
      read: () => [{ value: sessions.size() }],
    });
  }
  if (fleet) {
    const client = fleet.client;
    metrics.addGauge({
      name: "toolgate_fleet_stream_connected",
      help: "Fleet mode: 1 while the kill-switch stream from the control service is connected, else 0.",
      read: () => [{ value: client.isConnected() ? 1 : 0 }],
    });
    metrics.addGauge({
      name: "toolgate_fleet_stream_silence_seconds",
      help: "Fleet mode: seconds since the kill-switch stream's last event (since start before the first snapshot). Past fleet.max_staleness_seconds, approve/execute/admin-class tools are denied containment_stale.",
      read: () => [{ value: client.silentSeconds() }],
    });
  }
  const switches = containment ?? fleet?.containment;
  if (switches) {
    metrics.addGauge({
      name: "toolgate_killswitches_active",
      help: "Kill switches in force (not deleted, not expired).",
      read: () => [{ value: switches.activeCount() }],
    });
  }
  return {
    config,
    log,
    bundles,
    identity,
    decider,
    auditor,
    approvals,
    grants,
    metrics,
    containment,
    sessions,
    fleet,
    notifier,
    components: [
      // the fleet client first: its stream runs before anything decides
      ...(fleet ? [fleet.client] : []),
      ...(fleet?.approvals ? [fleet.approvals] : []),
      ...(approvals ? [approvals] : []),
      ...(containment ? [containment] : []),
      bundles.component,
      ...(candidate ? [candidate] : []),
    ],
  };
}

/** The sidecar's credential for the control service (fleet.credential_file, or the dev key). */
function fleetCredential(config: CompiledConfig, log: Logger): Credential {
  const f = config.fleet;
  if (f.credentialFile !== null) return fileCredential(f.credentialFile);
  if (!f.jwt.dev) {
    throw toolgateError(
      "config_invalid",
      'fleet.url is set but "fleet.credential_file" is not, and fleet.jwt does not trust the development key. Fix: set fleet.credential_file (TOOLGATE_FLEET_CREDENTIAL_FILE) to the file holding the sidecar\'s token.',
    );
  }
  devKeyWarning(log, "fleet.jwt: this sidecar signs its own fleet credential");
  return devCredential({
    agentId: config.agent.id,
    issuer: f.jwt.issuer,
    audience: f.jwt.audience,
    agentClaim: f.jwt.agentClaim,
  });
}

/** Fleet mode: the control service's client, containment and approvals over it. */
function buildFleet(
  config: CompiledConfig,
  log: Logger,
  opts: BuildOptions,
  bundles: BundleManager,
  approval: {
    redact: <T>(v: T, mask?: readonly unknown[], seen?: SecretsSeen) => T;
    events: { approvalEvent: (event: ApprovalEventName, fields: Record<string, unknown>) => void };
    reservationTtlSeconds: (tool: string) => number;
  },
): FleetParts {
  const url = config.fleet.url as string;
  const client = new FleetClient({
    url,
    agentId: config.agent.id,
    maxStalenessSeconds: config.fleet.maxStalenessSeconds,
    credential: fleetCredential(config, log),
    log,
    version: packageVersion(),
    bundle: () => {
      if (!bundles.ready()) return null;
      const st = bundles.status();
      return { name: st.name, revision: st.revision };
    },
    ...(opts.now ? { now: opts.now } : {}),
  });
  const containment = new FleetContainment({
    client,
    agentId: config.agent.id,
    log,
    reservationTtlSeconds: approval.reservationTtlSeconds,
    ...(opts.now ? { now: opts.now } : {}),
  });
  const approvals =
    opts.approvals === false
      ? undefined
      : new FleetApprovals({
          client,
          store: ApprovalStore.open(config.state.dir),
          agentId: config.agent.id,
          redact: approval.redact,
          events: approval.events,
          // no notifier: the control service notifies approvers of a new task, once
          log,
          ...(opts.now ? { now: opts.now } : {}),
        });
  log.info(
    "fleet mode: kill switches, approvals, budgets and rates are held by the control service",
    {
      event: "fleet.mode",
      url,
      max_staleness_seconds: config.fleet.maxStalenessSeconds,
      instance: client.instance,
    },
  );
  return { client, containment, approvals };
}

export interface Toolgate extends Parts {
  agentServer: RunningServer;
  controlServer: RunningServer | undefined;
  /** Runs the components; its status() is what /health/ready, /v1/status and toolgate_component_status report. */
  lifecycle: Lifecycle;
  stop(): Promise<void>;
}

/**
 * Builds everything, then starts the components in order — audit,
 * approvals, containment, the bundle (its first load), the candidate, the
 * agent port, the control port — and stops them in reverse.
 */
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
  if (parts.identity.devKeyTrusted) devKeyWarning(parts.log, "identity.jwt");
  const version = packageVersion();
  let controlVerifier: TokenVerifier | undefined;
  try {
    controlVerifier = config.control.enabled
      ? await TokenVerifier.create(config.control.jwt, {
          hostKey: "control.host",
          host: config.control.host,
          onDevKey: () => devKeyWarning(parts.log, "control.jwt.jwks_url"),
        })
      : undefined;
  } catch (e) {
    // nothing that was built may keep the process alive after a failed start
    await new Lifecycle(parts.components).stop().catch(() => undefined);
    throw e;
  }
  if (controlVerifier?.dev === true) devKeyWarning(parts.log, "control.jwt");
  const readiness = (): Readiness => lifecycle.status();
  const agentPort = new PortComponent("agent_server", () =>
    startAgentServer({
      config,
      decider: parts.decider,
      identity: parts.identity,
      ...(parts.auditor ? { auditor: parts.auditor } : {}),
      ...(parts.approvals
        ? { approvals: parts.approvals }
        : parts.fleet?.approvals
          ? { approvals: parts.fleet.approvals }
          : {}),
      ...(parts.containment
        ? { containment: parts.containment }
        : parts.fleet
          ? { containment: parts.fleet.containment }
          : {}),
      ...(parts.sessions ? { sessions: parts.sessions } : {}),
      metrics: parts.metrics,
      bundles: parts.bundles,
      readiness,
      ...(parts.fleet ? { fleetStatus: () => parts.fleet?.client.view() ?? {} } : {}),
      log: parts.log,
      startedAt: new Date(),
      version,
    }),
  );
  const verifier = controlVerifier;
  const controlPort =
    verifier !== undefined
      ? new PortComponent("control_server", () =>
          startControlServer({
            config,
            verifier,
            bundles: parts.bundles,
            readiness,
            approvals: parts.approvals,
            auditor: parts.auditor,
            log: parts.log,
            version,
            grants: parts.grants,
            metrics: parts.metrics,
            containment: parts.containment,
            fleet: parts.fleet
              ? {
                  url: parts.fleet.client.url,
                  listSwitches: () => parts.fleet?.containment.listSwitches() ?? [],
                  status: () => parts.fleet?.client.view() ?? {},
                }
              : undefined,
          }),
        )
      : undefined;
  const lifecycle = new Lifecycle(
    [...parts.components, agentPort, ...(controlPort ? [controlPort] : [])],
    (name, e) =>
      parts.log.error("a component failed to stop", {
        event: "server.stop_error",
        component: name,
        error: (e as Error).message,
      }),
  );
  parts.metrics.addGauge({
    name: "toolgate_component_status",
    help: "Each component's state: 1 OK, 0 NOT_READY, -1 ERROR. The sidecar is ready while every component but the advisory candidate is 1.",
    read: () =>
      Object.entries(lifecycle.status().components).map(([component, r]) => ({
        labels: { component },
        value: stateValue(r.state),
      })),
  });
  try {
    await lifecycle.start();
  } catch (e) {
    // nothing that was built or started may keep the process alive after a failed start
    await lifecycle.stop().catch(() => undefined);
    throw e;
  }
  const started = agentPort.server;
  const controlServer = controlPort?.server;
  // links in notifications: console.public_url, else the control port as it listens
  if (controlServer) parts.notifier?.setConsoleBase(controlServer.url);
  parts.log.info("toolgate listening", {
    event: "server.started",
    agent_port: started.url,
    control_port: controlServer?.url ?? null,
    agent: config.agent.id,
    ready: parts.bundles.ready(),
  });
  return {
    ...parts,
    agentServer: started,
    controlServer,
    lifecycle,
    stop: async () => {
      try {
        await lifecycle.stop();
      } finally {
        await parts.notifier?.stop();
      }
    },
  };
}
