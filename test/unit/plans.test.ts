/**
 * The pure rules of plan approvals (src/approvals/plans.ts): envelopes
 * checked and kept without argument values in clear, calls matched against
 * them, representative arguments for the policy preview, requirements
 * merged, approvers' eligibility, the binding hash.
 */
import {
  envelopesOf,
  mergeRequirements,
  outside,
  planBindingHash,
  planIneligible,
  planRequirement,
  representativeArguments,
  type PlanRequest,
} from "../../src/approvals/plans";
import type { DecisionRequest } from "../../src/model";

const base = (calls: unknown[], extra: Record<string, unknown> = {}): PlanRequest =>
  ({
    subject: { type: "user", id: "alice" },
    resource: { type: "customer", id: "cust_1" },
    context: { job: { id: "job_1" } },
    plan: { calls },
    ...extra,
  }) as PlanRequest;

const call = (args: unknown, over: Partial<DecisionRequest> = {}): DecisionRequest => ({
  subject: { type: "user", id: "alice" },
  action: { name: "refunds.issue", properties: { arguments: args } },
  resource: { type: "customer", id: "cust_1" },
  context: { job: { id: "job_1" } },
  ...over,
});

const [env] = envelopesOf(
  base([
    {
      tool: "refunds.issue",
      arguments: {
        amount: { min: 51, max: 200 },
        currency: { enum: ["EUR", "USD"] },
        meta: { a: [1, { b: 2 }] },
      },
      max_uses: 3,
    },
  ]),
);

describe("an envelope as kept", () => {
  test("exact values and enum members only as hashes; bounds in clear", () => {
    const text = JSON.stringify(env);
    expect(text).not.toContain("EUR");
    expect(text).not.toContain('"b"');
    expect(env?.arguments.amount).toEqual({ kind: "range", min: 51, max: 200 });
    expect(env?.resource).toEqual({ type: "customer", id: "cust_1" });
    expect(env?.other_arguments).toBe("forbid");
  });

  test.each([
    ["min above max", { amount: { min: 9, max: 1 } }],
    ["a bound that is no number", { amount: { max: "200" } }],
    ["an empty enum", { currency: { enum: [] } }],
    ["an enum that is no array", { currency: { enum: "EUR" } }],
    ["an exact value too long", { note: "x".repeat(5000) }],
    ["33 arguments", Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`a${i}`, i]))],
  ])("refused: %s", (_what, args) => {
    let code: unknown;
    try {
      envelopesOf(base([{ tool: "t", arguments: args, max_uses: 1 }]));
    } catch (e) {
      code = (e as { code?: unknown }).code;
    }
    expect(code).toBe("invalid_request");
  });

  test("a resource is required, the envelope's or the plan's", () => {
    expect(() => envelopesOf(base([{ tool: "t", max_uses: 1 }], { resource: undefined }))).toThrow(
      /names no resource/,
    );
    const [own] = envelopesOf(
      base([{ tool: "t", max_uses: 1, resource: { type: "account", id: "a1" } }], {
        resource: undefined,
      }),
    );
    expect(own?.resource).toEqual({ type: "account", id: "a1" });
  });
});

describe("a call inside the envelope", () => {
  const ok = { amount: 120, currency: "USD", meta: { a: [1, { b: 2 }] } };
  test("inside: within the bounds, an enum member, the exact value in any key order", () => {
    expect(outside(env!, call(ok))).toBeUndefined();
    expect(outside(env!, call({ ...ok, amount: 51 }))).toBeUndefined();
    expect(outside(env!, call({ ...ok, amount: 200 }))).toBeUndefined();
    expect(outside(env!, call({ currency: "EUR", meta: { a: [1.0, { b: 2 }] }, amount: 60 }))).toBe(
      undefined,
    );
    // the resource's other properties do not matter
    expect(
      outside(
        env!,
        call(ok, { resource: { type: "customer", id: "cust_1", properties: { x: 1 } } }),
      ),
    ).toBeUndefined();
  });

  test.each([
    ["above the bound", { ...ok, amount: 200.00000000000003 }, /above 200/],
    ["below the bound", { ...ok, amount: 50.99 }, /below 51/],
    ["-0", { ...ok, amount: -0 }, /below 51/],
    ["a numeric string", { ...ok, amount: "120" }, /not a finite number/],
    ["NaN", { ...ok, amount: NaN }, /not a finite number/],
    ["Infinity", { ...ok, amount: Infinity }, /not a finite number/],
    ["1e308", { ...ok, amount: 1e308 }, /above 200/],
    ["null", { ...ok, amount: null }, /not a finite number/],
    ["an object", { ...ok, amount: { value: 120 } }, /not a finite number/],
    ["another enum value", { ...ok, currency: "eur" }, /not one of/],
    ["an enum value as an array", { ...ok, currency: ["EUR"] }, /not one of/],
    ["another exact value", { ...ok, meta: { a: [1, { b: 3 }] } }, /not the planned value/],
    ["a missing argument", { amount: 120, currency: "EUR" }, /'meta' is missing/],
    ["an extra argument", { ...ok, note: "x" }, /'note' is not in the plan/],
  ])("outside: %s", (_what, args, why) => {
    expect(outside(env!, call(args))).toMatch(why);
  });

  test("outside: another tool, another resource, arguments that are no object", () => {
    expect(outside(env!, { ...call(ok), action: { name: "refunds.issue2" } })).toMatch(/tool/);
    expect(outside(env!, call(ok, { resource: { type: "customer", id: "cust_2" } }))).toMatch(
      /resource/,
    );
    expect(outside(env!, call([1, 2]))).toMatch(/not an object/);
  });

  test("other_arguments any lets other arguments through", () => {
    const [any] = envelopesOf(
      base([
        {
          tool: "refunds.issue",
          arguments: { amount: { max: 10 } },
          other_arguments: "any",
          max_uses: 1,
        },
      ]),
    );
    expect(outside(any!, call({ amount: 5, note: "x" }))).toBeUndefined();
  });
});

test("representative arguments: the max first, then each other value, at most 8", () => {
  expect(
    representativeArguments({
      tool: "t",
      max_uses: 1,
      arguments: { amount: { min: 51, max: 200 }, currency: { enum: ["EUR", "USD"] }, r: "x" },
    }),
  ).toEqual([
    { amount: 200, currency: "EUR", r: "x" },
    { amount: 51, currency: "EUR", r: "x" },
    { amount: 200, currency: "USD", r: "x" },
  ]);
  const many = representativeArguments({
    tool: "t",
    max_uses: 1,
    arguments: { c: { enum: Array.from({ length: 20 }, (_, i) => i) } },
  });
  expect(many).toHaveLength(8);
});

describe("requirements and eligibility", () => {
  const r = (roles: string[], ttl = 900, exclude: string[] = []) => ({
    approver_roles: roles,
    single_use: true,
    ttl_seconds: ttl,
    exclude,
  });
  test("an envelope's previews merge: roles intersect, the shortest ttl", () => {
    expect(mergeRequirements([r(["a", "b"], 900), r(["b", "c"], 300)])).toEqual(r(["b"], 300));
    expect(mergeRequirements([])).toBeNull();
  });
  test("the approver holds, for every envelope that needs one, one of its roles", () => {
    const plan = {
      initiator: "alice",
      agentId: "support-triage",
      requirement: planRequirement([r(["manager"]), null, r(["finance", "manager"], 600, ["bob"])]),
    };
    expect(plan.requirement.ttl_seconds).toBe(600);
    expect(
      planIneligible({ id: "maria", roles: ["manager"] }, plan, "support-triage"),
    ).toBeUndefined();
    expect(planIneligible({ id: "fay", roles: ["finance"] }, plan, "support-triage")).toMatch(
      /envelope 0/,
    );
    expect(planIneligible({ id: "alice", roles: ["manager"] }, plan, "support-triage")).toMatch(
      /initiator/,
    );
    expect(
      planIneligible({ id: "support-triage", roles: ["manager"] }, plan, "support-triage"),
    ).toMatch(/agent/);
    expect(planIneligible({ id: "bob", roles: ["manager"] }, plan, "support-triage")).toMatch(
      /excludes/,
    );
  });
});

test("the binding hash covers subject (not its act), agent, job and envelopes", () => {
  const envs = envelopesOf(base([{ tool: "t", max_uses: 2 }]));
  const h = (over: Record<string, unknown> = {}) =>
    planBindingHash({
      subject: { type: "user", id: "alice" },
      agent: "a",
      context: { job: { id: "job_1" } },
      envelopes: envs,
      ttlSeconds: 900,
      ...over,
    });
  expect(h()).toMatch(/^[A-Za-z0-9_-]{43}$/);
  expect(h({ subject: { type: "user", id: "alice", properties: { act: { sub: "x" } } } })).not.toBe(
    h(),
  ); // properties {} remain, as the profile's binding does
  expect(h({ subject: { type: "user", id: "alice", properties: { act: { sub: "x" } } } })).toBe(
    h({ subject: { type: "user", id: "alice", properties: { act: { sub: "y" } } } }),
  );
  expect(h({ agent: "b" })).not.toBe(h());
  expect(h({ context: { job: { id: "job_2" } } })).not.toBe(h());
  expect(h({ envelopes: envelopesOf(base([{ tool: "t", max_uses: 3 }])) })).not.toBe(h());
});
