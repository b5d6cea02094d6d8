/**
 * Attacks on the approver console and the approval notifications, each a
 * defect found in review: the console over a stub backend on a loopback
 * port (real HTTP, real sealed cookies), the notification payloads without a
 * network.
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import express from "express";
import { createConsole, type ConsoleSettings } from "../../src/console/app";
import type { ConsoleBackend } from "../../src/console/backend";
import { newCsrf, Sealer } from "../../src/console/session";
import type { KillSwitch } from "../../src/containment";
import { toolgateError } from "../../src/errors";
import type { Principal } from "../../src/model";
import { captureLogger } from "../helpers/capture";
import { tempDir } from "../helpers/opa";

// -- the console over a stub backend --------------------------------------------------

const ADMIN = "admin";

function stubBackend(over: Partial<ConsoleBackend> = {}): ConsoleBackend {
  const admin = (p: Principal) => {
    if (!p.roles.includes(ADMIN)) throw toolgateError("forbidden", "kill switches need admin");
  };
  const sw = (by: string): KillSwitch => ({
    id: "ks_1",
    scope: { tool: "refunds.issue" },
    reason: "stop",
    created_by: by,
    created_at: new Date().toISOString(),
    expires_at: null,
    persisted: true,
  });
  return {
    deployment: () =>
      Promise.resolve({ kind: "sidecar", name: "support-triage", adminRole: ADMIN }),
    inbox: () => Promise.resolve({ pending: [], readOnly: [], decided: [] }),
    request: (id) => Promise.reject(toolgateError("approval_not_found", `no approval ${id}`)),
    timeline: () => Promise.resolve([]),
    decide: (id) => Promise.reject(toolgateError("approval_not_found", `no approval ${id}`)),
    listSwitches: (p) => Promise.resolve().then(() => (admin(p), [])),
    setSwitch: (_i, p) => Promise.resolve().then(() => (admin(p), sw(p.id))),
    liftSwitch: (_id, p) => Promise.resolve().then(() => (admin(p), sw(p.id))),
    budgets: (p) => Promise.resolve().then(() => (admin(p), [])),
    rollout: (p) => Promise.resolve().then(() => (admin(p), [])),
    ...over,
  };
}

function settings(keyFile: string, issuer: string | null): ConsoleSettings {
  return {
    publicUrl: null,
    oidc: {
      issuer,
      clientId: "toolgate-console",
      clientSecretFile: null,
      rolesClaim: "roles",
      scopes: "openid",
    },
    sessionKeyFile: keyFile,
    sessionTtlSeconds: 3600,
    traceUrlTemplate: null,
  };
}

interface Served {
  url: string;
  events: Array<{ event: string; fields: Record<string, unknown> }>;
  lines: () => Array<Record<string, unknown>>;
  close(): Promise<void>;
}

const servers: Served[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function serve(opts: {
  keyFile: string;
  issuer?: string | null;
  dev?: boolean;
  backend?: ConsoleBackend;
}): Promise<Served> {
  const { log, lines } = captureLogger();
  const events: Served["events"] = [];
  const app = express();
  app.use(
    "/console",
    createConsole({
      backend: opts.backend ?? stubBackend(),
      settings: settings(opts.keyFile, opts.issuer ?? null),
      devUsers:
        opts.dev === true
          ? () => [
              { name: "maria", roles: ["support_manager"] },
              { name: "olga", roles: [ADMIN] },
            ]
          : undefined,
      secureCookies: false,
      log,
      onSecurityEvent: (event, fields) => events.push({ event, fields }),
    }),
  );
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  const served: Served = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    events,
    lines,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  servers.push(served);
  return served;
}

function keyFile(): string {
  const f = join(tempDir(), "session.key");
  writeFileSync(f, randomBytes(48), { mode: 0o600 });
  return f;
}

type FetchResponse = Awaited<ReturnType<typeof fetch>>;

const sessionCookie = (res: FetchResponse): string => {
  const line = res.headers.getSetCookie().find((c) => c.startsWith("tg_console=")) ?? "";
  return line.split(";")[0] ?? "";
};

const get = (base: string, path: string, cookie: string) =>
  fetch(`${base}${path}`, { headers: { cookie }, redirect: "manual" });

describe("a session is only as good as a login this console offers now", () => {
  test("a development login's session (olga, admin) opens nothing on a console without the development login, though it shares the session key", async () => {
    const key = keyFile();
    const dev = await serve({ keyFile: key, dev: true });
    const prod = await serve({ keyFile: key, issuer: "https://id.example.com" });
    const login = await fetch(`${dev.url}/console/login/dev`, {
      method: "POST",
      headers: { origin: dev.url, "content-type": "application/x-www-form-urlencoded" },
      body: "user=olga",
      redirect: "manual",
    });
    expect(login.status).toBe(303);
    const cookie = sessionCookie(login);
    expect(cookie).toMatch(/^tg_console=./);
    // where she logged in, the panel opens
    expect((await get(dev.url, "/console/containment", cookie)).status).toBe(200);
    // where the development login is off, the same cookie is no session at all
    const panel = await get(prod.url, "/console/containment", cookie);
    expect(panel.status).toBe(302);
    expect(panel.headers.get("location")).toMatch(/^\/console\/login/);
    expect((await get(prod.url, "/console/", cookie)).status).toBe(302);
  });

  test("an OpenID Connect session from another issuer (or where OIDC is off) is no session", async () => {
    const key = keyFile();
    const sealer = Sealer.fromFile(key);
    const session = (iss: string) =>
      `tg_console=${sealer.seal("session", {
        sub: "olga",
        roles: [ADMIN],
        csrf: newCsrf(),
        exp: Math.floor(Date.now() / 1000) + 600,
        via: "oidc",
        iss,
      })}`;
    const prod = await serve({ keyFile: key, issuer: "https://id.example.com" });
    // the configured issuer's session opens (with or without a trailing slash)
    expect((await get(prod.url, "/console/", session("https://id.example.com"))).status).toBe(200);
    expect((await get(prod.url, "/console/", session("https://id.example.com/"))).status).toBe(200);
    // another issuer's: no session
    expect((await get(prod.url, "/console/", session("https://old-idp.example.com"))).status).toBe(
      302,
    );
    // a console without OIDC (development login only): no OIDC session
    const dev = await serve({ keyFile: key, dev: true });
    expect((await get(dev.url, "/console/", session("https://id.example.com"))).status).toBe(302);
  });
});
