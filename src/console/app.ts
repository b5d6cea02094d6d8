/**
 * The approver console's routes, as one express Router to mount at
 * /console on a control port (the sidecar's, src/http/control-server.ts, and
 * `toolgate control`'s) BEFORE the port's bearer-token gate: the console
 * has its own login. It adds no power of its own: every read and action goes
 * through a ConsoleBackend, which enforces what the API enforces.
 *
 * - Sessions: a sealed cookie (session.ts), HttpOnly, SameSite=Strict,
 *   Path=/console, Secure unless the control port listens on loopback.
 * - CSRF: every POST but the development login needs the session's token
 *   (a hidden field, compared in constant time) and, for all POSTs, an
 *   Origin (or, without one, a Referer) of this console's own origin.
 * - Login: OpenID Connect (oidc.ts) when console.oidc.issuer is set; a
 *   development login (alice, sam, carol, maria, olga) only while the control
 *   port trusts the committed development key.
 * - Every page escapes what it shows (html.ts); errors are HTML pages with
 *   the status the API would answer.
 */
import express, { type NextFunction, type Request, type Response, type Router } from "express";
import { ToolgateError } from "../errors";
import type { Principal } from "../model";
import type { KillSwitch } from "../containment/store";
import type { Logger } from "../shared/log";
import { CONSOLE_CSS, CONSOLE_JS } from "./assets";
import type { ConsoleBackend, ConsoleDeployment, NewSwitchInput } from "./backend";
import { OidcLogin, LOGIN_TTL_SECONDS, type OidcSettings } from "./oidc";
import {
  containmentPage,
  continuePage,
  errorPage,
  inboxPage,
  loginPage,
  requestPage,
  type PageContext,
  type Viewer,
} from "./pages";
import {
  csrfMatches,
  LOGIN_COOKIE,
  NEXT_COOKIE,
  newCsrf,
  openLoginState,
  openSession,
  parseCookies,
  Sealer,
  SESSION_COOKIE,
  setCookie,
  type Session,
} from "./session";

export interface ConsoleSettings {
  publicUrl: string | null;
  oidc: {
    issuer: string | null;
    clientId: string;
    clientSecretFile: string | null;
    rolesClaim: string;
    scopes: string;
  };
  sessionKeyFile: string | null;
  sessionTtlSeconds: number;
  traceUrlTemplate: string | null;
}

export interface ConsoleOptions {
  backend: ConsoleBackend;
  settings: ConsoleSettings;
  /**
   * The development login's people and roles, or undefined when the control
   * port does not trust the development key (no development login at all).
   */
  devUsers: (() => Array<{ name: string; roles: string[] }>) | undefined;
  /** Cookies carry Secure (false only when the control port listens on loopback). */
  secureCookies: boolean;
  log: Logger;
  /** Security events (logins, refused posts) for audit. */
  onSecurityEvent?: (event: string, fields: Record<string, unknown>) => void;
  now?: () => number;
}

const BASE = "/console";
const ID = /^[A-Za-z0-9_-]{1,128}$/;
const MAX_COMMENT = 2000;
const MAX_REASON = 1000;
const MAX_SCOPE = 256;
/** A cookie's name and value, at most (browsers drop a larger one; session.ts opens no more). */
const MAX_COOKIE = 4000;

class ConsoleHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** True when a control host is loopback (cookies may then go without Secure). */
/**
 * A page to land on after login: only the console's own request pages and
 * panel (no open redirect: never another origin, path or scheme).
 */
export function safeNext(v: unknown): string | undefined {
  if (typeof v !== "string" || v.length > 200) return undefined;
  return /^\/console\/(requests\/[A-Za-z0-9._:-]{1,128}|containment)$/.test(v) ? v : undefined;
}
const nextOf = safeNext;

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** The deployment's principal for a session (the same shape a verified token gives). */
function principalOf(s: Session): Principal {
  return {
    id: s.sub,
    roles: s.roles,
    method: "jwt",
    claims: {
      iss: s.iss ?? (s.via === "dev" ? "toolgate-console-dev" : undefined),
      sub: s.sub,
      aud: undefined,
      exp: s.exp,
    },
  };
}

function field(body: unknown, name: string): string | undefined {
  if (body === null || typeof body !== "object") return undefined;
  const v = (body as Record<string, unknown>)[name];
  return typeof v === "string" ? v : undefined;
}

export function createConsole(opts: ConsoleOptions): Router {
  const { backend, settings, log } = opts;
  const now = opts.now ?? Date.now;
  const nowS = () => Math.floor(now() / 1000);
  const sealer = Sealer.fromFile(settings.sessionKeyFile);
  const oidcSettings: OidcSettings | undefined =
    settings.oidc.issuer !== null
      ? {
          issuer: settings.oidc.issuer,
          clientId: settings.oidc.clientId,
          clientSecretFile: settings.oidc.clientSecretFile,
          scopes: settings.oidc.scopes,
          rolesClaim: settings.oidc.rolesClaim,
        }
      : undefined;
  const oidc = oidcSettings !== undefined ? new OidcLogin(oidcSettings) : undefined;
  const publicOrigin = settings.publicUrl !== null ? new URL(settings.publicUrl).origin : undefined;
  const secure = opts.secureCookies || (publicOrigin?.startsWith("https:") ?? false);
  const event = (name: string, fields: Record<string, unknown>) => {
    try {
      opts.onSecurityEvent?.(name, fields);
    } catch {
      // auditing never breaks a page
    }
  };

  /** This console's origin: console.public_url's, else the one the request came to. */
  const originOf = (req: Request): string =>
    publicOrigin ?? `${secure ? "https" : "http"}://${req.headers.host ?? ""}`;
  const baseUrl = (req: Request): string =>
    (settings.publicUrl ?? originOf(req)).replace(/\/+$/, "");
  const redirectUri = (req: Request): string => `${baseUrl(req)}${BASE}/auth/callback`;

  let deploymentCache: ConsoleDeployment | undefined;
  const deployment = async (): Promise<ConsoleDeployment> =>
    (deploymentCache ??= await backend.deployment());

  /** An issuer URL compared without its trailing slashes. */
  const issuerKey = (iss: string): string => iss.replace(/\/+$/, "");
  /**
   * A session is only as good as a login this console offers now: a
   * development session only while the development login is on (and names
   * that person), an OpenID Connect session only from the configured issuer.
   * A session key shared with (or kept from) a development setup, or from
   * before the issuer changed, opens nothing.
   */
  const sessionOf = (req: Request): Session | undefined => {
    const s = openSession(sealer, parseCookies(req.headers.cookie).get(SESSION_COOKIE), nowS());
    if (s === undefined) return undefined;
    if (s.via === "dev")
      return opts.devUsers?.().some((u) => u.name === s.sub) === true ? s : undefined;
    return oidcSettings !== undefined &&
      s.iss !== undefined &&
      issuerKey(s.iss) === issuerKey(oidcSettings.issuer)
      ? s
      : undefined;
  };

  const pageCtx = async (s: Session | undefined): Promise<PageContext> => {
    const d = await deployment();
    const viewer: Viewer | undefined =
      s !== undefined
        ? { id: s.sub, roles: s.roles, csrf: s.csrf, isAdmin: s.roles.includes(d.adminRole) }
        : undefined;
    return { deployment: d, viewer, traceUrlTemplate: settings.traceUrlTemplate };
  };

  const send = (res: Response, status: number, body: string): void => {
    res.status(status).type("text/html; charset=utf-8").send(body);
  };

  const startSession = (
    res: Response,
    sub: string,
    roles: string[],
    via: Session["via"],
    iss?: string,
  ) => {
    const s: Session = {
      sub,
      roles,
      csrf: newCsrf(),
      exp: nowS() + settings.sessionTtlSeconds,
      via,
      ...(iss !== undefined ? { iss } : {}),
    };
    const sealed = sealer.seal("session", s);
    if (SESSION_COOKIE.length + 1 + sealed.length > MAX_COOKIE) {
      // a browser drops a larger cookie and keeps sending the one it has — maybe the
      // previous person's session: end that one, and say why this login cannot be kept
      clearCookie(res, SESSION_COOKIE, BASE, "Strict");
      log.warn("console login refused: too many roles to keep in a session cookie", {
        event: "console.session_too_large",
        principal: sub,
        roles: roles.length,
      });
      event("console_login_refused", { via, principal: sub, error: "session too large" });
      throw new ConsoleHttpError(
        400,
        `you hold ${roles.length} roles, more than a session cookie can keep: ask the administrator to send fewer in the roles claim (console.oidc.roles_claim)`,
      );
    }
    res.append(
      "Set-Cookie",
      setCookie(SESSION_COOKIE, sealed, {
        path: BASE,
        secure,
        sameSite: "Strict",
        maxAge: settings.sessionTtlSeconds,
      }),
    );
  };
  function clearCookie(res: Response, name: string, path: string, sameSite: "Strict" | "Lax") {
    res.append("Set-Cookie", setCookie(name, "", { path, secure, sameSite, maxAge: 0 }));
  }

  /** A POST must come from this console's own pages: Origin (else Referer) of our origin. */
  const sameOrigin = (req: Request): boolean => {
    const expected = originOf(req);
    const origin = req.headers.origin;
    if (typeof origin === "string" && origin !== "null") return origin === expected;
    const referer = req.headers.referer;
    if (typeof referer !== "string") return false;
    try {
      return new URL(referer).origin === expected;
    } catch {
      return false;
    }
  };

  const router = express.Router({ caseSensitive: true, strict: false });

  router.use((_req: Request, res: Response, next: NextFunction) => {
    res.setHeader(
      "Content-Security-Policy",
      "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    res.setHeader("X-Content-Type-Options", "nosniff");
    res.setHeader("X-Frame-Options", "DENY");
    res.setHeader("Referrer-Policy", "same-origin");
    res.setHeader("Cache-Control", "no-store");
    next();
  });

  router.get("/assets/console.css", (_req, res) => {
    res
      .status(200)
      .type("text/css; charset=utf-8")
      .setHeader("Cache-Control", "public, max-age=300")
      .send(CONSOLE_CSS);
  });
  router.get("/assets/console.js", (_req, res) => {
    res
      .status(200)
      .type("text/javascript; charset=utf-8")
      .setHeader("Cache-Control", "public, max-age=300")
      .send(CONSOLE_JS);
  });

  const forms = express.urlencoded({
    extended: false,
    limit: "16kb",
    parameterLimit: 32,
    type: "application/x-www-form-urlencoded",
  });

  /** Wraps a handler: async errors become HTML error pages. */
  const h =
    (fn: (req: Request, res: Response) => Promise<void>) =>
    (req: Request, res: Response, next: NextFunction): void => {
      fn(req, res).catch(next);
    };

  /** The session, or a redirect to the login page (GET, coming back here after) / 403 (POST). */
  const needSession = (req: Request, res: Response): Session | undefined => {
    const s = sessionOf(req);
    if (s !== undefined) return s;
    if (req.method === "GET" || req.method === "HEAD") {
      const back = safeNext(`${BASE}${req.path}`);
      res.redirect(
        302,
        `${BASE}/login${back !== undefined ? `?next=${encodeURIComponent(back)}` : ""}`,
      );
    } else throw new ConsoleHttpError(403, "not signed in (or the session expired): sign in again");
    return undefined;
  };

  /** A state-changing POST: signed in, same origin, the session's CSRF token. */
  const checkPost = (req: Request, s: Session | undefined): Session => {
    if (s === undefined)
      throw new ConsoleHttpError(403, "not signed in (or the session expired): sign in again");
    if (!sameOrigin(req)) {
      event("console_csrf_refused", { path: req.path, why: "origin", principal: s.sub });
      throw new ConsoleHttpError(
        403,
        "refused: this form was not sent from the console's own page",
      );
    }
    if (!csrfMatches(s.csrf, field(req.body, "csrf"))) {
      event("console_csrf_refused", { path: req.path, why: "token", principal: s.sub });
      throw new ConsoleHttpError(
        403,
        "refused: the form's security token is missing or wrong (reload the page)",
      );
    }
    return s;
  };

  // --- login ------------------------------------------------------------------

  router.get(
    "/login",
    h(async (req, res) => {
      const ctx = await pageCtx(sessionOf(req));
      const error = typeof req.query.error === "string" ? loginErrors[req.query.error] : undefined;
      const next = nextOf(req.query.next);
      send(
        res,
        200,
        loginPage(ctx, {
          oidc: oidc !== undefined,
          devUsers: opts.devUsers?.(),
          ...(error !== undefined ? { error } : {}),
          ...(next !== undefined ? { next } : {}),
        }),
      );
    }),
  );

  router.post(
    "/login/dev",
    forms,
    h(async (req, res) => {
      if (opts.devUsers === undefined) throw new ConsoleHttpError(404, "no development login here");
      if (!sameOrigin(req))
        throw new ConsoleHttpError(
          403,
          "refused: this form was not sent from the console's own page",
        );
      const name = field(req.body, "user");
      const user = opts.devUsers().find((u) => u.name === name);
      if (user === undefined) throw new ConsoleHttpError(400, "pick one of the listed people");
      startSession(res, user.name, user.roles, "dev");
      log.warn("console development login", { event: "console.dev_login", principal: user.name });
      event("console_login", { principal: user.name, roles: user.roles, via: "dev" });
      await Promise.resolve();
      res.redirect(303, nextOf(field(req.body, "next")) ?? `${BASE}/`);
    }),
  );

  router.get(
    "/auth/start",
    h(async (req, res) => {
      if (oidc === undefined)
        throw new ConsoleHttpError(404, "OpenID Connect login is not configured");
      const { url, state } = await oidc.start(redirectUri(req), nowS()).catch((e: unknown) => {
        log.error("console login: the identity provider cannot be reached", {
          event: "console.oidc_error",
          error: (e as Error).message,
        });
        throw new ConsoleHttpError(502, "the identity provider cannot be reached; try again later");
      });
      // Lax: the provider's redirect back is a cross-site navigation; the cookie only ties it to this start
      res.append(
        "Set-Cookie",
        setCookie(LOGIN_COOKIE, sealer.seal("login", state), {
          path: `${BASE}/auth`,
          secure,
          sameSite: "Lax",
          maxAge: LOGIN_TTL_SECONDS,
        }),
      );
      const back = nextOf(req.query.next);
      if (back !== undefined) {
        res.append(
          "Set-Cookie",
          setCookie(NEXT_COOKIE, sealer.seal("next", back), {
            path: `${BASE}/auth`,
            secure,
            sameSite: "Lax",
            maxAge: LOGIN_TTL_SECONDS,
          }),
        );
      }
      res.redirect(302, url);
    }),
  );

  router.get(
    "/auth/callback",
    h(async (req, res) => {
      if (oidc === undefined)
        throw new ConsoleHttpError(404, "OpenID Connect login is not configured");
      const cookies = parseCookies(req.headers.cookie);
      const st = openLoginState(sealer, cookies.get(LOGIN_COOKIE), nowS());
      clearCookie(res, LOGIN_COOKIE, `${BASE}/auth`, "Lax");
      const back = nextOf(sealer.open("next", cookies.get(NEXT_COOKIE)));
      if (cookies.has(NEXT_COOKIE)) clearCookie(res, NEXT_COOKIE, `${BASE}/auth`, "Lax");
      if (st === undefined) {
        res.redirect(303, `${BASE}/login?error=stale`);
        return;
      }
      const q = req.originalUrl.indexOf("?");
      const query = q < 0 ? "" : req.originalUrl.slice(q);
      if (query.length > 8192) throw new ConsoleHttpError(400, "the callback's query is too long");
      let who;
      try {
        who = await oidc.callback(redirectUri(req), query, st);
      } catch (e) {
        log.warn("console login refused", {
          event: "console.oidc_refused",
          error: (e as Error).message,
        });
        event("console_login_refused", { via: "oidc", error: (e as Error).message });
        res.redirect(303, `${BASE}/login?error=refused`);
        return;
      }
      startSession(res, who.sub, who.roles, "oidc", who.iss);
      event("console_login", { principal: who.sub, roles: who.roles, via: "oidc" });
      if (req.headers["sec-fetch-site"] === "cross-site") {
        // a SameSite=Strict cookie set on a cross-site navigation is not sent on its redirect:
        // one same-site hop first
        send(res, 200, continuePage(await pageCtx(undefined), back));
        return;
      }
      res.redirect(303, back ?? `${BASE}/`);
    }),
  );

  router.post(
    "/logout",
    forms,
    h(async (req, res) => {
      const s = checkPost(req, sessionOf(req));
      clearCookie(res, SESSION_COOKIE, BASE, "Strict");
      event("console_logout", { principal: s.sub });
      await Promise.resolve();
      res.redirect(303, `${BASE}/login`);
    }),
  );

  // --- inbox and requests -------------------------------------------------------

  router.get(
    "/",
    h(async (req, res) => {
      const s = needSession(req, res);
      if (s === undefined) return;
      const inbox = await backend.inbox(principalOf(s));
      send(res, 200, inboxPage(await pageCtx(s), inbox));
    }),
  );

  const requestId = (req: Request): string => {
    const id = String(req.params.id);
    if (!ID.test(id)) throw new ConsoleHttpError(404, "no such request");
    return id;
  };

  router.get(
    "/requests/:id",
    h(async (req, res) => {
      const s = needSession(req, res);
      if (s === undefined) return;
      const id = requestId(req);
      const p = principalOf(s);
      const [detail, timeline] = await Promise.all([
        backend.request(id, p),
        backend.timeline(id, p),
      ]);
      send(res, 200, requestPage(await pageCtx(s), detail, timeline));
    }),
  );

  const decide = (approve: boolean) =>
    h(async (req, res) => {
      const s = checkPost(req, sessionOf(req));
      const id = requestId(req);
      const raw = field(req.body, "comment") ?? "";
      if (raw.length > MAX_COMMENT)
        throw new ConsoleHttpError(400, `a comment has at most ${MAX_COMMENT} characters`);
      const comment = raw.trim() === "" ? null : raw;
      await backend.decide(id, principalOf(s), approve, comment);
      res.redirect(303, `${BASE}/requests/${encodeURIComponent(id)}`);
    });
  router.post("/requests/:id/approve", forms, decide(true));
  router.post("/requests/:id/deny", forms, decide(false));

  // --- containment (admin) ------------------------------------------------------

  /**
   * A switch change in force in memory but not written to disk (a restart
   * before the background retry loses it): reported loudly, as the API does
   * (src/http/control-server.ts) — an error line and a security event.
   */
  const notPersisted = (op: "create" | "delete", view: KillSwitch, by: string): void => {
    if (view.persisted) return;
    const fields = { op, killswitch: view, actor: by, error: view.persist_error };
    log.error("kill switch change applies in memory but is not written to containment.db", {
      event: "containment.killswitch_not_persisted",
      ...fields,
    });
    event("killswitch_not_persisted", fields);
  };

  router.get(
    "/containment",
    h(async (req, res) => {
      const s = needSession(req, res);
      if (s === undefined) return;
      const p = principalOf(s);
      const [switches, budgets, rollout] = await Promise.all([
        backend.listSwitches(p),
        backend.budgets(p),
        backend.rollout(p),
      ]);
      send(res, 200, containmentPage(await pageCtx(s), { switches, budgets, rollout }));
    }),
  );

  router.post(
    "/containment/switches",
    forms,
    h(async (req, res) => {
      const s = checkPost(req, sessionOf(req));
      const input = switchInput(req.body, now());
      notPersisted("create", await backend.setSwitch(input, principalOf(s)), s.sub);
      res.redirect(303, `${BASE}/containment`);
    }),
  );

  router.post(
    "/containment/switches/:id/lift",
    forms,
    h(async (req, res) => {
      const s = checkPost(req, sessionOf(req));
      const id = String(req.params.id);
      if (!ID.test(id)) throw new ConsoleHttpError(404, "no such kill switch");
      notPersisted("delete", await backend.liftSwitch(id, principalOf(s)), s.sub);
      res.redirect(303, `${BASE}/containment`);
    }),
  );

  // --- the rest -----------------------------------------------------------------

  router.use(
    h(async (req) => {
      await Promise.resolve();
      throw new ConsoleHttpError(
        req.method === "GET" || req.method === "HEAD" || req.method === "POST" ? 404 : 405,
        "no such page",
      );
    }),
  );

  router.use((e: unknown, req: Request, res: Response, _next: NextFunction) => {
    let status = 500;
    let message = "the console failed to answer; the error is logged";
    if (e instanceof ConsoleHttpError) {
      status = e.status;
      message = e.message;
    } else if (e instanceof ToolgateError) {
      status = e.status;
      // a 5xx's details (a store's failure) go to the log, not to the page
      message =
        e.status >= 500 ? `the console cannot answer right now (${e.code}); try again` : e.message;
    } else {
      const s =
        (e as { status?: unknown; statusCode?: unknown }).status ??
        (e as { statusCode?: unknown }).statusCode;
      if (typeof s === "number" && s >= 400 && s < 500) {
        status = s;
        message = s === 413 ? "the form is too large" : "the form could not be read";
      }
    }
    if (status >= 500)
      log.error("console request failed", {
        event: "console.error",
        path: req.path,
        error: (e as Error).message,
      });
    if (status === 403)
      event("console_forbidden", { path: req.path, method: req.method, error: message });
    if (res.headersSent) return;
    const s = sessionOf(req);
    pageCtx(s).then(
      (ctx) => send(res, status, errorPage(ctx, status, message)),
      () => res.status(status).type("text/plain").send(message),
    );
  });

  return router;
}

/** Control characters (C0, DEL). */
function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

const loginErrors: Record<string, string> = {
  stale: "The login took too long or was started elsewhere; please sign in again.",
  refused: "The identity provider's answer was refused; please sign in again.",
};

/** The set-switch form as a NewSwitchInput; 400 for anything malformed. */
export function switchInput(body: unknown, nowMs: number): NewSwitchInput {
  const scope: NewSwitchInput["scope"] = {};
  for (const k of ["agent", "tool", "subject", "job"] as const) {
    const v = (field(body, k) ?? "").trim();
    if (v === "") continue;
    if (v.length > MAX_SCOPE || hasControl(v))
      throw new ConsoleHttpError(400, `the ${k} must be at most ${MAX_SCOPE} printable characters`);
    scope[k] = v;
  }
  if (Object.keys(scope).length === 0 && field(body, "everything") !== "yes")
    throw new ConsoleHttpError(
      400,
      "give a scope (agent, tool, subject or job), or confirm stopping everything",
    );
  const reason = (field(body, "reason") ?? "").trim();
  if (reason === "" || reason.length > MAX_REASON)
    throw new ConsoleHttpError(400, `a reason is required (at most ${MAX_REASON} characters)`);
  const exp = (field(body, "expires") ?? "").trim();
  let expires_at: string | null = null;
  if (exp !== "") {
    const secs = Number(exp);
    if (!Number.isInteger(secs) || secs < 60 || secs > 31 * 24 * 3600)
      throw new ConsoleHttpError(400, "pick an expiry from the list");
    expires_at = new Date(nowMs + secs * 1000).toISOString();
  }
  return { scope, reason, expires_at };
}
