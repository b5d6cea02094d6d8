/**
 * `toolgate control`'s composition root: builds the control service from the
 * compiled config (fleet.postgres_url, control.*, fleet.jwt, audit, tracing,
 * state.dir, approvals.request_limit) and runs its components — audit,
 * PostgreSQL's health, the kill-switch stream, housekeeping, the port — with
 * src/shared/lifecycle.ts. Stateless: every replica over one database serves
 * the same fleet.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { join } from "node:path";
import type { SpanExporter } from "@opentelemetry/sdk-trace";
import { Auditor, type AuditService } from "../audit";
import { Tracing } from "../telemetry/tracing";
import { AuditComponent } from "../audit/component";
import type { CompiledConfig } from "../config";
import { normalizeError, toolgateError } from "../errors";
import { PortComponent, type RunningServer } from "../http/listen";
import { devKeyWarning, TokenVerifier } from "../identity";
import { Metrics } from "../metrics";
import { Redactor } from "../redaction/redact";
import {
  Lifecycle,
  notRunning,
  stateValue,
  type Component,
  type ComponentStatus,
  type Readiness,
} from "../shared/lifecycle";
import { createLogger, type Logger } from "../shared/log";
import { packageVersion } from "../shared/paths";
import { loadHmacKey } from "../redaction/key";
import { AuditTrail } from "../trail";
import { notifierFromConfig } from "../approvals/notify";
import { FleetApprovals } from "./approvals";
import { SidecarCredentials } from "./auth";
import { StoreHealth } from "./health";
import { SIDECAR_SEEN_MS, startControlServiceServer } from "./server";
import { PgFleetStore } from "./store/pg-store";
import type { FleetStore } from "./store/types";
import { SwitchFeed, type StreamClientInfo } from "./stream";
import { FleetSwitches } from "./switches";

/** Opens the fleet store on a PostgreSQL URL. */
export type OpenStore = (url: string, log: Logger) => FleetStore;

/** PostgreSQL (src/control/store/pg-store.ts). */
export const openPgStore: OpenStore = (url, log) => new PgFleetStore({ url, log });

export interface ControlServiceOptions {
  /** The fleet store over `fleet.postgres_url` (default PostgreSQL). */
  openStore?: OpenStore;
  log?: Logger;
  /** Where OTEL_* settings come from (default process.env). */
  env?: Record<string, string | undefined>;
  /** Replaces the OTLP exporter (tests). */
  spanExporter?: SpanExporter;
  /** This replica's id (default: host name, process id and a random suffix). */
  replica?: string;
  now?: () => number;
  /** How often due tasks are expired (default 5000 ms); the store is pruned every 60 s. */
  housekeepingIntervalMs?: number;
  /** The stream's ping interval (default 2000 ms). */
  pingMs?: number;
  /** Streams one agent may hold open on this replica (default 1024), and all agents together (default 10000). */
  streamLimits?: { perAgent?: number; total?: number };
}

export interface ControlService {
  url: string;
  replica: string;
  log: Logger;
  /** Audit on this thread: spans, log lines, the control trail. */
  auditor: AuditService;
  store: FleetStore;
  lifecycle: Lifecycle;
  server: RunningServer;
  stop(): Promise<void>;
}

/** fleet.postgres_url, or config_invalid naming the key and the fix. */
export function postgresUrl(config: CompiledConfig): string {
  const url = config.fleet.postgresUrl;
  if (url === null || url === undefined || url === "") {
    throw toolgateError(
      "config_invalid",
      'key "fleet.postgres_url" is not set: `toolgate control` keeps the fleet\'s state in PostgreSQL. ' +
        "Fix: set fleet.postgres_url in the config file, or TOOLGATE_POSTGRES_URL, to a postgres:// URL " +
        "(e.g. postgres://toolgate@db.example:5432/toolgate).",
    );
  }
  return url;
}

/** Applies pending migrations (idempotent; replicas starting together migrate once). */
export async function migrateFleetStore(
  config: CompiledConfig,
  log: Logger,
  openStore: OpenStore = openPgStore,
): Promise<number[]> {
  const store = openStore(postgresUrl(config), log);
  try {
    return await store.migrate();
  } finally {
    await store.close().catch(() => undefined);
  }
}

/**
 * Audit on this thread: spans (tracing.*), log lines and the hash-chained
 * trail in `<audit.trail.dir>/control` (one writer per directory: a sidecar
 * sharing the state directory keeps its own).
 */
function buildAuditor(
  config: CompiledConfig,
  log: Logger,
  opts: ControlServiceOptions,
  replica: string,
): Auditor {
  const { key, keyId } = loadHmacKey(config.audit.hmacKey, log);
  const tracing = new Tracing({
    env: opts.env ?? process.env,
    log,
    serviceVersion: packageVersion(),
    ...(opts.spanExporter ? { exporter: opts.spanExporter } : {}),
    maxQueueSize: config.tracing.maxQueueSize,
    scheduledDelayMs: config.tracing.scheduledDelayMs,
    maxConcurrentExports: config.tracing.maxConcurrentExports,
  });
  const trail = config.audit.trail.enabled
    ? AuditTrail.open({
        dir: join(config.audit.trail.dir, "control"),
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
    redactor: new Redactor({ hmacKey: key, keyId, mode: config.audit.redaction }),
    trail,
    agentId: `toolgate-control/${replica}`,
    logDecisions: config.audit.logDecisions,
  });
}

/** Expires due tasks every few seconds and prunes the store every minute (any replica; idempotent). */
class Housekeeping implements Component {
  readonly name = "housekeeping";
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private lastPrune = 0;
  private lastError: string | undefined;
  private started = false;
  private stopped = false;

  constructor(
    private readonly approvals: FleetApprovals,
    private readonly store: FleetStore,
    private readonly log: Logger,
    private readonly intervalMs: number,
    private readonly now: () => number,
  ) {}

  start(): Promise<void> {
    this.started = true;
    this.timer = setInterval(() => {
      this.running ??= this.tick().finally(() => {
        this.running = undefined;
      });
    }, this.intervalMs);
    this.timer.unref();
    return Promise.resolve();
  }

  private async tick(): Promise<void> {
    try {
      await this.approvals.expire();
      const now = this.now();
      if (now - this.lastPrune >= 60_000) {
        this.lastPrune = now;
        await this.store.prune(now);
      }
      this.lastError = undefined;
    } catch (e) {
      this.lastError = normalizeError(e).message;
      this.log.error("control housekeeping failed; the next tick retries", {
        event: "control.housekeeping_error",
        error: this.lastError,
      });
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
  }

  /** Advisory in spirit: a failed tick is reported, PostgreSQL's own health decides readiness. */
  status(): ComponentStatus {
    const idle = notRunning(this.started, this.stopped);
    if (idle !== undefined) return idle;
    return this.lastError === undefined
      ? { state: "OK" }
      : { state: "OK", detail: `last run failed: ${this.lastError}` };
  }
}

/**
 * Builds and starts one replica of the control service: migrations first
 * (idempotent), then audit, PostgreSQL's health, the stream, housekeeping
 * and the port. A failed start stops what was started and closes the store.
 */
export async function startControlService(
  config: CompiledConfig,
  opts: ControlServiceOptions = {},
): Promise<ControlService> {
  const log = opts.log ?? createLogger(config.log.level);
  const now = opts.now ?? Date.now;
  const url = postgresUrl(config);
  const replica = opts.replica ?? `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const portOf = { hostKey: "control.host", host: config.control.host };
  const humans = await TokenVerifier.create(config.control.jwt, {
    ...portOf,
    onDevKey: () => devKeyWarning(log, "control.jwt.jwks_url"),
  });
  const fleetJwt = { ...config.fleet.jwt, jobClaim: null };
  const sidecarVerifier = await TokenVerifier.create(fleetJwt, {
    ...portOf,
    onDevKey: () => devKeyWarning(log, "fleet.jwt.jwks_url"),
  });
  if (humans.dev) devKeyWarning(log, "control.jwt");
  if (sidecarVerifier.dev) devKeyWarning(log, "fleet.jwt");

  const store = (opts.openStore ?? openPgStore)(url, log);
  try {
    const applied = await store.migrate();
    if (applied.length > 0)
      log.info("fleet store migrated", { event: "control.migrated", versions: applied });
  } catch (e) {
    await store.close().catch(() => undefined);
    throw e;
  }

  const auditor: AuditService = buildAuditor(config, log, opts, replica);
  const metrics = new Metrics();
  // approvers are told of each new task here, once fleet-wide (sidecars in fleet mode never notify)
  const notifier = notifierFromConfig(config.approvals, config.console.publicUrl, log);
  const approvals = new FleetApprovals({
    store,
    requestLimit: config.approvals.requestLimit,
    ...(notifier ? { onPending: (view: Record<string, unknown>) => notifier.notify(view) } : {}),
    log,
    event: (event, fields) => {
      metrics.approvals.inc({ event });
      auditor.record({ kind: "approval", event, fields: { ...fields, replica } });
    },
    now,
  });
  const switches = new FleetSwitches({
    store,
    event: (event, fields) =>
      auditor.record({ kind: "containment", event, fields: { ...fields, replica } }),
    now,
  });
  const health = new StoreHealth({ store, log });
  const seen = new WeakMap<StreamClientInfo, number>();
  const register = (c: StreamClientInfo, event: "connected" | "seen" | "closed"): void => {
    if (c.instance === undefined || event === "closed") return;
    const t = now();
    if (event === "seen" && t - (seen.get(c) ?? 0) < SIDECAR_SEEN_MS / 2) return;
    seen.set(c, t);
    store
      .upsertSidecar({ instance: c.instance, agentId: c.agentId, replica, now: t })
      .catch((e: unknown) =>
        log.debug("a sidecar could not be registered", {
          event: "control.sidecar_register_failed",
          error: normalizeError(e).message,
        }),
      );
  };
  const feed = new SwitchFeed({
    store,
    log,
    now,
    onClient: register,
    ...(opts.pingMs !== undefined ? { pingMs: opts.pingMs } : {}),
    ...(opts.streamLimits?.perAgent !== undefined
      ? { maxStreamsPerAgent: opts.streamLimits.perAgent }
      : {}),
    ...(opts.streamLimits?.total !== undefined ? { maxStreams: opts.streamLimits.total } : {}),
  });
  const housekeeping = new Housekeeping(
    approvals,
    store,
    log,
    opts.housekeepingIntervalMs ?? 5000,
    now,
  );
  const version = packageVersion();
  const port: PortComponent = new PortComponent("control_server", () =>
    startControlServiceServer({
      config,
      humans,
      sidecars: new SidecarCredentials(sidecarVerifier, config.fleet.jwt.agentClaim),
      store,
      health,
      feed,
      approvals,
      switches,
      readiness: (): Readiness => lifecycle.status(),
      auditor,
      metrics,
      log,
      version,
      replica,
      now,
    }),
  );
  const lifecycle: Lifecycle = new Lifecycle(
    [new AuditComponent(auditor), health, feed, housekeeping, port],
    (name, e) =>
      log.error("a component failed to stop", {
        event: "server.stop_error",
        component: name,
        error: (e as Error).message,
      }),
  );
  metrics.addGauge({
    name: "toolgate_component_status",
    help: "Each component's state: 1 OK, 0 NOT_READY, -1 ERROR.",
    read: () =>
      Object.entries(lifecycle.status().components).map(([component, r]) => ({
        labels: { component },
        value: stateValue(r.state),
      })),
  });
  metrics.addGauge({
    name: "toolgate_fleet_stream_clients",
    help: "Sidecars connected to this replica's kill-switch stream.",
    read: () => [{ value: feed.clientCount }],
  });
  const stop = async (): Promise<void> => {
    try {
      await lifecycle.stop();
    } finally {
      await notifier?.stop();
      await store.close().catch(() => undefined);
    }
  };
  try {
    await lifecycle.start();
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }
  const server = port.server;
  // links in notifications: console.public_url, else this replica's own address
  notifier?.setConsoleBase(server.url);
  log.info("toolgate control listening", {
    event: "control.started",
    url: server.url,
    replica,
    ready: lifecycle.status().ready,
  });
  return { url: server.url, replica, log, auditor, store, lifecycle, server, stop };
}
