/**
 * Issue #13, item 1: untrusted JSON/YAML never reaches a prototype. Real
 * parsers and real files: bundle data files (YAML and JSON) read by the real
 * bundle reader, config files read by loadConfig, a JWKS file loaded by the
 * real TokenVerifier, persisted bundle metadata, a policy whose output names
 * __proto__ (built by the real `opa build`).
 */
import { createPublicKey } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BundleStore } from "../../src/bundles/persist";
import { compileConfig, loadConfig } from "../../src/config";
import { ToolgateError } from "../../src/errors";
import { TokenVerifier } from "../../src/identity";
import { loadBundleFromPath, parseBundle } from "../../src/policy/bundle";
import { PolicyEngine } from "../../src/policy/engine";
import { readTarGz } from "../../src/shared/tar";
import { forbiddenKey, hasOwn, nullProto, parseUntrustedJson } from "../../src/shared/guards";
import { defaultBundlePath } from "../../src/shared/paths";
import { buildWasmBundle, tempDir } from "../helpers/opa";

const BUILTIN_KEYS = Reflect.ownKeys(Object.prototype);
const pollution = (): PropertyKey[] =>
  Reflect.ownKeys(Object.prototype).filter((k) => !BUILTIN_KEYS.includes(k));
afterEach(() => {
  for (const k of pollution()) delete (Object.prototype as Record<PropertyKey, unknown>)[k];
});

function caught(fn: () => unknown): ToolgateError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ToolgateError) return e;
    throw e;
  }
  throw new Error("expected a ToolgateError, got none");
}

async function rejected(p: Promise<unknown>): Promise<ToolgateError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ToolgateError) return e;
    throw e;
  }
  throw new Error("expected a ToolgateError, got none");
}

describe("the guard", () => {
  test("finds a forbidden key anywhere and names the object holding it (JSON Pointer)", () => {
    expect(forbiddenKey(JSON.parse('{"a":{"b":{"__proto__":{"x":1}}}}'))).toEqual({
      key: "__proto__",
      at: "/a/b",
    });
    expect(forbiddenKey(JSON.parse('{"__proto__":1}'))).toEqual({ key: "__proto__", at: "/" });
    expect(forbiddenKey(JSON.parse('{"l":[{"ok":1},{"constructor":2}]}'))).toEqual({
      key: "constructor",
      at: "/l/1",
    });
    expect(forbiddenKey(JSON.parse('{"a/b":{"m~n":{"prototype":0}}}'))).toEqual({
      key: "prototype",
      at: "/a~1b/m~0n",
    });
    // values may say anything; only keys count
    expect(forbiddenKey(JSON.parse('{"k":"__proto__","l":["constructor"]}'))).toBeUndefined();
  });

  test("walks a deep document without recursion and a cyclic one (YAML aliases) once", () => {
    let deep = '"x"';
    for (let i = 0; i < 50_000; i++) deep = `{"a":${deep}}`;
    expect(forbiddenKey(JSON.parse(deep))).toBeUndefined();
    const cyclic: Record<string, unknown> = { a: {} };
    (cyclic.a as Record<string, unknown>).back = cyclic;
    expect(forbiddenKey(cyclic)).toBeUndefined();
  });

  test("parseUntrustedJson refuses the key, hasOwn ignores the prototype, nullProto reads nothing inherited", () => {
    expect(() => parseUntrustedJson('{"x":{"__proto__":{"subject":"x"}}}')).toThrow(
      'forbidden key "__proto__" at /x',
    );
    expect(() => parseUntrustedJson("{")).toThrow(SyntaxError);
    expect(hasOwn({}, "constructor")).toBe(false);
    expect("constructor" in {}).toBe(true); // why `in` is not used
    const scope = nullProto(JSON.parse('{"tool":"refunds.issue"}') as Record<string, unknown>);
    Object.defineProperty(Object.prototype, "subject", { value: "x", configurable: true });
    try {
      expect(scope.subject).toBeUndefined();
      expect(scope.tool).toBe("refunds.issue");
    } finally {
      delete (Object.prototype as Record<string, unknown>).subject;
    }
  });
});

describe("bundle data and manifest", () => {
  let reference: Map<string, Buffer>;
  beforeAll(async () => {
    reference = await readTarGz(readFileSync(defaultBundlePath()));
  });
  const withFiles = (extra: Record<string, string>): Map<string, Buffer> => {
    const files = new Map(reference);
    for (const [p, body] of Object.entries(extra)) files.set(p, Buffer.from(body));
    return files;
  };

  test.each([
    ["block YAML", "__proto__:\n  subject: x\n", "/"],
    [
      "nested YAML",
      "limits:\n  rates:\n    - __proto__:\n        agent: evil\n",
      "/limits/rates/0",
    ],
    ["flow YAML", "{a: {constructor: {prototype: {subject: x}}}}", "/a"],
    ["a prototype key", "prototype: 1\n", "/"],
  ])(
    "a data.yaml with %s is refused with bundle_data_invalid naming file and path",
    (_w, yaml, at) => {
      const e = caught(() =>
        parseBundle(withFiles({ "/toolgate/extra/data.yaml": yaml }), "b", "test"),
      );
      expect(e.code).toBe("bundle_data_invalid");
      expect(e.message).toMatch(
        new RegExp(`^/toolgate/extra/data\\.yaml: forbidden key "[a-z_]+" at ${at}$`),
      );
      expect(pollution()).toEqual([]);
    },
  );

  test("a directory bundle with a data directory named __proto__ is refused before any merge", async () => {
    const dir = tempDir("toolgate-bundle-dir-");
    for (const [p, body] of reference) {
      mkdirSync(join(dir, ...p.split("/").slice(1, -1)), { recursive: true });
      writeFileSync(join(dir, ...p.split("/").slice(1)), body);
    }
    mkdirSync(join(dir, "toolgate", "__proto__"), { recursive: true });
    writeFileSync(join(dir, "toolgate", "__proto__", "data.json"), '{"subject":"x"}');
    const e = await rejected(loadBundleFromPath(dir));
    expect(e.code).toBe("bundle_data_invalid");
    expect(e.message).toBe(
      '/toolgate/__proto__/data.json: forbidden key "__proto__" in the data path /toolgate/__proto__',
    );
    expect(pollution()).toEqual([]);
  });

  test("a manifest holding __proto__ (e.g. in metadata) is refused with manifest_invalid", () => {
    const manifest = JSON.parse((reference.get("/.manifest") as Buffer).toString()) as object;
    const text = JSON.stringify(manifest).replace(
      /^\{/,
      '{"metadata":{"__proto__":{"subject":"x"}},',
    );
    const e = caught(() => parseBundle(withFiles({ "/.manifest": text }), "b", "test"));
    expect(e.code).toBe("manifest_invalid");
    expect(e.message).toBe('/.manifest: forbidden key "__proto__" at /metadata');
  });

  test("a data file merging into existing data cannot reach a prototype through `in`", () => {
    // before: `"toString" in node` was true and node.toString a function → "defined twice"
    const b = parseBundle(withFiles({ "/toolgate/x/data.json": '{"toString":"fine"}' }), "b", "t");
    expect((b.data.toolgate as Record<string, Record<string, unknown>>).x).toEqual({
      toString: "fine",
    });
  });
});

describe("config files and environment", () => {
  const dir = tempDir("toolgate-config-");

  test.each([
    ["config.yaml", "grants:\n  tools:\n    __proto__:\n      audience: evil\n", "/grants/tools"],
    ["config.json", '{"__proto__": {"state": {"dir": "/tmp/evil"}}}', "/"],
    ["nested.yaml", "server:\n  agent:\n    constructor:\n      prototype: {}\n", "/server/agent"],
  ])(
    "%s holding a forbidden key is refused with config_invalid naming the path",
    (name, text, at) => {
      const file = join(dir, name);
      writeFileSync(file, text);
      const e = caught(() => loadConfig(file, {}));
      expect(e.code).toBe("config_invalid");
      expect(e.message).toContain(`${file}: forbidden key`);
      expect(e.message).toContain(` at ${at}.`);
      expect(pollution()).toEqual([]);
    },
  );

  test("a JSON environment value holding __proto__ is refused naming the variable", () => {
    const e = caught(() =>
      compileConfig({}, { TOOLGATE_GRANTS_TOOLS: '{"__proto__":{"audience":"evil"}}' }),
    );
    expect(e.code).toBe("config_invalid");
    expect(e.message).toContain(
      'environment variable TOOLGATE_GRANTS_TOOLS must not hold a forbidden key "__proto__" at /',
    );
  });
});

test("a JWKS file holding __proto__ is refused by the token verifier with config_invalid", async () => {
  const dir = tempDir("toolgate-jwks-");
  const pub = createPublicKey(
    readFileSync(join(__dirname, "..", "..", "config", "dev", "dev-signing-key.pub.pem")),
  ).export({ format: "jwk" });
  const file = join(dir, "jwks.json");
  writeFileSync(
    file,
    `{"keys":[${JSON.stringify(pub).replace(/^\{/, '{"__proto__":{"alg":"none"},')}]}`,
  );
  const cfg = compileConfig({}, { TOOLGATE_CONTROL_JWT_JWKS_FILE: file });
  const err: unknown = await TokenVerifier.create(cfg.control.jwt, {
    hostKey: "control.host",
    host: "127.0.0.1",
  }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ToolgateError);
  expect((err as ToolgateError).code).toBe("config_invalid");
  expect((err as ToolgateError).message).toContain('forbidden key "__proto__" at /keys/0');
});

test("persisted bundle metadata holding __proto__ is reported damaged, not used", () => {
  const root = tempDir("toolgate-persist-");
  const store = new BundleStore(root, "http://example/b.tar.gz");
  const bytes = readFileSync(defaultBundlePath());
  store.save(bytes, { source: "s", name: "b", revision: "r", etag: null });
  const metaFile = join(store.dir, "bundle.json");
  const meta = readFileSync(metaFile, "utf8");
  writeFileSync(metaFile, meta.replace(/^\{/, '{"__proto__":{"sha256":"x"},'));
  const e = caught(() => store.load());
  expect(e.code).toBe("bundle_persist_failed");
  expect(e.message).toContain('forbidden key "__proto__" at /');
});

describe("policy output", () => {
  const build = (decision: string): string =>
    buildWasmBundle({
      "p.rego": `package toolgate
import rego.v1
decision := ${decision}
`,
    });

  test("an output naming __proto__ is an evaluation error (the decider denies), on the fast path", async () => {
    const engine = await PolicyEngine.create(
      await loadBundleFromPath(
        build(
          '{"outcome": "allow", "reasons": [], "obligations": [{"id": "g", "type": "grant_scope", "properties": {"__proto__": {"max_amount": 1000000}}}]}',
        ),
      ),
      { entrypoint: "toolgate/decision" },
    );
    let err: unknown;
    try {
      engine.evaluateJson("{}");
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({
      code: "policy_evaluation_failed",
      message: 'the policy output holds a forbidden key "__proto__" at /obligations/0/properties',
    });
  });

  test("the words as values are fine", async () => {
    const engine = await PolicyEngine.create(
      await loadBundleFromPath(
        build(
          '{"outcome": "deny", "reasons": [{"code": "constructor", "message": "__proto__ prototype"}]}',
        ),
      ),
      { entrypoint: "toolgate/decision" },
    );
    expect(engine.evaluateJson("{}")).toEqual({
      outcome: "deny",
      reasons: [{ code: "constructor", message: "__proto__ prototype" }],
    });
  });
});
