/**
 * The approver console on `toolgate control` with OpenID Connect, the way a
 * deployment runs it: the development key not trusted (no development
 * login), people signing in at a real local provider (test/helpers/oidc.ts,
 * npm oidc-provider; authorization code + PKCE), two replicas over one
 * PostgreSQL database sharing console.session_key_file. A login completed on
 * replica A is a session on replica B; roles come from the provider's claim.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileConfig } from "../../src/config";
import { startControlService, type ControlService } from "../../src/control";
import { silentLogger } from "../../src/shared/log";
import { freePort } from "../helpers/net";
import { startTestOidc, type TestOidc } from "../helpers/oidc";
import { freshDatabase, type FreshDatabase } from "../helpers/postgres";

jest.setTimeout(60_000);

let db: FreshDatabase;
let idp: TestOidc;
let a: ControlService | undefined;
let b: ControlService | undefined;

async function startControl(replica: string, env: Record<string, string>) {
  const config = compileConfig(
    {},
    {
      TOOLGATE_CONTROL_PORT: String(await freePort()),
      TOOLGATE_LOG_LEVEL: "silent",
      TOOLGATE_STATE_DIR: mkdtempSync(join(tmpdir(), "toolgate-control-")),
      TOOLGATE_AUDIT_HMAC_KEY: "test-key-0123456789abcdef",
      TOOLGATE_POSTGRES_URL: db.url,
      ...env,
    },
  );
  return startControlService(config, {
    log: silentLogger,
    env: { OTEL_SDK_DISABLED: "true" },
    replica,
  });
}

/** A browser's cookie jar across origins (the provider's and the console's), redirects by hand. */
class Jar {
  private readonly jar = new Map<string, Map<string, string>>();

  cookiesFor(origin: string): string {
    return [...(this.jar.get(origin) ?? new Map<string, string>())]
      .map(([k, v]) => `${k}=${v}`)
      .join("; ");
  }

  setCookie(origin: string, name: string, value: string): void {
    const m = this.jar.get(origin) ?? new Map<string, string>();
    m.set(name, value);
    this.jar.set(origin, m);
  }

  async go(
    url: string,
    form?: Record<string, string>,
  ): Promise<{ status: number; location: string | null; text: string }> {
    const u = new URL(url);
    const cookie = this.cookiesFor(u.origin);
    const res = await fetch(u, {
      method: form === undefined ? "GET" : "POST",
      redirect: "manual",
      headers: {
        ...(cookie !== "" ? { cookie } : {}),
        ...(form !== undefined
          ? { "content-type": "application/x-www-form-urlencoded", origin: u.origin }
          : {}),
      },
      ...(form !== undefined ? { body: new URLSearchParams(form).toString() } : {}),
    });
    for (const c of res.headers.getSetCookie()) {
      const pair = c.split(";")[0] ?? "";
      const eq = pair.indexOf("=");
      if (eq > 0) this.setCookie(u.origin, pair.slice(0, eq), pair.slice(eq + 1));
    }
    const loc = res.headers.get("location");
    return {
      status: res.status,
      location: loc === null ? null : new URL(loc, u).href,
      text: await res.text(),
    };
  }
}

/** Signs `user` in at the provider from replica `base`'s console; returns the page it lands on. */
async function oidcLogin(jar: Jar, base: string, user: string) {
  const start = await jar.go(`${base}/console/auth/start`);
  expect(start.status).toBe(302);
  const auth = new URL(start.location ?? "");
  expect(auth.origin).toBe(idp.issuer);
  expect(auth.searchParams.get("code_challenge_method")).toBe("S256");
  expect(auth.searchParams.get("redirect_uri")).toBe(`${base}/console/auth/callback`);
  let res = await jar.go(auth.href);
  for (let i = 0; i < 10 && res.status >= 300 && res.status < 400; i++)
    res = await jar.go(res.location ?? "");
  const action = /action="([^"]+)"/.exec(res.text)?.[1] ?? "";
  res = await jar.go(new URL(action, idp.issuer).href, { login: user });
  for (let i = 0; i < 10 && res.location !== null && !res.location.startsWith(base); i++)
    res = await jar.go(res.location);
  expect(res.location).toMatch(/\/console\/auth\/callback\?/);
  const cb = await jar.go(res.location ?? "");
  expect([cb.status, cb.location]).toEqual([303, `${base}/console/`]);
  return jar.go(cb.location ?? "");
}

beforeAll(async () => {
  db = await freshDatabase();
  idp = await startTestOidc({ users: { maria: ["support_manager"], olga: ["admin"] } });
  const keyFile = join(mkdtempSync(join(tmpdir(), "toolgate-console-key-")), "session.key");
  writeFileSync(keyFile, randomBytes(48), { mode: 0o600 });
  const env = {
    TOOLGATE_CONSOLE_OIDC_ISSUER: idp.issuer,
    TOOLGATE_CONSOLE_SESSION_KEY_FILE: keyFile,
    // people's tokens from the provider's keys: the development key is not trusted
    TOOLGATE_CONTROL_JWT_JWKS_URL: `${idp.issuer}/jwks`,
  };
  [a, b] = await Promise.all([startControl("r1", env), startControl("r2", env)]);
  await idp.allowRedirect(`${a.url}/console/auth/callback`);
  await idp.allowRedirect(`${b.url}/console/auth/callback`);
});

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await idp.stop();
  await db.drop();
});

test("no development login on a control service that does not trust the development key", async () => {
  const jar = new Jar();
  const login = await jar.go(`${a?.url ?? ""}/console/login`);
  expect(login.status).toBe(200);
  expect(login.text).not.toContain('name="user"');
  expect(login.text).toContain('href="/console/auth/start"');
  expect((await jar.go(`${a?.url ?? ""}/console/login/dev`, { user: "olga" })).status).toBe(404);
});

test("maria signs in at the provider through replica A; her session (and roles) hold on replica B", async () => {
  const jar = new Jar();
  const inbox = await oidcLogin(jar, a?.url ?? "", "maria");
  expect(inbox.status).toBe(200);
  expect(inbox.text).toMatch(/Signed in as\s*<strong>maria<\/strong/);
  expect(inbox.text).toContain("support_manager");
  const session = new Map(
    jar
      .cookiesFor(a?.url ?? "")
      .split("; ")
      .map((p) => [p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1)] as const),
  ).get("tg_console");
  expect(session).toBeTruthy();
  const other = new Jar();
  other.setCookie(b?.url ?? "", "tg_console", session ?? "");
  const onB = await other.go(`${b?.url ?? ""}/console/`);
  expect(onB.status).toBe(200);
  expect(onB.text).toMatch(/Signed in as\s*<strong>maria<\/strong/);
  // maria holds no admin role: no panel on either replica
  expect((await other.go(`${b?.url ?? ""}/console/containment`)).status).toBe(403);
});

test("olga (admin by the provider's roles claim) opens the panel on replica B", async () => {
  const jar = new Jar();
  await oidcLogin(jar, b?.url ?? "", "olga");
  const panel = await jar.go(`${b?.url ?? ""}/console/containment`);
  expect(panel.status).toBe(200);
  expect(panel.text).toContain("Set kill switch");
});
