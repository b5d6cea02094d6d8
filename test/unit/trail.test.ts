/**
 * The local audit trail with real files in a temp dir: chaining, rotation,
 * resume, recovery, tamper detection, write errors, and the CLI command.
 */
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AuditTrail,
  canonicalJson,
  GENESIS_HASH,
  MAX_PENDING_LINES,
  RECOVERED_KIND,
  verifyTrail,
  type TrailOptions,
} from "../../src/trail";
import { auditVerifyCommand } from "../../src/cli/audit";
import { isToolgateError } from "../../src/errors";

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "toolgate-trail-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function file(dir: string, n: number): string {
  return join(dir, `trail-${String(n).padStart(6, "0")}.jsonl`);
}
function lines(path: string): string[] {
  return readFileSync(path, "utf8").split("\n").slice(0, -1);
}
function decision(i: number): Record<string, unknown> {
  return { tool: "refunds.issue", decision: i % 2 ? "allow" : "deny", n: i, args: { amount: i } };
}

/** Writes n records into a fresh trail and closes it. */
async function makeTrail(n: number, opts: Partial<TrailOptions> = {}): Promise<string> {
  const dir = tmp();
  const trail = AuditTrail.open({ dir, ...opts });
  for (let i = 1; i <= n; i++) trail.append("decision", decision(i));
  await trail.close();
  return dir;
}

/**
 * Re-hashes a parsed line the way the trail does (for forging tests): SHA-256
 * over the line's text up to `,"hash":`, members in the trail's order.
 */
function rehash(o: Record<string, unknown>): string {
  const { seq, time, kind, prev, record } = o;
  const body = JSON.stringify({ seq, time, kind, prev, record }).slice(0, -1);
  return createHash("sha256").update(body).digest("hex");
}

describe("canonicalJson", () => {
  test("sorts keys recursively and follows JSON.stringify otherwise", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: "x" }, u: undefined })).toBe(
      '{"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1}',
    );
    expect(canonicalJson([undefined, NaN, new Date(0)])).toBe(
      '[null,null,"1970-01-01T00:00:00.000Z"]',
    );
  });
  test("refuses BigInt and cycles", () => {
    expect(() => canonicalJson({ a: 1n })).toThrow(/plain JSON/);
    const o: Record<string, unknown> = {};
    o.self = o;
    expect(() => canonicalJson(o)).toThrow(/deeper|cyclic/);
  });
});

describe("writing", () => {
  test("the line format: seq, time, kind, prev, record, hash over the line as written", async () => {
    const dir = tmp();
    const trail = AuditTrail.open({ dir });
    const a = trail.append("decision", { z: 1, a: "x" });
    const b = trail.append("action", { ok: true });
    expect(a.seq).toBe(1);
    expect(b.seq).toBe(2);
    expect(trail.stats().lastHash).toBe(b.hash);
    await trail.close();
    const [l1, l2] = lines(file(dir, 1)).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(Object.keys(l1 ?? {})).toEqual(["seq", "time", "kind", "prev", "record", "hash"]);
    expect(l1).toMatchObject({ seq: 1, kind: "decision", prev: GENESIS_HASH, hash: a.hash });
    expect(l2).toMatchObject({ seq: 2, kind: "action", prev: a.hash, hash: b.hash });
    expect(rehash(l1 ?? {})).toBe(a.hash);
    expect(new Date(l1?.time as string).toISOString()).toBe(l1?.time);
  });

  test("the chain and seq continue across rotation; every file verifies in order", async () => {
    const dir = await makeTrail(40, { maxFileBytes: 1000 });
    const files = readdirSync(dir).sort();
    expect(files.length).toBeGreaterThanOrEqual(4);
    for (const f of files) expect(statSync(join(dir, f)).size).toBeLessThanOrEqual(1000);
    const first2 = JSON.parse(lines(file(dir, 2))[0] as string) as { seq: number; prev: string };
    const last1 = JSON.parse(lines(file(dir, 1)).at(-1) as string) as { seq: number; hash: string };
    expect(first2.seq).toBe(last1.seq + 1);
    expect(first2.prev).toBe(last1.hash);
    const r = verifyTrail([dir]);
    expect(r).toMatchObject({ ok: true, records: 40, files: files.length });
    expect(r.firstBreak).toBeUndefined();
    // explicit file list, in order, is the same
    expect(verifyTrail(files.map((f) => join(dir, f)))).toMatchObject({ ok: true, records: 40 });
  });

  test("the flusher writes without an explicit flush; flush() waits for it", async () => {
    const dir = tmp();
    const trail = AuditTrail.open({ dir, flushIntervalMs: 5 });
    trail.append("decision", decision(1));
    expect(trail.stats()).toMatchObject({ appended: 1, written: 0, pending: 1 });
    await new Promise((r) => setTimeout(r, 100));
    expect(trail.stats()).toMatchObject({ written: 1, pending: 0 });
    trail.append("decision", decision(2));
    await trail.flush();
    expect(lines(file(dir, 1))).toHaveLength(2);
    await trail.close();
  });

  test("resume after close and reopen continues seq and chain in the same file", async () => {
    const dir = tmp();
    const t1 = AuditTrail.open({ dir });
    for (let i = 1; i <= 5; i++) t1.append("decision", decision(i));
    const head = t1.stats().lastHash;
    await t1.close();
    const t2 = AuditTrail.open({ dir });
    expect(t2.stats().lastHash).toBe(head);
    const next = t2.append("decision", decision(6));
    expect(next.seq).toBe(6);
    await t2.close();
    const all = lines(file(dir, 1));
    expect(all).toHaveLength(6);
    expect((JSON.parse(all[5] as string) as { prev: string }).prev).toBe(head);
    expect(verifyTrail([dir])).toMatchObject({ ok: true, records: 6, lastHash: next.hash });
  });

  test("close is safe twice; append after close throws audit_trail_closed", async () => {
    const dir = tmp();
    const trail = AuditTrail.open({ dir });
    trail.append("decision", decision(1));
    await Promise.all([trail.close(), trail.close()]);
    await trail.close();
    let err: unknown;
    try {
      trail.append("decision", decision(2));
    } catch (e) {
      err = e;
    }
    expect(isToolgateError(err) && err.code).toBe("audit_trail_closed");
  });

  test("records that are not plain JSON are refused with a coded error", () => {
    const trail = AuditTrail.open({ dir: tmp() });
    expect(() => trail.append("decision", { n: 1n })).toThrow(/plain JSON/);
    expect(trail.stats().appended).toBe(0);
    return trail.close();
  });
});

describe("recovery on open", () => {
  test("a torn last line: a new file starts with a trail.recovered marker chained to the last good record", async () => {
    const dir = await makeTrail(5);
    const good = lines(file(dir, 1));
    const lastGood = JSON.parse(good[3] as string) as { hash: string };
    // simulate a crash mid-write of record 5
    writeFileSync(file(dir, 1), good.slice(0, 4).join("\n") + "\n" + good[4]?.slice(0, 30));
    expect(verifyTrail([dir]).firstBreak).toMatchObject({ reason: "truncated", line: 5 });

    const trail = AuditTrail.open({ dir });
    const next = trail.append("decision", decision(99));
    await trail.close();
    expect(next.seq).toBe(6);
    const [marker] = lines(file(dir, 2)).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(marker).toMatchObject({ seq: 5, kind: RECOVERED_KIND, prev: lastGood.hash });
    expect(marker?.record).toMatchObject({ file: "trail-000001.jsonl", last_good_seq: 4 });
    const r = verifyTrail([dir]);
    expect(r).toMatchObject({ ok: true, records: 6, lastHash: next.hash });
    expect(r.recovered).toEqual([expect.objectContaining({ file: file(dir, 1), line: 5 })]);
  });

  test("a corrupt complete last line is skipped by open but still reported by verify", async () => {
    const dir = await makeTrail(3);
    writeFileSync(file(dir, 1), readFileSync(file(dir, 1), "utf8") + "garbage\n");
    const trail = AuditTrail.open({ dir });
    expect(trail.append("decision", decision(4)).seq).toBe(5); // 4 is the marker
    await trail.close();
    expect(verifyTrail([dir]).firstBreak).toMatchObject({
      file: file(dir, 1),
      line: 4,
      reason: "malformed",
    });
  });
});

describe("tamper detection", () => {
  const edit = (dir: string, f: (ls: string[]) => string[]): void => {
    writeFileSync(file(dir, 1), f(lines(file(dir, 1))).join("\n") + "\n");
  };

  test("an edited record → hash_mismatch at its line", async () => {
    const dir = await makeTrail(10);
    edit(dir, (ls) => ls.map((l, i) => (i === 3 ? l.replace('"deny"', '"allow"') : l)));
    expect(verifyTrail([dir])).toMatchObject({
      ok: false,
      records: 3,
      firstBreak: { file: file(dir, 1), line: 4, seq: 4, reason: "hash_mismatch" },
    });
  });

  test("an edited record with a recomputed hash → prev_mismatch at the next line", async () => {
    const dir = await makeTrail(10);
    edit(dir, (ls) =>
      ls.map((l, i) => {
        if (i !== 3) return l;
        const o = JSON.parse(l) as Record<string, unknown>;
        o.record = { ...(o.record as object), decision: "allow" };
        o.hash = rehash(o);
        return JSON.stringify(o);
      }),
    );
    expect(verifyTrail([dir]).firstBreak).toMatchObject({
      line: 5,
      seq: 5,
      reason: "prev_mismatch",
    });
  });

  test("a deleted record in the middle → seq_gap at the line after it", async () => {
    const dir = await makeTrail(10);
    edit(dir, (ls) => ls.filter((_, i) => i !== 4));
    expect(verifyTrail([dir]).firstBreak).toMatchObject({ line: 5, seq: 6, reason: "seq_gap" });
  });

  test("a deleted record with renumbered seq → prev_mismatch", async () => {
    const dir = await makeTrail(10);
    edit(dir, (ls) =>
      ls
        .filter((_, i) => i !== 4)
        .map((l, i) => {
          if (i < 4) return l;
          const o = JSON.parse(l) as Record<string, unknown>;
          o.seq = i + 1;
          o.hash = rehash(o);
          return JSON.stringify(o);
        }),
    );
    expect(verifyTrail([dir]).firstBreak).toMatchObject({ line: 5, reason: "prev_mismatch" });
  });

  test("two swapped records → detected at the first of them", async () => {
    const dir = await makeTrail(10);
    edit(dir, (ls) => {
      const out = [...ls];
      [out[3], out[4]] = [ls[4] as string, ls[3] as string];
      return out;
    });
    expect(verifyTrail([dir]).firstBreak).toMatchObject({ line: 4, seq: 5, reason: "seq_gap" });
  });

  test("a truncated last line → truncated", async () => {
    const dir = await makeTrail(10);
    const text = readFileSync(file(dir, 1), "utf8");
    writeFileSync(file(dir, 1), text.slice(0, -20));
    expect(verifyTrail([dir])).toMatchObject({
      ok: false,
      records: 9,
      firstBreak: { file: file(dir, 1), line: 10, reason: "truncated" },
    });
  });

  test("a malformed line → malformed", async () => {
    const dir = await makeTrail(4);
    edit(dir, (ls) => ls.map((l, i) => (i === 1 ? "{not json" : l)));
    expect(verifyTrail([dir]).firstBreak).toMatchObject({ line: 2, reason: "malformed" });
  });

  test("a deleted first file → chain_start, unless allowPartialStart", async () => {
    const dir = await makeTrail(40, { maxFileBytes: 1000 });
    unlinkSync(file(dir, 1));
    expect(verifyTrail([dir]).firstBreak).toMatchObject({
      file: file(dir, 2),
      line: 1,
      reason: "chain_start",
    });
    const r = verifyTrail([dir], { allowPartialStart: true });
    expect(r.ok).toBe(true);
    expect(r.records).toBeLessThan(40);
  });

  test("a deleted middle file → seq_gap at the first line of the next file", async () => {
    const dir = await makeTrail(40, { maxFileBytes: 1000 });
    unlinkSync(file(dir, 2));
    expect(verifyTrail([dir]).firstBreak).toMatchObject({
      file: file(dir, 3),
      line: 1,
      reason: "seq_gap",
    });
  });

  test("records cut cleanly from the end are only caught against an anchored hash", async () => {
    const dir = tmp();
    const trail = AuditTrail.open({ dir });
    for (let i = 1; i <= 10; i++) trail.append("decision", decision(i));
    const anchored = trail.stats().lastHash; // e.g. reported on a span
    await trail.close();
    edit(dir, (ls) => ls.slice(0, 8));
    const r = verifyTrail([dir]);
    expect(r.ok).toBe(true); // the file alone cannot tell
    expect(r.lastHash).not.toBe(anchored); // the anchor can
  });
});

describe("write errors", () => {
  test("the directory removed after open: reported and counted; append never throws; nothing dropped", async () => {
    const dir = join(tmp(), "trail");
    const errors: Error[] = [];
    const trail = AuditTrail.open({
      dir,
      maxFileBytes: 600,
      flushIntervalMs: 5,
      onError: (e) => errors.push(e),
    });
    for (let i = 1; i <= 3; i++) trail.append("decision", decision(i));
    await trail.flush();
    // files already rotated away were fsynced and closed: removing them loses them
    const rotatedAway = lines(file(dir, 1)).length;
    expect(existsSync(file(dir, 2))).toBe(true);
    rmSync(dir, { recursive: true, force: true });
    for (let i = 4; i <= 20; i++) expect(() => trail.append("decision", decision(i))).not.toThrow();
    await expect(trail.flush()).rejects.toMatchObject({ code: "audit_write_failed" });
    expect(errors.length).toBeGreaterThanOrEqual(1);
    expect(errors[0]).toMatchObject({ code: "audit_write_failed" });
    expect(trail.stats().writeErrors).toBeGreaterThanOrEqual(1);
    expect(trail.stats().pending).toBeGreaterThan(0);
    expect(() => trail.append("decision", decision(21))).not.toThrow();

    // the directory comes back: the kept records are written, the chain is intact
    mkdirSync(dir);
    await trail.flush();
    await trail.close();
    expect(trail.stats()).toMatchObject({ appended: 21, pending: 0 });
    const r = verifyTrail([dir], { allowPartialStart: true });
    expect(r).toMatchObject({ ok: true, lastHash: trail.stats().lastHash });
    // lines written to the removed current file were re-queued (it was never fsynced as
    // linked): everything after the rotated-away records is there
    expect(r.records).toBe(21 - rotatedAway);
  });

  test("close with records that cannot be written rejects with audit_write_failed", async () => {
    const dir = join(tmp(), "trail");
    const errors: Error[] = [];
    const trail = AuditTrail.open({ dir, maxFileBytes: 300, onError: (e) => errors.push(e) });
    rmSync(dir, { recursive: true, force: true });
    for (let i = 1; i <= 5; i++) trail.append("decision", decision(i));
    await expect(trail.close()).rejects.toMatchObject({ code: "audit_write_failed" });
    expect(errors.length).toBeGreaterThanOrEqual(1);
  });

  test("a faulty onError handler does not break append", async () => {
    const dir = join(tmp(), "trail");
    const trail = AuditTrail.open({
      dir,
      maxFileBytes: 300,
      flushIntervalMs: 1,
      onError: () => {
        throw new Error("handler bug");
      },
    });
    rmSync(dir, { recursive: true, force: true });
    for (let i = 1; i <= 5; i++) trail.append("decision", decision(i));
    await expect(trail.flush()).rejects.toMatchObject({ code: "audit_write_failed" });
    expect(() => trail.append("decision", decision(6))).not.toThrow();
    await trail.close().catch(() => undefined);
  });

  test("open on an unusable directory throws audit_trail_unreadable", () => {
    const blocker = join(tmp(), "file");
    writeFileSync(blocker, "x");
    expect(() => AuditTrail.open({ dir: join(blocker, "trail") })).toThrow(
      expect.objectContaining({ code: "audit_trail_unreadable" }) as Error,
    );
  });

  test("a backlog over the limit is kept and reported once per episode", async () => {
    const dir = tmp();
    const errors: Error[] = [];
    const trail = AuditTrail.open({ dir, flushIntervalMs: 60_000, onError: (e) => errors.push(e) });
    for (let i = 0; i < MAX_PENDING_LINES + 50; i++) trail.append("d", { i });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: "audit_backlog_overflow" });
    expect(trail.stats().pending).toBe(MAX_PENDING_LINES + 50);
    await trail.close();
    expect(trail.stats()).toMatchObject({ pending: 0, written: MAX_PENDING_LINES + 50 });
    expect(verifyTrail([dir])).toMatchObject({ ok: true, records: MAX_PENDING_LINES + 50 });
  }, 60_000);
});

describe("toolgate audit verify", () => {
  function run(args: string[]): { code: number; stdout: string; stderr: string } {
    let stdout = "";
    let stderr = "";
    const code = auditVerifyCommand(args, {
      stdout: (s) => (stdout += s),
      stderr: (s) => (stderr += s),
    });
    return { code, stdout, stderr };
  }

  test("an intact trail: ok line, exit 0", async () => {
    const dir = await makeTrail(12, { maxFileBytes: 1000 });
    const n = readdirSync(dir).length;
    const r = verifyTrail([dir]);
    expect(run(["verify", dir])).toEqual({
      code: 0,
      stdout: `ok: 12 records in ${n} files, last hash ${r.lastHash}\n`,
      stderr: "",
    });
  });

  test("a broken trail: BROKEN line with file, line, seq and reason, exit 1", async () => {
    const dir = await makeTrail(6);
    const ls = lines(file(dir, 1));
    writeFileSync(file(dir, 1), ls.filter((_, i) => i !== 2).join("\n") + "\n");
    const { code, stdout } = run(["verify", dir]);
    expect(code).toBe(1);
    expect(stdout).toMatch(
      new RegExp(`^BROKEN at ${file(dir, 1).replace(/[.\\]/g, "\\$&")}:3 \\(seq 4\\): seq_gap: `),
    );
  });

  test("--json prints the VerifyResult; --allow-partial-start accepts a retained suffix", async () => {
    const dir = await makeTrail(40, { maxFileBytes: 1000 });
    unlinkSync(file(dir, 1));
    const broken = run(["verify", "--json", dir]);
    expect(broken.code).toBe(1);
    expect(JSON.parse(broken.stdout)).toMatchObject({
      ok: false,
      firstBreak: { reason: "chain_start", line: 1 },
    });
    const ok = run(["verify", dir, "--json", "--allow-partial-start"]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual(verifyTrail([dir], { allowPartialStart: true }));
  });

  test("usage errors and unreadable paths exit 2", () => {
    expect(run(["verify"])).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/^toolgate: usage: /) as string,
    });
    expect(run(["frobnicate"]).code).toBe(2);
    expect(run(["verify", "--bogus", "x"])).toMatchObject({ code: 2 });
    const missing = join(tmp(), "nope");
    expect(existsSync(missing)).toBe(false);
    expect(run(["verify", missing])).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/audit_trail_unreadable/) as string,
    });
  });
});
