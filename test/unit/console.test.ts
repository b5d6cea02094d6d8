/** The console's pieces without HTTP: escaping, sealed cookies, CSRF comparison, form parsing, views. */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { isLoopbackHost, switchInput } from "../../src/console/app";
import { reasonFallback } from "../../src/console/backend";
import { outcomeOf, reasonsOf, summaryOf } from "../../src/console/backends/views";
import { escapeHtml, html, raw, safeHref } from "../../src/console/html";
import {
  csrfMatches,
  newCsrf,
  openSession,
  parseCookies,
  Sealer,
  setCookie,
} from "../../src/console/session";
import type { Principal } from "../../src/model";
import { tempDir } from "../helpers/opa";

const who = (id: string, roles: string[]): Principal => ({
  id,
  roles,
  method: "jwt",
  claims: { iss: "t", sub: id, aud: undefined, exp: undefined },
});

describe("html", () => {
  test("every interpolation is escaped; nested templates and raw constants are not", () => {
    const evil = `<script>alert("x")</script>' onload='x' \`y\` &amp;`;
    const out = html`<p title="${evil}">${evil}${html`<b>${evil}</b>`}${raw("<i>ok</i>")}</p>`
      .value;
    expect(out).not.toContain("<script>");
    expect(out).toContain(
      "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39; onload=&#39;x&#39; &#96;y&#96; &amp;amp;",
    );
    expect(out).toContain("<b>&lt;script&gt;");
    expect(out).toContain("<i>ok</i>");
  });
  test("arrays join, null/undefined/false vanish, objects render as escaped JSON", () => {
    expect(html`${["<a>", html`<b></b>`]}${null}${undefined}${false}${0}`.value).toBe(
      "&lt;a&gt;<b></b>0",
    );
    expect(html`${{ a: "<x>" }}`.value).toBe("{&quot;a&quot;:&quot;&lt;x&gt;&quot;}");
    expect(escapeHtml("a&b")).toBe("a&amp;b");
  });
  test("only http(s) links", () => {
    expect(safeHref("javascript:alert(1)")).toBeUndefined();
    expect(safeHref("data:text/html,x")).toBeUndefined();
    expect(safeHref("http://jaeger:16686/trace/abc")).toBe("http://jaeger:16686/trace/abc");
  });
});

describe("sealed sessions", () => {
  const s = new Sealer(randomBytes(32));
  const session = {
    sub: "maria",
    roles: ["support_manager"],
    csrf: newCsrf(),
    exp: 2_000_000_000,
    via: "dev",
  };

  test("round trip; another key, another purpose, a flipped byte, expiry: no session", () => {
    const sealed = s.seal("session", session);
    expect(openSession(s, sealed, 1_000)).toEqual(session);
    expect(openSession(new Sealer(randomBytes(32)), sealed, 1_000)).toBeUndefined();
    expect(s.open("login", sealed)).toBeUndefined();
    const buf = Buffer.from(sealed, "base64url");
    buf[20] = (buf[20] ?? 0) ^ 1;
    expect(openSession(s, buf.toString("base64url"), 1_000)).toBeUndefined();
    expect(openSession(s, sealed, 2_000_000_001)).toBeUndefined();
    expect(openSession(s, "!!!", 1_000)).toBeUndefined();
    expect(openSession(s, "A".repeat(5000), 1_000)).toBeUndefined();
  });

  test("a sealed value of the wrong shape is no session", () => {
    expect(openSession(s, s.seal("session", { ...session, roles: "admin" }), 1)).toBeUndefined();
    expect(openSession(s, s.seal("session", { ...session, via: "magic" }), 1)).toBeUndefined();
    expect(openSession(s, s.seal("session", { ...session, csrf: "short" }), 1)).toBeUndefined();
  });

  test("the key file: ≥ 32 bytes, shared by replicas", () => {
    const dir = tempDir();
    const f = join(dir, "key");
    writeFileSync(f, randomBytes(48));
    const a = Sealer.fromFile(f);
    expect(Sealer.fromFile(f).open("session", a.seal("session", { x: 1 }))).toEqual({ x: 1 });
    writeFileSync(f, "short");
    expect(() => Sealer.fromFile(f)).toThrow(/at least 32/);
    expect(() => Sealer.fromFile(join(dir, "missing"))).toThrow(/cannot be read/);
  });

  test("CSRF tokens compare in constant time and exactly", () => {
    const t = newCsrf();
    expect(csrfMatches(t, t)).toBe(true);
    expect(csrfMatches(t, t + "x")).toBe(false);
    expect(csrfMatches(t, "")).toBe(false);
    expect(csrfMatches(t, undefined)).toBe(false);
    expect(csrfMatches(t, [t])).toBe(false);
  });

  test("cookies: parsed defensively; set with HttpOnly, SameSite, Path, Secure when asked", () => {
    const c = parseCookies("a=1; b=2; a=3; junk; =x");
    expect(c.get("a")).toBe("1");
    expect(c.get("b")).toBe("2");
    expect(c.size).toBe(2);
    expect(
      setCookie("n", "v", { path: "/console", secure: true, sameSite: "Strict", maxAge: 60 }),
    ).toBe("n=v; Path=/console; Max-Age=60; HttpOnly; SameSite=Strict; Secure");
  });

  test("loopback hosts", () => {
    for (const h of ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"])
      expect(isLoopbackHost(h)).toBe(true);
    for (const h of ["0.0.0.0", "10.0.0.1", "example.com", "::"])
      expect(isLoopbackHost(h)).toBe(false);
  });
});

describe("the set-switch form", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  test("scope, reason, expiry", () => {
    expect(switchInput({ tool: " refunds.issue ", reason: "leak", expires: "3600" }, now)).toEqual({
      scope: { tool: "refunds.issue" },
      reason: "leak",
      expires_at: "2026-01-01T01:00:00.000Z",
    });
    expect(switchInput({ everything: "yes", reason: "stop", expires: "" }, now)).toEqual({
      scope: {},
      reason: "stop",
      expires_at: null,
    });
  });
  test.each([
    [{ reason: "no scope, not confirmed" }],
    [{ tool: "x" }],
    [{ tool: "x", reason: "r", expires: "-5" }],
    [{ tool: "x", reason: "r", expires: "abc" }],
    [{ tool: "a\u0000b", reason: "r" }],
    [{ tool: "x".repeat(300), reason: "r" }],
    [{ tool: "x", reason: "r".repeat(1001) }],
  ])("refused: %j", (body) => {
    expect(() => switchInput(body, now)).toThrow();
  });
});

describe("views", () => {
  test("reasons: messages kept; codes alone get a fallback text", () => {
    expect(
      reasonsOf([
        { code: "approval_required", message: "needs an approval" },
        "budget_low",
        { code: "x", message: "" },
        5,
      ]),
    ).toEqual([
      { code: "approval_required", message: "needs an approval", fallback: false },
      { code: "budget_low", message: "Budget low", fallback: true },
      { code: "x", message: "X", fallback: true },
    ]);
    expect(reasonFallback("")).toBe("(no reason given)");
  });

  test("outcomes", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(outcomeOf({ status: "approved", used_at: "x" }, now)).toBe("used");
    expect(outcomeOf({ status: "approved", revoked_at: "x", used_at: "x" }, now)).toBe("revoked");
    expect(outcomeOf({ status: "approved", approved_until: "2025-01-01T00:00:00Z" }, now)).toBe(
      "expired",
    );
    expect(outcomeOf({ status: "approved", approved_until: "2027-01-01T00:00:00Z" }, now)).toBe(
      "approved_unused",
    );
    expect(outcomeOf({ status: "weird" }, now)).toBe("failed");
  });

  test("eligibility as the API decides it: never the initiator, never the agent, excluded, roles", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    const v = {
      id: "apr_1",
      status: "pending",
      initiator: "alice",
      agent: "support-triage",
      tool: "refunds.issue",
      expires_at: "2026-01-01T01:00:00Z",
      requirement: {
        approver_roles: ["support_manager"],
        exclude: ["bob"],
        single_use: true,
        ttl_seconds: 900,
      },
    };
    expect(summaryOf(v, who("maria", ["support_manager"]), now).can_decide).toBe(true);
    expect(summaryOf(v, who("alice", ["support_manager"]), now).why_not).toBe(
      "the approver is the initiator",
    );
    expect(summaryOf(v, who("support-triage", ["support_manager"]), now).why_not).toBe(
      "the approver is the agent",
    );
    expect(summaryOf(v, who("bob", ["support_manager"]), now).why_not).toBe(
      "the policy excludes this approver",
    );
    expect(summaryOf(v, who("carol", ["contractor"]), now).why_not).toMatch(
      /holds none of the roles/,
    );
    expect(
      summaryOf(
        { ...v, expires_at: "2025-01-01T00:00:00Z" },
        who("maria", ["support_manager"]),
        now,
      ).why_not,
    ).toBe("the request has expired");
    expect(
      summaryOf({ ...v, status: "approved" }, who("maria", ["support_manager"]), now).can_decide,
    ).toBe(false);
  });
});
