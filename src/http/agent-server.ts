import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import express, { type Request, type Response } from "express";
import type { BundleManager } from "../bundles";
import type { CompiledConfig } from "../config";
import { boundaryFromData, recordAction, type ActionReport } from "../audit/actions";
import { startRequestSpan, traceParentOf, type AuditService } from "../audit";
import type { ApprovalService } from "../approvals/service";
import type { Containment } from "../containment";
import type { Decider, Face, Principal, RequestContext } from "../decision";
import type { Identity } from "../identity";
import { toolgateError, type ToolgateError } from "../errors";
import type { Metrics } from "../metrics";
import type { Logger } from "../shared/log";
import type { Readiness } from "../shared/lifecycle";
import { hasBody, readJson, type ParsedBody } from "./body";
import { authzenConfiguration, authzenEvaluation, authzenEvaluations } from "./faces/authzen";
import { nativeDecision } from "./faces/native";
import { opaData, toOpaError } from "./faces/opa";
import { answerClientErrors, listen, type RunningServer } from "./listen";
import { sendError, sendJson } from "./respond";
import { validateAgainst, validateDecisionRequest } from "./validate";

export interface AgentServerDeps {
  config: CompiledConfig;
  decider: Decider;
  identity: Identity;
  approvals?: ApprovalService;
  auditor?: AuditService;
  /** Resolves budget reservations when an action report names their decision. */
  containment?: Containment;
  /** toolgate_action_anomalies_total (action reports that contradict their decision). */
  metrics?: Metrics;
  bundles: BundleManager;
  /** Every component's status: /health/ready and /v1/status aggregate it. */
  readiness: () => Readiness;
  log: Logger;
  startedAt: Date;
  version: string;
}

const REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

/** Echoes a sane X-Request-ID, or issues one, on every response. */
function requestId(req: IncomingMessage, res: ServerResponse): string {
  const given = req.headers["x-request-id"];
  const id = typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID();
  res.setHeader("X-Request-ID", id);
  return id;
}

type Handler = (
  req: Request,
  res: Response,
  body: ParsedBody | undefined,
  ctx: RequestContext,
) => unknown;

/**
 * The agent-facing app: decisions (native, AuthZEN, OPA Data API), health and
 * status. It has no route that approves, administers or loads policy.
 */
export function createAgentApp(deps: AgentServerDeps): express.Express {
  const { config, decider, bundles, log, auditor, identity, approvals } = deps;
  const limits = config.server.limits;
  const app = express();
  app.disable("x-powered-by");
  app.disable("etag");
  app.set("query parser", false);

  app.use((req, res, next) => {
    requestId(req, res);
    next();
  });

  const post =
    (face: Face, render: (err: ToolgateError) => unknown, handler: Handler, bodyOptional = false) =>
    async (req: Request, res: Response): Promise<void> => {
      const startTimeMs = performance.timeOrigin + performance.now();
      try {
        const principal = await identity.authenticate(req.headers);
        const ctx: RequestContext = {
          face,
          startTimeMs,
          requestId: res.getHeader("X-Request-ID") as string,
          http: { method: req.method, path: req.path },
          ...(auditor ? { traceParent: traceParentOf(req.headers) } : {}),
          ...(principal !== undefined ? { principal } : {}),
        };
        const body = bodyOptional && !hasBody(req) ? undefined : await readJson(req, limits);
        const result = handler(req, res, body, ctx);
        sendJson(res, res.statusCode, result);
      } catch (e) {
        const err = sendError(res, e, render);
        if (err.status >= 500 && err.code !== "policy_unavailable") {
          log.error("request failed", {
            event: "http.error",
            path: req.path,
            code: err.code,
            error: err.message,
          });
        }
      }
    };
  const plain = (err: ToolgateError): unknown => err.toJSON();
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
  const notAllowed =
    (allow: string, render: (err: ToolgateError) => unknown = plain) =>
    (_req: Request, res: Response) => {
      res.setHeader("Allow", allow);
      sendError(res, toolgateError("method_not_allowed", `use ${allow} on this route`), render);
    };

  // --- native ---------------------------------------------------------------
  app.post(
    "/v1/decisions",
    post("native", plain, (_q, _s, body, ctx) => nativeDecision(decider, body as ParsedBody, ctx)),
  );
  app.all("/v1/decisions", notAllowed("POST"));

  // --- AuthZEN 1.0 ----------------------------------------------------------
  app.post(
    "/access/v1/evaluation",
    post("authzen", plain, (q, _s, body, ctx) =>
      authzenEvaluation(decider, body as ParsedBody, ctx, baseUrl(q)),
    ),
  );
  app.all("/access/v1/evaluation", notAllowed("POST"));
  app.post(
    "/access/v1/evaluations",
    post("authzen", plain, (_q, _s, body, ctx) =>
      authzenEvaluations(decider, body as ParsedBody, limits.maxEvaluations, ctx, batchSpan),
    ),
  );
  app.all("/access/v1/evaluations", notAllowed("POST"));
  app.get("/.well-known/authzen-configuration", (req, res) => {
    const meta = authzenConfiguration(baseUrl(req));
    if (approvals) meta.access_request_endpoint = `${baseUrl(req)}/access/v1/requests`;
    sendJson(res, 200, meta);
  });

  // --- AuthZEN Access Request and Approval profile (the agent's side) --------
  const needApprovals = (): ApprovalService => {
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
  const requester = async (req: Request): Promise<string | null> =>
    requesterOf(await identity.authenticate(req.headers));
  /** A 429 access_request_rate_limited carries `retry_after` (seconds) in its body too. */
  const retryAfterOf = (e: unknown): number | undefined => {
    const v = (e as Partial<ToolgateError> | undefined)?.details?.retry_after;
    return typeof v === "number" ? v : undefined;
  };
  const requestRender = (err: ToolgateError): unknown => {
    const retryAfter = retryAfterOf(err);
    return retryAfter === undefined ? err.toJSON() : { ...err.toJSON(), retry_after: retryAfter };
  };
  app.post(
    "/access/v1/requests",
    post("authzen", requestRender, (q, s, body, ctx) => {
      const value = (body as ParsedBody).value;
      const req = validateDecisionRequest(value);
      identity.anchorAgent(req);
      if (ctx.principal !== undefined && ctx.principal.id !== req.subject.id) {
        throw toolgateError(
          "subject_mismatch",
          "the access request's subject is not the token's subject",
        );
      }
      const key = q.headers["idempotency-key"];
      let submitted: ReturnType<ApprovalService["submit"]>;
      try {
        submitted = needApprovals().submit(
          value as Record<string, unknown>,
          typeof key === "string" && key.length > 0 && key.length <= 255 ? key : undefined,
          baseUrl(q),
          requesterOf(ctx.principal),
        );
      } catch (e) {
        const retryAfter = retryAfterOf(e);
        if (retryAfter !== undefined) s.setHeader("Retry-After", String(retryAfter));
        throw e;
      }
      const { created, view } = submitted;
      s.status(created ? 201 : 200);
      s.setHeader("Location", (view.task as { status_endpoint: string }).status_endpoint);
      return view;
    }),
  );
  app.all("/access/v1/requests", notAllowed("POST"));
  app.get("/access/v1/requests/:id", async (req, res) => {
    try {
      const who = await requester(req);
      sendJson(res, 200, needApprovals().get(req.params.id, baseUrl(req), who));
    } catch (e) {
      sendError(res, e, plain);
    }
  });
  app.post("/access/v1/requests/:id/cancel", async (req, res) => {
    try {
      const who = await requester(req);
      sendJson(res, 200, needApprovals().cancel(req.params.id, baseUrl(req), who));
    } catch (e) {
      sendError(res, e, plain);
    }
  });

  // --- OPA Data API ---------------------------------------------------------
  const opaRender = (err: ToolgateError): unknown => toOpaError(err);
  const opaHandler: Handler = (req, _res, body, ctx) => {
    const splat = (req.params as { path?: string[] | string }).path;
    const path = Array.isArray(splat) ? splat.join("/") : (splat ?? "");
    return opaData(decider, config.policy.entrypoint, path, body, ctx);
  };
  app.post("/v1/data", post("opa", opaRender, opaHandler, true));
  app.post("/v1/data/*path", post("opa", opaRender, opaHandler, true));
  app.all(["/v1/data", "/v1/data/*path"], notAllowed("POST", opaRender));

  // --- action reports -------------------------------------------------------
  app.post(
    "/v1/actions",
    post("native", plain, (_q, _s, body, ctx) => {
      const report = validateAgainst<ActionReport>(
        "action-report.schema.json",
        (body as ParsedBody).value,
      );
      if (auditor === undefined)
        throw toolgateError("not_found", "audit is off: no action reports");
      const containment = deps.containment;
      return recordAction(auditor, report, ctx, {
        // resolves the decision's budget reservations: ok commits, an error that changed nothing releases
        ...(containment === undefined
          ? {}
          : {
              onReported: (id, status, changed) => {
                const r = containment.reported(id, status, changed);
                return r === "none" ? undefined : r;
              },
            }),
        boundary: (tool) => boundaryFromData(bundles.active()?.data, tool),
        onAnomaly: (kind) => deps.metrics?.actionAnomalies.inc({ kind }),
      });
    }),
  );
  app.all("/v1/actions", notAllowed("POST"));

  // --- health and status ----------------------------------------------------
  app.all("/.well-known/authzen-configuration", notAllowed("GET"));
  app.get("/health/live", (_req, res) => sendJson(res, 200, { status: "ok" }));
  // ready: every component OK (the bundle active, audit running, the stores readable, ...)
  app.get("/health/ready", (_req, res) => {
    const st = bundles.status();
    const { ready, components } = deps.readiness();
    if (ready)
      sendJson(res, 200, {
        status: "ok",
        bundle: st.name,
        revision: st.revision,
        origin: st.origin,
        components,
      });
    else
      sendJson(res, 503, {
        status: "not_ready",
        reason: bundles.ready()
          ? notReadyReason(components)
          : (st.last_error?.message ?? "no policy bundle is active"),
        components,
      });
  });
  app.get("/v1/status", (_req, res) => {
    const { ready, components } = deps.readiness();
    sendJson(res, 200, {
      version: deps.version,
      agent: { id: config.agent.id },
      ready,
      started_at: deps.startedAt.toISOString(),
      identity: { mode: config.identity.mode },
      bundles: [bundles.status()],
      components,
    });
  });

  app.use((req, res) => {
    sendError(
      res,
      toolgateError("not_found", `no route ${req.method} ${req.path} on the agent port`),
      plain,
    );
  });
  // express's own errors (e.g. a malformed URI) end here; never a stack trace
  app.use((e: unknown, req: Request, res: Response, _next: express.NextFunction) => {
    const status = (e as { status?: number }).status;
    const err =
      typeof status === "number" && status >= 400 && status < 500
        ? toolgateError("invalid_request", (e as Error).message, { cause: e })
        : e;
    const sent = sendError(res, err, req.path.startsWith("/v1/data") ? opaRender : plain);
    if (sent.status >= 500)
      log.error("request failed", { event: "http.error", path: req.path, error: sent.message });
  });
  return app;
}

/** The first component that is not OK, as `name: detail`. */
function notReadyReason(components: Readiness["components"]): string {
  for (const [name, c] of Object.entries(components)) {
    if (c.state !== "OK" && c.advisory !== true) return `${name}: ${c.detail ?? c.state}`;
  }
  return "not ready";
}

export type { RunningServer } from "./listen";

/** Starts the agent port. Resolves once it listens. */
export function startAgentServer(deps: AgentServerDeps): Promise<RunningServer> {
  const app = createAgentApp(deps);
  const server = createServer(app);
  server.requestTimeout = deps.config.server.requestTimeoutMs;
  server.headersTimeout = Math.min(deps.config.server.requestTimeoutMs, 60_000);
  server.keepAliveTimeout = 5_000;
  answerClientErrors(server);
  const { host, port } = deps.config.server.agent;
  return listen(server, host, port);
}
