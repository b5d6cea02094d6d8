/**
 * The trail's one reader (readTrail, with each line's json, entry and chain
 * facts), its path expander (expandTrailPaths) and the tail scan the writer
 * resumes from, over real trails written by AuditTrail in a temp dir.
 */
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AuditTrail,
  expandTrailPaths,
  GENESIS_HASH,
  readTrail,
  trailFileName,
  type TrailLine,
} from "../../src/trail";
import { scanTail } from "../../src/trail/reader";
import { isToolgateError } from "../../src/errors";

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "toolgate-trail-reader-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Writes n records (rotating at maxFileBytes) and returns the dir and each record's seq and hash. */
async function makeTrail(
  n: number,
  maxFileBytes = 64 * 1024 * 1024,
): Promise<{ dir: string; appended: { seq: number; hash: string }[] }> {
  const dir = tmp();
  const trail = AuditTrail.open({ dir, maxFileBytes });
  const appended = [];
  for (let i = 1; i <= n; i++)
    appended.push(trail.append(i % 3 ? "decision" : "action", { n: i, note: "é😀" }));
  await trail.close();
  return { dir, appended };
}

const all = (files: string[]): TrailLine[] => [...readTrail(files)];

/** The code and message `fn` throws with. */
function thrown(fn: () => unknown): { code: string; message: string } | undefined {
  try {
    fn();
  } catch (e) {
    return isToolgateError(e) ? { code: e.code, message: e.message } : { code: "?", message: "?" };
  }
  return undefined;
}

describe("readTrail", () => {
  test("every line of the files in order, across rotation, with 1-based line numbers per file", async () => {
    const { dir, appended } = await makeTrail(30, 600);
    const files = expandTrailPaths([dir]);
    expect(files.length).toBeGreaterThan(3);
    const lines = all(files);
    expect(lines).toHaveLength(30);
    expect(lines.map((l) => l.file)).toEqual([...lines.map((l) => l.file)].sort());
    for (const f of files) {
      const inFile = lines.filter((l) => l.file === f);
      expect(inFile.map((l) => l.line)).toEqual(inFile.map((_, i) => i + 1));
      expect(inFile.map((l) => `${l.text}\n`).join("")).toBe(readFileSync(f, "utf8"));
    }
    expect(lines.every((l) => l.complete)).toBe(true);
    expect(lines.map((l) => l.entry()?.record.note)).toEqual(appended.map(() => "é😀"));
  });

  test("each line's chain facts: seq, prev and hash as the writer made them", async () => {
    const { dir, appended } = await makeTrail(12, 500);
    const facts = all(expandTrailPaths([dir])).map((l) => {
      const c = l.check();
      if (!c.ok) throw new Error(c.message);
      return c.rec;
    });
    expect(facts.map((f) => f.seq)).toEqual(appended.map((a) => a.seq));
    expect(facts.map((f) => f.hash)).toEqual(appended.map((a) => a.hash));
    expect(facts.map((f) => f.prev)).toEqual([
      GENESIS_HASH,
      ...appended.slice(0, -1).map((a) => a.hash),
    ]);
  });

  test("entry() is what a line holds; check() says whether it is intact", async () => {
    const { dir } = await makeTrail(2);
    const file = join(dir, trailFileName(1));
    const [l1, l2] = readFileSync(file, "utf8").split("\n");
    writeFileSync(
      file,
      [
        l1,
        (l2 as string).replace('"n":2', '"n":7'), // edited: readable, not intact
        "",
        "not json",
        "[1,2]",
        '{"kind":"x","record":[1]}',
        '{"kind":"x","record":{"a":1}}',
      ].join("\n") + "\n",
    );
    const lines = all([file]);
    expect(lines.map((l) => l.line)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(lines.map((l) => l.entry()?.kind)).toEqual([
      "decision",
      "decision",
      undefined,
      undefined,
      undefined,
      undefined,
      "x",
    ]);
    expect(lines[1]?.entry()).toMatchObject({ seq: 2, record: { n: 7 } });
    const checks = lines.map((l) => l.check());
    expect(checks.map((c) => (c.ok ? "ok" : c.reason))).toEqual([
      "ok",
      "hash_mismatch",
      "malformed",
      "malformed",
      "malformed",
      "malformed",
      "malformed",
    ]);
    expect(checks[1]).toMatchObject({ seq: 2 });
    expect(checks[2]).toMatchObject({ message: "not JSON: Unexpected end of JSON input" });
    expect(checks[4]).toEqual({ ok: false, reason: "malformed", message: "not a JSON object" });
    expect(lines[3]?.json().ok).toBe(false);
    expect(lines[4]?.json()).toEqual({ ok: true, value: [1, 2] });
  });

  test("a file's last line without a newline comes as incomplete; an empty file has no lines", async () => {
    const { dir } = await makeTrail(3);
    const file = join(dir, trailFileName(1));
    const text = readFileSync(file, "utf8");
    writeFileSync(file, text.slice(0, -1)); // only the final newline is lost
    writeFileSync(join(dir, trailFileName(2)), "");
    appendFileSync(join(dir, trailFileName(3)), '{"torn');
    const lines = all(expandTrailPaths([dir]));
    expect(lines.map((l) => [l.file.slice(-18), l.line, l.complete])).toEqual([
      [trailFileName(1), 1, true],
      [trailFileName(1), 2, true],
      [trailFileName(1), 3, false],
      [trailFileName(3), 1, false],
    ]);
    // the torn line is still what it is: here a whole record, so readable
    expect(lines[2]?.entry()?.seq).toBe(3);
    expect(lines[3]?.text).toBe('{"torn');
  });

  test("a file is read when the iteration reaches it; an unreadable one is audit_trail_unreadable", async () => {
    const { dir } = await makeTrail(2);
    const missing = join(dir, "gone.jsonl");
    const it = readTrail([join(dir, trailFileName(1)), missing]);
    expect(it.next().value?.line).toBe(1);
    expect(it.next().value?.line).toBe(2);
    const err = thrown(() => it.next());
    expect(err?.code).toBe("audit_trail_unreadable");
    expect(err?.message).toContain(missing);
  });
});

describe("expandTrailPaths", () => {
  test("files as given, in the order given; a directory as its trail files by number", () => {
    const dir = tmp();
    for (const n of [10, 2, 9, 1]) writeFileSync(join(dir, trailFileName(n)), "");
    writeFileSync(join(dir, "notes.txt"), "");
    writeFileSync(join(dir, "trail-1.jsonl"), ""); // fewer than six digits: not a trail file
    writeFileSync(join(dir, "trail-0000003.jsonl"), ""); // seven digits: 3
    const other = join(tmp(), "x.jsonl");
    writeFileSync(other, "");
    expect(expandTrailPaths([other, dir])).toEqual([
      other,
      join(dir, trailFileName(1)),
      join(dir, trailFileName(2)),
      join(dir, "trail-0000003.jsonl"),
      join(dir, trailFileName(9)),
      join(dir, trailFileName(10)),
    ]);
  });

  test("a path that cannot be stat'ed is audit_trail_unreadable; an empty directory is none, or an error when files are required", () => {
    const dir = tmp();
    const empty = join(dir, "empty");
    mkdirSync(empty);
    const dangling = join(dir, trailFileName(1));
    symlinkSync(join(dir, "nowhere"), dangling);
    expect(thrown(() => expandTrailPaths([join(dir, "nope")]))?.code).toBe(
      "audit_trail_unreadable",
    );
    expect(thrown(() => expandTrailPaths([dangling]))?.code).toBe("audit_trail_unreadable");
    expect(expandTrailPaths([empty])).toEqual([]);
    expect(thrown(() => expandTrailPaths([empty], { requireFiles: true }))).toEqual({
      code: "audit_trail_unreadable",
      message: `${empty}: no trail-*.jsonl files`,
    });
  });
});

describe("scanTail", () => {
  test("the last good record of a file and the bytes after it", async () => {
    const { dir, appended } = await makeTrail(5);
    const file = join(dir, trailFileName(1));
    const size = readFileSync(file).length;
    expect(scanTail(file)).toEqual({
      last: { seq: 5, prev: appended[3]?.hash, hash: appended[4]?.hash },
      discardedBytes: 0,
      size,
    });
    appendFileSync(file, 'garbage\n{"seq":6,"ti');
    expect(scanTail(file)).toMatchObject({
      last: { seq: 5, hash: appended[4]?.hash },
      discardedBytes: 'garbage\n{"seq":6,"ti'.length,
    });
  });
});
