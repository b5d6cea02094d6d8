/**
 * Plan approvals (#19) in the approver console, in a real browser (Debian's
 * chromium via playwright-core) against a real toolgate on loopback: alice's
 * agent submits a plan (refunds of 51..200 EUR to cust_1, three at most);
 * maria signs in (the development login), finds it in her inbox, opens it,
 * reads its envelope — tool, bounds, resource, uses, time to live — and
 * approves it with the page's own form (CSRF as every form); the agent's
 * calls inside the envelope are then allowed, each counted, and the page
 * shows the uses. sam (a support agent, not eligible) sees no Approve
 * button, and why. axe-core finds no serious or critical violation.
 */
import type { Browser, Page } from "playwright-core";
import type { Toolgate } from "../../src/app";
import {
  launchBrowser,
  newPerson,
  runAxe,
  seriousViolations,
  type Person,
} from "../helpers/browser";
import { http, postJson, refRequest, startTestToolgate } from "../helpers/toolgate";
import { PLAN_JOB, refundPlan } from "../helpers/plans";

jest.setTimeout(180_000);

const JUSTIFICATION = "Three damaged parcels for this customer";

let tg: Toolgate;
let agent: string;
let control: string;
let browser: Browser;
const people: Person[] = [];
let planId = "";

async function person(): Promise<Page> {
  const p = await newPerson(browser);
  people.push(p);
  return p.page;
}

async function devLogin(page: Page, user: string): Promise<void> {
  await page.goto(`${control}/console/login`);
  await page.getByRole("button", { name: user, exact: true }).click();
  await page.waitForURL((u) => !u.pathname.startsWith("/console/login"));
}

async function mainText(page: Page): Promise<string> {
  const main = page.locator("main").first();
  await main.waitFor();
  return main.innerText();
}

const refund = (amount: number) =>
  refRequest({ tool: "refunds.issue", args: { amount, currency: "EUR" } });
const withPlan = (req: Record<string, unknown>) => ({
  ...req,
  context: { ...(req.context as object), plan: { id: planId } },
});

beforeAll(async () => {
  tg = await startTestToolgate();
  agent = tg.agentServer.url;
  control = (tg.controlServer?.url ?? "").replace(/\/$/, "");
  browser = await launchBrowser();
  const res = await postJson(
    agent,
    "/access/v1/plans",
    refundPlan({ justification: JUSTIFICATION }),
  );
  expect(res.status).toBe(201);
  planId = (res.json as { task: { id: string } }).task.id;
}, 900_000); // scripts/chromium.sh may install chromium first

afterAll(async () => {
  for (const p of people) await p.context.close().catch(() => undefined);
  await browser?.close().catch(() => undefined);
  await tg?.stop();
});

test("sam (not eligible) sees the plan without an Approve button, and why", async () => {
  const page = await person();
  await devLogin(page, "sam");
  await page.goto(`${control}/console/requests/${planId}`);
  const text = await mainText(page);
  expect(text).toContain("What the agent plans to do");
  expect(text).toMatch(
    /cannot decide this request: the approver holds none of the roles support_manager/,
  );
  expect(await page.getByRole("button", { name: "Approve", exact: true }).count()).toBe(0);
});

test("maria finds the plan in her inbox, reads its envelope and approves it; calls inside are allowed and counted", async () => {
  const page = await person();
  await devLogin(page, "maria");
  await page.goto(`${control}/console/`);
  const row = page.locator(`[data-request-id="${planId}"]`);
  await row.waitFor();
  const rowText = await row.innerText();
  expect(rowText).toContain("plan: refunds.issue");
  expect(rowText).toContain(JUSTIFICATION);
  await row.getByRole("link").first().click();
  await page.waitForURL((u) => u.pathname === `/console/requests/${planId}`);

  // the envelope, in words: tool, bounds, exact value, resource, uses, time to live
  const envelope = page.locator("tr.envelope").first();
  const text = await envelope.innerText();
  expect(text).toContain("refunds.issue");
  expect(text).toContain("51 ≤ amount ≤ 200");
  expect(text).toMatch(/currency: exactly\s+EUR/);
  expect(text).toContain("customer/cust_1");
  expect(text).toContain("no other arguments");
  expect(text).toContain("0 of 3");
  expect(text).toMatch(/10 min/);
  expect(seriousViolations(await runAxe(page))).toEqual([]);

  // the form carries the CSRF token, as every console form
  expect(await page.locator('form input[name="csrf"]').count()).toBeGreaterThan(0);
  await page.getByLabel("Comment").fill("Checked the three parcels");
  await page.getByRole("button", { name: "Approve", exact: true }).click();
  await page.waitForURL((u) => u.pathname === `/console/requests/${planId}`);
  expect(await mainText(page)).toMatch(/approved/i);
  expect(await mainText(page)).toContain("maria");
  expect(await page.getByRole("button", { name: "Approve", exact: true }).count()).toBe(0);

  // the agent: calls inside the envelope are allowed, each with its grant, until used up
  for (const amount of [60, 120, 200]) {
    const d = await postJson(agent, "/v1/decisions", withPlan(refund(amount)));
    expect((d.json as { outcome: string; grant?: string }).outcome).toBe("allow");
  }
  const fourth = await postJson(agent, "/v1/decisions", withPlan(refund(70)));
  expect((fourth.json as { outcome: string }).outcome).toBe("needs_approval");
  const st = await http(agent, "GET", `/access/v1/plans/${planId}`);
  expect(st.json).toMatchObject({ task: { status: "approved" } });

  await page.reload();
  expect(await page.locator("tr.envelope").first().innerText()).toContain("3 of 3");
});

test("a forged approve without the session's CSRF token changes nothing", async () => {
  const other = await postJson(agent, "/access/v1/plans", {
    subject: { type: "user", id: "alice" },
    resource: { type: "customer", id: "cust_1" },
    context: { job: PLAN_JOB },
    plan: { calls: [{ tool: "refunds.issue", arguments: { amount: 99 }, max_uses: 1 }] },
  });
  expect(other.status).toBe(201);
  const id = (other.json as { task: { id: string } }).task.id;
  const page = await person();
  await devLogin(page, "maria");
  const res = await page.request.post(`${control}/console/requests/${id}/approve`, {
    form: { csrf: "forged", comment: "" },
  });
  expect(res.status()).toBeGreaterThanOrEqual(400);
  const st = await http(agent, "GET", `/access/v1/plans/${id}`);
  expect(st.json).toMatchObject({ task: { status: "pending" } });
});
