import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { ToolgateError } from "../../src/errors";
import { loadBundleFromBytes, loadBundleFromPath, parseBundle } from "../../src/policy/bundle";
import { PolicyEngine } from "../../src/policy/engine";
import { readTarGz } from "../../src/shared/tar";
import { defaultBundlePath } from "../../src/shared/paths";
import { buildWasmBundle, tempDir } from "../helpers/opa";

interface Entry {
  name: string;
  body?: string;
  type?: string;
}

/** A minimal ustar writer, so tests can craft hostile archives. */
function tar(entries: Entry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? "");
    const h = Buffer.alloc(512);
    h.write(e.name, 0, 100);
    h.write("0000644\0", 100);
    h.write("0000000\0", 108);
    h.write("0000000\0", 116);
    h.write(body.length.toString(8).padStart(11, "0") + "\0", 124);
    h.write("00000000000\0", 136);
    h.write(e.type ?? "0", 156);
    h.write("ustar\0", 257);
    h.write("00", 263);
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
    blocks.push(h, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof ToolgateError) return e.code;
    throw e;
  }
  return "no error";
}

const manifest = JSON.stringify({
  revision: "r1",
  roots: ["toolgate"],
  wasm: [{ entrypoint: "toolgate/decision", module: "/policy.wasm" }],
});

describe("tar reader", () => {
  test("reads regular files, normalising paths", () => {
    const files = readTarGz(
      tar([
        { name: "./a/data.json", body: "{}" },
        { name: "dir/", type: "5" },
        { name: "/.manifest", body: "{}" },
      ]),
    );
    expect([...files.keys()].sort()).toEqual(["/.manifest", "/a/data.json"]);
  });
  test("refuses a member escaping the root", () => {
    expect(code(() => readTarGz(tar([{ name: "../../etc/passwd", body: "x" }])))).toBe(
      "bundle_unreadable",
    );
  });
  test("refuses symlinks and hard links", () => {
    expect(code(() => readTarGz(tar([{ name: "link", type: "2" }])))).toBe("bundle_unreadable");
    expect(code(() => readTarGz(tar([{ name: "hard", type: "1" }])))).toBe("bundle_unreadable");
  });
  test("refuses a duplicate member", () => {
    expect(
      code(() =>
        readTarGz(
          tar([
            { name: "a", body: "1" },
            { name: "./a", body: "2" },
          ]),
        ),
      ),
    ).toBe("bundle_unreadable");
  });
  test("refuses a corrupted header checksum", () => {
    const raw = gunzipSync(tar([{ name: "a", body: "1" }])) as Buffer;
    raw[0] = 0x62; // rename without fixing the checksum
    expect(code(() => readTarGz(gzipSync(raw)))).toBe("bundle_unreadable");
  });
  test("refuses a gzip bomb beyond the size limit", () => {
    const bomb = tar([{ name: "big", body: "0".repeat(2_000_000) }]);
    expect(code(() => readTarGz(bomb, { maxBytes: 1_000_000, maxFiles: 10 }))).toBe(
      "bundle_too_large",
    );
  });
  test("refuses too many files", () => {
    const many = tar(Array.from({ length: 5 }, (_, i) => ({ name: `f${i}`, body: "x" })));
    expect(code(() => readTarGz(many, { maxBytes: 1_000_000, maxFiles: 3 }))).toBe(
      "bundle_too_large",
    );
  });
});

describe("bundle checks", () => {
  test("the committed reference bundle has manifest, data and wasm", () => {
    const b = loadBundleFromPath(defaultBundlePath());
    expect(b.name).toBe("support-triage");
    expect(b.manifest.revision).toMatch(/^[0-9a-f]{16}$/);
    expect(b.manifest.roots).toEqual(["toolgate"]);
    expect(b.manifest.wasm).toEqual([{ entrypoint: "toolgate/decision", module: "/policy.wasm" }]);
    expect(b.files.get("/policy.wasm")?.subarray(0, 4)).toEqual(Buffer.from([0, 0x61, 0x73, 0x6d]));
    expect(b.data).toHaveProperty("toolgate");
  });
  test.each([
    ["no manifest", [{ name: "data.json", body: "{}" }], "manifest_invalid"],
    ["manifest not JSON", [{ name: ".manifest", body: "{" }], "manifest_invalid"],
    ["roots not strings", [{ name: ".manifest", body: '{"roots": [1]}' }], "manifest_invalid"],
    ["wasm module missing", [{ name: ".manifest", body: manifest }], "manifest_invalid"],
    [
      "data outside the roots",
      [
        { name: ".manifest", body: JSON.stringify({ roots: ["toolgate"] }) },
        { name: "other/data.json", body: "{}" },
      ],
      "bundle_data_invalid",
    ],
    [
      "data not JSON",
      [
        { name: ".manifest", body: "{}" },
        { name: "toolgate/data.json", body: "{nope" },
      ],
      "bundle_data_invalid",
    ],
    [
      "conflicting data",
      [
        { name: ".manifest", body: "{}" },
        { name: "data.json", body: '{"a": {"b": 1}}' },
        { name: "a/b/data.json", body: '{"c": 1}' },
      ],
      "bundle_data_invalid",
    ],
  ])("%s", (_n, entries, expected) => {
    expect(code(() => loadBundleFromBytes(tar(entries), "t", "test"))).toBe(expected);
  });
  test("data files merge by directory, JSON and YAML alike", () => {
    const b = loadBundleFromBytes(
      tar([
        { name: ".manifest", body: "{}" },
        { name: "data.json", body: '{"top": 1}' },
        { name: "a/b/data.yaml", body: "c: 2\n" },
      ]),
      "t",
      "test",
    );
    expect(b.data).toEqual({ top: 1, a: { b: { c: 2 } } });
  });
  test("a directory bundle reads like its tarball", () => {
    const dir = tempDir();
    mkdirSync(join(dir, "toolgate"));
    writeFileSync(join(dir, ".manifest"), JSON.stringify({ roots: ["toolgate"] }));
    writeFileSync(join(dir, "toolgate", "data.json"), '{"x": true}');
    const b = loadBundleFromPath(dir);
    expect(b.data).toEqual({ toolgate: { x: true } });
    expect(parseBundle(b.files, "again", dir).data).toEqual(b.data);
  });
});

describe("engine", () => {
  test("passes falsy inputs through (opa-wasm would read them as 'no input')", async () => {
    const path = buildWasmBundle(
      {
        "p.rego":
          'package toolgate\nimport rego.v1\ndecision := {"echo": input, "now": time.now_ns()}\n',
      },
      { name: "echo" },
    );
    const engine = await PolicyEngine.create(loadBundleFromPath(path), {
      entrypoint: "toolgate/decision",
    });
    for (const v of [false, 0, "", null, {}, [1]]) {
      expect(engine.evaluateJson(JSON.stringify(v), 1234)).toEqual({ echo: v, now: 1234 });
    }
    expect(engine.info).toEqual({ bundle: "echo", revision: "fixture-1", source: path });
    expect(engine.entrypoints).toEqual(["toolgate/decision"]);
  });
  test("an input beyond the wasm memory bound is an evaluation error, not a crash", async () => {
    const engine = await PolicyEngine.create(loadBundleFromPath(defaultBundlePath()), {
      entrypoint: "toolgate/decision",
      maxMemoryPages: 40,
    });
    const big = JSON.stringify({ request: { pad: "x".repeat(4 * 1024 * 1024) } });
    expect(code(() => engine.evaluateJson(big))).toBe("policy_evaluation_failed");
    // and the engine still answers afterwards
    expect(engine.evaluateJson(JSON.stringify({ request: {} }))).toMatchObject({ outcome: "deny" });
  });

  test("malformed input JSON never becomes an allow", async () => {
    const engine = await PolicyEngine.create(loadBundleFromPath(defaultBundlePath()), {
      entrypoint: "toolgate/decision",
    });
    let out: unknown;
    try {
      out = engine.evaluateJson("{not json");
    } catch (e) {
      expect((e as ToolgateError).code).toBe("policy_evaluation_failed");
      return;
    }
    expect(out).toMatchObject({ outcome: "deny" });
  });
});
