import type { Express, Request } from "express";
import type { ApprovalService } from "../approvals/service";
import type { AuditService } from "../audit";
import type { BundleManager } from "../bundles";
import type { Containment, KillSwitch, NewKillSwitch } from "../containment";
import type { CompiledConfig } from "../config";
import { toolgateError } from "../errors";
import { bearerToken, type Principal, type TokenVerifier } from "../identity";
import type { Metrics } from "../metrics";
import type { RequestContext } from "../model";
import type { Logger } from "../shared/log";
import type { Readiness } from "../shared/lifecycle";
import { HttpPort, Reply } from "./foundation";
import { createConsole, isLoopbackHost } from "../console/app";
import { devConsoleUsers } from "../console/dev-users";
import { SidecarConsoleBackend } from "../console/backends/sidecar";
import { serve, type RunningServer } from "./listen";
import { statusView } from "./status";
import { validator } from "../shared/validate";

export interface ControlServerDeps {
  config: CompiledConfig;
  verifier: TokenVerifier;
  bundles: BundleManager;
  /** Every component's status: /health/ready and /v1/status aggregate it. */
  readiness: () => Readiness;
  approvals: ApprovalService | undefined;
  auditor: AuditService | undefined;
  log: Logger;
  version: string;
  metrics?: Metrics;
  /** Kill switches (POST/GET/DELETE /v1/killswitches, admin role). */
  containment?: Containment | undefined;
  /** Grants: the public keys tool backends verify grants with (public, no token). */
  grants?: { jwksJson(): string } | undefined;
  /**
   * Fleet mode: approvals and kill switches are decided on the control
   * service at `url`; this port lists the switches the sidecar holds and
   * answers 409 fleet_mode to approval decisions and switch writes.
   */
  fleet?:
    { url: string; listSwitches(): KillSwitch[]; status(): Record<string, unknown> } | undefined;
}

/** The body of approve and deny (schemas/approval-decision.schema.json): any JSON, an object's comment kept. */
type ApprovalDecision = { comment?: string } | unknown[] | string | number | boolean | null;

const STATUSES = new Set(["pending", "approved", "denied", "expired", "cancelled", "failed"]);

/**
 * The control port: approvals and administration for people, never for the
 * agent. Every route but health needs a verified bearer token (the control
 * port's own issuer, audience and keys); each route checks the role it needs.
 */
export function createControlApp(deps: ControlServerDeps): Express {
  const { config, verifier, bundles, approvals, log } = deps;
  const approvalDecision = validator<ApprovalDecision>("approval-decision.schema.json");
  const killSwitch = validator<NewKillSwitch>("kill-switch.schema.json");
  const port = new HttpPort({
    name: "control",
    log,
    failure: "control request failed",
    /** Bodies here pass the agent port's checks and limits (server.limits). */
    limits: config.server.limits,
    queryParser: "simple",
  });
  /** How audit events of this port name the request. */
  const auditCtx = (ctx: RequestContext): RequestContext => ({ face: "native", http: ctx.http });

  port.get("/health/live", { handle: () => ({ status: "ok" }) });
  port.get("/health/ready", {
    handle: () => {
      const { ready, components } = deps.readiness();
      return Reply.json(ready ? 200 : 503, { status: ready ? "ok" : "not_ready", components });
    },
  });

  const grants = deps.grants;
  if (grants !== undefined) {
    port.get(config.grants.jwksPath, {
      handle: () =>
        Reply.text(200, grants.jwksJson(), {
          "Content-Type": "application/jwk-set+json",
          "Cache-Control": "public, max-age=60",
        }),
    });
  }

  const metrics = {
    handle: async () => {
      if (deps.metrics === undefined) throw toolgateError("not_found", "metrics are off");
      return Reply.text(200, await deps.metrics.render(), {
        "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
        "Cache-Control": "no-store",
      });
    },
  };
  // Metrics hold no secrets: open by default, behind the token if configured.
  if (!config.control.metricsAuth) port.get("/metrics", metrics);

  // the approver console: its own login (OIDC or, in development, a pick of people); before the gate
  if (config.console.enabled) port.mount("/console", sidecarConsole(deps));

  // everything below needs a verified token
  port.gate(
    (req) => verifier.verify(bearerToken(req.headers)),
    (req, err) =>
      deps.auditor?.record({
        kind: "security",
        event: "control_unauthenticated",
        message: "a control-port call without a valid token",
        fields: { path: req.path, method: req.method, error: err.message },
        ctx: { face: "native", http: { method: req.method, path: req.path } },
      }),
  );

  const caller = (ctx: RequestContext): Principal => ctx.principal as Principal;
  const isAdmin = (p: Principal): boolean => p.roles.includes(config.control.adminRole);
  /** A guard: the caller holds the admin role, or `forbidden` saying what `needs` it. */
  const admin = (what: string) => (ctx: RequestContext) => {
    if (!isAdmin(caller(ctx)))
      throw toolgateError("forbidden", `${what} the ${config.control.adminRole} role`);
  };
  const need = (): ApprovalService => {
    if (approvals === undefined) throw toolgateError("not_found", "approvals are not enabled");
    return approvals;
  };
  const id = (req: Request): string => String(req.params.id);

  if (config.control.metricsAuth) port.get("/metrics", metrics);
  port.get("/v1/status", {
    handle: () =>
      statusView(deps.version, config.agent.id, deps.readiness(), {
        bundles: [bundles.status()],
        ...(deps.fleet ? { fleet: deps.fleet.status() } : {}),
        tracing: deps.auditor?.tracingStats(),
      }),
  });

  const fleet = deps.fleet;
  if (fleet !== undefined) {
    fleetRoutes(port, fleet, admin("kill switches need"));
    port.notAllowedOnEveryRoute();
    return port.finish();
  }

  port.get("/v1/approvals", {
    handle: (_v, ctx, req) => {
      const status = typeof req.query.status === "string" ? req.query.status : undefined;
      if (status !== undefined && !STATUSES.has(status)) {
        throw toolgateError("invalid_request", `status must be one of ${[...STATUSES].join(", ")}`);
      }
      const limitRaw = typeof req.query.limit === "string" ? Number(req.query.limit) : 100;
      const limit = Number.isInteger(limitRaw) && limitRaw > 0 && limitRaw <= 1000 ? limitRaw : 100;
      const p = caller(ctx);
      return { approvals: need().list(p, status, isAdmin(p), limit) };
    },
  });
  port.get("/v1/approvals/:id", { handle: (_v, _ctx, req) => need().detail(id(req)) });
  const decide = (approve: boolean) => ({
    body: "optional" as const,
    schema: approvalDecision,
    handle: (body: ApprovalDecision | undefined, ctx: RequestContext, req: Request) => {
      const comment =
        typeof body === "object" && body !== null && !Array.isArray(body)
          ? body.comment
          : undefined;
      return need().decide(id(req), caller(ctx), approve, comment);
    },
  });
  port.post("/v1/approvals/:id/approve", decide(true));
  port.post("/v1/approvals/:id/deny", decide(false));
  port.post("/v1/approvals/:id/revoke", {
    guard: admin("revoking needs"),
    handle: (_v, ctx, req) => need().revoke(id(req), caller(ctx)),
  });

  // --- kill switches (admin) ------------------------------------------------
  const containment = deps.containment;
  if (containment !== undefined) {
    /**
     * A switch change is in force in memory before the response, written or
     * not: 201/200 when containment.db has it, 202 `persisted: false` when
     * the store refused it (toolgate retries in the background), reported
     * loudly — an error line, a security event, the metrics.
     */
    const answer = (
      ctx: RequestContext,
      op: "create" | "delete",
      view: KillSwitch,
      by: string,
    ): Reply => {
      if (view.persisted) return Reply.json(op === "create" ? 201 : 200, view);
      const fields = { op, killswitch: view, actor: by, error: view.persist_error };
      log.error("kill switch change applies in memory but is not written to containment.db", {
        event: "containment.killswitch_not_persisted",
        ...fields,
      });
      deps.auditor?.record({
        kind: "security",
        event: "killswitch_not_persisted",
        message:
          "a kill switch change is in force but not persisted: a restart before the retry succeeds loses it",
        fields,
        ctx: auditCtx(ctx),
      });
      return Reply.json(202, view);
    };
    const guard = admin("kill switches need");
    port.post("/v1/killswitches", {
      guard,
      body: "json",
      schema: killSwitch,
      // in force before the response is written; committed, or retried until it is
      handle: (input, ctx) => {
        const by = caller(ctx).id;
        return answer(ctx, "create", containment.createSwitch(input, by), by);
      },
    });
    port.get("/v1/killswitches", {
      guard,
      handle: (_v, _ctx, req) => {
        if (req.query.history === "true") {
          const limitRaw = typeof req.query.limit === "string" ? Number(req.query.limit) : 100;
          return { killswitches: containment.switchHistory(limitRaw) };
        }
        return { killswitches: containment.listSwitches() };
      },
    });
    port.delete("/v1/killswitches/:id", {
      guard,
      handle: (_v, ctx, req) => {
        const by = caller(ctx).id;
        return answer(ctx, "delete", containment.deleteSwitch(id(req), by), by);
      },
    });
  }

  port.notAllowedOnEveryRoute();
  return port.finish();
}

/**
 * The control port of a sidecar in fleet mode: the switches it holds (from
 * the control service's stream) are listed; every approval route and every
 * switch write answers 409 fleet_mode naming the control service.
 */
function fleetRoutes(
  port: HttpPort,
  fleet: { url: string; listSwitches(): KillSwitch[] },
  guard: (ctx: RequestContext) => void,
): void {
  const elsewhere = (what: string, path: string) => () => {
    throw toolgateError(
      "fleet_mode",
      `this sidecar is in fleet mode: ${what} on the control service, ${fleet.url}${path}`,
    );
  };
  const approvals = elsewhere("approvals are listed and decided", "/v1/approvals");
  port.get("/v1/approvals", { handle: approvals });
  port.get("/v1/approvals/:id", { handle: approvals });
  port.post("/v1/approvals/:id/approve", { handle: approvals });
  port.post("/v1/approvals/:id/deny", { handle: approvals });
  port.post("/v1/approvals/:id/revoke", { handle: approvals });
  const writes = elsewhere("kill switches are set and lifted", "/v1/killswitches");
  port.post("/v1/killswitches", { guard, handle: writes });
  port.get("/v1/killswitches", {
    guard,
    handle: (_v, _ctx, req) => {
      if (req.query.history === "true")
        elsewhere("the kill switch history is kept", "/v1/killswitches?history=true")();
      return { killswitches: fleet.listSwitches() };
    },
  });
  port.delete("/v1/killswitches/:id", { guard, handle: writes });
}

/** The console over this sidecar (its approvals, containment, bundle and trail). */
function sidecarConsole(deps: ControlServerDeps): ReturnType<typeof createConsole> {
  const { config, bundles, log } = deps;
  const backend = new SidecarConsoleBackend({
    agentId: config.agent.id,
    adminRole: config.control.adminRole,
    approvals: deps.fleet === undefined ? deps.approvals : undefined,
    containment: deps.fleet === undefined ? deps.containment : undefined,
    bundles,
    trailDir: config.audit.trail.enabled ? config.audit.trail.dir : null,
    fleetUrl: deps.fleet?.url,
  });
  return createConsole({
    backend,
    settings: config.console,
    devUsers: config.control.jwt.dev
      ? () => devConsoleUsers(bundles.active()?.data, config.control.adminRole)
      : undefined,
    secureCookies: !isLoopbackHost(config.control.host),
    log,
    onSecurityEvent: (event, fields) =>
      deps.auditor?.record({
        kind: "security",
        event,
        message: `approver console: ${event.replace(/_/g, " ")}`,
        fields,
        ctx: { face: "native" },
      }),
  });
}

export function startControlServer(deps: ControlServerDeps): Promise<RunningServer> {
  const { host, port } = deps.config.control;
  return serve(createControlApp(deps), {
    host,
    port,
    requestTimeoutMs: 10_000,
    headersTimeoutMs: 10_000,
    setting: "control.port / TOOLGATE_CONTROL_PORT",
  });
}
