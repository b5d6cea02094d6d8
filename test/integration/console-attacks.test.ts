/**
 * Attacks on the approver console of a real toolgate (development mode, a
 * sidecar's control port on loopback) that review ruled out — kept as
 * regression tests: paths under /console never reach the token-gated API,
 * a CSRF token is bound to its session, a GET changes nothing, a session
 * cookie's fields cannot be forged.
 */
import type { Toolgate } from "../../src/app";
import { tempDir } from "../helpers/opa";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

let tg: Toolgate;
let agent: string;
let control: string;

beforeAll(async () => {
  tg = await startTestToolgate({ TOOLGATE_STATE_DIR: tempDir() });
  agent = tg.agentServer.url;
  control = (tg.controlServer?.url ?? "").replace(/\/$/, "");
});
afterAll(async () => {
  await tg.stop();
});

const form = { "content-type": "application/x-www-form-urlencoded" };

async function devLogin(user: string): Promise<string> {
  const res = await fetch(`${control}/console/login/dev`, {
    method: "POST",
    headers: { ...form, origin: control },
    body: `user=${user}`,
    redirect: "manual",
  });
  expect(res.status).toBe(303);
  const line = res.headers.getSetCookie().find((c) => c.startsWith("tg_console=")) ?? "";
  return line.split(";")[0] ?? "";
}

const page = async (path: string, cookie: string) => {
  const res = await fetch(`${control}${path}`, { headers: { cookie }, redirect: "manual" });
  return { status: res.status, text: await res.text() };
};

const post = (path: string, cookie: string, body: Record<string, string>) =>
  fetch(`${control}${path}`, {
    method: "POST",
    headers: { ...form, origin: control, cookie },
    body: new URLSearchParams(body).toString(),
    redirect: "manual",
  });

const csrfOf = (text: string): string => /name="csrf" value="([^"]+)"/.exec(text)?.[1] ?? "";

async function pendingRefund(): Promise<string> {
  const req = refRequest({ tool: "refunds.issue", args: { amount: 130 } });
  const d = await postJson(agent, "/v1/decisions", req);
  const evaluation = (d.json as { access_request: { evaluation_id: string } }).access_request
    .evaluation_id;
  const sub = await postJson(agent, "/access/v1/requests", {
    ...req,
    denial: { evaluation_id: evaluation },
  });
  expect(sub.status).toBe(201);
  return (sub.json as { task: { id: string } }).task.id;
}

const status = async (id: string): Promise<string> =>
  ((await http(agent, "GET", `/access/v1/requests/${id}`)).json as { task: { status: string } })
    .task.status;

test("no path under /console reaches the API behind the token gate", async () => {
  const cookie = await devLogin("olga");
  for (const path of [
    "/console/..%2fv1%2fapprovals",
    "/console/%2e%2e/v1/approvals",
    "/console/%2E%2E%2Fv1%2Fkillswitches",
    "/console//v1/approvals",
    "/CONSOLE/%2e%2e/v1/approvals",
    "/console/assets/..%2f..%2fv1%2fstatus",
  ]) {
    // (a client that resolves %2e%2e asks for /v1/... itself: the gate answers 401)
    const res = await fetch(`${control}${path}`, { headers: { cookie }, redirect: "manual" });
    expect([302, 401, 404]).toContain(res.status);
  }
});

test("a CSRF token is bound to its session: maria's token from one session is refused in another", async () => {
  const id = await pendingRefund();
  const a = await devLogin("maria");
  const b = await devLogin("maria");
  const tokenA = csrfOf((await page(`/console/requests/${id}`, a)).text);
  expect(tokenA).not.toBe("");
  expect((await post(`/console/requests/${id}/approve`, b, { csrf: tokenA })).status).toBe(403);
  expect(await status(id)).toBe("pending");
});

test("a GET (or HEAD) of a state-changing route changes nothing", async () => {
  const id = await pendingRefund();
  const maria = await devLogin("maria");
  for (const method of ["GET", "HEAD"]) {
    const res = await fetch(`${control}/console/requests/${id}/approve`, {
      method,
      headers: { cookie: maria },
      redirect: "manual",
    });
    expect(res.status).toBe(404);
  }
  const olga = await devLogin("olga");
  expect((await page("/console/containment/switches", olga)).status).toBe(404);
  expect((await page("/console/logout", olga)).status).toBe(404);
  expect(await status(id)).toBe("pending");
  expect((await page("/console/", olga)).status).toBe(200); // olga's session still stands
});

test("a session cookie's fields cannot be forged: a cookie cut, a flipped byte or a plain JSON session is no session", async () => {
  const maria = await devLogin("maria");
  const value = maria.slice("tg_console=".length);
  const flipped = Buffer.from(value, "base64url");
  flipped[14] = (flipped[14] ?? 0) ^ 1;
  for (const forged of [
    value.slice(0, -4),
    flipped.toString("base64url"),
    Buffer.from(
      JSON.stringify({ sub: "olga", roles: ["admin"], csrf: "x".repeat(43), via: "dev" }),
    ).toString("base64url"),
  ])
    expect((await page("/console/containment", `tg_console=${forged}`)).status).toBe(302);
});
