/**
 * Issue #17 — the client's pure parts: the redact obligation applied to a
 * tool's result, the obligation check, and the signal plumbing on runtimes
 * without AbortSignal.any.
 */
import {
  applyRedactions,
  CLIENT_OBLIGATIONS,
  notRedactable,
  redactResult,
  unknownObligation,
} from "../../src/client";
import { anySignal, sleep } from "../../src/client/http";
import { KNOWN_OBLIGATIONS } from "../../src/decision/output";

const redact = (...fields: string[]) => [{ id: "r", type: "redact", properties: { fields } }];

describe("redactResult: fail closed", () => {
  const ob = redact("payment.card_number");
  test("without a redact obligation: anything as is", () => {
    const m = new Map([["card_number", "4111"]]);
    expect(redactResult(m, [])).toEqual({ value: m });
    expect(redactResult("card 4111", [{ id: "g", type: "grant_scope" }])).toEqual({
      value: "card 4111",
    });
  });
  test("JSON-like data and JSON strings are redacted; scalars kept; the rest withheld", () => {
    expect(redactResult({ payment: { card_number: "4111", brand: "v" } }, ob)).toEqual({
      value: { payment: { brand: "v" } },
    });
    expect(redactResult(' [{"payment":{"card_number":"4111"}}] ', ob)).toEqual({
      value: '[{"payment":{}}]',
    });
    for (const v of [null, undefined, 7, true, new Date(0)])
      expect(redactResult(v, ob)).toEqual({ value: v });
    for (const v of ["card 4111", "{not json", new Set(["4111"]), new Uint8Array([52]), () => 1])
      expect(redactResult(v, ob)).toHaveProperty("withheld");
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    expect(notRedactable(cyclic)).toBe("a cyclic value");
    const shared = { brand: "v" };
    expect(notRedactable({ a: shared, b: [shared, shared] })).toBeUndefined();
    expect(notRedactable(Object.assign(Object.create(null), { a: [1, "x"] }))).toBeUndefined();
  });
});

describe("applyRedactions", () => {
  test("removes each dotted path, through arrays, without mutating the result", () => {
    const result = {
      name: "ACME",
      payment: { card_number: "4111", card_cvc: "123", brand: "visa" },
      accounts: [{ payment: { iban: "DE89", bank: "x" } }, { payment: { iban: "FR76" } }, "n/a"],
    };
    const before = JSON.stringify(result);
    const out = applyRedactions(
      result,
      redact("payment.card_number", "payment.card_cvc", "accounts.payment.iban"),
    );
    expect(out).toEqual({
      name: "ACME",
      payment: { brand: "visa" },
      accounts: [{ payment: { bank: "x" } }, { payment: {} }, "n/a"],
    });
    expect(JSON.stringify(result)).toBe(before);
  });

  test("absent paths, scalars and other obligation types leave the result as it is (same object)", () => {
    const r = { a: { b: 1 } };
    expect(applyRedactions(r, redact("a.c", "x.y"))).toBe(r);
    expect(applyRedactions("card 4111", redact("payment"))).toBe("card 4111");
    expect(
      applyRedactions(r, [{ id: "g", type: "grant_scope", properties: { max_amount: 5 } }]),
    ).toBe(r);
  });

  test("a path cannot reach the prototype", () => {
    const out = applyRedactions({ a: 1 }, redact("__proto__.toString", "constructor.prototype"));
    expect(out).toEqual({ a: 1 });
    expect(typeof Object.prototype.toString).toBe("function");
  });
});

describe("obligations", () => {
  test("the client honours exactly the types the sidecar knows", () => {
    expect([...CLIENT_OBLIGATIONS].sort()).toEqual([...KNOWN_OBLIGATIONS].sort());
  });

  test("unknownObligation finds the first type the client does not know", () => {
    expect(unknownObligation(redact("a"))).toBeUndefined();
    expect(unknownObligation([...redact("a"), { id: "w", type: "watermark" }])?.id).toBe("w");
  });
});

describe("signals without AbortSignal.any", () => {
  const any = (AbortSignal as { any?: unknown }).any;
  beforeAll(() => {
    delete (AbortSignal as { any?: unknown }).any;
  });
  afterAll(() => {
    (AbortSignal as { any?: unknown }).any = any;
  });

  test("anySignal aborts with the first reason, and dispose drops its listeners", () => {
    const a = new AbortController();
    const b = new AbortController();
    const joined = anySignal([a.signal, undefined, b.signal]);
    expect(joined.signal).not.toBe(a.signal);
    b.abort(new Error("b went"));
    expect(joined.signal?.aborted).toBe(true);
    expect((joined.signal?.reason as Error).message).toBe("b went");
    joined.dispose();
    const again = anySignal([a.signal, b.signal]);
    expect(again.signal?.aborted).toBe(true); // already aborted input
  });

  test("sleep rejects with the abort reason (an AbortError by default)", async () => {
    const c = new AbortController();
    const p = sleep(10_000, c.signal);
    c.abort();
    await expect(p).rejects.toMatchObject({ name: "AbortError" });
  });
});
