/**
 * Issue #16 — the approver console on a single sidecar's control port: real
 * HTTP on loopback, a real toolgate (startTestToolgate), a real OpenID
 * provider (test/helpers/oidc.ts, npm oidc-provider). Cookies are kept by
 * hand (a tiny jar) and redirects followed by hand.
 */
import type { Toolgate } from "../../src/app";
import { startTestOidc, type TestOidc } from "../helpers/oidc";
import { tempDir } from "../helpers/opa";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

type FetchResponse = Awaited<ReturnType<typeof fetch>>;

/** A browser's worth of cookies and requests, by hand. */
class Browser {
  readonly jar = new Map<string, Map<string, string>>(); // host → name → value

  constructor(readonly origin: string) {}

  private cookieHeader(url: URL): string {
    const c = this.jar.get(url.host);
    return c === undefined ? "" : [...c].map(([k, v]) => `${k}=${v}`).join("; ");
  }

  private keep(url: URL, res: FetchResponse): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair = ""] = line.split(";");
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const c = this.jar.get(url.host) ?? new Map<string, string>();
      if (/max-age=0/i.test(line) || value === "") c.delete(name);
      else c.set(name, value);
      this.jar.set(url.host, c);
    }
  }

  async go(
    url: string,
    init: { method?: string; form?: Record<string, string>; headers?: Record<string, string> } = {},
  ): Promise<{
    status: number;
    location: string | null;
    text: string;
    res: FetchResponse;
    url: string;
  }> {
    const u = new URL(url, this.origin);
    const headers: Record<string, string> = { ...init.headers };
    const cookie = this.cookieHeader(u);
    if (cookie !== "") headers.cookie = cookie;
    let body: string | undefined;
    if (init.form !== undefined) {
      body = new URLSearchParams(init.form).toString();
      headers["content-type"] = "application/x-www-form-urlencoded";
    }
    const res = await fetch(u, {
      method: init.method ?? (body !== undefined ? "POST" : "GET"),
      headers,
      redirect: "manual",
      ...(body !== undefined ? { body } : {}),
    });
    this.keep(u, res);
    const location = res.headers.get("location");
    return {
      status: res.status,
      location: location === null ? null : new URL(location, u).href,
      text: await res.text(),
      res,
      url: u.href,
    };
  }

  /** Follows redirects (GET) until a page answers. */
  async follow(url: string, max = 10): Promise<{ status: number; text: string; url: string }> {
    let r = await this.go(url);
    for (let i = 0; i < max && r.location !== null && r.status >= 300 && r.status < 400; i++)
      r = await this.go(r.location);
    return r;
  }

  /** A same-origin form post (the Origin a browser sends). */
  post(
    path: string,
    form: Record<string, string>,
    headers: Record<string, string> = { origin: this.origin },
  ) {
    return this.go(path, { form, headers });
  }

  async devLogin(user: string): Promise<void> {
    const r = await this.post("/console/login/dev", { user });
    expect(r.status).toBe(303);
    expect(r.location).toBe(`${this.origin}/console/`);
  }
}

/** An inbox row's markup: from its data-request-id to the next row. */
function rowOf(page: string, id: string): string {
  const at = page.indexOf(`data-request-id="${id}"`);
  if (at < 0) return "";
  const next = page.indexOf('data-request-id="', at + 20);
  return page.slice(at, next < 0 ? undefined : next);
}

const csrfOf = (page: string): string => /name="csrf" value="([^"]+)"/.exec(page)?.[1] ?? "";

interface Running {
  tg: Toolgate;
  agent: string;
  control: string;
}

async function run(env: Record<string, string> = {}): Promise<Running> {
  const tg = await startTestToolgate({ TOOLGATE_STATE_DIR: tempDir(), ...env });
  return { tg, agent: tg.agentServer.url, control: tg.controlServer?.url ?? "" };
}

/** alice's agent asks for a refund: needs_approval, then an access request; returns the task id. */
async function pendingRefund(
  r: Running,
  amount = 120,
  args: Record<string, unknown> = {},
  justification?: string,
): Promise<{ id: string; req: Record<string, unknown> }> {
  const req = refRequest({ tool: "refunds.issue", args: { amount, ...args } });
  const d = await postJson(r.agent, "/v1/decisions", req);
  expect((d.json as { outcome: string }).outcome).toBe("needs_approval");
  const evaluation = (d.json as { access_request: { evaluation_id: string } }).access_request
    .evaluation_id;
  const sub = await postJson(r.agent, "/access/v1/requests", {
    ...req,
    denial: { evaluation_id: evaluation },
    ...(justification !== undefined ? { justification } : {}),
  });
  expect(sub.status).toBe(201);
  return { id: (sub.json as { task: { id: string } }).task.id, req };
}

/** The agent's re-ask with the approval its request now carries. */
async function reask(r: Running, id: string, req: Record<string, unknown>): Promise<string> {
  const st = await http(r.agent, "GET", `/access/v1/requests/${id}`);
  const approval = (st.json as { result?: { approval: unknown } }).result?.approval;
  expect(approval).toBeDefined();
  const again = { ...req, context: { ...(req.context as object), approval } };
  const d = await postJson(r.agent, "/v1/decisions", again);
  return (d.json as { outcome: string }).outcome;
}

describe("console on the sidecar's control port (development mode)", () => {
  let r: Running;
  beforeAll(async () => {
    r = await run();
  });
  afterAll(async () => {
    await r.tg.stop();
  });

  test("no session: /console/ redirects to the login page, which offers the five development users", async () => {
    const b = new Browser(r.control);
    const res = await b.go("/console/");
    expect(res.status).toBe(302);
    expect(res.location).toBe(`${r.control}/console/login`);
    const login = await b.go("/console/login");
    expect(login.status).toBe(200);
    expect(login.res.headers.get("content-type")).toMatch(/^text\/html/);
    for (const u of ["alice", "sam", "carol", "maria", "olga"])
      expect(login.text).toMatch(
        new RegExp(`<button type="submit" name="user" value="${u}">\\s*${u}\\s*</button`),
      );
    // the API behind the gate still needs a token
    expect((await http(r.control, "GET", "/v1/approvals")).status).toBe(401);
  });

  test("the session cookie: HttpOnly, SameSite=Strict, Path=/console, no Secure on loopback; a tampered cookie is no session", async () => {
    const b = new Browser(r.control);
    const res = await b.post("/console/login/dev", { user: "maria" });
    const cookie = res.res.headers.getSetCookie().find((c) => c.startsWith("tg_console="));
    expect(cookie).toBeDefined();
    expect(cookie).toMatch(/; HttpOnly/);
    expect(cookie).toMatch(/; SameSite=Strict/);
    expect(cookie).toMatch(/; Path=\/console/);
    expect(cookie).not.toMatch(/Secure/);
    const jar = b.jar.get(new URL(r.control).host);
    const v = jar?.get("tg_console") ?? "";
    jar?.set("tg_console", v.slice(0, -4) + (v.endsWith("AAAA") ? "BBBB" : "AAAA"));
    expect((await b.go("/console/")).status).toBe(302);
  });

  test("a link to a request opened signed out: login, then back on that request (never elsewhere)", async () => {
    const b = new Browser(r.control);
    const res = await b.go("/console/requests/apr_linked");
    expect(res.status).toBe(302);
    expect(res.location).toBe(`${r.control}/console/login?next=%2Fconsole%2Frequests%2Fapr_linked`);
    const login = await b.go("/console/login?next=%2Fconsole%2Frequests%2Fapr_linked");
    expect(login.text).toContain('name="next" value="/console/requests/apr_linked"');
    const back = await b.post("/console/login/dev", {
      user: "maria",
      next: "/console/requests/apr_linked",
    });
    expect(back.status).toBe(303);
    expect(back.location).toBe(`${r.control}/console/requests/apr_linked`);
    // no open redirect: another origin, a scheme-relative URL, another path land on the inbox
    for (const next of [
      "https://evil.example/",
      "//evil.example/x",
      "/v1/approvals",
      "/console/../v1",
    ]) {
      const other = new Browser(r.control);
      const page = await other.go(`/console/login?next=${encodeURIComponent(next)}`);
      expect(page.text).not.toContain('name="next"');
      const out = await other.post("/console/login/dev", { user: "maria", next });
      expect(out.location).toBe(`${r.control}/console/`);
    }
  });

  test("dev login: an unknown user is refused; a post from another origin is refused", async () => {
    const b = new Browser(r.control);
    expect((await b.post("/console/login/dev", { user: "mallory" })).status).toBe(400);
    expect(
      (await b.post("/console/login/dev", { user: "olga" }, { origin: "http://evil.example" }))
        .status,
    ).toBe(403);
    expect((await b.post("/console/login/dev", { user: "olga" }, {})).status).toBe(403);
    expect(b.jar.get(new URL(r.control).host)?.has("tg_console") ?? false).toBe(false);
  });

  test("maria approves alice's pending refund through the form; the agent's re-ask is allowed once", async () => {
    const { id, req } = await pendingRefund(
      r,
      120,
      {},
      "The customer was charged twice for order 7; refunding the duplicate.",
    );
    const maria = new Browser(r.control);
    await maria.devLogin("maria");
    const inbox = await maria.go("/console/");
    expect(inbox.status).toBe(200);
    const row = rowOf(inbox.text, id);
    expect(row).toContain("refunds.issue");
    expect(row).toContain("needs an approval"); // the policy's words, not its code
    expect(row).toContain("The customer was charged twice");
    expect(row).toContain("class execute");
    expect(row).toContain("customer cust_1");
    expect(row).toMatch(/amount<\/span>\s*<code>120<\/code>/);
    expect(row).toMatch(/\d+ requested today, \d+ approved/);
    const page = await maria.go(`/console/requests/${id}`);
    expect(page.status).toBe(200);
    expect(page.text).toContain('<textarea name="comment" id="comment"');
    expect(page.text).toMatch(/<label for="comment">\s*Comment\s*<\/label\s*>/);
    expect(page.text).toMatch(/>\s*Approve\s*</);
    expect(page.text).toMatch(/>\s*Deny\s*</);
    expect(page.text).toContain("cust_1");
    expect(page.text).toContain("job_1");
    const csrf = csrfOf(page.text);
    // CSRF: missing, wrong → 403, nothing decided
    expect((await maria.post(`/console/requests/${id}/approve`, { comment: "x" })).status).toBe(
      403,
    );
    expect(
      (
        await maria.post(`/console/requests/${id}/approve`, {
          comment: "x",
          csrf: csrf.replace(/^./, csrf.startsWith("A") ? "B" : "A"),
        })
      ).status,
    ).toBe(403);
    // right token, wrong origin → 403
    expect(
      (
        await maria.post(
          `/console/requests/${id}/approve`,
          { csrf },
          { origin: "http://evil.example" },
        )
      ).status,
    ).toBe(403);
    // no Origin, a same-origin Referer: accepted as a browser without Origin would send it
    const ok = await maria.post(
      `/console/requests/${id}/approve`,
      { comment: "Duplicate charge, checked.", csrf },
      { referer: `${r.control}/console/requests/${id}` },
    );
    expect(ok.status).toBe(303);
    expect(ok.location).toBe(`${r.control}/console/requests/${id}`);
    const after = await maria.go(`/console/requests/${id}`);
    expect(after.text).toContain("Duplicate charge, checked.");
    expect(after.text).not.toContain('id="comment"');
    expect(await reask(r, id, req)).toBe("allow");
    expect(await reask(r, id, req)).toBe("deny"); // single use
    // the trail is written in the background: the re-ask shows up shortly
    let used = await maria.go(`/console/requests/${id}`);
    for (let i = 0; i < 50 && !used.text.includes("Re-ask"); i++) {
      await new Promise((res) => setTimeout(res, 50));
      used = await maria.go(`/console/requests/${id}`);
    }
    expect(used.text).toContain("approved and used");
    expect(used.text).toMatch(/Re-ask/);
    // the trail's story: decision → access request → approval → use/re-ask
    for (const step of ["Decision", "Access request", "Approved", "Used"])
      expect(used.text).toContain(step);
  });

  test("alice (the initiator) sees her request read-only with the reason; a forged POST is refused 403", async () => {
    const { id } = await pendingRefund(r, 130);
    const alice = new Browser(r.control);
    await alice.devLogin("alice");
    const inbox = await alice.go("/console/");
    const row = rowOf(inbox.text, id);
    expect(row).toContain("the approver is the initiator");
    const page = await alice.go(`/console/requests/${id}`);
    expect(page.text).toContain("You cannot decide this request: the approver is the initiator");
    expect(page.text).not.toContain('id="comment"');
    const csrf = csrfOf(page.text); // her own session's valid token
    const forged = await alice.post(`/console/requests/${id}/approve`, { csrf, comment: "me" });
    expect(forged.status).toBe(403);
    expect(forged.text).toContain("the approver is the initiator");
    const maria = new Browser(r.control);
    await maria.devLogin("maria");
    expect((await maria.go(`/console/requests/${id}`)).text).toContain('id="comment"'); // still pending
  });

  test("carol (contractor) cannot decide: 403; she is not shown the request in her inbox", async () => {
    const { id } = await pendingRefund(r, 140);
    const carol = new Browser(r.control);
    await carol.devLogin("carol");
    expect((await carol.go("/console/")).text).not.toContain(id);
    const page = await carol.go(`/console/requests/${id}`);
    const res = await carol.post(`/console/requests/${id}/deny`, { csrf: csrfOf(page.text) });
    expect(res.status).toBe(403);
  });

  test("a non-admin cannot see or post to the containment panel", async () => {
    const maria = new Browser(r.control);
    await maria.devLogin("maria");
    const inbox = await maria.go("/console/");
    expect(inbox.text).not.toContain('href="/console/containment"');
    expect((await maria.go("/console/containment")).status).toBe(403);
    const res = await maria.post("/console/containment/switches", {
      csrf: csrfOf(inbox.text),
      tool: "refunds.issue",
      reason: "x",
    });
    expect(res.status).toBe(403);
  });

  test("olga sets a kill switch from the panel: the next decision is denied; she lifts it", async () => {
    const olga = new Browser(r.control);
    await olga.devLogin("olga");
    const panel = await olga.go("/console/containment");
    expect(panel.status).toBe(200);
    expect(panel.text).toMatch(/<label for="reason">\s*Reason\s*<\/label\s*>/);
    expect(panel.text).toMatch(/<label for="scope-tool">\s*Tool\s*<\/label\s*>/);
    expect(panel.text).toMatch(/>\s*Set kill switch\s*</);
    expect(panel.text).toContain("supervised"); // rollout stages (replies.send)
    const csrf = csrfOf(panel.text);
    // no scope without confirming "everything": refused, nothing set
    expect(
      (await olga.post("/console/containment/switches", { csrf, reason: "oops" })).status,
    ).toBe(400);
    const set = await olga.post("/console/containment/switches", {
      csrf,
      tool: "tickets.read",
      reason: "Ticket system leaking <data>",
      expires: "3600",
    });
    expect(set.status).toBe(303);
    const d = await postJson(r.agent, "/v1/decisions", refRequest({ tool: "tickets.read" }));
    expect((d.json as { outcome: string }).outcome).toBe("deny");
    expect(JSON.stringify(d.json)).toContain("kill switch");
    const after = await olga.go("/console/containment");
    expect(after.text).toContain("Ticket system leaking &lt;data&gt;");
    const sid = /data-switch-id="([^"]+)"/.exec(after.text)?.[1] ?? "";
    expect((await olga.post(`/console/containment/switches/${sid}/lift`, { csrf })).status).toBe(
      303,
    );
    const d2 = await postJson(r.agent, "/v1/decisions", refRequest({ tool: "tickets.read" }));
    expect((d2.json as { outcome: string }).outcome).toBe("allow");
  });

  test("output is escaped: a tool argument holding <script> is shown as text", async () => {
    const { id } = await pendingRefund(
      r,
      150,
      { reason: '<script>alert("x")</script>' },
      "<img src=x onerror=alert(1)>",
    );
    const maria = new Browser(r.control);
    await maria.devLogin("maria");
    const page = await maria.go(`/console/requests/${id}`);
    expect(page.text).not.toContain("<script>alert");
    expect(page.text).not.toContain("<img src=x");
    expect(page.text).toContain("&lt;script&gt;alert(");
    expect(page.text).toContain("&lt;img src=x onerror=alert(1)&gt;");
    expect(page.res.headers.get("content-security-policy")).toContain("script-src 'self'");
  });

  test("logout needs the CSRF token and ends the session", async () => {
    const b = new Browser(r.control);
    await b.devLogin("sam");
    const inbox = await b.go("/console/");
    expect((await b.post("/console/logout", {})).status).toBe(403);
    const out = await b.post("/console/logout", { csrf: csrfOf(inbox.text) });
    expect(out.status).toBe(303);
    expect(out.location).toBe(`${r.control}/console/login`);
    expect((await b.go("/console/")).status).toBe(302);
  });

  test("unknown pages and ids: 404 HTML; static assets served", async () => {
    const b = new Browser(r.control);
    await b.devLogin("maria");
    expect((await b.go("/console/requests/apr_doesnotexist")).status).toBe(404);
    expect((await b.go("/console/nope")).status).toBe(404);
    const css = await b.go("/console/assets/console.css");
    expect(css.status).toBe(200);
    expect(css.res.headers.get("content-type")).toMatch(/^text\/css/);
  });
});

describe("console with OpenID Connect (a real local provider), development key not trusted", () => {
  let r: Running;
  let idp: TestOidc;
  beforeAll(async () => {
    idp = await startTestOidc({
      users: { maria: ["support_manager"], olga: ["admin"], alice: ["support_agent"] },
    });
    r = await run({
      TOOLGATE_CONSOLE_OIDC_ISSUER: idp.issuer,
      // the control port trusts the provider's keys, not the development key
      TOOLGATE_CONTROL_JWT_JWKS_URL: `${idp.issuer}/jwks`,
    });
    await idp.allowRedirect(`${r.control}/console/auth/callback`);
  });
  afterAll(async () => {
    await r.tg.stop();
    await idp.stop();
  });

  test("no development login: the form is absent and POST /console/login/dev is 404", async () => {
    const b = new Browser(r.control);
    const login = await b.go("/console/login");
    expect(login.text).not.toContain('name="user"');
    expect(login.text).toContain('href="/console/auth/start"');
    expect((await b.post("/console/login/dev", { user: "olga" })).status).toBe(404);
  });

  async function oidcLogin(
    b: Browser,
    user: string,
  ): Promise<{ status: number; text: string; url: string }> {
    const start = await b.go("/console/auth/start");
    expect(start.status).toBe(302);
    const authUrl = new URL(start.location ?? "");
    expect(authUrl.origin).toBe(idp.issuer);
    expect(authUrl.searchParams.get("code_challenge_method")).toBe("S256");
    expect(authUrl.searchParams.get("state")).toBeTruthy();
    expect(authUrl.searchParams.get("nonce")).toBeTruthy();
    expect(authUrl.searchParams.get("redirect_uri")).toBe(`${r.control}/console/auth/callback`);
    const form = await b.follow(authUrl.href);
    expect(form.text).toContain('<label for="login">Username</label>');
    const action = /action="([^"]+)"/.exec(form.text)?.[1] ?? "";
    let res = await b.go(new URL(action, idp.issuer).href, { form: { login: user } });
    for (let i = 0; i < 10 && res.location !== null && !res.location.startsWith(r.control); i++)
      res = await b.go(res.location);
    expect(res.location).toMatch(new RegExp(`^${r.control}/console/auth/callback\\?`));
    return b.follow(res.location ?? "");
  }

  test("login round trip: maria signs in at the provider, lands in her inbox with her roles, and can approve", async () => {
    const { id, req } = await pendingRefund(r, 125);
    const b = new Browser(r.control);
    const inbox = await oidcLogin(b, "maria");
    expect(inbox.status).toBe(200);
    expect(inbox.url).toBe(`${r.control}/console/`);
    expect(inbox.text).toMatch(/Signed in as\s*<strong>maria<\/strong/);
    expect(inbox.text).toContain("support_manager");
    expect(inbox.text).toContain(`data-request-id="${id}"`);
    const page = await b.go(`/console/requests/${id}`);
    const ok = await b.post(`/console/requests/${id}/approve`, {
      csrf: csrfOf(page.text),
      comment: "via OIDC",
    });
    expect(ok.status).toBe(303);
    expect(await reask(r, id, req)).toBe("allow");
  });

  test("a callback without the login cookie (or with a forged state) does not sign in", async () => {
    const b = new Browser(r.control);
    const start = await b.go("/console/auth/start");
    const state = new URL(start.location ?? "").searchParams.get("state") ?? "";
    const stranger = new Browser(r.control); // no login cookie
    const cb = await stranger.go(
      `/console/auth/callback?code=abc&state=${state}&iss=${encodeURIComponent(idp.issuer)}`,
    );
    expect(cb.status).toBe(303);
    expect(cb.location).toContain("/console/login?error=stale");
    const forged = await b.go(
      `/console/auth/callback?code=abc&state=not-the-state&iss=${encodeURIComponent(idp.issuer)}`,
    );
    expect(forged.location).toContain("/console/login?error=refused");
    expect((await b.go("/console/")).status).toBe(302);
  });

  test("olga (admin by the provider's roles claim) opens the panel", async () => {
    const b = new Browser(r.control);
    await oidcLogin(b, "olga");
    expect((await b.go("/console/containment")).status).toBe(200);
  });
});
