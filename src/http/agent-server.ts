import type { Express, Request } from "express";
import type { BundleManager } from "../bundles";
import type { CompiledConfig } from "../config";
import { boundaryFromData, recordAction, type ActionReport } from "../audit/actions";
import { startRequestSpan, traceParentOf, type AuditService } from "../audit";
import type { AccessRequest, PlanPreviewer, Requester } from "../approvals/service";
import type { PlanRequest } from "../approvals/plans";
import {
  mapMaybe,
  type Decider,
  type DecisionRequest,
  type MaybePromise,
  type Principal,
  type RequestContext,
} from "../decision";
import type { Identity } from "../identity";
import { toolgateError } from "../errors";
import type { Metrics } from "../metrics";
import type { Logger } from "../shared/log";
import type { Readiness } from "../shared/lifecycle";
import type { ParsedBody } from "./body";
import { authzenConfiguration, authzenEvaluation, authzenEvaluations } from "./faces/authzen";
import { nativeDecision } from "./faces/native";
import {
  actionSearch,
  registeredTools,
  type ActionSearchRequest,
  type SearchPages,
} from "./faces/search";
import { opaData, toOpaError } from "./faces/opa";
import { HttpPort, Reply, errorBody } from "./foundation";
import { serve, type RunningServer } from "./listen";
import { statusView } from "./status";
import { validator } from "../shared/validate";
import { OrderedMap } from "../shared/ordered-map";

/**
 * The access-request routes' service: the sidecar's own ApprovalService, or
 * in fleet mode FleetApprovals (which answers with promises).
 */
export interface AccessRequests {
  submit(
    request: AccessRequest,
    idempotencyKey: string | undefined,
    baseUrl: string,
    requester: Requester,
  ): MaybePromise<{ created: boolean; view: Record<string, unknown> }>;
  get(taskId: string, baseUrl: string, requester: Requester): MaybePromise<Record<string, unknown>>;
  cancel(
    taskId: string,
    baseUrl: string,
    requester: Requester,
  ): MaybePromise<Record<string, unknown>>;
  /** Plan approvals (the sidecar's own ApprovalService; not in fleet mode). */
  submitPlan?(
    request: PlanRequest,
    preview: PlanPreviewer,
    idempotencyKey: string | undefined,
    baseUrl: string,
    requester: Requester,
  ): { created: boolean; view: Record<string, unknown> };
  getPlan?(planId: string, baseUrl: string, requester: Requester): Record<string, unknown>;
  cancelPlan?(planId: string, baseUrl: string, requester: Requester): Record<string, unknown>;
}

/**
 * What resolves a decision's budget reservations when its action report
 * arrives (Containment, or FleetContainment): what it did, "none" for nothing.
 */
export interface BudgetReports {
  reported(decisionId: string, status: "ok" | "error", changedSomething: boolean): string;
}

export interface AgentServerDeps {
  config: CompiledConfig;
  decider: Decider;
  identity: Identity;
  approvals?: AccessRequests;
  auditor?: AuditService;
  /** Resolves budget reservations when an action report names their decision. */
  containment?: BudgetReports;
  /** Session state: an action report counts on its decision's session. */
  sessions?: { reported(decisionId: string, status: "ok" | "error", nowMs: number): void };
  /** toolgate_action_anomalies_total (action reports that contradict their decision). */
  metrics?: Metrics;
  bundles: BundleManager;
  /** Every component's status: /health/ready and /v1/status aggregate it. */
  readiness: () => Readiness;
  /** Fleet mode: where the sidecar stands with the control service (/v1/status `fleet`). */
  fleetStatus?: () => Record<string, unknown>;
  log: Logger;
  startedAt: Date;
  version: string;
}

/**
 * The agent-facing app: decisions (native, AuthZEN, OPA Data API), health and
 * status. It has no route that approves, administers or loads policy.
 */
export function createAgentApp(deps: AgentServerDeps): Express {
  const { config, decider, bundles, auditor, identity, approvals } = deps;
  const decisionRequest = validator<DecisionRequest>("decision-request.schema.json");
  const accessRequest = validator<AccessRequest>("access-request.schema.json");
  const planRequest = validator<PlanRequest>("plan-request.schema.json");
  const actionReport = validator<ActionReport>("action-report.schema.json");
  const searchRequest = validator<ActionSearchRequest>("action-search.schema.json");
  const searchPages: SearchPages = new OrderedMap();
  const port = new HttpPort({
    name: "agent",
    log: deps.log,
    failure: "request failed",
    limits: config.server.limits,
    queryParser: false,
    authenticate: (req) => identity.authenticate(req.headers),
    ...(auditor ? { traceParentOf } : {}),
    renderAt: (path) => (path.startsWith("/v1/data") ? toOpaError : errorBody),
  });
  const baseUrl = (req: Request): string => {
    const host = req.headers.host;
    return typeof host === "string" && /^[A-Za-z0-9.[\]:-]{1,255}$/.test(host)
      ? `http://${host}`
      : `http://${config.server.agent.host}:${config.server.agent.port}`;
  };
  const batchSpan = auditor
    ? (ctx: RequestContext) =>
        startRequestSpan(auditor, ctx, `${ctx.http?.method ?? "POST"} ${ctx.http?.path ?? ""}`)
    : undefined;

  // --- native ---------------------------------------------------------------
  port.post("/v1/decisions", {
    body: "json",
    schema: decisionRequest,
    handle: (req, ctx, _q, body) => nativeDecision(decider, req, ctx, (body as ParsedBody).text),
  });

  // --- AuthZEN 1.0 ----------------------------------------------------------
  port.post("/access/v1/evaluation", {
    face: "authzen",
    body: "json",
    schema: decisionRequest,
    handle: (req, ctx, q, body) =>
      authzenEvaluation(decider, req, ctx, (body as ParsedBody).text, baseUrl(q)),
  });
  port.post("/access/v1/evaluations", {
    face: "authzen",
    body: "json",
    handle: (value, ctx) =>
      authzenEvaluations(decider, value, config.server.limits.maxEvaluations, ctx, batchSpan),
  });
  // Action Search: the registered tools this caller may use (each previewed, nothing recorded per tool)
  port.post("/access/v1/search/action", {
    face: "authzen",
    body: "json",
    schema: searchRequest,
    handle: (req, ctx) => {
      const span = batchSpan?.(ctx);
      try {
        return actionSearch(
          decider,
          req,
          registeredTools(bundles.active()?.data),
          span?.ctx ?? ctx,
          searchPages,
        );
      } finally {
        span?.end();
      }
    },
  });
  port.get("/.well-known/authzen-configuration", {
    open: true,
    handle: (_v, _ctx, q) => {
      const meta = authzenConfiguration(baseUrl(q));
      if (approvals) meta.access_request_endpoint = `${baseUrl(q)}/access/v1/requests`;
      return meta;
    },
  });

  // --- AuthZEN Access Request and Approval profile (the agent's side) --------
  const needApprovals = (): AccessRequests => {
    if (approvals === undefined) throw toolgateError("not_found", "approvals are not enabled");
    return approvals;
  };
  /**
   * Who asks, on the access-request routes: in identity mode jwt the verified
   * token's subject — the initiator, or else the task is "not found"; in
   * trusted mode (development, loopback only) nobody is verified (null) and
   * the task id is the only key. See docs/approvals.md.
   */
  const requesterOf = (caller: Principal | undefined): string | null => {
    if (identity.mode !== "jwt") return null;
    if (caller === undefined)
      throw toolgateError("unauthenticated", "a bearer token is required in identity mode jwt");
    return caller.id;
  };
  port.post("/access/v1/requests", {
    face: "authzen",
    body: "json",
    schema: decisionRequest,
    handle: (req, ctx, q) => {
      identity.anchorAgent(req);
      if (ctx.principal !== undefined && ctx.principal.id !== req.subject.id) {
        throw toolgateError(
          "subject_mismatch",
          "the access request's subject is not the token's subject",
        );
      }
      const service = needApprovals();
      const idempotencyKey = idempotencyKeyOf(q);
      const who = requesterOf(ctx.principal);
      // the denial it follows: checked last, as the service always did
      return mapMaybe(
        service.submit(accessRequest(req), idempotencyKey, baseUrl(q), who),
        submittedReply,
      );
    },
  });
  port.get("/access/v1/requests/:id", {
    face: "authzen",
    handle: (_v, ctx, q) =>
      needApprovals().get(String(q.params.id), baseUrl(q), requesterOf(ctx.principal)),
  });
  port.post("/access/v1/requests/:id/cancel", {
    face: "authzen",
    handle: (_v, ctx, q) =>
      needApprovals().cancel(String(q.params.id), baseUrl(q), requesterOf(ctx.principal)),
  });

  // --- plan approvals (docs/approvals.md, Plan approvals) -------------------
  type PlanService = Required<Pick<AccessRequests, "submitPlan" | "getPlan" | "cancelPlan">>;
  const needPlans = (): PlanService => {
    const service = needApprovals();
    if (!service.submitPlan || !service.getPlan || !service.cancelPlan)
      throw toolgateError(
        "fleet_mode",
        "plan approvals are not supported in fleet mode: ask for each call's approval",
      );
    return service as PlanService;
  };
  port.post("/access/v1/plans", {
    face: "authzen",
    body: "json",
    schema: planRequest,
    handle: (body, ctx, q) => {
      const service = needPlans();
      const probe = {
        subject: body.subject,
        action: { name: "" },
        resource: body.resource ?? { type: "plan", id: "plan" },
        context: body.context,
      } as DecisionRequest;
      identity.anchorAgent(probe);
      if (ctx.principal !== undefined && ctx.principal.id !== body.subject.id) {
        throw toolgateError("subject_mismatch", "the plan's subject is not the token's subject");
      }
      const submitted = service.submitPlan(
        body,
        (requests) => decider.previewRequests(requests, ctx),
        idempotencyKeyOf(q),
        baseUrl(q),
        requesterOf(ctx.principal),
      );
      return submittedReply(submitted);
    },
  });
  port.get("/access/v1/plans/:id", {
    face: "authzen",
    handle: (_v, ctx, q) =>
      needPlans().getPlan(String(q.params.id), baseUrl(q), requesterOf(ctx.principal)),
  });
  port.post("/access/v1/plans/:id/cancel", {
    face: "authzen",
    handle: (_v, ctx, q) =>
      needPlans().cancelPlan(String(q.params.id), baseUrl(q), requesterOf(ctx.principal)),
  });

  // --- OPA Data API ---------------------------------------------------------
  const opa = {
    face: "opa",
    render: toOpaError,
    body: "optional",
    handle: (value: unknown, ctx: RequestContext, q: Request) => {
      const splat = (q.params as { path?: string[] | string }).path;
      const path = Array.isArray(splat) ? splat.join("/") : (splat ?? "");
      return opaData(decider, config.policy.entrypoint, path, value, ctx);
    },
  } as const;
  port.post(["/v1/data", "/v1/data/*path"], opa);

  // --- action reports -------------------------------------------------------
  port.post("/v1/actions", {
    body: "json",
    schema: actionReport,
    handle: (report, ctx) => {
      if (auditor === undefined)
        throw toolgateError("not_found", "audit is off: no action reports");
      const { containment, sessions } = deps;
      return recordAction(auditor, report, ctx, {
        // resolves the decision's budget reservations: ok commits, an error that changed nothing
        // releases; and counts the report on the decision's session
        ...(containment === undefined && sessions === undefined
          ? {}
          : {
              onReported: (id, status, changed) => {
                sessions?.reported(id, status, Date.now());
                const r = containment?.reported(id, status, changed) ?? "none";
                return r === "none" ? undefined : r;
              },
            }),
        boundary: (tool) => boundaryFromData(bundles.active()?.data, tool),
        onAnomaly: (kind) => deps.metrics?.actionAnomalies.inc({ kind }),
      });
    },
  });

  // --- health and status ----------------------------------------------------
  port.get("/health/live", { open: true, handle: () => ({ status: "ok" }) });
  // ready: every component OK (the bundle active, audit running, the stores readable, ...)
  port.get("/health/ready", {
    open: true,
    handle: () => {
      const st = bundles.status();
      const { ready, components } = deps.readiness();
      if (ready)
        return {
          status: "ok",
          bundle: st.name,
          revision: st.revision,
          origin: st.origin,
          components,
        };
      return Reply.json(503, {
        status: "not_ready",
        reason: bundles.ready()
          ? notReadyReason(components)
          : (st.last_error?.message ?? "no policy bundle is active"),
        components,
      });
    },
  });
  port.get("/v1/status", {
    open: true,
    handle: () =>
      statusView(deps.version, config.agent.id, deps.readiness(), {
        started_at: deps.startedAt.toISOString(),
        identity: { mode: config.identity.mode },
        bundles: [bundles.status()],
        ...(deps.fleetStatus ? { fleet: deps.fleetStatus() } : {}),
      }),
  });

  port.notAllowed(
    [
      "/v1/decisions",
      "/access/v1/evaluation",
      "/access/v1/evaluations",
      "/access/v1/search/action",
      "/access/v1/requests",
      "/access/v1/plans",
      "/v1/actions",
    ],
    "POST",
  );
  port.notAllowed(["/v1/data", "/v1/data/*path"], "POST", toOpaError);
  port.notAllowed("/.well-known/authzen-configuration", "GET");
  return port.finish();
}

/** The request's Idempotency-Key header when it has 1..255 characters; else none. */
function idempotencyKeyOf(q: Request): string | undefined {
  const key = q.headers["idempotency-key"];
  return typeof key === "string" && key.length > 0 && key.length <= 255 ? key : undefined;
}

/** A submitted access request or plan: 201 if new (200: the same one again), Location: its status. */
function submittedReply({
  created,
  view,
}: {
  created: boolean;
  view: Record<string, unknown>;
}): Reply {
  return Reply.json(created ? 201 : 200, view, {
    Location: (view.task as { status_endpoint: string }).status_endpoint,
  });
}

/** The first component that is not OK, as `name: detail`. */
function notReadyReason(components: Readiness["components"]): string {
  for (const [name, c] of Object.entries(components)) {
    if (c.state !== "OK" && c.advisory !== true) return `${name}: ${c.detail ?? c.state}`;
  }
  return "not ready";
}

export type { RunningServer } from "./listen";

/**
 * Starts the agent port: TCP, and beside it the Unix domain socket
 * `server.agent.socket` when one is set (the same app). Resolves once it listens.
 */
export async function startAgentServer(deps: AgentServerDeps): Promise<RunningServer> {
  const { requestTimeoutMs, agent } = deps.config.server;
  const running = await serve(createAgentApp(deps), {
    host: agent.host,
    port: agent.port,
    requestTimeoutMs,
    headersTimeoutMs: Math.min(requestTimeoutMs, 60_000),
    keepAliveTimeoutMs: 5_000,
    setting: "server.agent.port / TOOLGATE_AGENT_PORT",
    ...(agent.socket !== null
      ? {
          socket: {
            path: agent.socket,
            mode: agent.socketMode,
            setting: "server.agent.socket / TOOLGATE_AGENT_SOCKET",
          },
        }
      : {}),
  });
  if (running.socket) {
    deps.log.info("agent port listening on a Unix domain socket", {
      event: "server.agent_socket",
      socket: running.socket.path,
      mode: `0${agent.socketMode.toString(8)}`,
    });
  }
  return running;
}
