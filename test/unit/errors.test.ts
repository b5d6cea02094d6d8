import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { ERRORS, normalizeError, rethrowAs, ToolgateError, toolgateError } from "../../src/errors";
import { loadBundleFromPath } from "../../src/policy/bundle";

const root = join(__dirname, "..", "..");

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith(".ts") ? [p] : [];
  });
}

describe("the error registry", () => {
  const doc = readFileSync(join(root, "docs", "errors.md"), "utf8");

  test.each(Object.keys(ERRORS))("%s is documented in docs/errors.md", (code) => {
    expect(doc).toMatch(new RegExp(`^\\| \`${code}\` +\\|`, "m"));
  });

  test("docs/errors.md lists no code the registry lacks", () => {
    const documented = [...doc.matchAll(/^\| `([a-z_]+)` +\|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(ERRORS).sort());
  });

  test("every code the source raises is in the registry", () => {
    const used = new Set<string>();
    for (const file of sources(join(root, "src"))) {
      for (const m of readFileSync(file, "utf8").matchAll(/toolgateError\(\s*"([a-z_]+)"/g))
        used.add(m[1] as string);
    }
    expect(used.size).toBeGreaterThan(10);
    for (const code of used) expect(Object.keys(ERRORS)).toContain(code);
  });

  test("statuses are HTTP error statuses", () => {
    for (const { status } of Object.values(ERRORS)) {
      expect(status).toBeGreaterThanOrEqual(400);
      expect(status).toBeLessThan(600);
    }
  });
});

describe("normalizeError", () => {
  test("opa-wasm's thrown strings become coded errors", () => {
    const e = normalizeError("var assignment conflict", "policy_evaluation_failed");
    expect(e).toBeInstanceOf(ToolgateError);
    expect(e.code).toBe("policy_evaluation_failed");
    expect(e.message).toBe("var assignment conflict");
    expect(e.status).toBe(500);
  });
  test("{message} objects and Errors keep their message", () => {
    expect(normalizeError({ message: "not implemented: built-in function 3: x" }).message).toMatch(
      /not implemented/,
    );
    expect(normalizeError(new RangeError("grow failed"), "policy_evaluation_failed").code).toBe(
      "policy_evaluation_failed",
    );
  });
  test("a ToolgateError passes through unchanged", () => {
    const e = new ToolgateError("malformed_json");
    expect(normalizeError(e)).toBe(e);
    expect(e.toJSON()).toEqual({ code: "malformed_json", message: ERRORS.malformed_json.message });
  });
  test("anything else is internal_error", () => {
    expect(normalizeError(42).code).toBe("internal_error");
  });
  test("what was thrown is kept as the cause", () => {
    const boom = new RangeError("grow failed");
    expect(normalizeError(boom).cause).toBe(boom);
    expect(normalizeError("var assignment conflict").cause).toBe("var assignment conflict");
    const obj = { message: "not implemented" };
    expect(normalizeError(obj).cause).toBe(obj);
    expect(normalizeError(42).cause).toBe(42);
  });
});

describe("a wrapped error keeps its cause, and never shows it", () => {
  test("toolgateError(code, message, {cause}): the standard cause, not enumerable", () => {
    const io = Object.assign(new Error("EACCES: permission denied, open '/secret/key.pem'"), {
      code: "EACCES",
    });
    const e = toolgateError("config_invalid", "cannot read the key", { cause: io });
    expect(e.cause).toBe(io);
    expect(Object.keys(e)).not.toContain("cause");
    expect(e.details).toBeUndefined();
    expect(e.toJSON()).toEqual({ code: "config_invalid", message: "cannot read the key" });
    expect(JSON.parse(JSON.stringify({ error: e }))).toEqual({
      error: { code: "config_invalid", message: "cannot read the key" },
    });
  });
  test("other members are details, as before", () => {
    const e = toolgateError("access_request_rate_limited", undefined, {
      cause: "x",
      retry_after: 7,
    });
    expect(e.details).toEqual({ retry_after: 7 });
    expect(e.cause).toBe("x");
    expect(toolgateError("config_invalid", "m", { errors: ["a"] }).details).toEqual({
      errors: ["a"],
    });
    expect("cause" in toolgateError("config_invalid", "m")).toBe(false);
  });
  test("rethrowAs: the value, or a coded error naming what failed, keeping the cause", () => {
    expect(rethrowAs("config_invalid", "x", () => 42)).toBe(42);
    const bad = new SyntaxError("Unexpected token");
    let thrown: unknown;
    try {
      rethrowAs("manifest_invalid", "/.manifest is not JSON", () => {
        throw bad;
      });
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(ToolgateError);
    expect((thrown as ToolgateError).toJSON()).toEqual({
      code: "manifest_invalid",
      message: "/.manifest is not JSON: Unexpected token",
    });
    expect((thrown as ToolgateError).cause).toBe(bad);
  });
  test("a real wrap: a bundle that cannot be read keeps the file system's error", async () => {
    let thrown: unknown;
    try {
      await loadBundleFromPath(join(root, "no-such-bundle.tar.gz"));
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(ToolgateError);
    expect((thrown as ToolgateError).code).toBe("bundle_not_found");
    expect(((thrown as ToolgateError).cause as NodeJS.ErrnoException).code).toBe("ENOENT");
  });
});
