/**
 * Issue #16 — the approver console in a real browser (Debian's chromium,
 * driven by playwright-core; test/helpers/browser.ts), against a real
 * toolgate on loopback, a real local OpenID provider (npm oidc-provider,
 * test/helpers/oidc.ts) and a local Slack incoming-webhook receiver.
 *
 * alice's agent asks for a refund of 120 → needs_approval, and submits the
 * access request with its justification; Slack receives a message whose link
 * opens the request page (after a login); maria logs in, reads the request in
 * her inbox (the reason in words, the agent's justification), opens it and
 * approves with a comment (and, with JavaScript off, denies another); the agent's re-ask is allowed; alice sees her
 * request but cannot approve it (and is told why); olga sets a kill switch on
 * refunds.issue from the containment panel and the next decision is denied.
 * axe-core finds no serious or critical violation on the login page, the
 * inbox, the request page and the panel; the inbox fits a phone (390×844) without sideways
 * scrolling. Screenshots for docs/approvals.md: docs/img/console-*.png (only
 * written when missing or with UPDATE_SCREENSHOTS=1).
 *
 * The steps share one toolgate and one browser and run in order.
 */
import type { Browser, Page } from "playwright-core";
import type { Toolgate } from "../../src/app";
import {
  docScreenshot,
  launchBrowser,
  linksIn,
  newPerson,
  runAxe,
  scrollsSideways,
  seriousViolations,
  startWebhookReceiver,
  type Person,
  type Receiver,
} from "../helpers/browser";
import { startTestOidc, type TestOidc } from "../helpers/oidc";
import { decideAt, http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

jest.setTimeout(180_000);

interface Decision {
  outcome: string;
  reasons: Array<{ code: string; message?: string }>;
  access_request?: { evaluation_id: string };
}
interface TaskView {
  task: { id: string; status: string };
  result?: { mode: string; approval: unknown };
}

const JUSTIFICATION = "Customer was double charged on invoice 42";
const COMMENT = "Checked invoice 42: refund the duplicate charge";
const SWITCH_REASON = "Refund fraud under investigation";

const refund = (amount: number, user = "alice") =>
  refRequest({ user, tool: "refunds.issue", args: { amount, currency: "EUR" } });

let tg: Toolgate;
let agent: string;
let control: string;
let slack: Receiver;
let idp: TestOidc;
let browser: Browser;
const people: Person[] = [];
let taskId = "";
let samsId = "";
/** maria's page, left on the request she approved. */
let mariasPage: Page | undefined;
let req: Record<string, unknown> = {};

/** A fresh browser context for one person. */
async function person(opts: Parameters<typeof newPerson>[1] = {}): Promise<Page> {
  const p = await newPerson(browser, opts);
  people.push(p);
  return p.page;
}

/**
 * Signs `user` in through the login page and the real OpenID provider
 * (authorization code + PKCE): the console's "Sign in with your identity
 * provider", the provider's own login form, back through the callback.
 * The page is left wherever the console sends it after.
 */
async function login(page: Page, user: string): Promise<void> {
  if (!/\/console\/login/.test(page.url())) await page.goto(`${control}/console/login`);
  await page.getByRole("link", { name: "Sign in with your identity provider" }).click();
  await page.waitForURL((u) => u.origin === idp.issuer);
  await page.getByLabel("Username").fill(user);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL((u) => u.origin === control && !u.pathname.startsWith("/console/auth/"));
  expect(new URL(page.url()).pathname).not.toBe("/console/login");
}

/** Signs `user` in with the development login (the control port trusts the development key). */
async function devLogin(page: Page, user: string): Promise<void> {
  if (!/\/console\/login/.test(page.url())) await page.goto(`${control}/console/login`);
  await page.getByRole("button", { name: user, exact: true }).click();
  await page.waitForURL((u) => !u.pathname.startsWith("/console/login"));
}

/** The page's main landmark as text (server-rendered: complete once navigation has loaded). */
async function mainText(page: Page): Promise<string> {
  const main = page.locator("main").first();
  await main.waitFor();
  return main.innerText();
}

/** Asks for a decision as alice's agent would. */
const decide = (body: Record<string, unknown>): Promise<Decision> => decideAt(agent, body);

/** The axe check: no serious or critical violation on this page. */
async function expectAccessible(page: Page): Promise<void> {
  expect(seriousViolations(await runAxe(page))).toEqual([]);
}

beforeAll(async () => {
  slack = await startWebhookReceiver();
  idp = await startTestOidc({
    users: { maria: ["support_manager"], alice: ["support_agent"], olga: ["admin"] },
  });
  tg = await startTestToolgate({
    TOOLGATE_APPROVALS_NOTIFY_SLACK_WEBHOOK_URL: slack.url,
    TOOLGATE_CONSOLE_OIDC_ISSUER: idp.issuer,
  });
  agent = tg.agentServer.url;
  control = (tg.controlServer?.url ?? "").replace(/\/$/, "");
  expect(control).not.toBe("");
  await idp.allowRedirect(`${control}/console/auth/callback`);
  browser = await launchBrowser();
}, 900_000); // scripts/chromium.sh may install chromium first (minutes on a slow mirror)

afterAll(async () => {
  for (const p of people) await p.context.close().catch(() => undefined);
  await browser?.close().catch(() => undefined);
  await tg?.stop();
  await slack?.close();
  await idp?.stop();
});

test("alice's agent asks for a refund of 120: needs_approval; it submits the access request with a justification", async () => {
  req = refund(120);
  const d = await decide(req);
  expect(d.outcome).toBe("needs_approval");
  const evaluationId = d.access_request?.evaluation_id ?? "";
  expect(evaluationId).not.toBe("");
  const sub = await postJson(
    agent,
    "/access/v1/requests",
    { ...req, denial: { evaluation_id: evaluationId }, justification: JUSTIFICATION },
    { "idempotency-key": "console-browser-1" },
  );
  expect(sub.status).toBe(201);
  const view = sub.json as TaskView;
  expect(view.task.status).toBe("pending");
  taskId = view.task.id;
  expect(taskId).toMatch(/^[A-Za-z0-9_-]+$/);

  // another person's request waits too (the inbox is not a list of one)
  const sams = refund(75, "sam");
  const d2 = await decide(sams);
  expect(d2.outcome).toBe("needs_approval");
  const sub2 = await postJson(agent, "/access/v1/requests", {
    ...sams,
    denial: { evaluation_id: d2.access_request?.evaluation_id ?? "" },
    justification:
      "Goodwill credit for a delayed shipment, approved by the team lead in ticket 881",
  });
  expect(sub2.status).toBe(201);
  samsId = (sub2.json as TaskView).task.id;
});

test("a Slack message arrives; its link asks for a login, then opens the request page", async () => {
  const msg = await slack.waitFor((m) => m.text.includes(taskId), 60_000);
  expect(Array.isArray((msg.json as { blocks?: unknown }).blocks)).toBe(true);
  // the tool, the requester, the amount, the policy's words and the agent's, in the message itself
  for (const words of ["refunds.issue", "alice", "120", "needs an approval", JUSTIFICATION]) {
    expect(msg.text).toContain(words);
  }
  const link = linksIn(msg).find((u) => u.endsWith(`/console/requests/${taskId}`));
  expect(link).toBeDefined();
  const page = await person();
  await page.goto(link ?? "");
  // not logged in: the console asks for a login first
  expect(new URL(page.url()).pathname).toBe("/console/login");
  await expectAccessible(page);
  await login(page, "maria");
  // back to the request (or, if the console lands on the inbox, the link works now)
  if (new URL(page.url()).pathname !== `/console/requests/${taskId}`) await page.goto(link ?? "");
  expect(new URL(page.url()).pathname).toBe(`/console/requests/${taskId}`);
  expect(await mainText(page)).toContain("refunds.issue");
  expect(await mainText(page)).toContain(JUSTIFICATION);
});

describe("maria", () => {
  let page: Page;
  beforeAll(async () => {
    page = await person();
    await page.goto(`${control}/console/`);
    expect(new URL(page.url()).pathname).toBe("/console/login");
    await login(page, "maria");
  });

  test("sees alice's refund of 120 pending in her inbox: the reason in words and the agent's justification", async () => {
    await page.goto(`${control}/console/`);
    const row = page.locator(`[data-request-id="${taskId}"]`);
    await row.waitFor();
    const text = await row.innerText();
    expect(text).toContain("refunds.issue");
    expect(text).toContain("120");
    expect(text).toContain("alice");
    expect(text).toContain(JUSTIFICATION);
    // the policy's reason in words, not only its code
    expect(text).toMatch(/needs an approval|approval/i);
    expect(text).toMatch(/amount|50/);
    await expectAccessible(page);
    await docScreenshot(page, "console-inbox.png");
  });

  test("opens it and approves with a comment", async () => {
    await page.locator(`[data-request-id="${taskId}"]`).getByRole("link").first().click();
    await page.waitForURL((u) => u.pathname === `/console/requests/${taskId}`);
    expect(await mainText(page)).toContain(JUSTIFICATION);
    expect(await mainText(page)).toContain("120");
    await expectAccessible(page);
    await page.getByLabel("Comment").fill(COMMENT);
    await page.getByRole("button", { name: "Approve", exact: true }).click();
    await page.waitForURL((u) => u.pathname === `/console/requests/${taskId}`);
    expect(await mainText(page)).toMatch(/approved/i);
    expect(await mainText(page)).toContain(COMMENT);
    expect(await mainText(page)).toContain("maria");
    expect(await page.getByRole("button", { name: "Approve", exact: true }).count()).toBe(0);
    await expectAccessible(page);
    mariasPage = page;
  });

  test("with JavaScript off, she denies sam's request with a comment (the form alone does it)", async () => {
    const noJs = await person({ javaScript: false });
    await noJs.goto(`${control}/console/`);
    await devLogin(noJs, "maria");
    await noJs.goto(`${control}/console/requests/${samsId}`);
    await noJs.getByLabel("Comment").fill("Goodwill credits go through billing, not refunds");
    await noJs.getByRole("button", { name: "Deny", exact: true }).click();
    await noJs.waitForURL((u) => u.pathname === `/console/requests/${samsId}`);
    expect(await mainText(noJs)).toMatch(/denied/i);
    expect(await mainText(noJs)).toContain("Goodwill credits go through billing, not refunds");
    const st = await http(agent, "GET", `/access/v1/requests/${samsId}`);
    expect((st.json as TaskView).task.status).toBe("denied");
  });

  test("the inbox fits a phone (390×844) without sideways scrolling", async () => {
    const phone = await person({ viewport: { width: 390, height: 844 }, phone: true });
    await phone.goto(`${control}/console/`);
    await devLogin(phone, "maria"); // the development login, in the same browser
    await phone.goto(`${control}/console/`);
    await phone.locator(`[data-request-id="${taskId}"]`).first().waitFor();
    const { scrollWidth, clientWidth } = await scrollsSideways(phone);
    expect(clientWidth).toBe(390); // a viewport meta tag: laid out for the phone, not zoomed out
    expect(scrollWidth).toBeLessThanOrEqual(clientWidth);
    await expectAccessible(phone);
  });
});

test("the agent's re-ask with the approval is allowed", async () => {
  const st = await http(agent, "GET", `/access/v1/requests/${taskId}`);
  expect(st.status).toBe(200);
  const view = st.json as TaskView;
  expect(view.task.status).toBe("approved");
  expect(view.result?.mode).toBe("reevaluate");
  const again = {
    ...req,
    context: { ...(req.context as object), approval: view.result?.approval },
  };
  const d = await decide(again);
  expect(d.outcome).toBe("allow");

  // maria's request page now tells what became of her approval
  const page = mariasPage;
  if (page === undefined) throw new Error("maria's page is not open (an earlier step failed)");
  await page.reload();
  expect(await mainText(page)).toMatch(/\bused\b/i);
  await docScreenshot(page, "console-request.png", { maxHeight: 1600 });
});

test("alice sees her request but cannot approve it: no Approve button, and why", async () => {
  const page = await person();
  await page.goto(`${control}/console/`);
  await login(page, "alice");
  await page.goto(`${control}/console/`);
  await page.locator(`[data-request-id="${taskId}"]`).first().waitFor();
  await page.goto(`${control}/console/requests/${taskId}`);
  expect(await mainText(page)).toContain("refunds.issue");
  expect(await page.getByRole("button", { name: "Approve", exact: true }).count()).toBe(0);
  expect(await page.getByRole("button", { name: "Deny", exact: true }).count()).toBe(0);

  // a request of her own still pending: read-only, with the reason why not
  const second = refund(90);
  const d = await decide(second);
  expect(d.outcome).toBe("needs_approval");
  const sub = await postJson(agent, "/access/v1/requests", {
    ...second,
    denial: { evaluation_id: d.access_request?.evaluation_id ?? "" },
    justification: "Late delivery compensation agreed with the customer",
  });
  expect(sub.status).toBe(201);
  const pendingId = (sub.json as TaskView).task.id;
  await page.goto(`${control}/console/requests/${pendingId}`);
  expect(await mainText(page)).toMatch(/initiator/i);
  expect(await page.getByRole("button", { name: "Approve", exact: true }).count()).toBe(0);
  await expectAccessible(page);
});

test("olga sets a kill switch on refunds.issue from the containment panel; the next decision is denied (tool_disabled)", async () => {
  const page = await person();
  await page.goto(`${control}/console/`);
  await login(page, "olga");
  await page.goto(`${control}/console/containment`);
  expect(new URL(page.url()).pathname).toBe("/console/containment");
  await expectAccessible(page);
  await page.getByLabel("Tool", { exact: true }).fill("refunds.issue");
  await page.getByLabel("Reason", { exact: true }).fill(SWITCH_REASON);
  await page.getByRole("button", { name: "Set kill switch" }).click();
  await page.waitForURL((u) => u.pathname === "/console/containment");
  expect(await mainText(page)).toContain(SWITCH_REASON);
  expect(await mainText(page)).toContain("olga");
  await expectAccessible(page);
  await docScreenshot(page, "console-panel.png", { maxHeight: 1500 });

  const d = await decide(refund(20));
  expect(d.outcome).toBe("deny");
  expect(d.reasons.map((r) => r.code)).toContain("tool_disabled");
});
