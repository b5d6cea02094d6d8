import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { ToolgateError } from "../../src/errors";
import { loadBundleFromBytes, loadBundleFromPath, parseBundle } from "../../src/policy/bundle";
import { PolicyEngine } from "../../src/policy/engine";
import { readTarGz, writeTarGz } from "../../src/shared/tar";
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

async function code(fn: () => unknown): Promise<string> {
  try {
    await fn();
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
  test("reads regular files, normalising paths", async () => {
    const files = await readTarGz(
      tar([
        { name: "./a/data.json", body: "{}" },
        { name: "dir/", type: "5" },
        { name: "/.manifest", body: "{}" },
      ]),
    );
    expect([...files.keys()].sort()).toEqual(["/.manifest", "/a/data.json"]);
  });
  test("refuses a member escaping the root", async () => {
    expect(await code(() => readTarGz(tar([{ name: "../../etc/passwd", body: "x" }])))).toBe(
      "bundle_unreadable",
    );
  });
  test("refuses symlinks and hard links", async () => {
    expect(await code(() => readTarGz(tar([{ name: "link", type: "2" }])))).toBe(
      "bundle_unreadable",
    );
    expect(await code(() => readTarGz(tar([{ name: "hard", type: "1" }])))).toBe(
      "bundle_unreadable",
    );
  });
  test("refuses a duplicate member", async () => {
    expect(
      await code(() =>
        readTarGz(
          tar([
            { name: "a", body: "1" },
            { name: "./a", body: "2" },
          ]),
        ),
      ),
    ).toBe("bundle_unreadable");
  });
  test("refuses a corrupted header checksum", async () => {
    const raw = gunzipSync(tar([{ name: "a", body: "1" }])) as Buffer;
    raw[0] = 0x62; // rename without fixing the checksum
    expect(await code(() => readTarGz(gzipSync(raw)))).toBe("bundle_unreadable");
  });
  test("refuses a gzip bomb beyond the size limit", async () => {
    const bomb = tar([{ name: "big", body: "0".repeat(2_000_000) }]);
    expect(await code(() => readTarGz(bomb, { maxBytes: 1_000_000, maxFiles: 10 }))).toBe(
      "bundle_too_large",
    );
  });
  test("refuses too many files", async () => {
    const many = tar(Array.from({ length: 5 }, (_, i) => ({ name: `f${i}`, body: "x" })));
    expect(await code(() => readTarGz(many, { maxBytes: 1_000_000, maxFiles: 3 }))).toBe(
      "bundle_too_large",
    );
  });
});

describe("tar reader, more refusals and the end of the archive", () => {
  test("refuses devices and fifos", async () => {
    for (const type of ["3", "4", "6"]) {
      expect(await code(() => readTarGz(tar([{ name: "dev", type }])))).toBe("bundle_unreadable");
    }
  });
  test("refuses a truncated archive", async () => {
    const raw = gunzipSync(tar([{ name: "a", body: "x".repeat(2000) }]));
    expect(await code(() => readTarGz(gzipSync(raw.subarray(0, 1024))))).toBe("bundle_unreadable");
  });
  test("reads a member without the ustar magic (a v7 header)", async () => {
    const raw = gunzipSync(tar([{ name: "old.json", body: "{}" }]));
    raw.fill(0, 257, 265); // no magic, no version
    raw.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += raw[i] as number;
    raw.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
    expect([...(await readTarGz(gzipSync(raw))).keys()]).toEqual(["/old.json"]);
  });
  test("ends at the first zero block, as OPA's reader does: a concatenated archive's second part is not read", async () => {
    const first = gunzipSync(tar([{ name: "a.json", body: "1" }]));
    const second = gunzipSync(tar([{ name: "b.json", body: "2" }]));
    const files = await readTarGz(gzipSync(Buffer.concat([first, second])));
    expect([...files.keys()]).toEqual(["/a.json"]);
    expect([
      ...(await readTarGz(gzipSync(Buffer.concat([first, Buffer.from("trailing junk")])))).keys(),
    ]).toEqual(["/a.json"]);
    expect((await readTarGz(gzipSync(Buffer.alloc(1024)))).size).toBe(0);
  });
});

describe("tar writer", () => {
  test("long names round-trip: 150 bytes with no '/' to split at, long segments, deep paths", async () => {
    const files = new Map([
      ["/" + "a".repeat(149), Buffer.from("150 bytes, one segment")],
      ["/dir/" + "b".repeat(150), Buffer.from("a segment longer than 100 bytes")],
      [
        "/" + Array.from({ length: 12 }, (_, i) => `segment-${i}-`.repeat(2)).join("/"),
        Buffer.from("deep"),
      ],
      ["/données/é.json", Buffer.from("{}")],
      ["/.manifest", Buffer.from("{}")],
    ]);
    expect(Buffer.byteLength([...files.keys()][0] as string)).toBe(150);
    const back = await readTarGz(await writeTarGz(files));
    expect(back).toEqual(files);
  });
  test("the same files give the same bytes", async () => {
    const files = new Map([["/data.json", Buffer.from('{"a":1}')]]);
    expect((await writeTarGz(files)).equals(await writeTarGz(new Map(files)))).toBe(true);
  });
  test("writes what the reader of opa bundles reads back (the reference bundle)", async () => {
    const files = await readTarGz(readFileSync(defaultBundlePath()));
    expect(await readTarGz(await writeTarGz(files))).toEqual(files);
  });
});

describe("bundle checks", () => {
  test("the committed reference bundle has manifest, data and wasm", async () => {
    const b = await loadBundleFromPath(defaultBundlePath());
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
  ])("%s", async (_n, entries, expected) => {
    expect(await code(() => loadBundleFromBytes(tar(entries), "t", "test"))).toBe(expected);
  });
  test("data files merge by directory, JSON and YAML alike", async () => {
    const b = await loadBundleFromBytes(
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
  test("a directory bundle reads like its tarball", async () => {
    const dir = tempDir();
    mkdirSync(join(dir, "toolgate"));
    writeFileSync(join(dir, ".manifest"), JSON.stringify({ roots: ["toolgate"] }));
    writeFileSync(join(dir, "toolgate", "data.json"), '{"x": true}');
    const b = await loadBundleFromPath(dir);
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
    const engine = await PolicyEngine.create(await loadBundleFromPath(path), {
      entrypoint: "toolgate/decision",
    });
    for (const v of [false, 0, "", null, {}, [1]]) {
      expect(engine.evaluateJson(JSON.stringify(v), 1234)).toEqual({ echo: v, now: 1234 });
    }
    expect(engine.info).toEqual({ bundle: "echo", revision: "fixture-1", source: path });
    expect(engine.entrypoints).toEqual(["toolgate/decision"]);
  });
  test("an input beyond the wasm memory bound is an evaluation error, not a crash", async () => {
    const engine = await PolicyEngine.create(await loadBundleFromPath(defaultBundlePath()), {
      entrypoint: "toolgate/decision",
      maxMemoryPages: 40,
    });
    const big = JSON.stringify({ request: { pad: "x".repeat(4 * 1024 * 1024) } });
    expect(await code(() => engine.evaluateJson(big))).toBe("policy_evaluation_failed");
    // and the engine still answers afterwards
    expect(engine.evaluateJson(JSON.stringify({ request: {} }))).toMatchObject({ outcome: "deny" });
  });

  test("malformed input JSON never becomes an allow", async () => {
    const engine = await PolicyEngine.create(await loadBundleFromPath(defaultBundlePath()), {
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
