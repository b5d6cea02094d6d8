/**
 * RFC 8785 (JCS) against the RFC's published examples: the §3.2.2 sample,
 * the §3.2.3 sorting example, Appendix B's number table, plus the reference
 * implementation's test data (cyberphone/json-canonicalization `testdata/`),
 * toolgate's strictness decisions, and the profile's binding_hash vectors.
 */
import { createHash } from "node:crypto";
import {
  bindingHash,
  bindingHashBulk,
  bindingHashesEqual,
  bindingHashInput,
  bindingHashInputBulk,
  DEFAULT_BINDING_CONTEXT_MEMBERS,
  hashCanonical,
  projectSubject,
  type BindingRequest,
} from "../../src/approvals/binding";
import {
  ANY_MAX_DEPTH,
  canonicalize,
  canonicalizeAny,
  compareUtf16,
  MAX_DEPTH,
} from "../../src/shared/jcs";
import { isToolgateError } from "../../src/errors";
import { seededRandom } from "../helpers/rng";

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isToolgateError(e) ? e.code : `uncoded: ${String(e)}`;
  }
  return undefined;
}

function rejects(value: unknown, pattern: RegExp): void {
  let thrown: unknown;
  try {
    canonicalize(value);
  } catch (e) {
    thrown = e;
  }
  expect(isToolgateError(thrown)).toBe(true);
  if (isToolgateError(thrown)) {
    expect(thrown.code).toBe("json_not_canonicalizable");
    expect(thrown.status).toBe(400);
    expect(thrown.message).toMatch(pattern);
  }
}

describe("RFC 8785 published examples", () => {
  test("§3.2.2 / §3.2.4 sample: numbers, string escaping, literals, member order", () => {
    // The RFC's input, as JSON text (so the parser's number rounding takes part).
    const input = String.raw`{
      "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }`;
    expect(canonicalize(JSON.parse(input))).toBe(
      String.raw`{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`,
    );
  });

  test("§3.2.3 sorting: property names compared as UTF-16 code units", () => {
    const input = String.raw`{
      "\u20ac": "Euro Sign",
      "\r": "Carriage Return",
      "\ufb33": "Hebrew Letter Dalet With Dagesh",
      "1": "One",
      "\ud83d\ude00": "Emoji: Grinning Face",
      "\u0080": "Control",
      "\u00f6": "Latin Small Letter O With Diaeresis"
    }`;
    const out = canonicalize(JSON.parse(input));
    // The RFC lists the values in canonical order. (Read them off the text: JSON.parse
    // would put the integer-like "1" first again.)
    const values = [...out.matchAll(/:"([^"]*)"/g)].map((m) => m[1]);
    expect(values).toEqual([
      "Carriage Return",
      "One",
      "Control",
      "Latin Small Letter O With Diaeresis",
      "Euro Sign",
      "Emoji: Grinning Face",
      "Hebrew Letter Dalet With Dagesh",
    ]);
    expect(out).toBe(
      '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",' +
        '"\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    );
  });

  // Appendix B: IEEE-754 bit pattern → canonical text ("" = must be rejected).
  const appendixB: Array<[string, string]> = [
    ["0000000000000000", "0"],
    ["8000000000000000", "0"], // minus zero
    ["0000000000000001", "5e-324"],
    ["8000000000000001", "-5e-324"],
    ["7fefffffffffffff", "1.7976931348623157e+308"],
    ["ffefffffffffffff", "-1.7976931348623157e+308"],
    ["4340000000000000", "9007199254740992"],
    ["c340000000000000", "-9007199254740992"],
    ["4430000000000000", "295147905179352830000"],
    ["7fffffffffffffff", ""], // NaN
    ["7ff0000000000000", ""], // Infinity
    ["44b52d02c7e14af5", "9.999999999999997e+22"],
    ["44b52d02c7e14af6", "1e+23"],
    ["44b52d02c7e14af7", "1.0000000000000001e+23"],
    ["444b1ae4d6e2ef4e", "999999999999999700000"],
    ["444b1ae4d6e2ef4f", "999999999999999900000"],
    ["444b1ae4d6e2ef50", "1e+21"],
    ["3eb0c6f7a0b5ed8c", "9.999999999999997e-7"],
    ["3eb0c6f7a0b5ed8d", "0.000001"],
    ["41b3de4355555553", "333333333.3333332"],
    ["41b3de4355555554", "333333333.33333325"],
    ["41b3de4355555555", "333333333.3333333"],
    ["41b3de4355555556", "333333333.3333334"],
    ["41b3de4355555557", "333333333.33333343"],
    ["becbf647612f3696", "-0.0000033333333333333333"],
    ["43143ff3c1cb0959", "1424953923781206.2"], // round to even
    // The reference implementation's sample lines:
    ["4340000000000001", "9007199254740994"],
    ["4340000000000002", "9007199254740996"],
    ["fff0000000000000", ""], // -Infinity
  ];
  test.each(appendixB)("Appendix B: %s → %s", (hex, expected) => {
    const n = Buffer.from(hex, "hex").readDoubleBE(0);
    if (expected === "") {
      rejects(n, /not a JSON number/);
      rejects({ n }, /\$\["n"\]/);
    } else {
      expect(canonicalize(n)).toBe(expected);
      expect(canonicalize([n])).toBe(`[${expected}]`);
      expect(Number(expected)).toBe(Object.is(n, -0) ? 0 : n); // round-trips
    }
  });

  test("the numbers the profile's vectors use", () => {
    expect(canonicalize([1e30, 333333333.3333333, 4.5, 0.002, 1e-7, 9007199254740992, -0])).toBe(
      "[1e+30,333333333.3333333,4.5,0.002,1e-7,9007199254740992,0]",
    );
    expect(canonicalize(JSON.parse("[4.50, 2e-3, 1E30, -0.0, 1e-7, 100, 1e21, 1e20]"))).toBe(
      "[4.5,0.002,1e+30,0,1e-7,100,1e+21,100000000000000000000]",
    );
  });
});

describe("reference implementation test data (cyberphone/json-canonicalization)", () => {
  test("weird.json, checked byte for byte against outhex/weird.txt", () => {
    const input = String.raw`{
      "\u20ac": "Euro Sign",
      "\r": "Carriage Return",
      "\u000a": "Newline",
      "1": "One",
      "\u0080": "Control\u007f",
      "\ud83d\ude02": "Smiley",
      "\u00f6": "Latin Small Letter O With Diaeresis",
      "\ufb33": "Hebrew Letter Dalet With Dagesh",
      "</script>": "Browser Challenge"
    }`;
    // testdata/outhex/weird.txt, whitespace removed:
    const hex =
      "7b225c6e223a224e65776c696e65222c225c72223a2243617272696167652052657475726e222c2231223a224f6e6522" +
      "2c223c2f7363726970743e223a2242726f77736572204368616c6c656e6765222c22c280223a22436f6e74726f6c7f22" +
      "2c22c3b6223a224c6174696e20536d616c6c204c6574746572204f205769746820446961657265736973222c22e282ac" +
      "223a224575726f205369676e222c22f09f9882223a22536d696c6579222c22efacb3223a22486562726577204c657474" +
      "65722044616c6574205769746820446167657368227d";
    expect(Buffer.from(canonicalize(JSON.parse(input)), "utf8").toString("hex")).toBe(hex);
  });

  test("structures.json", () => {
    const input = `{
      "1": {"f": {"f": "hi","F": 5} ,"\\n": 56.0},
      "10": { },
      "": "empty",
      "a": { },
      "111": [ {"e": "yes","E": "no" } ],
      "A": { }
    }`;
    expect(canonicalize(JSON.parse(input))).toBe(
      '{"":"empty","1":{"\\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{"E":"no","e":"yes"}],"A":{},"a":{}}',
    );
  });

  test("arrays.json", () => {
    expect(canonicalize(JSON.parse('[56, {"d": true, "10": null, "1": [ ]}]'))).toBe(
      '[56,{"1":[],"10":null,"d":true}]',
    );
  });

  test("french.json: no locale collation", () => {
    const input = {
      peach: "This sorting order",
      péché: "is wrong according to French",
      pêche: "but canonicalization MUST",
      sin: "ignore locale",
    };
    expect(canonicalize(input)).toBe(
      '{"peach":"This sorting order","péché":"is wrong according to French","pêche":"but canonicalization MUST","sin":"ignore locale"}',
    );
  });

  test("unicode.json: no normalisation", () => {
    expect(canonicalize({ "Unnormalized Unicode": "A\u030a" })).toBe(
      '{"Unnormalized Unicode":"A\u030a"}',
    );
  });
});

describe("key order is UTF-16 code unit order", () => {
  test("relational < on strings is code-unit order (not code-point order)", () => {
    // U+1F600 (D83D DE00) < U+FB33 by code units, > by code points.
    expect(compareUtf16("\ud83d\ude00", "\ufb33")).toBe(-1);
    expect("\ud83d\ude00".codePointAt(0)! > "\ufb33".codePointAt(0)!).toBe(true);
    expect(compareUtf16("a", "a")).toBe(0);
    expect(compareUtf16("ab", "a")).toBe(1);
    // The default Array#sort comparator agrees (it also compares code units).
    const keys = ["\ufb33", "\ud83d\ude00", "\u20ac", "1", "\r", "B", "a", "", "10", "1\u0000"];
    expect([...keys].sort(compareUtf16)).toEqual([...keys].sort());
  });

  test("integer-like keys are sorted as strings, not in JS property order", () => {
    expect(canonicalize({ 10: 1, 2: 2, 1: 3, b: 4, a: 5 })).toBe(
      '{"1":3,"10":1,"2":2,"a":5,"b":4}',
    );
  });
});

describe("toolgate's strictness decisions", () => {
  test("no whitespace; nested structures; null-prototype objects; shared (acyclic) references", () => {
    const shared = { z: [1, { y: null }], a: "x" };
    const bare = Object.create(null) as Record<string, unknown>;
    bare.k = shared;
    expect(canonicalize({ b: shared, a: bare, e: [], o: {} })).toBe(
      '{"a":{"k":{"a":"x","z":[1,{"y":null}]}},"b":{"a":"x","z":[1,{"y":null}]},"e":[],"o":{}}',
    );
  });

  test("an own __proto__ member (from JSON.parse) is an ordinary member", () => {
    expect(canonicalize(JSON.parse('{"__proto__":{"x":1},"a":1}'))).toBe(
      '{"__proto__":{"x":1},"a":1}',
    );
  });

  test("undefined members are omitted; undefined elements and values are rejected", () => {
    expect(canonicalize({ a: undefined, b: 1 })).toBe('{"b":1}');
    expect(canonicalize({ a: undefined })).toBe("{}");
    rejects([1, undefined], /\$\[1\]: undefined/);
    rejects(undefined, /^\$: undefined/);
    // eslint-disable-next-line no-sparse-arrays
    rejects([1, , 2], /\$\[1\]: a sparse array hole/);
  });

  test("non-JSON values are rejected, naming the path", () => {
    rejects({ a: { b: 1n } }, /\$\["a"\]\["b"\]: a BigInt/);
    rejects({ f: () => 1 }, /function/);
    rejects([Symbol("s")], /symbol/);
    rejects({ d: new Date(0) }, /\$\["d"\]: a Date object/);
    rejects(new Map(), /Map/);
    rejects(new Set([1]), /Set/);
    rejects(/x/, /RegExp/);
    rejects(Buffer.from("x"), /Buffer/);
    rejects(new Uint8Array(2), /Uint8Array/);
    rejects(new String("x"), /String/);
    class Thing {
      a = 1;
    }
    rejects(new Thing(), /Thing/);
    rejects({ [Symbol("k")]: 1 }, /symbol-keyed/);
    rejects(NaN, /NaN is not a JSON number/);
    rejects([Infinity], /Infinity/);
    rejects(-Infinity, /-Infinity/);
  });

  test("toJSON is never called", () => {
    rejects({ toJSON: () => "x" }, /function/);
  });

  test("lone surrogates are rejected (I-JSON), in values and in names; pairs pass", () => {
    rejects("\ud800", /lone surrogate/);
    rejects({ a: "x\udc00" }, /\$\["a"\]: a string holds a lone surrogate/);
    rejects({ "\ud83d": 1 }, /lone surrogate/);
    rejects("\ude00\ud83d", /lone surrogate/);
    expect(canonicalize("\ud83d\ude00")).toBe('"\ud83d\ude00"');
  });

  test("escaping: controls as lower-case \\u00xx, short forms, / and DEL and non-ASCII literal", () => {
    expect(canonicalize('\u0000\u0001\b\t\n\u000b\f\r\u001f "\\/\u007f\u2028é')).toBe(
      '"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f \\"\\\\/\u007f\u2028é"',
    );
  });

  test("cycles and excessive depth are rejected", () => {
    const a: Record<string, unknown> = {};
    a.self = a;
    rejects(a, /cycle/);
    const arr: unknown[] = [];
    arr.push(arr);
    rejects(arr, /cycle/);
    let deep: unknown = 1;
    for (let i = 0; i < MAX_DEPTH + 1; i++) deep = [deep];
    rejects(deep, /nesting deeper/);
  });

  test("top-level scalars", () => {
    expect(canonicalize(null)).toBe("null");
    expect(canonicalize(true)).toBe("true");
    expect(canonicalize(false)).toBe("false");
    expect(canonicalize("")).toBe('""');
    expect(canonicalize(-0)).toBe("0");
  });
});

describe("the fast writer and the full writer agree", () => {
  // canonicalize tries a fast writer first (no path bookkeeping) and falls back to
  // the full one on anything it does not accept; canonicalizeAny always runs the full
  // one. For JSON both must write the same text, and a lone surrogate must still be
  // refused, at any depth, including past the fast writer's depth limit (64).
  const UNITS = [0x00, 0x1f, 0x22, 0x41, 0x5c, 0x7f, 0xe9, 0x2028, 0xd83d, 0xde00, 0xdbff, 0xfb33];
  function str(r: () => number, surrogatesOk: boolean): string {
    let s = "";
    const n = Math.floor(r() * 6);
    for (let i = 0; i < n; i++) {
      const u = UNITS[Math.floor(r() * UNITS.length)] ?? 0x41;
      if (u >= 0xd800 && u <= 0xdfff && !surrogatesOk) s += "\ud83d\ude00";
      else s += String.fromCharCode(u);
    }
    return s;
  }
  const NUMBERS = [0, -0, 1, -1.5, 1e21, 1e-7, 123456789012345680000, 5e-324, 0.1 + 0.2];
  function value(r: () => number, depth: number, maxDepth: number, lone: boolean): unknown {
    const k = depth >= maxDepth ? Math.floor(r() * 4) : Math.floor(r() * 6);
    switch (k) {
      case 0:
        return str(r, lone);
      case 1:
        return NUMBERS[Math.floor(r() * NUMBERS.length)];
      case 2:
        return r() < 0.5;
      case 3:
        return null;
      case 4: {
        const n = depth > 8 ? 1 : Math.floor(r() * 4);
        return Array.from({ length: n }, () => value(r, depth + 1, maxDepth, lone));
      }
      default: {
        const o = (r() < 0.2 ? Object.create(null) : {}) as Record<string, unknown>;
        const n = depth > 8 ? 1 : Math.floor(r() * 4);
        for (let i = 0; i < n; i++) o[str(r, lone)] = value(r, depth + 1, maxDepth, lone);
        if (r() < 0.1) o.gone = undefined;
        return o;
      }
    }
  }
  const hasLone = (text: string) => !isWellFormedText(text);
  function isWellFormedText(t: string): boolean {
    return !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(t);
  }

  test("2,000 seeded random JSON values, shallow and past depth 64", () => {
    const r = seededRandom(20261201);
    let refused = 0;
    for (let i = 0; i < 2000; i++) {
      const lone = i % 3 === 0;
      const v = value(r, 0, i % 10 === 0 ? 90 : 6, lone);
      const any = canonicalizeAny(v);
      // canonicalizeAny escapes a lone surrogate where canonicalize refuses it.
      const c = code(() => canonicalize(v));
      if (c === undefined) expect(canonicalize(v)).toBe(any);
      else {
        expect(c).toBe("json_not_canonicalizable");
        refused++;
        expect(strings(v).some(hasLone)).toBe(true);
      }
    }
    expect(refused).toBeGreaterThan(50);
  });

  function strings(v: unknown): string[] {
    if (typeof v === "string") return [v];
    if (Array.isArray(v)) return v.flatMap(strings);
    if (v !== null && typeof v === "object")
      return Object.entries(v).flatMap(([k, x]) => (x === undefined ? [] : [k, ...strings(x)]));
    return [];
  }

  test("a value the fast writer gives up on at depth 64 is written by the full one", () => {
    let deep: unknown = { b: "x", a: [1] };
    for (let i = 0; i < 70; i++) deep = { k: deep };
    expect(canonicalize(deep)).toBe(canonicalizeAny(deep));
    let bad: unknown = "\udc00";
    for (let i = 0; i < 70; i++) bad = [bad];
    rejects(bad, /lone surrogate/);
  });
});

describe("canonicalizeAny: the same text for JSON, a text for anything else", () => {
  test("JSON values: exactly what canonicalize writes", () => {
    const values: unknown[] = [
      { b: [1, "x", true, null], a: { é: 1, "\u{1F600}": 2, "\uFB33": 3, "10": 4, "9": 5 } },
      [0, -0, 1e21, 1e-7, 0.1 + 0.2, 5e-324, Number.MAX_SAFE_INTEGER, -1.5],
      ['\u0000\u001f\b\t\n\f\r"\\/\u007f\u2028', "\u{1F600}"],
      JSON.parse('{"__proto__": {"x": 1}, "a": 1}'),
      Object.assign(Object.create(null) as object, { z: 1, a: 2 }),
      { a: undefined, b: 1 },
      [{}, [], ""],
    ];
    for (const v of values) expect(canonicalizeAny(v)).toBe(canonicalize(v));
  });

  test("what canonicalize refuses gets a text (the redactor's hashes depend on these)", () => {
    const sym = Symbol("s");
    const cyclic: Record<string, unknown> = { name: "a" };
    cyclic.self = cyclic;
    const loop: unknown[] = [1];
    loop.push(loop);
    class K {
      a = 1;
      b = "x";
    }
    expect(canonicalizeAny({ a: NaN, b: [Infinity, -Infinity] })).toBe(
      '{"a":null,"b":[null,null]}',
    );
    expect(canonicalizeAny({ "\uD800k": "\uDC00v", a: ["x\uD83D"] })).toBe(
      '{"a":["x\\ud83d"],"\\ud800k":"\\udc00v"}',
    );
    expect(canonicalizeAny({ a: 12345678901234567890n, b: [-1n] })).toBe(
      '{"a":12345678901234567890,"b":[-1]}',
    );
    expect(
      canonicalizeAny({ a: undefined, b: [undefined, () => 1, sym], c: () => 1, d: sym }),
    ).toBe('{"b":[null,null,null]}');
    expect(canonicalizeAny(undefined)).toBe("null");
    expect(canonicalizeAny(() => 1)).toBe("null");
    expect(canonicalizeAny({ at: new Date(0) })).toBe('{"at":"1970-01-01T00:00:00.000Z"}');
    expect(canonicalizeAny({ toJSON: () => ({ b: 1, a: 2 }) })).toBe('{"a":2,"b":1}');
    expect(
      canonicalizeAny({
        b: Buffer.from("hello"),
        u: new Uint8Array([1, 2, 255]),
        d: new DataView(new ArrayBuffer(2)),
        f: new Float32Array([1.5]),
      }),
    ).toBe('{"b":"aGVsbG8=","d":"AAA=","f":"AADAPw==","u":"AQL/"}');
    expect(canonicalizeAny(Buffer.from("abcdef").subarray(2, 4))).toBe('"Y2Q="');
    expect(canonicalizeAny(cyclic)).toBe('{"name":"a","self":"[CIRCULAR]"}');
    expect(canonicalizeAny(loop)).toBe('[1,"[CIRCULAR]"]');
    expect(canonicalizeAny(new K())).toBe('{"a":1,"b":"x"}');
    expect(canonicalizeAny({ m: new Map([["a", 1]]), e: new Error("boom"), s: { [sym]: 1 } })).toBe(
      '{"e":{},"m":{},"s":{}}',
    );
    // eslint-disable-next-line no-sparse-arrays
    expect(canonicalizeAny([1, , 3])).toBe("[1,null,3]");
  });

  test("an array or object nested deeper than ANY_MAX_DEPTH is cut off as a cycle is", () => {
    const nest = (levels: number, inner: unknown): unknown => {
      let v = inner;
      for (let i = 0; i < levels; i++) v = [v];
      return v;
    };
    // levels 0..ANY_MAX_DEPTH are written; an array at level ANY_MAX_DEPTH + 1 is not
    const fits = nest(ANY_MAX_DEPTH, []);
    expect(canonicalizeAny(fits)).toBe(canonicalize(fits));
    expect(canonicalizeAny(nest(ANY_MAX_DEPTH + 1, []))).toBe(
      `${"[".repeat(ANY_MAX_DEPTH + 1)}"[CIRCULAR]"${"]".repeat(ANY_MAX_DEPTH + 1)}`,
    );
    expect(canonicalizeAny(nest(ANY_MAX_DEPTH + 1, 1))).toBe(
      `${"[".repeat(ANY_MAX_DEPTH + 1)}1${"]".repeat(ANY_MAX_DEPTH + 1)}`,
    );
  });
});

/**
 * The profile's binding_hash conformance vectors
 * (openid/authzen profiles/authzen-access-request-approval/test-vectors/binding-hash.json,
 * commit ad0db53): request + binding_context_members → JCS → binding_hash.
 */
describe("binding_hash (AuthZEN Access Request and Approval profile vectors)", () => {
  interface Vector {
    id: string;
    members: string[];
    request: Record<string, unknown>;
    jcs: string;
    sha256Hex: string;
    bindingHash: string;
  }
  const vectors: Vector[] = [
    {
      id: "single-basic",
      members: ["tenant"],
      request: {
        subject: {
          type: "user",
          id: "alice@example.com",
          properties: { department: "engineering", act: { sub: "delegating-client" } },
        },
        resource: {
          type: "document",
          id: "quarterly-plan",
          properties: { classification: "internal" },
        },
        action: { name: "read" },
        context: { tenant: "acme", time: "2026-07-13T10:00:00Z", evaluation_id: "eval-123" },
      },
      jcs: '{"action":{"name":"read"},"context":{"tenant":"acme"},"resource":{"id":"quarterly-plan","properties":{"classification":"internal"},"type":"document"},"subject":{"id":"alice@example.com","properties":{"department":"engineering"},"type":"user"}}',
      sha256Hex: "974ba013696ea4397354213e4711fbfef9e98af0c3919e7ce5558c0741c937f7",
      bindingHash: "l0ugE2lupDlzVCE-RxH7_vnpivDDkZ585VWMB0HJN_c",
    },
    {
      id: "single-empty-context",
      members: [],
      request: {
        subject: { type: "service", id: "reporting-agent" },
        resource: { type: "report", id: "sales-2026" },
        action: { name: "generate" },
        context: { time: "2026-07-13T10:00:00Z", reason: "quarterly reporting" },
      },
      jcs: '{"action":{"name":"generate"},"context":{},"resource":{"id":"sales-2026","type":"report"},"subject":{"id":"reporting-agent","type":"service"}}',
      sha256Hex: "c051460ea7999778840f3f52eb0bc5a95c098018301c709efea6ace8ec588ed5",
      bindingHash: "wFFGDqeZl3iEDz9S6wvFqVwJgBgwHHCe_qas6OxYjtU",
    },
    {
      id: "single-context-member-absent",
      members: ["risk"],
      request: {
        subject: { type: "user", id: "bob@example.com" },
        resource: { type: "account", id: "A-123" },
        action: { name: "transfer" },
        context: { tenant: "acme" },
      },
      jcs: '{"action":{"name":"transfer"},"context":{},"resource":{"id":"A-123","type":"account"},"subject":{"id":"bob@example.com","type":"user"}}',
      sha256Hex: "95fd2fd8a2b287c341127d75591c6a2aa12c7292b2b0489c009f03d9159e9735",
      bindingHash: "lf0v2KKyh8NBEn11WRxqKqEscpKysEicAJ8D2RWelzU",
    },
    {
      id: "single-context-member-null",
      members: ["risk"],
      request: {
        subject: { type: "user", id: "bob@example.com" },
        resource: { type: "account", id: "A-123" },
        action: { name: "transfer" },
        context: { tenant: "acme", risk: null },
      },
      jcs: '{"action":{"name":"transfer"},"context":{"risk":null},"resource":{"id":"A-123","type":"account"},"subject":{"id":"bob@example.com","type":"user"}}',
      sha256Hex: "661201831fc5a14b694440baf9841de66abde83e5bff6e9566aa1b344f810cf6",
      bindingHash: "ZhIBgx_FoUtpREC6-YQd5mq96D5b_26VZqobNE-BDPY",
    },
    {
      id: "single-number-canonicalization",
      members: ["metrics"],
      // As JSON text, so the parser sees the vector's literal forms (1E30, 4.50, -0, ...).
      request: JSON.parse(`{
        "subject": { "type": "user", "id": "carol@example.com" },
        "resource": { "type": "model", "id": "forecast-v2" },
        "action": { "name": "invoke" },
        "context": {
          "metrics": {
            "large": 1E30,
            "small": 2e-3,
            "negative_zero": -0,
            "rounded": 333333333.33333329,
            "trailing_zero": 4.50
          }
        }
      }`) as Record<string, unknown>,
      jcs: '{"action":{"name":"invoke"},"context":{"metrics":{"large":1e+30,"negative_zero":0,"rounded":333333333.3333333,"small":0.002,"trailing_zero":4.5}},"resource":{"id":"forecast-v2","type":"model"},"subject":{"id":"carol@example.com","type":"user"}}',
      sha256Hex: "2e34dcbf799454dbc39a298318ae33e876c38b487bd49055ccd579d10634aff7",
      bindingHash: "LjTcv3mUVNvDmimDGK4z6HbDi0h71JBVzNV50QY0r_c",
    },
    {
      id: "single-array-order",
      members: ["approval_chain"],
      request: {
        subject: { type: "user", id: "dana@example.com" },
        resource: { type: "deployment", id: "prod-eu" },
        action: { name: "promote" },
        context: { approval_chain: ["security", null, "operations"] },
      },
      jcs: '{"action":{"name":"promote"},"context":{"approval_chain":["security",null,"operations"]},"resource":{"id":"prod-eu","type":"deployment"},"subject":{"id":"dana@example.com","type":"user"}}',
      sha256Hex: "ffa07ea81e8ffa6c9d2310fc281e95a49f81f9c943702f1e18bb643c30b0d72b",
      bindingHash: "_6B-qB6P-mydIxD8KB6VpJ-B-clDcC8eGLtkPDCw1ys",
    },
  ];

  test.each(vectors)("$id", (v) => {
    const req = v.request as unknown as BindingRequest;
    const before = JSON.stringify(v.request);
    expect(canonicalize(bindingHashInput(req, v.members))).toBe(v.jcs);
    expect(createHash("sha256").update(v.jcs, "utf8").digest("hex")).toBe(v.sha256Hex);
    expect(hashCanonical(v.jcs)).toBe(v.bindingHash);
    expect(bindingHash(req, v.members)).toBe(v.bindingHash);
    expect(JSON.stringify(v.request)).toBe(before); // the request is not mutated
  });

  const bulk = {
    subject: {
      type: "service",
      id: "deployment-agent",
      properties: { act: { sub: "release-manager" }, environment: "production" },
    },
    items: [
      {
        resource: { type: "service", id: "api" },
        action: { name: "deploy", properties: { version: "2.1.0" } },
      },
      {
        resource: { type: "database", id: "primary" },
        action: { name: "migrate", properties: { revision: 42 } },
      },
    ],
    context: { region: "eu-west-1", tenant: "acme", time: "2026-07-13T10:00:00Z" },
  };
  const bulkJcs =
    '{"context":{"region":"eu-west-1","tenant":"acme"},"items":[{"action":{"name":"deploy","properties":{"version":"2.1.0"}},"resource":{"id":"api","type":"service"}},{"action":{"name":"migrate","properties":{"revision":42}},"resource":{"id":"primary","type":"database"}}],"subject":{"id":"deployment-agent","properties":{"environment":"production"},"type":"service"}}';

  test("bulk-item-order", () => {
    expect(canonicalize(bindingHashInputBulk(bulk, ["tenant", "region"]))).toBe(bulkJcs);
    expect(createHash("sha256").update(bulkJcs).digest("hex")).toBe(
      "9adaa09631f41d0aa2758f2fce98ba12a32321b0f137c3df957a842043895982",
    );
    expect(bindingHashBulk(bulk, ["tenant", "region"])).toBe(
      "mtqgljH0HQqidY8vzpi6EqMjIbDxN8PflXqEIEOJWYI",
    );
    // Item order is bound.
    const swapped = { ...bulk, items: [bulk.items[1]!, bulk.items[0]!] };
    expect(bindingHashBulk(swapped, ["tenant", "region"])).not.toBe(
      "mtqgljH0HQqidY8vzpi6EqMjIbDxN8PflXqEIEOJWYI",
    );
  });

  test("removing act keeps an empty properties object (as the profile's verifier does)", () => {
    const subject = { type: "user", id: "alice", properties: { act: { sub: "agent" } } };
    expect(projectSubject(subject)).toEqual({ type: "user", id: "alice", properties: {} });
    expect(subject.properties.act).toEqual({ sub: "agent" }); // not mutated
    const req = { subject, action: { name: "a" }, resource: { type: "r", id: "1" } };
    expect(canonicalize(bindingHashInput(req, []))).toBe(
      '{"action":{"name":"a"},"context":{},"resource":{"id":"1","type":"r"},"subject":{"id":"alice","properties":{},"type":"user"}}',
    );
    // act does not bind; everything else does.
    const other = { ...req, subject: { ...subject, properties: { act: { sub: "someone-else" } } } };
    expect(bindingHash(other, [])).toBe(bindingHash(req, []));
    const noProps = { ...req, subject: { type: "user", id: "alice" } };
    expect(bindingHash(noProps, [])).not.toBe(bindingHash(req, []));
  });

  test("toolgate binds the job by default; arguments, resource and job all bind", () => {
    expect(DEFAULT_BINDING_CONTEXT_MEMBERS).toEqual(["job"]);
    const m = DEFAULT_BINDING_CONTEXT_MEMBERS;
    const req = {
      subject: { type: "user", id: "alice" },
      action: { name: "refunds.issue", properties: { arguments: { amount: 120 } } },
      resource: { type: "customer", id: "cust_1" },
      context: { job: { id: "job_1", purpose: "triage", customer_id: "cust_1" }, time: "t1" },
    };
    const h = bindingHash(req, m);
    expect(bindingHash({ ...req, context: { ...req.context, time: "t2" } }, m)).toBe(h);
    expect(
      bindingHash(
        { ...req, action: { name: "refunds.issue", properties: { arguments: { amount: 121 } } } },
        m,
      ),
    ).not.toBe(h);
    expect(bindingHash({ ...req, resource: { type: "customer", id: "cust_2" } }, m)).not.toBe(h);
    expect(
      bindingHash({ ...req, context: { job: { ...req.context.job, customer_id: "x" } } }, m),
    ).not.toBe(h);
    expect(bindingHash({ ...req, subject: { type: "user", id: "sam" } }, m)).not.toBe(h);
    expect(bindingHash({ ...req, context: undefined }, m)).not.toBe(h);
  });

  test("absent context and __proto__ members are handled without prototype tricks", () => {
    const base = { subject: { type: "u", id: "1" }, action: { name: "a" }, resource: {} };
    expect(bindingHash(base, ["job"])).toBe(bindingHash({ ...base, context: {} }, ["job"]));
    const ctx = JSON.parse('{"__proto__":{"polluted":true}}') as Record<string, unknown>;
    expect(canonicalize(bindingHashInput({ ...base, context: ctx }, ["__proto__"]).context)).toBe(
      '{"__proto__":{"polluted":true}}',
    );
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  test("members naming profile machinery, or not strings, are refused", () => {
    const base = { subject: {}, action: {}, resource: {}, context: {} };
    for (const bad of [["evaluation_id"], ["access_request"], [""], [1]]) {
      expect(code(() => bindingHash(base, bad as string[]))).toBe("config_invalid");
    }
    expect(code(() => bindingHash({ ...base, context: [1] }, ["job"]))).toBe("invalid_request");
    expect(code(() => bindingHashBulk({ subject: {}, items: [1] as never }, []))).toBe(
      "invalid_request",
    );
  });

  test("bindingHashesEqual", () => {
    expect(bindingHashesEqual("abc", "abc")).toBe(true);
    expect(bindingHashesEqual("abc", "abd")).toBe(false);
    expect(bindingHashesEqual("abc", "abcd")).toBe(false);
    expect(bindingHashesEqual(undefined, "abc")).toBe(false);
  });
});
