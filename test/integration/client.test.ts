/**
 * Issue #17 — toolgate/client against a real sidecar (real HTTP on both
 * ports, the embedded reference policy, the real SQLite approvals store, real
 * ES256 tokens). The approver acts on the control port as a person would.
 * Only the unknown-obligation path uses a stand-in server: the real sidecar
 * turns an obligation it does not know into a deny, so no real answer can
 * carry one.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Toolgate } from "../../src/app";
import {
  createClient,
  ToolDenied,
  ToolgateError,
  type AccessRequestTask,
  type CallDescription,
  type ToolgateClient,
} from "../../src/client";
import { freePort } from "../helpers/net";
import { bearer, token } from "../helpers/tokens";
import { postJson, refRequest, startTestToolgate } from "../helpers/toolgate";

let tg: Toolgate;
let agent: string;
let control: string;
let client: ToolgateClient;

beforeAll(async () => {
  tg = await startTestToolgate({ TOOLGATE_CONTROL_PORT: "0" });
  agent = tg.agentServer.url;
  control = tg.controlServer?.url ?? "";
  client = createClient({ url: agent });
});
afterAll(async () => {
  await tg.stop();
});

const alice = (customer = "cust_1"): CallDescription => ({
  subject: { type: "user", id: "alice" },
  resource: { type: "customer", id: customer },
  context: { job: { id: "job_1", purpose: "support_triage", customer_id: "cust_1" } },
});
const maria = async () => bearer(await token("maria", { roles: ["support_manager"] }));
const approve = async (id: string) =>
  (await postJson(control, `/v1/approvals/${id}/approve`, { comment: "ok" }, await maria())).status;
const denyTask = async (id: string) =>
  (await postJson(control, `/v1/approvals/${id}/deny`, { comment: "no" }, await maria())).status;

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("expected a rejection");
}

describe("decide", () => {
  test("allow carries a grant; deny carries every reason code", async () => {
    const ok = await client.decide(refRequest({ tool: "tickets.read" }) as never);
    expect(ok.outcome).toBe("allow");
    expect(ok.grant).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    const no = await client.decide(refRequest({ tool: "billing.update" }) as never);
    expect(no.outcome).toBe("deny");
    expect(no.reasons.map((r) => r.code)).toEqual(
      expect.arrayContaining(["not_granted", "role_not_permitted"]),
    );
  });

  test("a malformed request is a ToolgateError with the sidecar's code and status", async () => {
    const e = await rejection(
      client.decide({ subject: { type: "user" }, action: { name: "x" } } as never),
    );
    expect(e).toBeInstanceOf(ToolgateError);
    expect((e as ToolgateError).status).toBe(400);
    expect((e as ToolgateError).code).toBe("invalid_request");
  });
});

describe("guard", () => {
  test("allow: runs once with the grant, reports ok (a second report of that decision conflicts)", async () => {
    const calls: Array<{ amount: number; grant: string | undefined }> = [];
    const refund = client.guard(
      "refunds.issue",
      (args: { amount: number }, call) => {
        calls.push({ amount: args.amount, grant: call.grant });
        return Promise.resolve({ refunded: args.amount, decision: call.decision.decision_id });
      },
      () => alice(),
      { report: (r) => ({ changed: [{ resource: { type: "refund", id: `r_${r.refunded}` } }] }) },
    );
    const out = await refund({ amount: 20 });
    expect(calls).toEqual([{ amount: 20, grant: expect.stringMatching(/\./) as unknown }]);
    expect(out.refunded).toBe(20);
    const again = await rejection(client.reportAction({ decision_id: out.decision, status: "ok" }));
    expect(again).toBeInstanceOf(ToolgateError);
    expect((again as ToolgateError).status).toBe(409);
    expect((again as ToolgateError).code).toBe("action_already_reported");
  });

  test("a failing tool: the error is reported (status error) and rethrown as is", async () => {
    let decisionId = "";
    const boom = new RangeError("backend said no");
    const read = client.guard(
      "tickets.read",
      (_a: { id: string }, call) => {
        decisionId = call.decision.decision_id;
        return Promise.reject(boom);
      },
      () => alice(),
    );
    expect(await rejection(read({ id: "t1" }))).toBe(boom);
    expect(decisionId).not.toBe("");
    const again = await rejection(
      client.reportAction({ decision_id: decisionId, status: "error" }),
    );
    expect((again as ToolgateError).code).toBe("action_already_reported");
  });

  test("deny: ToolDenied with the reason codes; the tool never runs", async () => {
    let ran = 0;
    const update = client.guard(
      "billing.update",
      () => {
        ran++;
        return Promise.resolve("done");
      },
      () => alice(),
    );
    const e = await rejection(update({ plan: "pro" }));
    expect(e).toBeInstanceOf(ToolDenied);
    const d = e as ToolDenied;
    expect(d.outcome).toBe("deny");
    expect(d.reasons.map((r) => r.code)).toEqual(
      expect.arrayContaining(["not_granted", "role_not_permitted"]),
    );
    expect(d.code).toBe(d.reasons[0]?.code);
    expect(d.decision?.outcome).toBe("deny");
    expect(ran).toBe(0);
  });

  test("another customer than the job's: ToolDenied, not run", async () => {
    let ran = 0;
    const read = client.guard(
      "tickets.read",
      () => Promise.resolve(ran++),
      () => alice("cust_2"),
    );
    const e = (await rejection(read({}))) as ToolDenied;
    expect(e).toBeInstanceOf(ToolDenied);
    expect(e.outcome).toBe("deny");
    expect(ran).toBe(0);
  });

  test("the redact obligation: the listed fields are removed from the result", async () => {
    const summary = client.guard(
      "accounts.summary.read",
      (_a: object, call) => {
        expect(call.decision.obligations.map((o) => o.type)).toEqual(["redact"]);
        return Promise.resolve({
          name: "ACME",
          payment: { card_number: "4111111111111111", card_cvc: "123", brand: "visa" },
        });
      },
      () => alice(),
    );
    const raw = await summary({});
    expect(raw).toEqual({ name: "ACME", payment: { brand: "visa" } });
  });

  test("needs_approval (replies.send is supervised): submit, wait, approve, re-ask, run once with a grant", async () => {
    const seen: string[] = [];
    let approved = false;
    const runs: Array<string | undefined> = [];
    const send = client.guard(
      "replies.send",
      (_a: { text: string }, call) => {
        runs.push(call.grant);
        return Promise.resolve(call.decision);
      },
      (a) => ({ ...alice(), justification: `customer asked: ${a.text}` }),
      {
        minDelayMs: 20,
        maxDelayMs: 100,
        onProgress: (t: AccessRequestTask) => {
          seen.push(t.task.status);
          if (!approved && t.task.status === "pending") {
            approved = true;
            void approve(t.task.id).then((s) => expect(s).toBe(200));
          }
        },
      },
    );
    const d = await send({ text: "please resend the invoice" });
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatch(/\./);
    expect(d.outcome).toBe("allow");
    expect(d.reasons.map((r) => r.code)).toContain("approved");
    expect(seen[0]).toBe("pending");
    expect(seen[seen.length - 1]).toBe("approved");
  });

  test('approval: "throw" submits the request and throws approval_required with the pending task', async () => {
    let ran = 0;
    const refund = client.guard(
      "refunds.issue",
      () => Promise.resolve(ran++),
      () => alice(),
      { approval: "throw" },
    );
    const e = (await rejection(refund({ amount: 150 }))) as ToolDenied;
    expect(e).toBeInstanceOf(ToolDenied);
    expect(e.code).toBe("approval_required");
    expect(e.outcome).toBe("needs_approval");
    expect(e.task?.task.status).toBe("pending");
    expect(e.task?.task.id).toMatch(/^apr_/);
    expect(ran).toBe(0);
    await client.cancelAccessRequest(e.task?.task.id ?? "");
  });

  test("the approver denies: ToolDenied approval_denied, not run", async () => {
    let ran = 0;
    let denied = false;
    const refund = client.guard(
      "refunds.issue",
      () => Promise.resolve(ran++),
      () => alice(),
      {
        minDelayMs: 20,
        maxDelayMs: 100,
        onProgress: (t) => {
          if (!denied && t.task.status === "pending") {
            denied = true;
            void denyTask(t.task.id);
          }
        },
      },
    );
    const e = (await rejection(refund({ amount: 300 }))) as ToolDenied;
    expect(e).toBeInstanceOf(ToolDenied);
    expect(e.code).toBe("approval_denied");
    expect(e.task?.task.status).toBe("denied");
    expect(ran).toBe(0);
  });

  test("abort while waiting: rejects with AbortError and the task is cancelled", async () => {
    const ctl = new AbortController();
    let taskId = "";
    let ran = 0;
    const refund = client.guard(
      "refunds.issue",
      () => Promise.resolve(ran++),
      () => alice(),
      {
        minDelayMs: 20,
        maxDelayMs: 50,
        onProgress: (t) => {
          taskId = t.task.id;
          setTimeout(() => ctl.abort(), 100);
        },
      },
    );
    const e = await rejection(refund({ amount: 250 }, { signal: ctl.signal }));
    expect((e as Error).name).toBe("AbortError");
    expect(taskId).toMatch(/^apr_/);
    expect((await client.getAccessRequest(taskId)).task.status).toBe("cancelled");
    expect(ran).toBe(0);
  });

  test("waitForApproval gives up at expiresAt with approval_expired", async () => {
    const req = refRequest({ tool: "refunds.issue", args: { amount: 90 } }) as never;
    const d = await client.decide(req);
    const task = await client.requestAccess(req, d.access_request?.evaluation_id ?? "", {
      idempotencyKey: `k-${Date.now()}`,
    });
    const t0 = Date.now();
    const e = (await rejection(
      client.waitForApproval(task.task.id, { expiresAt: t0 + 150, minDelayMs: 20 }),
    )) as ToolDenied;
    expect(e).toBeInstanceOf(ToolDenied);
    expect(e.code).toBe("approval_expired");
    expect(Date.now() - t0).toBeLessThan(2000);
    await client.cancelAccessRequest(task.task.id);
  });
});

describe("guard: the security review's attacks", () => {
  const RECORD = {
    name: "ACME",
    payment: { card_number: "4111111111111111", card_cvc: "123", brand: "visa" },
  };
  /** accounts.summary.read carries a redact obligation (payment.card_number, payment.card_cvc). */
  const summaryReturning = (result: unknown, seen: string[] = []) =>
    client.guard(
      "accounts.summary.read",
      (_a: object, call) => {
        seen.push(call.decision.decision_id);
        return Promise.resolve(result);
      },
      () => alice(),
    );

  test("redact on a JSON string result: parsed, redacted, serialised again", async () => {
    const out = await summaryReturning(JSON.stringify(RECORD))({});
    expect(out).toBe(JSON.stringify({ name: "ACME", payment: { brand: "visa" } }));
  });

  test.each([
    ["text around JSON", `Account summary:\n${JSON.stringify(RECORD)}`],
    ["a Map", new Map([["payment", RECORD.payment]])],
    ["a Buffer of JSON", Buffer.from(JSON.stringify(RECORD))],
    [
      "a class instance",
      new (class Account {
        payment = RECORD.payment;
      })(),
    ],
    ["a record nesting a Map", { name: "ACME", extra: new Map([["card_number", "4111"]]) }],
  ])(
    "redact on %s: withheld (ToolDenied redaction_not_applicable), never returned as is; the run is reported",
    async (_what, result) => {
      const seen: string[] = [];
      const e = (await rejection(summaryReturning(result, seen)({}))) as ToolDenied;
      expect(e).toBeInstanceOf(ToolDenied);
      expect(e.code).toBe("redaction_not_applicable");
      expect(e.message).toMatch(/the tool ran \(reported\), its result is withheld/);
      expect(JSON.stringify(e)).not.toContain("4111");
      expect(seen).toHaveLength(1);
      const again = await rejection(
        client.reportAction({ decision_id: seen[0] as string, status: "ok" }),
      );
      expect((again as ToolgateError).code).toBe("action_already_reported");
    },
  );

  test("redact on a number: nothing to remove, returned", async () => {
    expect(await summaryReturning(42)({})).toBe(42);
  });

  test("the arguments are copied and frozen before deciding: changing them during an approval wait changes nothing", async () => {
    const ran: Array<{ amount: number; frozen: boolean }> = [];
    let approved = false;
    const args = { amount: 300, currency: "EUR" };
    const refund = client.guard(
      "refunds.issue",
      (a: { amount: number; currency: string }) => {
        ran.push({ amount: a.amount, frozen: Object.isFrozen(a) });
        return Promise.resolve("refunded");
      },
      () => alice(),
      {
        minDelayMs: 20,
        maxDelayMs: 100,
        onProgress: (t) => {
          if (!approved && t.task.status === "pending") {
            approved = true;
            // the approver approves 300 EUR; the caller then raises the amount it passed
            void approve(t.task.id);
            args.amount = 30_000;
          }
        },
      },
    );
    expect(await refund(args)).toBe("refunded");
    expect(ran).toEqual([{ amount: 300, frozen: true }]);
  });

  test("describe's arguments differ from args: those are decided, and those run", async () => {
    const ran: unknown[] = [];
    const read = client.guard(
      "tickets.read",
      (a: Record<string, unknown>) => {
        ran.push(a);
        return Promise.resolve("ok");
      },
      () => ({ ...alice(), arguments: { customer_id: "cust_1" } }),
    );
    await read({ customer_id: "cust_1", hidden: "what the policy never saw" });
    expect(ran).toEqual([{ customer_id: "cust_1" }]);
  });

  test("arguments that cannot be copied: a TypeError before anything is decided", async () => {
    let ran = 0;
    const read = client.guard(
      "tickets.read",
      () => Promise.resolve(ran++),
      () => alice(),
    );
    const e = await rejection(read({ cb: () => 1 }));
    expect(e).toBeInstanceOf(TypeError);
    expect((e as Error).message).toMatch(/cannot be copied/);
    expect(ran).toBe(0);
  });
});

describe("searchActions", () => {
  test("lists the tools alice may use on her job's customer, marking those that need an approval", async () => {
    const res = await client.searchActions({
      subject: { type: "user", id: "alice" },
      resource: { type: "customer", id: "cust_1" },
      context: { job: { id: "job_1", purpose: "support_triage", customer_id: "cust_1" } },
    });
    const names = res.results.map((r) => r.name);
    expect(names).toContain("tickets.read");
    expect(names).not.toContain("billing.update");
    const send = res.results.find((r) => r.name === "replies.send");
    expect(send?.properties?.needs_approval).toBe(true);
    expect(send?.properties?.approval?.approver_roles).toContain("support_manager");
    expect(res.results.find((r) => r.name === "tickets.read")?.properties).toBeUndefined();
    expect(names).toEqual([...names].sort());
  });
});

describe("transport", () => {
  test("nothing listening: ToolgateError network_error, status 0", async () => {
    const c = createClient({ url: `http://127.0.0.1:${await freePort()}` });
    const e = (await rejection(
      c.decide(refRequest({ tool: "tickets.read" }) as never),
    )) as ToolgateError;
    expect(e).toBeInstanceOf(ToolgateError);
    expect(e.code).toBe("network_error");
    expect(e.status).toBe(0);
  });

  describe("a server that never answers", () => {
    let srv: Server;
    let url: string;
    beforeAll(async () => {
      srv = createServer(() => {
        /* holds every request */
      });
      await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
      url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    });

    test("timeoutMs: ToolgateError timeout", async () => {
      const c = createClient({ url, timeoutMs: 150 });
      const t0 = Date.now();
      const e = (await rejection(
        c.decide(refRequest({ tool: "tickets.read" }) as never),
      )) as ToolgateError;
      expect(e).toBeInstanceOf(ToolgateError);
      expect(e.code).toBe("timeout");
      expect(Date.now() - t0).toBeLessThan(2000);
    });

    test("the caller's abort wins over the timeout: AbortError", async () => {
      const c = createClient({ url, timeoutMs: 5000 });
      const e = await rejection(
        c.decide(refRequest({ tool: "tickets.read" }) as never, {
          signal: AbortSignal.timeout(100),
        }),
      );
      expect(e).not.toBeInstanceOf(ToolgateError);
      expect((e as Error).name).toBe("TimeoutError");
    });
  });
});

describe("identity: the token is sent as Authorization: Bearer", () => {
  let jwtTg: Toolgate;
  beforeAll(async () => {
    jwtTg = await startTestToolgate({ TOOLGATE_IDENTITY_MODE: "jwt" });
  });
  afterAll(async () => {
    await jwtTg.stop();
  });

  test("with alice's token (a function, asked per call) → decided; without → 401 unauthenticated", async () => {
    let asked = 0;
    const withToken = createClient({
      url: jwtTg.agentServer.url,
      token: async () => {
        asked++;
        return token("alice");
      },
    });
    const d = await withToken.decide(refRequest({ tool: "tickets.read" }) as never);
    expect(d.outcome).toBe("allow");
    expect(asked).toBe(1);
    const anon = createClient({ url: jwtTg.agentServer.url });
    const e = (await rejection(
      anon.decide(refRequest({ tool: "tickets.read" }) as never),
    )) as ToolgateError;
    expect(e.status).toBe(401);
    expect(e.code).toBe("unauthenticated");
  });
});

describe("an obligation the client does not know (stand-in server: the real sidecar denies such decisions)", () => {
  let srv: Server;
  let url: string;
  const reports: unknown[] = [];
  beforeAll(async () => {
    srv = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        if (req.url === "/v1/actions") reports.push(JSON.parse(body));
        res.setHeader("content-type", "application/json");
        res.end(
          JSON.stringify({
            decision_id: "d-1",
            outcome: "allow",
            reasons: [],
            obligations: [{ id: "wm", type: "watermark", properties: {} }],
            policy: { bundle: "b", revision: "r" },
            evaluated_at: new Date().toISOString(),
          }),
        );
      });
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((r) => srv.close(r));
  });

  test("ToolDenied unknown_obligation; the tool is not called, nothing is reported", async () => {
    let ran = 0;
    const c = createClient({ url });
    const read = c.guard(
      "tickets.read",
      () => Promise.resolve(ran++),
      () => alice(),
    );
    const e = (await rejection(read({}))) as ToolDenied;
    expect(e).toBeInstanceOf(ToolDenied);
    expect(e.code).toBe("unknown_obligation");
    expect(e.message).toContain("watermark");
    expect(ran).toBe(0);
    expect(reports).toEqual([]);
  });
});
