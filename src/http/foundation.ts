/**
 * What both ports stand on; each port's file (agent-server.ts, control-server.ts)
 * only lists its routes.
 *
 * - Every response carries an X-Request-ID: the caller's when it is sane, else
 *   a new UUID.
 * - A route: the caller is authenticated as the port requires, the body read
 *   (body.ts: Content-Type, size, JSON, depth, keys) and checked against its
 *   schema in schemas/ (validate.ts), then the handler gets the typed value and
 *   the RequestContext and returns the answer: a value (200 JSON) or a Reply.
 *   Nothing waits after the body is read: the decision path stays synchronous.
 * - Every error is JSON, `{code, message}` or the route's face's shape (OPA's on
 *   /v1/data): a ToolgateError, express's own (a malformed path), no route
 *   (404), another method (405 with Allow); malformed HTTP is answered in
 *   listen.ts. A 5xx is logged.
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import express, { type NextFunction, type Request, type Response } from "express";
import { toolgateError, type ToolgateError } from "../errors";
import type { Face, Principal, RequestContext, SpanRef } from "../model";
import type { Logger } from "../shared/log";
import { hasBody, readJson, type BodyLimits, type ParsedBody } from "./body";
import { errorBody, sendError, sendJson, sendText, type Render } from "./respond";
import type { Validator } from "../shared/validate";

export { errorBody, type Render } from "./respond";

/** An answer other than 200 JSON: another status, headers, or text. */
export class Reply {
  private constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: Record<string, string> | undefined,
    private readonly text: boolean,
  ) {}

  static json(status: number, body: unknown, headers?: Record<string, string>): Reply {
    return new Reply(status, body, headers, false);
  }

  /** `headers` name the Content-Type. */
  static text(status: number, text: string, headers: Record<string, string>): Reply {
    return new Reply(status, text, headers, true);
  }

  send(res: ServerResponse): void {
    if (this.text) sendText(res, this.status, this.body as string, this.headers ?? {});
    else sendJson(res, this.status, this.body, this.headers);
  }
}

export interface RouteSpec<T> {
  /** Which API the route belongs to (RequestContext.face); native unless said. */
  face?: Face;
  /** The shape of the route's errors; `{code, message}` unless said. */
  render?: Render;
  /** No caller verification (health, metadata) on a port that authenticates per route. */
  open?: boolean;
  /** Runs once the caller is known, before the body is read (a role the route needs). */
  guard?: (ctx: RequestContext) => void;
  /** "json": a JSON body is required; "optional": read when one is announced; "none" (default): not read. */
  body?: "none" | "json" | "optional";
  /** The body's schema; without one the handler gets the parsed JSON as it is. */
  schema?: Validator<T>;
  /** The answer: a value (200 JSON) or a Reply. */
  handle: (input: T, ctx: RequestContext, req: Request, body: ParsedBody | undefined) => unknown;
}

export interface PortOptions {
  /** "agent" or "control", as 404 messages name the port. */
  name: string;
  log: Logger;
  /** The error line a 5xx is logged with. */
  failure: string;
  /** Body limits (server.limits). */
  limits: BodyLimits;
  /** express's query parser: none, or "simple". */
  queryParser: false | "simple";
  /**
   * Verifies the caller of each route that is not open, before its body is
   * read; undefined when nobody is verified (trusted mode). Without it, the
   * caller is whoever the port's gate let in.
   */
  authenticate?: (req: IncomingMessage) => Promise<Principal | undefined>;
  /** Reads the caller's trace context into RequestContext.traceParent (audit on). */
  traceParentOf?: (headers: IncomingMessage["headers"]) => SpanRef | undefined;
  /** The shape of express's own errors on a path; `{code, message}` unless said. */
  renderAt?: (path: string) => Render;
}

const REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

/** The lean path: the request id as express's first middleware sets it, then the route; never rejects. */
function leanRun(
  run: Runner,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  params: Record<string, unknown>,
): void {
  requestId(req, res, () => undefined);
  // a route answers its own errors; should writing that answer fail, the connection goes
  run(req, res, path, params).catch(() => res.destroy());
}
const PRINCIPAL = Symbol("principal");
type Gated = IncomingMessage & { [PRINCIPAL]?: Principal };

/** Echoes a sane X-Request-ID, or issues one, on every response. */
function requestId(req: IncomingMessage, res: ServerResponse, next: () => void): void {
  const given = req.headers["x-request-id"];
  res.setHeader(
    "X-Request-ID",
    typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID(),
  );
  next();
}

function methodNotAllowed(allow: string, render: Render) {
  return (_req: Request, res: Response): void => {
    res.setHeader("Allow", allow);
    sendError(res, toolgateError("method_not_allowed", `use ${allow} on this route`), render);
  };
}

/** A route's handler with the request's path (and splat) given: what express and the lean path both call. */
type Runner = (
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  params: Record<string, unknown>,
) => Promise<void>;

/** POST routes taken without express: exact paths, and `<prefix>/*name` splats. */
interface Lean {
  exact: Map<string, Runner>;
  splats: Array<{ prefix: string; name: string; run: Runner }>;
}

/** A splat's rest that express would split into the same segments (no escapes, no empty or dot segments). */
const PLAIN_REST = /^(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]*)(?:\/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*$/;

/** One port's express app, built route by route; `finish` closes it. */
export class HttpPort {
  private readonly app: express.Express;
  /**
   * The lean path: POST routes registered before any `gate` or `mount`
   * (nothing but the request id runs before them in express either) are
   * dispatched by exact path before express's own routing — no prototype
   * swap of req/res, no router walk, no promise plumbing — and run the very
   * same steps (request id, authentication, body checks, schema, handler,
   * errors). Anything else — another method, a query string, a trailing
   * slash, other letter case, an escaped or unusual path — goes through
   * express as before.
   */
  private readonly lean: Lean = { exact: new Map(), splats: [] };
  private leanOpen = true;

  constructor(private readonly opts: PortOptions) {
    this.app = express();
    this.app.disable("x-powered-by");
    this.app.disable("etag");
    this.app.set("query parser", opts.queryParser);
    this.app.use(requestId);
    const lean = this.lean;
    // express's app(req, res) is app.handle(req, res): the lean path goes first
    type Handle = (req: IncomingMessage, res: ServerResponse, next?: unknown) => void;
    const withHandle = this.app as unknown as { handle: Handle };
    const viaExpress = withHandle.handle.bind(this.app);
    withHandle.handle = (req, res, next) => {
      if (req.method === "POST") {
        const url = req.url ?? "";
        const run = lean.exact.get(url);
        if (run !== undefined) return void leanRun(run, req, res, url, {});
        for (const s of lean.splats) {
          if (url.length > s.prefix.length && url.startsWith(s.prefix)) {
            const rest = url.slice(s.prefix.length);
            if (PLAIN_REST.test(rest))
              return void leanRun(s.run, req, res, url, { [s.name]: rest.split("/") });
          }
        }
      }
      viaExpress(req, res, next);
    };
  }

  get<T>(path: string, spec: RouteSpec<T>): void {
    this.app.get(path, this.route(spec));
  }

  post<T>(path: string | string[], spec: RouteSpec<T>): void {
    this.app.post(path, this.route(spec));
    if (!this.leanOpen) return;
    const run = this.runner(spec);
    for (const p of Array.isArray(path) ? path : [path]) {
      const splat = /^((?:\/[A-Za-z0-9._~-]+)+)\/\*([A-Za-z_][A-Za-z0-9_]*)$/.exec(p);
      if (/^(?:\/[A-Za-z0-9._~-]+)+$/.test(p)) {
        // express matches in order: a path an earlier route (or splat) takes stays express's
        const shadowed = this.lean.splats.some((x) => p.startsWith(x.prefix));
        if (!this.lean.exact.has(p) && !shadowed) this.lean.exact.set(p, run);
      } else if (splat !== null) {
        this.lean.splats.push({ prefix: `${splat[1]}/`, name: splat[2] as string, run });
      }
    }
  }

  delete<T>(path: string, spec: RouteSpec<T>): void {
    this.app.delete(path, this.route(spec));
  }

  /** The route as express calls it. */
  private route<T>(spec: RouteSpec<T>): (req: Request, res: Response) => Promise<void> {
    const run = this.runner(spec);
    return (req, res) => run(req, res, req.path, req.params);
  }

  /** authenticate → guard → body → schema → handler → response; any error as the route renders it. */
  private runner<T>(spec: RouteSpec<T>): Runner {
    const { face = "native", render = errorBody, body = "none", schema, guard, handle } = spec;
    const authenticate = spec.open === true ? undefined : this.opts.authenticate;
    const { limits, traceParentOf } = this.opts;
    return async (req, res, path, params) => {
      const startTimeMs = performance.timeOrigin + performance.now();
      try {
        const principal =
          authenticate !== undefined ? await authenticate(req) : (req as Gated)[PRINCIPAL];
        const ctx: RequestContext = {
          face,
          startTimeMs,
          requestId: res.getHeader("X-Request-ID") as string,
          http: { method: req.method ?? "", path },
          ...(traceParentOf ? { traceParent: traceParentOf(req.headers) } : {}),
          ...(principal !== undefined ? { principal } : {}),
        };
        guard?.(ctx);
        const parsed =
          body === "none" || (body === "optional" && !hasBody(req))
            ? undefined
            : await readJson(req, limits);
        const value =
          parsed !== undefined && schema !== undefined ? schema(parsed.value) : parsed?.value;
        // the handler sees express's Request; on the lean path only headers, params and the body stream exist
        const q = req as Request;
        if (q.params !== params) (q as { params: unknown }).params = params;
        let answer = handle(value as T, ctx, q, parsed);
        if (answer instanceof Promise) answer = await answer;
        if (answer instanceof Reply) answer.send(res);
        else sendJson(res, 200, answer);
      } catch (e) {
        this.fail(path, res, e, render);
      }
    };
  }

  /**
   * Mounts a sub-application (e.g. the approver console's router) under
   * `path`. Mounted before `gate`, it answers without the port's bearer
   * token: it must authenticate its callers itself.
   */
  mount(path: string, handler: express.Router | express.Express): void {
    this.leanOpen = false;
    this.app.use(path, handler);
  }

  /**
   * From here on every route, 404 and 405 needs a caller `verify` accepts;
   * anyone else gets its error (401 unauthenticated), and `onRefused` hears of it.
   */
  gate(
    verify: (req: IncomingMessage) => Promise<Principal>,
    onRefused?: (req: Request, err: ToolgateError) => void,
  ): void {
    this.leanOpen = false;
    this.app.use((req: Request, res: Response, next: NextFunction) => {
      verify(req).then(
        (p) => {
          (req as Gated)[PRINCIPAL] = p;
          next();
        },
        (e: unknown) => onRefused?.(req, sendError(res, e)),
      );
    });
  }

  /** 405 `method_not_allowed` with `Allow` for any other method on these paths (RFC 9110 §15.5.6). */
  notAllowed(paths: string | string[], allow: string, render: Render = errorBody): void {
    this.app.all(paths, methodNotAllowed(allow, render));
  }

  /**
   * 405 with `Allow` for another method on every path routed so far, instead
   * of "no such route" (a GET route allows HEAD too). Call it after the last route.
   */
  notAllowedOnEveryRoute(): void {
    const allowed = new Map<string, Set<string>>();
    for (const layer of this.app.router.stack) {
      const route = layer.route;
      if (route === undefined || typeof route.path !== "string") continue;
      const methods = allowed.get(route.path) ?? new Set<string>();
      for (const l of route.stack) {
        if (typeof l.method !== "string" || l.method === "") continue; // app.all: any method
        methods.add(l.method.toUpperCase());
        if (l.method === "get") methods.add("HEAD");
      }
      allowed.set(route.path, methods);
    }
    for (const [path, methods] of allowed) {
      if (methods.size > 0) this.notAllowed(path, [...methods].sort().join(", "));
    }
  }

  /** After the last route: 404 for no route, and express's own errors (e.g. a malformed URI), never a stack trace. */
  finish(): express.Express {
    this.app.use((req: Request, res: Response) => {
      sendError(
        res,
        toolgateError(
          "not_found",
          `no route ${req.method} ${req.path} on the ${this.opts.name} port`,
        ),
      );
    });
    this.app.use((e: unknown, req: Request, res: Response, _next: NextFunction) => {
      const status = (e as { status?: number }).status;
      const err =
        typeof status === "number" && status >= 400 && status < 500
          ? toolgateError("invalid_request", (e as Error).message, { cause: e })
          : e;
      this.fail(req.path, res, err, this.opts.renderAt?.(req.path) ?? errorBody);
    });
    return this.app;
  }

  private fail(path: string, res: ServerResponse, e: unknown, render: Render): void {
    const err = sendError(res, e, render);
    if (err.status >= 500 && err.code !== "policy_unavailable") {
      this.opts.log.error(this.opts.failure, {
        event: "http.error",
        path,
        code: err.code,
        error: err.message,
      });
    }
  }
}
