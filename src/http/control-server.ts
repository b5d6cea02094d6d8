import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import express, { type NextFunction, type Request, type Response } from "express";
import type { ApprovalService } from "../approvals/service";
import type { AuditService } from "../audit";
import type { BundleManager } from "../bundles";
import type { Containment, KillSwitch } from "../containment";
import type { CompiledConfig } from "../config";
import { toolgateError, type ToolgateError } from "../errors";
import { bearerToken, type Principal, type TokenVerifier } from "../identity";
import type { Metrics } from "../metrics";
import type { Logger } from "../shared/log";
import type { Readiness } from "../shared/lifecycle";
import { answerClientErrors, listen, type RunningServer } from "./listen";
import { hasBody, readJson } from "./body";
import { answerWrongMethods } from "./methods";
import { sendError, sendJson } from "./respond";

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
}

type Authed = Request & { principal?: Principal };

const STATUSES = new Set(["pending", "approved", "denied", "expired", "cancelled", "failed"]);

/**
 * The control port: approvals and administration for people, never for the
 * agent. Every route but health needs a verified bearer token (the control
 * port's own issuer, audience and keys); each route checks the role it needs.
 */
export function createControlApp(deps: ControlServerDeps): express.Express {
  const { config, verifier, bundles, approvals, log } = deps;
  const app = express();
  app.disable("x-powered-by");
  app.disable("etag");
  app.set("query parser", "simple");
  const plain = (err: ToolgateError): unknown => err.toJSON();
  /** Bodies here pass the agent port's checks and limits (server.limits). */
  const bodyLimits = config.server.limits;

  app.use((req, res, next) => {
    const given = req.headers["x-request-id"];
    res.setHeader(
      "X-Request-ID",
      typeof given === "string" && /^[\x21-\x7e]{1,200}$/.test(given) ? given : randomUUID(),
    );
    next();
  });

  app.get("/health/live", (_req, res) => sendJson(res, 200, { status: "ok" }));
  app.get("/health/ready", (_req, res) => {
    const { ready, components } = deps.readiness();
    sendJson(res, ready ? 200 : 503, { status: ready ? "ok" : "not_ready", components });
  });

  const grants = deps.grants;
  if (grants !== undefined) {
    app.get(config.grants.jwksPath, (_req, res) => {
      res.statusCode = 200;
      res.setHeader("Content-Type", "application/jwk-set+json");
      res.setHeader("Cache-Control", "public, max-age=60");
      res.end(grants.jwksJson());
    });
  }

  const metricsRoute = (_req: Request, res: Response): void => {
    if (deps.metrics === undefined) {
      sendError(res, toolgateError("not_found", "metrics are off"), plain);
      return;
    }
    const text = deps.metrics.render();
    res.statusCode = 200;
    res.setHeader("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    res.setHeader("Cache-Control", "no-store");
    res.end(text);
  };
  // Metrics hold no secrets: open by default, behind the token if configured.
  if (!config.control.metricsAuth) app.get("/metrics", metricsRoute);

  // everything below needs a verified token
  app.use((req: Authed, res: Response, next: NextFunction) => {
    verifier.verify(bearerToken(req.headers)).then(
      (p) => {
        req.principal = p;
        next();
      },
      (e: unknown) => {
        const err = sendError(res, e, plain);
        deps.auditor?.record({
          kind: "security",
          event: "control_unauthenticated",
          message: "a control-port call without a valid token",
          fields: { path: req.path, method: req.method, error: err.message },
          ctx: { face: "native", http: { method: req.method, path: req.path } },
        });
      },
    );
  });

  const principal = (req: Authed): Principal => req.principal as Principal;
  const isAdmin = (p: Principal): boolean => p.roles.includes(config.control.adminRole);
  const need = (): ApprovalService => {
    if (approvals === undefined) throw toolgateError("not_found", "approvals are not enabled");
    return approvals;
  };
  const route =
    (fn: (req: Authed, res: Response) => unknown) =>
    async (req: Authed, res: Response): Promise<void> => {
      try {
        sendJson(res, 200, await fn(req, res));
      } catch (e) {
        const err = sendError(res, e, plain);
        if (err.status >= 500)
          log.error("control request failed", {
            event: "http.error",
            path: req.path,
            error: err.message,
          });
      }
    };

  if (config.control.metricsAuth) app.get("/metrics", metricsRoute);
  app.get(
    "/v1/status",
    route(() => {
      const { ready, components } = deps.readiness();
      return {
        version: deps.version,
        agent: { id: config.agent.id },
        ready,
        bundles: [bundles.status()],
        tracing: deps.auditor?.tracingStats(),
        components,
      };
    }),
  );

  app.get(
    "/v1/approvals",
    route((req) => {
      const status = typeof req.query.status === "string" ? req.query.status : undefined;
      if (status !== undefined && !STATUSES.has(status)) {
        throw toolgateError("invalid_request", `status must be one of ${[...STATUSES].join(", ")}`);
      }
      const limitRaw = typeof req.query.limit === "string" ? Number(req.query.limit) : 100;
      const limit = Number.isInteger(limitRaw) && limitRaw > 0 && limitRaw <= 1000 ? limitRaw : 100;
      const p = principal(req);
      return { approvals: need().list(p, status, isAdmin(p), limit) };
    }),
  );
  app.get(
    "/v1/approvals/:id",
    route((req) => need().detail(String(req.params.id))),
  );
  const decide = (approve: boolean) =>
    route(async (req) => {
      let comment: string | undefined;
      if (hasBody(req)) {
        const body = await readJson(req, bodyLimits);
        const c = (body.value as { comment?: unknown } | null)?.comment;
        if (c !== undefined && (typeof c !== "string" || c.length > 2000)) {
          throw toolgateError(
            "invalid_request",
            "comment must be a string of at most 2000 characters",
          );
        }
        comment = c;
      }
      return need().decide(String(req.params.id), principal(req), approve, comment);
    });
  app.post("/v1/approvals/:id/approve", decide(true));
  app.post("/v1/approvals/:id/deny", decide(false));
  app.post(
    "/v1/approvals/:id/revoke",
    route((req) => {
      const p = principal(req);
      if (!isAdmin(p))
        throw toolgateError("forbidden", `revoking needs the ${config.control.adminRole} role`);
      return need().revoke(String(req.params.id), p);
    }),
  );

  // --- kill switches (admin) ------------------------------------------------
  const containment = deps.containment;
  if (containment !== undefined) {
    const admin = (req: Authed): Principal => {
      const p = principal(req);
      if (!isAdmin(p))
        throw toolgateError("forbidden", `kill switches need the ${config.control.adminRole} role`);
      return p;
    };
    /**
     * A switch change is in force in memory before the response, written or
     * not: 201/200 when containment.db has it, 202 `persisted: false` when
     * the store refused it (toolgate retries in the background), reported
     * loudly — an error line, a security event, the metrics.
     */
    const answer = (
      req: Authed,
      res: Response,
      op: "create" | "delete",
      view: KillSwitch,
      by: string,
    ): void => {
      if (view.persisted) {
        sendJson(res, op === "create" ? 201 : 200, view);
        return;
      }
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
        ctx: { face: "native", http: { method: req.method, path: req.path } },
      });
      sendJson(res, 202, view);
    };
    app.post("/v1/killswitches", async (req: Authed, res: Response) => {
      try {
        const p = admin(req);
        const body = await readJson(req, bodyLimits);
        // in force before the response is written; committed, or retried until it is
        answer(req, res, "create", containment.createSwitch(body.value, p.id), p.id);
      } catch (e) {
        sendError(res, e, plain);
      }
    });
    app.get(
      "/v1/killswitches",
      route((req) => {
        admin(req);
        if (req.query.history === "true") {
          const limitRaw = typeof req.query.limit === "string" ? Number(req.query.limit) : 100;
          return { killswitches: containment.switchHistory(limitRaw) };
        }
        return { killswitches: containment.listSwitches() };
      }),
    );
    app.delete("/v1/killswitches/:id", (req: Authed, res: Response) => {
      try {
        const p = admin(req);
        answer(req, res, "delete", containment.deleteSwitch(String(req.params.id), p.id), p.id);
      } catch (e) {
        const err = sendError(res, e, plain);
        if (err.status >= 500)
          log.error("control request failed", {
            event: "http.error",
            path: req.path,
            error: err.message,
          });
      }
    });
  }

  answerWrongMethods(app, plain);
  app.use((req, res) => {
    sendError(
      res,
      toolgateError("not_found", `no route ${req.method} ${req.path} on the control port`),
      plain,
    );
  });
  // express's own errors (e.g. a malformed percent-encoding in a path) end here
  app.use((e: unknown, req: Request, res: Response, _next: NextFunction) => {
    const status = (e as { status?: number }).status;
    const err =
      typeof status === "number" && status >= 400 && status < 500
        ? toolgateError("invalid_request", (e as Error).message, { cause: e })
        : e;
    const sent = sendError(res, err, plain);
    if (sent.status >= 500)
      log.error("control request failed", {
        event: "http.error",
        path: req.path,
        error: sent.message,
      });
  });
  return app;
}

export function startControlServer(deps: ControlServerDeps): Promise<RunningServer> {
  const server = createServer(createControlApp(deps));
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  answerClientErrors(server);
  const { host, port } = deps.config.control;
  return listen(server, host, port);
}
