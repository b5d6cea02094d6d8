import { checkShape, isJsonContentType } from "../../src/http/body";
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
