import {
  checkShape,
  countKeys,
  findDuplicateKey,
  isJsonContentType,
  parseJsonText,
} from "../../src/http/body";
import type { ToolgateError } from "../../src/errors";

function code(fn: () => void): string {
  try {
    fn();
    return "ok";
  } catch (e) {
    return (e as ToolgateError).code;
  }
}

describe("body checks", () => {
  test.each([
    ["application/json", true],
    ["Application/JSON; charset=utf-8", true],
    ["application/problem+json", true],
    ["application/jsonx", false],
    ["text/json", false],
    [undefined, false],
  ])("content type %s → %s", (ct, ok) => {
    expect(isJsonContentType(ct)).toBe(ok);
  });

  test("lone surrogates in values and keys are refused, paired ones pass", () => {
    expect(code(() => checkShape(JSON.parse('{"a":"\\ud800"}'), 32))).toBe("invalid_request");
    expect(code(() => checkShape(JSON.parse('{"\\udc00":1}'), 32))).toBe("invalid_request");
    expect(code(() => checkShape(JSON.parse('{"a":["\\ud83d\\ude00"]}'), 32))).toBe("ok");
  });

  test("depth is counted per container", () => {
    const nest = (n: number): unknown => (n === 0 ? 1 : { a: nest(n - 1) });
    expect(code(() => checkShape(nest(32), 32))).toBe("ok");
    expect(code(() => checkShape(nest(33), 32))).toBe("nesting_too_deep");
  });

  test("prototype-polluting keys are refused wherever they are", () => {
    expect(code(() => checkShape(JSON.parse('{"a":[{"b":{"__proto__":{}}}]}'), 32))).toBe(
      "forbidden_key",
    );
    expect(code(() => checkShape({ constructor: 1 }, 32))).toBe("forbidden_key");
  });
});

/** The error a body text gets from parseJsonText, or "ok". */
function parsed(text: string, maxDepth = 32): string {
  try {
    parseJsonText(text, maxDepth);
    return "ok";
  } catch (e) {
    const err = e as ToolgateError;
    return `${err.code}: ${err.message}`;
  }
}

describe("duplicate keys (I-JSON, RFC 7493 §2.3)", () => {
  test.each([
    ["the top level", '{"a":1,"a":2}', 'duplicate key "a" at /'],
    [
      "nested, as in the attack",
      '{"action":{"name":"refunds.issue","properties":{"arguments":{"amount":9000,"amount":20}}}}',
      'duplicate key "amount" at /action/properties/arguments',
    ],
    ["an object in an array", '{"x":[{"k":1},{"k":1,"k":2}]}', 'duplicate key "k" at /x/1'],
    ["an object in a top-level array", '[{"k":1,"j":2,"k":3}]', 'duplicate key "k" at /0'],
    ["a \\u escape of the same key", '{"a":1,"\\u0061":2}', 'duplicate key "a" at /'],
    ["upper-case hex in the escape", '{"\\u004A":1,"J":2}', 'duplicate key "J" at /'],
    ["\\/ and /", '{"a/b":1,"a\\/b":2}', 'duplicate key "a/b" at /'],
    ["\\n and \\u000a", '{"a\\n":1,"a\\u000a":2}', 'duplicate key "a\\n" at /'],
    [
      "a surrogate pair and the character",
      '{"\\ud83d\\ude00":1,"😀":2}',
      'duplicate key "😀" at /',
    ],
    ["the empty key", '{"":1,"":2}', 'duplicate key "" at /'],
    ["with whitespace around the colon", '{ "a" : 1 ,\n "a"\t:\r2 }', 'duplicate key "a" at /'],
    [
      "a key repeated after a long value",
      `{"a":"${"x".repeat(5000)}","b":[1,2,{}],"a":0}`,
      'duplicate key "a" at /',
    ],
    [
      "the first value an object (its keys vanish too)",
      '{"a":{"p":1,"q":2,"r":{"s":3}},"a":1}',
      'duplicate key "a" at /',
    ],
    [
      "inside the value that the duplicate drops",
      '{"a":{"b":1,"b":2},"a":3}',
      'duplicate key "b" at /a',
    ],
    ["integer-like keys", '{"2":1,"1":2,"2":3}', 'duplicate key "2" at /'],
  ])("refused: %s", (_name, text, message) => {
    expect(parsed(text)).toBe(`duplicate_key: ${message}`);
  });

  test.each([
    ["equal keys in sibling objects", '{"a":{"k":1},"b":{"k":2}}'],
    ["equal keys at different depths", '{"k":{"k":{"k":1}}}'],
    ["equal keys in objects of one array", '[{"k":1},{"k":2}]'],
    ["keys differing only in case", '{"a":1,"A":2}'],
    ["keys differing in an escaped backslash", '{"a\\\\":1,"a\\\\\\\\":2,"a":3}'],
    ["an escaped quote before a colon inside a key", '{"a\\":b":1,"a":2,"b":3}'],
    ["colons and quotes inside values", '{"a":"x:y\\":z","b":":","c":"\\\\","d":"\\\\\\":"}'],
    ["a value that spells a duplicate", '{"a":"{\\"a\\":1,\\"a\\":2}"}'],
    ["no objects at all", '[1,"a:b",true,null,[]]'],
    ["a scalar", '"a:b"'],
    ["the empty object", "{}"],
    ["'1' and '01'", '{"1":1,"01":2}'],
  ])("accepted: %s", (_name, text) => {
    expect(parsed(text)).toBe("ok");
  });

  test("the key and its path are cut short in the message, not echoed whole", () => {
    const key = "k".repeat(10_000);
    const out = parsed(`{"${key}":{"${key}":1,"${key}":2}}`);
    expect(out).toMatch(/^duplicate_key: duplicate key "k+…" at \/k+…$/);
    expect(out.length).toBeLessThan(1000);
  });

  test("a duplicate key beside deep nesting in the dropped value is found without blowing the stack", () => {
    const deep = "[".repeat(100_000) + "]".repeat(100_000);
    expect(parsed(`{"a":${deep},"a":1}`)).toBe('duplicate_key: duplicate key "a" at /');
  });

  test("forbidden keys and depth are still checked first", () => {
    expect(parsed('{"__proto__":1,"__proto__":2}')).toMatch(/^forbidden_key: /);
    // the value JSON.parse keeps is checked first; a dropped one only shows as the duplicate
    expect(parsed('{"a":1,"a":[[[1]]]}', 3)).toMatch(/^nesting_too_deep: /);
    expect(parsed('{"a":[[[1]]],"a":1}', 3)).toBe('duplicate_key: duplicate key "a" at /');
  });

  test("countKeys counts every key occurrence, also the ones JSON.parse drops", () => {
    expect(countKeys('{"a":1,"a":{"b":":","c":"\\":"},"d":[{"e":1}]}')).toBe(6);
    expect(countKeys('["a:b", "\\"c\\":", 1]')).toBe(0);
    expect(countKeys("{}")).toBe(0);
  });

  test("findDuplicateKey reports nothing for a text without duplicates", () => {
    expect(findDuplicateKey('{"a":{"a":1},"b":[{"a":1},{"a":2}]}')).toBeUndefined();
    expect(findDuplicateKey('{"a":1,"\\u0061":2}')).toEqual({ key: "a", path: "/" });
  });

  test("random bodies: a duplicate is found exactly when one was written (keys in mixed escape forms)", () => {
    // a deterministic generator (mulberry32), so a failure repeats
    let seed = 0x13;
    const rnd = (): number => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = seed;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
    const ALPHABET = ["a", "b", ":", '"', "\\", "/", "\n", "é", "😀", "{", ","] as const;
    /** A JSON string for `s`, each character written raw or escaped at random. */
    const encode = (s: string): string => {
      let out = '"';
      for (const ch of s) {
        const raw = JSON.stringify(ch).slice(1, -1);
        if (rnd() < 0.5) out += raw;
        else
          for (let i = 0; i < ch.length; i++)
            out += `\\u${ch.charCodeAt(i).toString(16).padStart(4, "0")}`;
      }
      return `${out}"`;
    };
    const key = (): string =>
      Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => pick(ALPHABET)).join("");
    let planted = false;
    const value = (depth: number): string => {
      const r = rnd();
      if (depth > 3 || r < 0.3) return pick(["1", '"a:b"', '"\\":\\\\"', "null", encode(key())]);
      if (r < 0.5)
        return `[${Array.from({ length: Math.floor(rnd() * 3) }, () => value(depth + 1)).join(",")}]`;
      const keys = [...new Set(Array.from({ length: Math.floor(rnd() * 4) }, key))];
      if (keys.length > 0 && rnd() < 0.05) {
        keys.push(pick(keys));
        planted = true;
      }
      return `{${keys.map((k) => `${encode(k)}:${value(depth + 1)}`).join(",")}}`;
    };
    for (let i = 0; i < 3000; i++) {
      planted = false;
      const text = value(0);
      const out = parsed(text);
      if (planted) expect([text, out.split(":")[0]]).toEqual([text, "duplicate_key"]);
      else expect([text, out]).toEqual([text, "ok"]);
    }
  });
});
