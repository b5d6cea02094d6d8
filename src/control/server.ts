/**
 * The control service's one port (control.host / control.port): the human
 * API — the same paths, bodies, schemas, role rules and answers as a
 * sidecar's control port (src/http/control-server.ts) — and the sidecar API
 * under /fleet/v1 (docs/fleet.md), on the same HTTP foundation.
 *
 * Who may call what: every route but health (and metrics, unless
 * control.metrics_auth) needs a verified bearer token. /fleet/v1/* takes only
 * a sidecar credential (fleet.jwt, bound to one agent id), everything else
 * only a person's token (control.jwt): the audiences differ, so neither is
 * accepted on the other's routes.
 */
import type { Express, Request } from "express";
import type { AuditService } from "../audit";
import { createConsole, isLoopbackHost } from "../console/app";
import { FleetConsoleBackend } from "../console/backends/fleet";
import { devConsoleUsers } from "../console/dev-users";
import type { NewKillSwitch } from "../containment";
import type { CompiledConfig } from "../config";
import { toolgateError } from "../errors";
import { HttpPort, Reply } from "../http/foundation";
import { serve, type RunningServer } from "../http/listen";
import { validator } from "../shared/validate";
import type { Principal, TokenVerifier } from "../identity";
import { bearerToken } from "../identity";
import type { Metrics } from "../metrics";
import type { RequestContext } from "../model";
import type { Readiness } from "../shared/lifecycle";
import type { Logger } from "../shared/log";
import type { FleetApprovals, FleetSubmission } from "./approvals";
import { isSidecar, isSidecarPath, type SidecarCredentials } from "./auth";
import type { StoreHealth } from "./health";
import type { FleetStore, SessionLabelRow, TaskStatus } from "./store/types";
import type { SwitchFeed } from "./stream";
import type { FleetSwitches } from "./switches";

export interface ControlServiceDeps {
  config: CompiledConfig;
  /** People's tokens (control.jwt). */
  humans: TokenVerifier;
  /** Sidecar credentials (fleet.jwt + agent claim). */
  sidecars: SidecarCredentials;
  store: FleetStore;
  health: StoreHealth;
  feed: SwitchFeed;
  approvals: FleetApprovals;
  switches: FleetSwitches;
  /** Every component's status: /health/ready and /v1/status aggregate it. */
  readiness: () => Readiness;
  auditor: AuditService | undefined;
  metrics: Metrics;
  log: Logger;
  version: string;
  /** This replica's id (the sidecars view, hello's answer). */
  replica: string;
  now?: () => number;
}

/** The body of approve and deny (schemas/approval-decision.schema.json). */
type ApprovalDecision = { comment?: string } | unknown[] | string | number | boolean | null;

interface UseBody {
  decision_id: string;
  single_use: boolean;
}
interface ReserveBody {
  decision_id: string;
  ttl_seconds: number;
  items: Array<{
    budget_id: string;
    key: string;
    amount: number;
    max_total: number;
    window_seconds: number;
  }>;
}
interface ResolveBody {
  decision_id: string;
  outcome: "commit" | "release";
}
interface LeaseBody {
  rate_id: string;
  key: string;
  rate_per_second: number;
  burst: number;
  want: number;
}
interface HelloBody {
  instance: string;
  bundle: { name: string; revision?: string | null } | null;
  version: string | null;
}

const STATUSES = new Set(["pending", "approved", "denied", "expired", "cancelled", "failed"]);
const INSTANCE = /^[\x21-\x7e]{1,256}$/;
/** A connected sidecar refreshes last_seen at least this often. */
export const SIDECAR_SEEN_MS = 30_000;

export function createControlServiceApp(deps: ControlServiceDeps): Express {
  const { config, approvals, switches, store, health, feed, log } = deps;
  const now = deps.now ?? Date.now;
  const approvalDecision = validator<ApprovalDecision>("approval-decision.schema.json");
  const killSwitch = validator<NewKillSwitch>("kill-switch.schema.json");
  const submission = validator<FleetSubmission>("fleet-access-request.schema.json");
  const cancelBody = validator<{ requester: string | null }>("fleet-cancel.schema.json");
  const useBody = validator<UseBody>("fleet-approval-use.schema.json");
  const reserveBody = validator<ReserveBody>("fleet-budget-reserve.schema.json");
  const resolveBody = validator<ResolveBody>("fleet-budget-resolve.schema.json");
  const leaseBody = validator<LeaseBody>("fleet-rate-lease.schema.json");
  const helloBody = validator<HelloBody>("fleet-hello.schema.json");
  const touchBody = validator<{
    session_id: string;
    labels: string[];
    tool: string;
    decision_id: string;
  }>("fleet-session-touch.schema.json");
  const labelsBody = validator<{ session_id: string; retention_seconds: number }>(
    "fleet-session-labels.schema.json",
  );
  const recordBody = validator<{
    session_id: string;
    tool: string;
    decision_id: string;
    labels: string[];
    sums: Record<string, number>;
  }>("fleet-session-record.schema.json");
  const port = new HttpPort({
    name: "control",
    log,
    failure: "control request failed",
    limits: config.server.limits,
    queryParser: "simple",
  });

  port.get("/health/live", { handle: () => ({ status: "ok" }) });
  port.get("/health/ready", {
    handle: async () => {
      await health.refresh();
      const { ready, components } = deps.readiness();
      return Reply.json(ready ? 200 : 503, { status: ready ? "ok" : "not_ready", components });
    },
  });
  const metrics = {
    handle: async () =>
      Reply.text(200, await deps.metrics.render(), {
        "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
        "Cache-Control": "no-store",
      }),
  };
  if (!config.control.metricsAuth) port.get("/metrics", metrics);

  // the approver console, fleet-wide: its own login (OIDC or, in development, a pick of
  // people) and sealed sessions (console.session_key_file, shared by the replicas); before
  // the gate, as on a sidecar's control port. It calls what the human API calls.
  if (config.console.enabled) port.mount("/console", fleetConsole(deps, now));

  // everything below needs a verified caller: a sidecar on /fleet/v1, a person elsewhere
  port.gate(
    (req) =>
      isSidecarPath(req.url)
        ? deps.sidecars.verify(req)
        : deps.humans.verify(bearerToken(req.headers)),
    (req, err) =>
      deps.auditor?.record({
        kind: "security",
        event: isSidecarPath(req.path) ? "fleet_unauthenticated" : "control_unauthenticated",
        message: isSidecarPath(req.path)
          ? "a sidecar API call without a valid sidecar credential"
          : "a control-port call without a valid token",
        fields: { path: req.path, method: req.method, error: err.message },
        ctx: { face: "native", http: { method: req.method, path: req.path } },
      }),
  );

  /**
   * The verified caller of a route; a person on the human API, a sidecar on
   * /fleet/v1 — whatever the gate decided, a route never serves the other kind.
   */
  const caller = (ctx: RequestContext, kind: "person" | "sidecar" = "person"): Principal => {
    const p = ctx.principal;
    if (p === undefined || isSidecar(p) !== (kind === "sidecar"))
      throw toolgateError(
        "unauthenticated",
        kind === "sidecar"
          ? "the sidecar API takes a sidecar credential (fleet.jwt)"
          : "this API takes a person's token (control.jwt), not a sidecar credential",
      );
    return p;
  };
  /** Every route of the human API: a person's token. */
  const person = (ctx: RequestContext): void => void caller(ctx);
  const isAdmin = (p: Principal): boolean => p.roles.includes(config.control.adminRole);
  const admin = (what: string) => (ctx: RequestContext) => {
    if (!isAdmin(caller(ctx)))
      throw toolgateError("forbidden", `${what} the ${config.control.adminRole} role`);
  };
  const id = (req: Request): string => String(req.params.id);
  const limitOf = (req: Request, dflt: number): number => {
    const raw = typeof req.query.limit === "string" ? Number(req.query.limit) : dflt;
    return Number.isInteger(raw) && raw > 0 && raw <= 1000 ? raw : dflt;
  };

  // -- the human API ------------------------------------------------------------
  if (config.control.metricsAuth) port.get("/metrics", { guard: person, ...metrics });
  port.get("/v1/status", {
    guard: person,
    handle: async () => {
      await health.refresh();
      const readiness = deps.readiness();
      return {
        version: deps.version,
        service: "control",
        replica: deps.replica,
        ready: readiness.ready,
        stream: { clients: feed.clientCount, seq: feed.seq },
        components: readiness.components,
      };
    },
  });

  port.get("/v1/approvals", {
    guard: person,
    handle: async (_v, ctx, req) => {
      const status = typeof req.query.status === "string" ? req.query.status : undefined;
      if (status !== undefined && !STATUSES.has(status)) {
        throw toolgateError("invalid_request", `status must be one of ${[...STATUSES].join(", ")}`);
      }
      const p = caller(ctx);
      return {
        approvals: await approvals.list(
          p,
          status as TaskStatus | undefined,
          isAdmin(p),
          limitOf(req, 100),
        ),
      };
    },
  });
  port.get("/v1/approvals/:id", {
    guard: person,
    handle: (_v, _ctx, req) => approvals.detail(id(req)),
  });
  const decide = (approve: boolean) => ({
    guard: person,
    body: "optional" as const,
    schema: approvalDecision,
    handle: async (body: ApprovalDecision | undefined, ctx: RequestContext, req: Request) => {
      const comment =
        typeof body === "object" && body !== null && !Array.isArray(body)
          ? body.comment
          : undefined;
      await health.assertUp();
      return approvals.decide(id(req), caller(ctx), approve, comment);
    },
  });
  port.post("/v1/approvals/:id/approve", decide(true));
  port.post("/v1/approvals/:id/deny", decide(false));
  port.post("/v1/approvals/:id/revoke", {
    guard: admin("revoking needs"),
    handle: async (_v, ctx, req) => {
      await health.assertUp();
      return approvals.revoke(id(req), caller(ctx));
    },
  });

  const switchGuard = admin("kill switches need");
  port.post("/v1/killswitches", {
    guard: switchGuard,
    body: "json",
    schema: killSwitch,
    handle: async (input, ctx) => {
      await health.assertUp();
      return Reply.json(201, await switches.create(input, caller(ctx).id));
    },
  });
  port.get("/v1/killswitches", {
    guard: switchGuard,
    handle: async (_v, _ctx, req) => ({
      killswitches:
        req.query.history === "true"
          ? await switches.history(limitOf(req, 100))
          : await switches.list(),
    }),
  });
  port.delete("/v1/killswitches/:id", {
    guard: switchGuard,
    handle: async (_v, ctx, req) => {
      await health.assertUp();
      return switches.delete(id(req), caller(ctx).id);
    },
  });

  port.get("/v1/budgets", {
    guard: admin("budgets need"),
    handle: async () => ({
      budgets: (await store.usage(now())).map((u) => ({
        key: u.key,
        budget_id: u.budgetId,
        window_seconds: u.windowSeconds,
        spent: u.spent,
        pending: u.pending,
        entries: u.entries,
      })),
    }),
  });
  port.get("/v1/fleet/sidecars", {
    guard: admin("the sidecars view needs"),
    handle: async () => {
      const t = now();
      return {
        sidecars: (await store.listSidecars()).map((s) => ({
          agent: s.agentId,
          instance: s.instance,
          replica: s.replica,
          connected_at: new Date(s.connectedAt).toISOString(),
          last_seen: new Date(s.lastSeen).toISOString(),
          connected: t - s.lastSeen <= 2 * SIDECAR_SEEN_MS,
          bundle: s.bundleName === null ? null : { name: s.bundleName, revision: s.bundleRevision },
          version: s.version,
        })),
      };
    },
  });

  // -- the sidecar API ------------------------------------------------------------
  /** The agent the caller's credential is bound to: the only one it may touch. */
  const agent = (ctx: RequestContext): string => caller(ctx, "sidecar").id;
  const sidecar = (ctx: RequestContext): void => void agent(ctx);
  const instanceOf = (req: Request): string | undefined => {
    const h = req.headers["x-toolgate-instance"];
    const q = req.query.instance;
    const v = typeof h === "string" ? h : typeof q === "string" ? q : undefined;
    return v !== undefined && INSTANCE.test(v) ? v : undefined;
  };

  port.get("/fleet/v1/stream", {
    guard: sidecar,
    handle: async (_v, ctx, req) => {
      const res = req.res;
      if (res === undefined) throw new Error("no response to stream to");
      const exp = caller(ctx, "sidecar").claims.exp;
      await feed.serve(
        res,
        agent(ctx),
        instanceOf(req),
        exp === undefined ? undefined : exp * 1000,
      );
      // the stream has ended (the client left or was dropped): nothing more to write
      return Reply.text(200, "", {});
    },
  });
  port.post("/fleet/v1/access-requests", {
    guard: sidecar,
    body: "json",
    schema: submission,
    handle: async (body, ctx) => {
      await health.assertUp();
      const r = await approvals.submit(agent(ctx), body);
      return Reply.json(r.created ? 201 : 200, r.body);
    },
  });
  port.get("/fleet/v1/access-requests/:id", {
    guard: sidecar,
    handle: (_v, ctx, req) => approvals.get(agent(ctx), id(req)),
  });
  port.post("/fleet/v1/access-requests/:id/cancel", {
    guard: sidecar,
    body: "json",
    schema: cancelBody,
    handle: async (body, ctx, req) => {
      await health.assertUp();
      return approvals.cancel(agent(ctx), id(req), body.requester);
    },
  });
  port.post("/fleet/v1/approvals/:id/use", {
    guard: sidecar,
    body: "json",
    schema: useBody,
    handle: async (body, ctx, req) => {
      await health.assertUp();
      return approvals.use(agent(ctx), id(req), body.decision_id, body.single_use);
    },
  });
  port.post("/fleet/v1/budgets/reserve", {
    guard: sidecar,
    body: "json",
    schema: reserveBody,
    handle: async (body, ctx) => {
      for (const it of body.items) {
        if (!Number.isFinite(it.amount) || !Number.isFinite(it.max_total))
          throw toolgateError("invalid_request", "items: amount and max_total must be finite");
      }
      await health.assertUp();
      const r = await store.reserve({
        decisionId: body.decision_id,
        agentId: agent(ctx),
        ttlMs: Math.max(1, Math.round(body.ttl_seconds * 1000)),
        items: body.items.map((it) => ({
          budgetId: it.budget_id,
          key: it.key,
          amount: it.amount,
          maxTotal: it.max_total,
          windowSeconds: it.window_seconds,
        })),
        now: now(),
      });
      return r.ok
        ? { ok: true }
        : {
            ok: false,
            budget_id: r.budgetId,
            used: r.used,
            max_total: r.maxTotal,
            amount: r.amount,
            window_seconds: r.windowSeconds,
            retry_after: r.retryAfter,
          };
    },
  });
  port.post("/fleet/v1/budgets/resolve", {
    guard: sidecar,
    body: "json",
    schema: resolveBody,
    handle: async (body, ctx) => {
      await health.assertUp();
      return {
        resolution: await store.resolve(body.decision_id, agent(ctx), body.outcome, now()),
      };
    },
  });
  port.post("/fleet/v1/rates/lease", {
    guard: sidecar,
    body: "json",
    schema: leaseBody,
    handle: async (body, ctx) => {
      await health.assertUp();
      const r = await store.lease({
        // the caller's agent's own bucket: a sidecar can never drain another agent's
        // (an agent id holds no "|", so the key is unambiguous)
        key: `${agent(ctx)}|${body.key}`,
        ratePerSecond: body.rate_per_second,
        burst: body.burst,
        want: body.want,
        now: now(),
      });
      return { granted: r.granted, retry_after: r.retryAfter };
    },
  });
  // session state, fleet-wide (docs/sessions.md): the labels a session's allowed calls read
  port.post("/fleet/v1/sessions/touch", {
    guard: sidecar,
    body: "json",
    schema: touchBody,
    handle: async (body, ctx) => {
      await health.assertUp();
      await store.touchSession({
        agentId: agent(ctx),
        sessionId: body.session_id,
        labels: body.labels,
        tool: body.tool,
        decisionId: body.decision_id,
        now: now(),
      });
      return { ok: true };
    },
  });
  port.post("/fleet/v1/sessions/labels", {
    guard: sidecar,
    body: "json",
    schema: labelsBody,
    handle: async (body, ctx) => {
      await health.assertUp();
      const rows = await store.sessionLabels(
        agent(ctx),
        body.session_id,
        now() - body.retention_seconds * 1000,
      );
      return {
        labels: rows.map(labelToWire),
      };
    },
  });
  // session.fleet_scope full: every allowed call of a session, and the session's tools fleet-wide
  port.post("/fleet/v1/sessions/record", {
    guard: sidecar,
    body: "json",
    schema: recordBody,
    handle: async (body, ctx) => {
      await health.assertUp();
      await store.recordSessionEvent({
        agentId: agent(ctx),
        sessionId: body.session_id,
        tool: body.tool,
        decisionId: body.decision_id,
        labels: body.labels,
        sums: body.sums,
        now: now(),
      });
      return { ok: true };
    },
  });
  port.post("/fleet/v1/sessions/summary", {
    guard: sidecar,
    body: "json",
    schema: labelsBody,
    handle: async (body, ctx) => {
      await health.assertUp();
      const at = now();
      const since = at - body.retention_seconds * 1000;
      const [labels, tools] = await Promise.all([
        store.sessionLabels(agent(ctx), body.session_id, since),
        store.sessionTools(agent(ctx), body.session_id, since, at),
      ]);
      return {
        labels: labels.map(labelToWire),
        tools: tools.map((t) => ({
          tool: t.tool,
          allowed: t.allowed,
          in_window: t.windows,
          sums: t.sums,
        })),
      };
    },
  });
  port.post("/fleet/v1/hello", {
    guard: sidecar,
    body: "json",
    schema: helloBody,
    handle: async (body, ctx) => {
      await health.assertUp();
      await store.upsertSidecar({
        instance: body.instance,
        agentId: agent(ctx),
        replica: deps.replica,
        bundle:
          body.bundle === null
            ? null
            : { name: body.bundle.name, revision: body.bundle.revision ?? "" },
        version: body.version,
        now: now(),
      });
      return { replica: deps.replica };
    },
  });

  port.notAllowedOnEveryRoute();
  return port.finish();
}

/** The console over the fleet's approvals, switches and store (src/console/backends/fleet.ts). */
function fleetConsole(
  deps: ControlServiceDeps,
  now: () => number,
): ReturnType<typeof createConsole> {
  const { config, log } = deps;
  const backend = new FleetConsoleBackend({
    approvals: deps.approvals,
    switches: deps.switches,
    store: deps.store,
    health: deps.health,
    adminRole: config.control.adminRole,
    connectedWithinMs: 2 * SIDECAR_SEEN_MS,
    now,
  });
  return createConsole({
    backend,
    settings: config.console,
    // no bundle here: the reference deployment's people, olga with the admin role
    devUsers: config.control.jwt.dev
      ? () => devConsoleUsers(undefined, config.control.adminRole)
      : undefined,
    secureCookies: !isLoopbackHost(config.control.host),
    log,
    onSecurityEvent: (event, fields) =>
      deps.auditor?.record({
        kind: "security",
        event,
        message: `approver console: ${event.replace(/_/g, " ")}`,
        fields: { ...fields, replica: deps.replica },
        ctx: { face: "native" },
      }),
    now,
  });
}

export function startControlServiceServer(deps: ControlServiceDeps): Promise<RunningServer> {
  const { host, port } = deps.config.control;
  return serve(createControlServiceApp(deps), {
    host,
    port,
    requestTimeoutMs: 10_000,
    headersTimeoutMs: 10_000,
    setting: "control.port / TOOLGATE_CONTROL_PORT",
  });
}

/** A session label as the fleet wire carries it (docs/openapi-fleet.yaml). */
function labelToWire(r: SessionLabelRow): Record<string, unknown> {
  return {
    label: r.label,
    count: r.count,
    first_at: r.firstAt,
    last_at: r.lastAt,
    tools: r.tools,
    first_decision_id: r.firstDecisionId,
    last_decision_id: r.lastDecisionId,
  };
}
